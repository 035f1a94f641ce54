"""The dialogue environment and its reference labels, against a hand-built dialogue whose every block is counted
by hand; the espeak-ng speech pool and the script generator; the datamodule's batches."""

import pytest
import torch

from paperzoo.speech.duplex.data import DuplexDataModule, collate_dialogues
from paperzoo.speech.duplex.dialogues import (
    DialogueConfig,
    DialogueScript,
    PerDialogue,
    UserTurn,
    make_scripts,
    simulate,
    simulate_many,
    speech_pool,
    trim_silence,
)
from paperzoo.speech.duplex.metrics import score_dialogues
from paperzoo.speech.duplex.scheduler import CONTINUE, IGNORE, LISTEN, SHIFT, SPEAK, THINK
from paperzoo.speech.duplex.vad import EnergyVADPolicy

RATE, BLOCK = 16000, 1280


def tone(seconds, value):
    return torch.full((int(seconds * RATE),), value)


def hand_script(noise=0.0):
    """User: 0.5 s at 0.3 s; the model answers (0.8 s response); the user barges in 0.4 s after the model starts
    (0.5 s); the model answers again (0.5 s response). Echo: half the playback, 160 samples (10 ms) late."""
    turns = [
        UserTurn([tone(0.5, 0.3)], [], barge_in=False, offset=0.5),
        UserTurn([tone(0.5, 0.2)], [], barge_in=True, offset=0.4),
    ]
    return DialogueScript(
        turns=turns,
        responses=[tone(0.8, 0.1), tone(0.5, 0.05)],
        noise=torch.full((RATE * 6,), noise),
        echo=[(0.5, 160)],
        first_start=0.3,
        patience=2.0,
        response_delays=[0.24, 0.24],
        stop_delay=0.24,
    )


def test_reference_labels_of_a_hand_built_dialogue():
    r = simulate(hand_script())
    # turn 1: samples 4800-12800 (0.3-0.8 s); answer at the first block end >= 0.8 + 0.24 = 1.04 s (block 12)
    # turn 2 (barge-in): 0.4 s after the answer starts, 1.44-1.94 s; stop at >= 1.44 + 0.24 = 1.68 s (block 20)
    # answer 2 at the first block end >= 1.94 + 0.24 = 2.18 s: 2.24 s (block 27); it plays 0.5 s = 6.25 blocks
    # (blocks 28-34) and runs out at the end of block 34; the dialogue ends 7 blocks (0.5 s) later.
    assert r.turn_ends == [0.8, 1.94]
    assert r.starts == [1.04, 2.24]
    assert r.stops == [1.68]
    assert r.finishes == [2.8]
    assert r.overlaps == [1.44] and r.late_overlaps == []
    assert r.barge_ins == [1.44] and r.late_barge_ins == []  # the user's turn 2 is the scripted barge-in
    expected_tokens = [THINK] * 12 + [SHIFT] + [CONTINUE] * 7 + [SHIFT] + [THINK] * 6 + [SHIFT]
    expected_tokens += [CONTINUE] * 6 + [IGNORE] + [THINK] * 7
    assert r.tokens.tolist() == expected_tokens
    expected_states = [LISTEN] * 13 + [SPEAK] * 8 + [LISTEN] * 7 + [SPEAK] * 7 + [LISTEN] * 7
    assert r.states.tolist() == expected_states
    assert r.num_blocks == 42 and r.mic.numel() == 42 * BLOCK
    # the playback: response 1 from 1.04 s, cut at 1.68 s; response 2 from 2.24 s to its end
    playback = torch.zeros(42 * BLOCK)
    playback[13 * BLOCK : 21 * BLOCK] = 0.1
    playback[28 * BLOCK : 28 * BLOCK + 8000] = 0.05
    assert torch.equal(r.playback, playback)
    # the microphone: user + half the playback 10 ms late (+ zero noise)
    user = torch.zeros(42 * BLOCK)
    user[4800:12800] = 0.3
    user[23040:31040] = 0.2
    echo = torch.zeros(42 * BLOCK)
    echo[160:] = 0.5 * playback[:-160]
    assert torch.equal(r.user, user)
    torch.testing.assert_close(r.mic, user + echo)
    scores = score_dialogues([r]).summary()
    assert scores["turn-taking F1"] == 1.0 and scores["barge-in F1"] == 1.0 and scores["scripted barge-in F1"] == 1.0
    assert abs(scores["stop latency s"] - 0.24) < 1e-9
    assert abs(scores["scripted stop latency s"] - 0.24) < 1e-9


class Shifts:
    """A policy that says <shift> at the end of the given blocks, whatever it hears."""

    def __init__(self, blocks):
        self.blocks, self.block = set(blocks), 0

    def reset(self):
        self.block = 0

    def decide(self, mic, playback, state):
        self.block += 1
        return self.block - 1 in self.blocks


def test_only_scripted_barge_ins_are_barge_ins_when_the_policy_interrupts_a_pause():
    # turn 1: clauses 0.3-0.8 s and 1.2-1.5 s (0.4 s pause); turn 2 barges in 0.4 s after the model's answer starts
    turns = [
        UserTurn([tone(0.5, 0.3), tone(0.3, 0.3)], [int(0.4 * RATE)], barge_in=False, offset=0.5),
        UserTurn([tone(0.5, 0.2)], [], barge_in=True, offset=0.4),
    ]
    script = DialogueScript(
        turns=turns, responses=[tone(1.0, 0.1), tone(2.0, 0.1)], noise=torch.zeros(RATE * 8), echo=[(0.5, 160)],
        first_start=0.3, patience=2.0, response_delays=[0.24, 0.24], stop_delay=0.24,
    )  # fmt: skip
    # shifts at the ends of blocks 11 (0.96 s: starts in the pause), 17 (1.44 s: stops after the user resumed at
    # 1.2 s), 20 (1.68 s: answers turn 1, which ended at 1.5 s) and 29 (2.4 s: stops after the barge-in)
    r = simulate(script, Shifts({11, 17, 20, 29}))
    assert r.starts == [0.96, 1.68] and r.stops == [1.44, 2.4]
    assert r.turn_ends == [1.5, 2.58]
    # turn 2 starts 0.4 s after the answer that began once turn 1 had ended (1.68 s): 2.08 s
    assert r.overlaps == [1.2, 2.08] and r.late_overlaps == []  # the self-caused overlap at 1.2 s counts here...
    assert r.barge_ins == [2.08] and r.late_barge_ins == []  # ...not here
    scores = score_dialogues([r], stop_tolerance=0.8)
    assert (scores.barge_in.tp, scores.barge_in.fp, scores.barge_in.fn) == (2, 0, 0)
    s = scores.scripted_barge_in
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)  # the stop at 1.44 s is a false alarm: no scripted barge-in before it
    assert s.delays == [pytest.approx(0.32)] and s.f1 == pytest.approx(2 / 3)


def test_a_silent_policy_makes_the_user_go_on_after_their_patience():
    class Silent:
        def reset(self):
            pass

        def decide(self, mic, playback, state):
            return False

    r = simulate(hand_script(), Silent())
    # no answer: turn 2 starts 0.4 s after the user's patience (2 s after 0.8 s) ran out, at the block end 2.8 s
    assert r.turn_ends == [0.8, 3.7]
    assert r.starts == [] and r.stops == [] and r.overlaps == []
    assert (r.tokens == THINK).all()
    scores = score_dialogues([r])
    assert (scores.turn_taking.tp, scores.turn_taking.fn) == (0, 2)


def test_the_vad_hears_its_own_echo_as_a_barge_in():
    # speaking threshold below the echo level (-32 dB): it stops as soon as its own voice comes back
    vad = EnergyVADPolicy(threshold_db=-40.0, timeout=0.24, speaking_threshold_db=-40.0, onset_blocks=2)
    r = simulate(hand_script(), vad)
    assert r.starts[0] == 1.04  # 3 silent blocks after the user's last voiced block (0.8 s -> block 9 voiced)
    assert r.stops[0] == 1.2  # two blocks of its own echo
    # lockstep simulation of several dialogues = each alone
    many = simulate_many([hand_script(), hand_script(0.001)], PerDialogue(lambda _: EnergyVADPolicy(-40.0, 0.24)))
    alone = simulate(hand_script(), EnergyVADPolicy(-40.0, 0.24))
    assert many[0].tokens.tolist() == alone.tokens.tolist()
    assert torch.equal(many[0].mic, alone.mic)


def test_speech_pool_and_scripts():
    pool = speech_pool(["the old river", "a quiet town"], ["i can help with that"], seed=0, progress=False)
    assert len(pool.clauses) == 2 and len(pool.responses) == 1
    comma, period = pool.clauses[0]
    assert not torch.equal(comma[: min(comma.numel(), period.numel())], period[: min(comma.numel(), period.numel())])
    for waveform in (comma, period, pool.responses[0]):
        assert torch.equal(trim_silence(waveform), waveform)  # trimmed
        assert abs(float(waveform.pow(2).mean().sqrt()) - 0.1) < 1e-4  # normalised
    config = DialogueConfig(turns=3, max_clauses=2, barge_in_prob=1.0)
    first, again = make_scripts(pool, config, 2, seed=5), make_scripts(pool, config, 2, seed=5)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.noise, b.noise) and a.echo == b.echo
        assert [t.audio()[0].numel() for t in a.turns] == [t.audio()[0].numel() for t in b.turns]
    turns = first[0].turns
    assert not turns[0].barge_in and all(t.barge_in for t in turns[1:])

    def is_version(clause, which):  # the pool's "," (0) or "." (1) version of some text, at the user's gain
        unit = clause / clause.norm()
        return any(
            pair[which].numel() == clause.numel() and torch.allclose(unit, pair[which] / pair[which].norm(), atol=1e-6)
            for pair in pool.clauses
        )

    for turn in turns:  # continuation clauses then a final one, with their pauses in range
        assert is_version(turn.clauses[-1], 1)
        assert all(is_version(clause, 0) for clause in turn.clauses[:-1])
        assert all(0.2 * RATE <= p <= 0.9 * RATE for p in turn.pauses)
    r = simulate(first[0])
    assert (r.tokens == SHIFT).sum() >= 3  # every turn answered, at least one barge-in stop


def test_datamodule_windows_and_collate():
    data = DuplexDataModule(
        num_train=2, num_val=1, num_test=1, turns=2, clause_texts=(4, 2, 2), response_texts=2, num_mel_bins=8,
        window_blocks=40, batch_size=2,
    )  # fmt: skip
    data.prepare_data()
    data.setup("fit")
    assert data.num_features == 8
    batch = next(iter(data.train_dataloader()))
    assert batch["mic"].shape[0] == 2 and batch["mic"].shape[2:] == (8, 8)
    assert batch["playback"].shape == batch["mic"].shape
    assert batch["state"].shape == batch["tokens"].shape == batch["mic"].shape[:2]
    assert (batch["lengths"] <= 40).all()
    # a window after the first has no labels in its first quarter
    starts = [item for item in data.train_set.items if (item["tokens"][:10] == IGNORE).all()]
    assert starts, "no later windows"
    # collate pads features with 0, states with LISTEN and tokens with IGNORE
    short = {key: value[:3] for key, value in data.train_set.items[0].items()}
    padded = collate_dialogues([short, data.train_set.items[0]])
    assert (padded["tokens"][0, 3:] == IGNORE).all() and (padded["state"][0, 3:] == LISTEN).all()
    assert (padded["mic"][0, 3:] == 0).all() and padded["lengths"].tolist()[0] == 3

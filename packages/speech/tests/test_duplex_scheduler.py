"""The duplex block loop: state transitions and tokens, the TTS stand-in, the VAD baseline's decisions, and the
causality of the streaming model (future blocks never change past outputs; block-by-block = whole dialogue)."""

import torch

from paperzoo.speech.duplex.model import DuplexStateModel, ModelPolicy, block_features, segment_features
from paperzoo.speech.duplex.scheduler import (
    CONTINUE,
    IGNORE,
    LISTEN,
    SHIFT,
    SPEAK,
    THINK,
    DuplexScheduler,
    ScriptedSpeech,
)
from paperzoo.speech.duplex.vad import EnergyVADPolicy

BLOCK = 4  # samples per block in the hand cases


class ShiftAt:
    """A policy that shifts at the end of the given blocks and records what it saw."""

    def __init__(self, blocks):
        self.blocks, self.seen = set(blocks), []

    def reset(self):
        self.block = 0

    def decide(self, mic, playback, state):
        self.seen.append((state, playback.clone()))
        self.block += 1
        return self.block - 1 in self.blocks


def run(policy, responses, blocks):
    scheduler = DuplexScheduler(policy, ScriptedSpeech(responses), block_samples=BLOCK, sample_rate=BLOCK)
    scheduler.reset()
    played = []
    for _ in range(blocks):
        played.append(scheduler.playback_block().clone())
        scheduler.observe(torch.zeros(BLOCK))
    return scheduler, torch.cat(played)


def test_start_finish_and_barge_in_stop():
    first = torch.arange(1, 11, dtype=torch.float32)  # 10 samples: 2.5 blocks
    second = torch.arange(101, 121, dtype=torch.float32)  # 20 samples: cut by a stop
    # shift at the ends of blocks 1 (start), 6 (ignored? no: listening again after the finish -> start), 8 (stop)
    scheduler, played = run(ShiftAt({1, 6, 8}), [first, second], blocks=11)
    assert scheduler.states == [LISTEN, LISTEN, SPEAK, SPEAK, SPEAK, LISTEN, LISTEN, SPEAK, SPEAK, LISTEN, LISTEN]
    assert scheduler.tokens == [THINK, SHIFT, CONTINUE, CONTINUE, IGNORE, THINK, SHIFT, CONTINUE, SHIFT, THINK, THINK]
    assert [(e.kind, e.block, e.time) for e in scheduler.events] == [
        ("start", 1, 2.0),
        ("finished", 4, 5.0),
        ("start", 6, 7.0),
        ("stop", 8, 9.0),
    ]
    expected = torch.zeros(44)
    expected[8:18] = first  # blocks 2-4, the last one zero-padded
    expected[28:36] = second[:8]  # blocks 7-8, then cut
    assert torch.equal(played, expected)


def test_a_shift_in_the_block_where_speech_runs_out_is_no_stop():
    scheduler, _ = run(ShiftAt({0, 1}), [torch.ones(3)], blocks=3)
    assert scheduler.tokens == [SHIFT, IGNORE, THINK]
    assert [e.kind for e in scheduler.events] == ["start", "finished"]


def test_the_policy_sees_the_state_and_playback_of_each_block():
    policy = ShiftAt({0})
    run(policy, [torch.full((6,), 2.0)], blocks=3)
    states = [state for state, _ in policy.seen]
    assert states == [LISTEN, SPEAK, SPEAK]
    assert torch.equal(policy.seen[1][1], torch.full((4,), 2.0))
    assert torch.equal(policy.seen[2][1], torch.tensor([2.0, 2.0, 0.0, 0.0]))


def test_scripted_speech_cycles_through_its_responses():
    speech = ScriptedSpeech([torch.ones(2), torch.full((2,), 2.0)])
    for expected in (1.0, 2.0, 1.0):
        speech.start()
        assert torch.equal(speech.read(3), torch.tensor([expected, expected, 0.0]))
        assert speech.finished


def loud(level):
    return torch.full((1280,), level)


def test_vad_answers_after_the_timeout_and_stops_on_an_onset():
    policy = EnergyVADPolicy(threshold_db=-30.0, timeout=0.16, speaking_threshold_db=-20.0, onset_blocks=2)
    policy.reset()
    quiet, speech, echo = loud(0.001), loud(0.1), loud(0.05)  # -60, -20, -26 dB
    assert not policy.decide(quiet, quiet, LISTEN)  # silence before the user spoke: no answer
    assert not policy.decide(quiet, quiet, LISTEN)
    assert not policy.decide(speech, quiet, LISTEN)
    assert not policy.decide(quiet, quiet, LISTEN)  # one silent block < 0.16 s
    assert policy.decide(quiet, quiet, LISTEN)  # two silent blocks = 0.16 s: shift to speak
    assert not policy.decide(echo, quiet, SPEAK)  # echo at -26 dB is under the speaking threshold
    assert not policy.decide(loud(0.2), quiet, SPEAK)  # one loud block
    assert policy.decide(loud(0.2), quiet, SPEAK)  # the second: barge-in
    assert not policy.decide(speech, quiet, LISTEN)  # the user goes on
    assert not policy.decide(quiet, quiet, LISTEN)
    assert policy.decide(quiet, quiet, LISTEN)  # and is answered after the timeout


def test_vad_forgets_the_user_after_the_response_runs_out():
    policy = EnergyVADPolicy(threshold_db=-30.0, timeout=0.08)
    policy.reset()
    assert not policy.decide(loud(0.1), loud(0.0), LISTEN)
    assert policy.decide(loud(0.0), loud(0.0), LISTEN)
    assert not policy.decide(loud(0.0), loud(0.0), SPEAK)
    # the response finished by itself: listening again, nothing heard yet, so no answer on silence
    assert not policy.decide(loud(0.0), loud(0.0), LISTEN)
    assert not policy.decide(loud(0.0), loud(0.0), LISTEN)


def test_the_model_is_causal_over_blocks():
    torch.manual_seed(0)
    model = DuplexStateModel(num_features=6, dim=8, num_layers=2).eval()
    mic, playback = torch.randn(2, 12, 8, 6) * 5 + 10, torch.randn(2, 12, 8, 6) * 5 + 10
    state = torch.randint(0, 2, (2, 12))
    logits, _ = model(mic, playback, state)
    changed_mic, changed_state = mic.clone(), state.clone()
    changed_mic[:, 7:] += 3.0
    changed_state[:, 7:] = 1 - changed_state[:, 7:]
    changed, _ = model(changed_mic, playback, changed_state)
    torch.testing.assert_close(changed[:, :7], logits[:, :7])
    assert not torch.allclose(changed[:, 7:], logits[:, 7:])
    # block by block with the carried state = the whole sequence at once
    hidden, steps = None, []
    for b in range(12):
        out, hidden = model(mic[:, b : b + 1], playback[:, b : b + 1], state[:, b : b + 1], hidden)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), logits)
    # the token the state rules out is masked
    probabilities = logits.softmax(-1)
    assert probabilities[..., CONTINUE][state == LISTEN].max() < 1e-6
    assert probabilities[..., THINK][state == SPEAK].max() < 1e-6


def test_streaming_features_equal_whole_signal_features():
    torch.manual_seed(1)
    mic, playback = torch.randn(1280 * 5) * 0.1, torch.zeros(1280 * 5)
    playback[3000:5000] = torch.randn(2000) * 0.05
    whole = torch.stack([block_features(mic, 10), block_features(playback, 10)], 1)  # [N, 2, 8, 10]
    history = torch.zeros(2, 240)
    for b in range(5):
        block = torch.stack([mic[b * 1280 : (b + 1) * 1280], playback[b * 1280 : (b + 1) * 1280]])
        segments = torch.cat([history, block], 1)
        history = segments[:, -240:]
        torch.testing.assert_close(segment_features(segments, 10), whole[b], atol=1e-4, rtol=1e-5)


def test_model_policy_streams_the_same_probabilities_as_the_whole_dialogue():
    torch.manual_seed(2)
    model = DuplexStateModel(num_features=10, dim=8).eval()
    mic, playback = torch.randn(1280 * 6) * 0.1, torch.randn(1280 * 6) * 0.02
    state = torch.tensor([LISTEN, LISTEN, SPEAK, SPEAK, LISTEN, SPEAK])
    logits, _ = model(block_features(mic, 10)[None], block_features(playback, 10)[None], state[None])
    expected = logits[0].softmax(-1)[:, SHIFT]
    policy = ModelPolicy(model, threshold=0.5)
    for b in range(6):
        shifted = policy.decide(mic[b * 1280 : (b + 1) * 1280], playback[b * 1280 : (b + 1) * 1280], int(state[b]))
        assert shifted == (policy.probabilities[0][-1] > 0.5)
    torch.testing.assert_close(torch.tensor(policy.probabilities[0]), expected, atol=1e-4, rtol=1e-4)
    # three dialogues in lockstep, the middle one ending after 4 blocks: each streams as if alone
    batched = ModelPolicy(model)
    batched.reset(3)
    others = [torch.randn(1280 * 6) * 0.1 for _ in range(4)]
    mics, playbacks = [others[0], mic, others[1]], [others[2], playback, others[3]]
    for b in range(6):
        indices = [0, 1, 2] if b < 4 else [0, 2]
        batched.decide_batch(
            indices,
            torch.stack([mics[i][b * 1280 : (b + 1) * 1280] for i in indices]),
            torch.stack([playbacks[i][b * 1280 : (b + 1) * 1280] for i in indices]),
            [int(state[b])] * len(indices),
        )
    torch.testing.assert_close(torch.tensor(batched.probabilities[1]), expected[:4], atol=1e-4, rtol=1e-4)
    assert len(batched.probabilities[0]) == len(batched.probabilities[2]) == 6

"""Generated full-duplex dialogues from espeak-ng speech, and the acoustic environment that plays them out.

A dialogue is a *script* (`DialogueScript`), not a fixed recording: the user's turns, the model's recorded
responses, the room (echo of the loudspeaker into the microphone) and background noise. `simulate` plays the
script block by block against a `DuplexScheduler`, so whatever a policy decides changes what happens next (the
user answers after the model's response, barges in some time after the model starts speaking, waits a while when
the model says nothing). The same simulation with the privileged `OraclePolicy` is the reference rendering whose
per-block tokens are the training labels; with a learned or a baseline policy it is a closed-loop evaluation.

The user (a simulated speaker, not reacting to being interrupted):
- a turn is 1 to `max_clauses` clauses of a Wikipedia sentence fragment. Clauses inside a turn are synthesized
  ending with "," (espeak-ng's continuation intonation) and separated by a pause of `pause_seconds`; the last one
  ends with "." (final fall). Pauses are as long as the model's reaction window, so silence alone cannot tell a
  pause from the end of a turn: the end-of-turn cue is the intonation (and the pause length distribution);
- the first turn starts after `first_start_seconds`; a *barge-in* turn starts `offset` seconds after the model
  starts its response (in the middle of it); any other turn starts `offset` seconds after the model's response
  stops; with no response within `patience_seconds` of the turn's end, the user goes on anyway.

The model: recorded espeak-ng responses in its own fixed voice, one per turn (`ScriptedSpeech`).

The room: the microphone hears user + echo + noise. Echo = g1 * playback delayed by d1 + g2 * playback delayed by
d2 (two reflections), with per-dialogue gains and delays. Noise = stationary coloured noise at a per-dialogue SNR
against the user's speech, plus random short noise bursts (knocks, clatter) as loud as speech.

The reference (oracle) policy: shift to SPEAK at the first block end >= the turn's response delay (drawn per turn
from `response_delay`, as human response gaps vary) after the user's turn ends; shift to LISTEN at the first block
end >= `stop_delay` after user speech first overlaps the model's playback.
"""

import hashlib
import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch
from tqdm.auto import tqdm

from paperzoo.core.errors import ConfigError, require
from paperzoo.core.io import atomic_torch_save, cache_dir, load_checkpoint_file
from paperzoo.speech.data.audio import SAMPLE_RATE
from paperzoo.speech.data.espeak import synthesize
from paperzoo.speech.data.text import wikipedia_sentences
from paperzoo.speech.duplex.scheduler import (
    BLOCK_SAMPLES,
    IGNORE,
    LISTEN,
    SPEAK,
    BlockPolicy,
    DuplexScheduler,
    ScriptedSpeech,
)

USER_VOICES = ("en-us", "en-gb", "en-us+f2", "en-us+m3", "en-gb+f4", "en-us+m7", "en-gb-scotland", "en-029+f1")
MODEL_VOICE = "en-us+f3"
SPEECH_RMS = 0.1  # every clause and response is normalised to this RMS before the per-dialogue gains


@dataclass(frozen=True)
class DialogueConfig:
    """How dialogues are drawn (all durations in seconds).

    Args:
        turns: user turns per dialogue.
        max_clauses: clauses per turn, drawn uniformly from 1..max_clauses.
        pause_seconds: (min, max) pause between the clauses of one turn.
        barge_in_prob: probability that a turn after the first barges in on the model's response.
        barge_in_offset: (min, max) seconds after the model starts speaking that a barge-in begins.
        gap_seconds: (min, max) seconds after the model stops that the user's next normal turn begins.
        first_start_seconds: when the first turn starts.
        patience_seconds: how long the user waits for an answer before going on.
        echo_gain: (min, max) gain of the first echo path (the second is half of it).
        echo_delay_ms: (min, max) delay of the first echo path; the second is 20-80 ms later.
        user_gain: (min, max) level of the user's speech relative to the model's.
        snr_db: (min, max) user speech to stationary noise ratio.
        burst_rate: noise bursts per second (Poisson).
        burst_db: (min, max) burst RMS relative to the speech RMS.
        response_delay: (min, max) of the reference's gap between the end of a user turn and its answer, drawn
            per turn (with one fixed gap, a model imitating the reference never sees an end of turn still
            unanswered after that gap, so it could not learn to wait longer when unsure).
        stop_delay: the reference stops this long after a barge-in begins.
    """

    turns: int = 4
    max_clauses: int = 3
    pause_seconds: tuple[float, float] = (0.2, 0.9)
    barge_in_prob: float = 0.4
    barge_in_offset: tuple[float, float] = (0.5, 1.6)
    gap_seconds: tuple[float, float] = (0.3, 1.0)
    first_start_seconds: tuple[float, float] = (0.3, 1.0)
    patience_seconds: float = 2.0
    echo_gain: tuple[float, float] = (0.15, 0.8)
    echo_delay_ms: tuple[float, float] = (10.0, 60.0)
    user_gain: tuple[float, float] = (0.5, 1.5)
    snr_db: tuple[float, float] = (10.0, 30.0)
    burst_rate: float = 0.15
    burst_db: tuple[float, float] = (-6.0, 3.0)
    response_delay: tuple[float, float] = (0.16, 0.56)
    stop_delay: float = 0.24

    def __post_init__(self) -> None:
        require(self.turns >= 1, f"a dialogue needs at least one turn, got turns={self.turns}")
        require(self.max_clauses >= 1, f"max_clauses must be >= 1, got {self.max_clauses}")
        require(0.0 <= self.barge_in_prob <= 1.0, f"barge_in_prob must be in [0, 1], got {self.barge_in_prob}")
        for name in ("pause_seconds", "response_delay", "barge_in_offset", "gap_seconds", "first_start_seconds",
                     "echo_gain", "echo_delay_ms", "user_gain", "snr_db", "burst_db"):  # fmt: skip
            low, high = getattr(self, name)
            require(low <= high, f"{name} must be a (min, max) range, got {(low, high)}")


# --- the speech pools ------------------------------------------------------------------------------------------
@dataclass
class SpeechPool:
    """Synthesized speech a dialogue draws from. `clauses[i]` = (continuation "," version, final "." version) of
    one text in one user voice; `responses` in the model's voice. Waveforms are trimmed of leading/trailing silence
    and normalised to `SPEECH_RMS`."""

    clauses: list[tuple[torch.Tensor, torch.Tensor]]
    responses: list[torch.Tensor]


def trim_silence(waveform: torch.Tensor, threshold: float = 1e-3) -> torch.Tensor:
    """`waveform` without the leading and trailing samples below `threshold` in magnitude."""
    loud = (waveform.abs() > threshold).nonzero()
    if loud.numel() == 0:
        return waveform[:0]
    return waveform[int(loud[0]) : int(loud[-1]) + 1]


def _normalised(waveform: torch.Tensor) -> torch.Tensor:
    waveform = trim_silence(waveform)
    require(waveform.numel() > 0, "espeak-ng produced a silent waveform")
    return waveform * (SPEECH_RMS / waveform.pow(2).mean().sqrt().clamp_min(1e-8))


def speech_pool(
    texts: list[str], response_texts: list[str], seed: int, workers: int = 2, progress: bool = True
) -> SpeechPool:
    """Synthesize (or load from the cache) the pool: each of `texts` as a "," and a "." clause in a user voice,
    speed and pitch drawn from `seed`; each of `response_texts` in the model's voice.

    Cached atomically under `cache_dir("speech", "duplex", <hash of the texts, voices and settings>)`.
    """
    generator = torch.Generator().manual_seed(seed)
    jobs: list[tuple[str, str, int, int]] = []
    for text in texts:
        voice = USER_VOICES[int(torch.randint(len(USER_VOICES), (1,), generator=generator))]
        speed = int(torch.randint(140, 191, (1,), generator=generator))
        pitch = int(torch.randint(30, 71, (1,), generator=generator))
        jobs += [(f"{text},", voice, speed, pitch), (f"{text}.", voice, speed, pitch)]
    for text in response_texts:
        jobs.append((f"{text}.", MODEL_VOICE, 170, 50))
    key = hashlib.sha256(json.dumps([jobs, SPEECH_RMS, SAMPLE_RATE]).encode()).hexdigest()[:16]
    path = cache_dir("speech", "duplex") / f"pool-{key}.pt"
    if path.exists():
        waveforms = load_checkpoint_file(path)["waveforms"]
    else:

        def run(job: tuple[str, str, int, int]) -> torch.Tensor:
            text, voice, speed, pitch = job
            return _normalised(synthesize(text, voice=voice, speed=speed, pitch=pitch))

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # espeak-ng runs as a subprocess
            mapped = pool.map(run, jobs)
            waveforms = list(tqdm(mapped, total=len(jobs), desc="espeak-ng duplex speech", disable=not progress))
        atomic_torch_save({"jobs": jobs, "waveforms": waveforms}, path)
    clauses = [(waveforms[2 * i], waveforms[2 * i + 1]) for i in range(len(texts))]
    return SpeechPool(clauses=clauses, responses=waveforms[2 * len(texts) :])


def split_texts(count: dict[str, int], seed: int) -> dict[str, list[str]]:
    """Disjoint Wikipedia sentence fragments (3-7 words) per split, `count[split]` of each."""
    total = sum(count.values())
    texts = wikipedia_sentences(min_words=3, max_words=7, limit=total, seed=seed)
    if len(texts) < total:
        raise ConfigError(f"the Wikipedia sample has {len(texts)} sentences of 3-7 words, {total} were asked for")
    out, start = {}, 0
    for split, n in count.items():
        out[split] = texts[start : start + n]
        start += n
    return out


# --- scripts -----------------------------------------------------------------------------------------------------
@dataclass
class UserTurn:
    """One user turn: clause waveforms separated by pauses (samples); a barge-in turn starts `offset` seconds
    after the model starts speaking, any other `offset` seconds after it stops."""

    clauses: list[torch.Tensor]
    pauses: list[int]
    barge_in: bool
    offset: float

    def audio(self) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """The turn's waveform [S] and the (start, end) sample span of each clause in it."""
        pieces, spans, position = [], [], 0
        for i, clause in enumerate(self.clauses):
            if i > 0:
                pieces.append(torch.zeros(self.pauses[i - 1]))
                position += self.pauses[i - 1]
            pieces.append(clause)
            spans.append((position, position + clause.numel()))
            position += clause.numel()
        return torch.cat(pieces), spans


@dataclass
class DialogueScript:
    """Everything that happens in one dialogue except the model's decisions."""

    turns: list[UserTurn]
    responses: list[torch.Tensor]
    noise: torch.Tensor  # [S_max] background track (stationary noise and bursts)
    echo: list[tuple[float, int]]  # (gain, delay in samples) per echo path
    first_start: float
    patience: float
    response_delays: list[float]  # per turn: the reference's gap before answering it
    stop_delay: float
    max_samples: int = field(init=False)

    def __post_init__(self) -> None:
        self.max_samples = self.noise.numel()


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def coloured_noise(num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """Unit-RMS noise whose spectrum tilts with a random one-pole low-pass (white to brown-ish)."""
    white = torch.randn(num_samples, generator=generator)
    pole = _uniform(generator, 0.0, 0.97)
    if pole > 0:  # y[n] = x[n] + pole * y[n-1], by its impulse response truncated where it is negligible
        taps = min(num_samples, int(math.log(1e-4) / math.log(pole)) + 1)
        kernel = pole ** torch.arange(taps, dtype=torch.float32)
        white = torch.nn.functional.conv1d(
            torch.nn.functional.pad(white[None, None], (taps - 1, 0)), kernel.flip(0)[None, None]
        )[0, 0]
    return white / white.pow(2).mean().sqrt().clamp_min(1e-8)


def make_script(pool: SpeechPool, config: DialogueConfig, generator: torch.Generator) -> DialogueScript:
    """Draw one dialogue from `pool`."""
    rate = SAMPLE_RATE
    user_gain = _uniform(generator, *config.user_gain)
    turns = []
    for k in range(config.turns):
        count = int(torch.randint(1, config.max_clauses + 1, (1,), generator=generator))
        picks = torch.randint(len(pool.clauses), (count,), generator=generator).tolist()
        clauses = [pool.clauses[p][1 if i == count - 1 else 0] * user_gain for i, p in enumerate(picks)]
        pauses = [int(_uniform(generator, *config.pause_seconds) * rate) for _ in range(count - 1)]
        barge_in = k > 0 and float(torch.rand((), generator=generator)) < config.barge_in_prob
        offset = _uniform(generator, *(config.barge_in_offset if barge_in else config.gap_seconds))
        turns.append(UserTurn(clauses, pauses, barge_in, offset))
    responses = [
        pool.responses[int(i)] for i in torch.randint(len(pool.responses), (config.turns,), generator=generator)
    ]
    # an upper bound on the dialogue's length: every turn, response, wait and gap in sequence
    longest = sum(t.audio()[0].numel() for t in turns) + sum(r.numel() for r in responses)
    max_samples = longest + int((config.turns * (config.patience_seconds + 2.0) + 2.0) * rate)
    max_samples = math.ceil(max_samples / BLOCK_SAMPLES) * BLOCK_SAMPLES
    speech_rms = SPEECH_RMS * user_gain
    noise = coloured_noise(max_samples, generator) * speech_rms * 10 ** (-_uniform(generator, *config.snr_db) / 20)
    bursts = int(torch.poisson(torch.tensor(config.burst_rate * max_samples / rate), generator=generator))
    for _ in range(bursts):
        length = int(_uniform(generator, 0.05, 0.3) * rate)
        start = int(torch.randint(0, max_samples - length, (1,), generator=generator))
        decay = torch.exp(-torch.arange(length) / (length * _uniform(generator, 0.15, 0.5)))
        level = speech_rms * 10 ** (_uniform(generator, *config.burst_db) / 20)
        noise[start : start + length] += coloured_noise(length, generator) * decay * level / decay.pow(2).mean().sqrt()
    gain = _uniform(generator, *config.echo_gain)
    delay = int(_uniform(generator, *config.echo_delay_ms) * rate / 1000)
    echo = [(gain, delay), (gain / 2, delay + int(_uniform(generator, 20.0, 80.0) * rate / 1000))]
    return DialogueScript(
        turns=turns,
        responses=responses,
        noise=noise,
        echo=echo,
        first_start=_uniform(generator, *config.first_start_seconds),
        patience=config.patience_seconds,
        response_delays=[_uniform(generator, *config.response_delay) for _ in turns],
        stop_delay=config.stop_delay,
    )


def make_scripts(pool: SpeechPool, config: DialogueConfig, count: int, seed: int) -> list[DialogueScript]:
    generator = torch.Generator().manual_seed(seed)
    return [make_script(pool, config, generator) for _ in range(count)]


# --- the environment -------------------------------------------------------------------------------------------
@dataclass
class Rendering:
    """What happened in one simulated dialogue (times in seconds, per-block tensors of N blocks).

    Attributes:
        mic: [S] what the microphone recorded (user + echo + noise).
        playback: [S] what the model played.
        user: [S] the user's speech alone.
        states: [N] the model's state during each block.
        tokens: [N] the token decided at the end of each block (IGNORE where the response ended by itself).
        turn_ends: when each user turn ended (the reference moments to start speaking).
        overlaps: per model response, the first moment the user spoke while it played (barge-in onsets), when
            the response would still have been playing `stop_delay` later.
        late_overlaps: the other overlap onsets (the response was about to end anyway): a stop right after one is
            neither right nor wrong.
        barge_ins: onsets of the SCRIPTED barge-ins (user turns the script makes start while the model answers,
            `UserTurn.barge_in`) that began while the model was speaking and before its response would have run
            out `stop_delay` later. Unlike `overlaps`, they exclude user speech the policy itself talked over (a
            start in a pause inside a user turn makes the user's next clause overlap the model).
        late_barge_ins: scripted barge-in onsets while the model spoke whose response was about to end anyway.
        starts, stops, finishes: when the model shifted to SPEAK, shifted to LISTEN, or ran out of speech.
    """

    mic: torch.Tensor
    playback: torch.Tensor
    user: torch.Tensor
    states: torch.Tensor
    tokens: torch.Tensor
    turn_ends: list[float]
    overlaps: list[float]
    late_overlaps: list[float]
    starts: list[float]
    stops: list[float]
    finishes: list[float]
    barge_ins: list[float] = field(default_factory=list)
    late_barge_ins: list[float] = field(default_factory=list)

    @property
    def num_blocks(self) -> int:
        return int(self.states.numel())


class DuplexEnvironment:
    """Plays a `DialogueScript` in blocks: places the user's turns as the dialogue unfolds, mixes the microphone
    and keeps the truth the oracle and the metrics need."""

    def __init__(self, script: DialogueScript, block_samples: int = BLOCK_SAMPLES):
        self.script, self.block_samples = script, block_samples
        size = script.max_samples
        self.user = torch.zeros(size)
        self.user_active = torch.zeros(size, dtype=torch.bool)
        self.playback = torch.zeros(size)
        self.mic = torch.zeros(size)
        self.next_turn = 0
        self.next_start: int | None = int(script.first_start * SAMPLE_RATE)
        self.turn_ends: list[int] = []  # samples
        self.current_end: int | None = None  # end of the turn placed last, until the model answers it
        self.answered_at: int | None = None  # when the model started answering the last turn
        self.pending = True  # a turn is still to come or being answered
        self.next_is_barge_in = False  # the scheduled next turn was timed as a barge-in on the model's answer
        self.barge_in_starts: list[int] = []  # samples: where each turn timed as a barge-in began

    def _place_turn(self, start: int) -> None:
        turn = self.script.turns[self.next_turn]
        audio, spans = turn.audio()
        end = min(start + audio.numel(), self.user.numel())
        self.user[start:end] += audio[: end - start]
        for a, b in spans:
            self.user_active[min(start + a, end) : min(start + b, end)] = True
        self.turn_ends.append(end)
        if self.next_is_barge_in:
            self.barge_in_starts.append(start + spans[0][0])
        self.current_end, self.answered_at = end, None
        self.next_turn += 1
        self.next_start = None

    def advance_user(self, block: int, state: int, now: int) -> None:
        """Called at the end of `block` (sample `now`) with the state decided for the next block: schedule the
        user's next turn once its trigger (the model's answer starting or stopping, or the user's patience) is
        known."""
        end = self.current_end
        if end is None or now < end:
            return
        if self.answered_at is None and state == SPEAK:
            self.answered_at = now
        if self.next_turn >= len(self.script.turns):
            done = (self.answered_at is not None and state == LISTEN) or now >= end + self.script.patience * SAMPLE_RATE
            if done:
                self.pending = False
            return
        if self.next_start is not None:
            return
        turn = self.script.turns[self.next_turn]
        patience = end + int(self.script.patience * SAMPLE_RATE)
        if self.answered_at is None:
            if now >= patience:  # no answer: the user goes on
                self.next_start = now + int(turn.offset * SAMPLE_RATE)
                self.next_is_barge_in = False
        elif turn.barge_in:
            self.next_start = self.answered_at + int(turn.offset * SAMPLE_RATE)
            self.next_is_barge_in = True
        elif state == LISTEN:  # the answer is over
            self.next_start = now + int(turn.offset * SAMPLE_RATE)
            self.next_is_barge_in = False

    def mic_block(self, block: int, playback: torch.Tensor) -> torch.Tensor:
        """Place what starts in this block, record the playback, and mix the microphone block."""
        b0, b1 = block * self.block_samples, (block + 1) * self.block_samples
        if self.next_start is not None and self.next_start < b1 and self.next_turn < len(self.script.turns):
            self._place_turn(max(self.next_start, b0))
        self.playback[b0:b1] = playback
        mixed = self.user[b0:b1] + self.script.noise[b0:b1]
        for gain, delay in self.script.echo:
            lo, hi = b0 - delay, b1 - delay
            if hi > 0:
                segment = self.playback[max(lo, 0) : hi]
                mixed[b1 - b0 - segment.numel() :] += gain * segment
        self.mic[b0:b1] = mixed
        return mixed


class OraclePolicy:
    """The reference behaviour, with privileged access to the environment's truth: answer a turn its response delay
    after it ends, stop `stop_delay` after the user starts speaking over the model."""

    def __init__(self, environment: DuplexEnvironment):
        self.environment = environment
        self.block = 0
        self.speaking_since: int | None = None

    def reset(self) -> None:
        self.block, self.speaking_since = 0, None

    def decide(self, mic: torch.Tensor, playback: torch.Tensor, state: int) -> bool:
        env, script = self.environment, self.environment.script
        b0 = self.block * env.block_samples
        now = b0 + env.block_samples
        self.block += 1
        if state == LISTEN:
            self.speaking_since = None
            end = env.current_end
            if end is None or env.answered_at is not None:
                return False
            return now >= end + script.response_delays[env.next_turn - 1] * SAMPLE_RATE
        if self.speaking_since is None:
            self.speaking_since = b0
        active = env.user_active[self.speaking_since : now].nonzero()
        if active.numel() == 0:
            return False
        onset = self.speaking_since + int(active[0])
        return now >= onset + script.stop_delay * SAMPLE_RATE


class BatchPolicy(Protocol):
    """Decides for several dialogues played in lockstep (one batched model call per block)."""

    def reset(self, count: int) -> None:
        """Start `count` dialogues."""

    def decide_batch(
        self, indices: list[int], mic: torch.Tensor, playback: torch.Tensor, states: list[int]
    ) -> list[bool]:
        """`<shift>` or not for the dialogues `indices` (those still running); mic, playback: [b, block]."""
        ...


class PerDialogue:
    """A `BatchPolicy` of one `BlockPolicy` per dialogue, made by `factory(index)`."""

    def __init__(self, factory: Callable[[int], BlockPolicy]):
        self.factory = factory
        self.policies: list[BlockPolicy] = []

    def reset(self, count: int) -> None:
        self.policies = [self.factory(i) for i in range(count)]
        for policy in self.policies:
            policy.reset()

    def decide_batch(
        self, indices: list[int], mic: torch.Tensor, playback: torch.Tensor, states: list[int]
    ) -> list[bool]:
        return [self.policies[i].decide(m, p, s) for i, m, p, s in zip(indices, mic, playback, states, strict=True)]


class _Relay:
    """The scheduler's policy inside `simulate_many`: returns the decision the batch policy made for this block."""

    decision = False

    def reset(self) -> None:
        self.decision = False

    def decide(self, mic: torch.Tensor, playback: torch.Tensor, state: int) -> bool:
        return self.decision


def simulate(script: DialogueScript, policy: BlockPolicy | None = None) -> Rendering:
    """Play `script` with `policy` deciding per block (None: the oracle)."""
    return simulate_many([script], None if policy is None else PerDialogue(lambda _: policy))[0]


def simulate_many(
    scripts: list[DialogueScript], policy: BatchPolicy | None = None, block_samples: int = BLOCK_SAMPLES
) -> list[Rendering]:
    """Play `scripts` in lockstep, `policy` deciding for all of them per block (None: the oracle). A dialogue ends
    when its last turn has been answered (or the user's patience ran out) and the model is silent, plus half a
    second."""
    environments = [DuplexEnvironment(script, block_samples) for script in scripts]
    if policy is None:
        policy = PerDialogue(lambda i: OraclePolicy(environments[i]))
    policy.reset(len(scripts))
    relays = [_Relay() for _ in scripts]
    schedulers = [
        DuplexScheduler(relay, ScriptedSpeech(script.responses), block_samples)
        for relay, script in zip(relays, scripts, strict=True)
    ]
    for scheduler in schedulers:
        scheduler.reset()
    tail_blocks = math.ceil(0.5 * SAMPLE_RATE / block_samples)
    tails: list[int | None] = [None] * len(scripts)
    active, block = list(range(len(scripts))), 0
    while active:
        playbacks = [schedulers[i].playback_block() for i in active]
        mics = [environments[i].mic_block(block, p) for i, p in zip(active, playbacks, strict=True)]
        states = [schedulers[i].state for i in active]
        decisions = policy.decide_batch(active, torch.stack(mics), torch.stack(playbacks), states)
        running = []
        for i, mic, decision in zip(active, mics, decisions, strict=True):
            relays[i].decision = decision
            schedulers[i].observe(mic)
            environment = environments[i]
            environment.advance_user(block, schedulers[i].state, (block + 1) * block_samples)
            if not environment.pending and schedulers[i].state == LISTEN and tails[i] is None:
                tails[i] = block + tail_blocks
            done = (tails[i] is not None and block >= tails[i]) or (block + 1) * block_samples >= scripts[i].max_samples
            if not done:
                running.append(i)
        active, block = running, block + 1
    return [_rendering(e, s, block_samples) for e, s in zip(environments, schedulers, strict=True)]


def _plays_past_reference_stop(natural_end: int, onset: int, stop_delay: float, block_samples: int) -> bool:
    """Whether a response ending by itself at sample `natural_end` would still be playing at the end of the block
    where the reference stops after a barge-in at `onset` (otherwise it runs out first: no barge-in to handle)."""
    return natural_end > math.ceil((onset + stop_delay) / block_samples) * block_samples


def _rendering(environment: DuplexEnvironment, scheduler: DuplexScheduler, block_samples: int) -> Rendering:
    blocks = len(scheduler.states)
    size = blocks * block_samples
    events = {kind: [e.time for e in scheduler.events if e.kind == kind] for kind in ("start", "stop", "finished")}
    playing = torch.tensor(scheduler.states) == SPEAK
    user_blocks = environment.user_active[:size].reshape(blocks, block_samples)
    responses = environment.script.responses
    stop_delay = environment.script.stop_delay * SAMPLE_RATE
    overlaps, late_overlaps = [], []  # per response (a run of SPEAK blocks): the first user-active sample
    barge_ins, late_barge_ins = [], []  # the scripted barge-in onsets inside a response
    block, run = 0, 0
    while block < blocks:
        if not playing[block]:
            block += 1
            continue
        last = block
        while last + 1 < blocks and playing[last + 1]:
            last += 1
        natural_end = block * block_samples + responses[run % len(responses)].numel()
        active = user_blocks[block : last + 1].reshape(-1).nonzero()
        if active.numel():
            onset = block * block_samples + int(active[0])
            playing_on = _plays_past_reference_stop(natural_end, onset, stop_delay, block_samples)
            (overlaps if playing_on else late_overlaps).append(onset / SAMPLE_RATE)
        for onset in environment.barge_in_starts:
            if block * block_samples <= onset < (last + 1) * block_samples:
                playing_on = _plays_past_reference_stop(natural_end, onset, stop_delay, block_samples)
                (barge_ins if playing_on else late_barge_ins).append(onset / SAMPLE_RATE)
        block, run = last + 1, run + 1
    return Rendering(
        mic=environment.mic[:size].clone(),
        playback=environment.playback[:size].clone(),
        user=environment.user[:size].clone(),
        states=torch.tensor(scheduler.states, dtype=torch.long),
        tokens=torch.tensor(scheduler.tokens, dtype=torch.long),
        turn_ends=[end / SAMPLE_RATE for end in environment.turn_ends],
        overlaps=overlaps,
        late_overlaps=late_overlaps,
        starts=events["start"],
        stops=events["stop"],
        finishes=events["finished"],
        barge_ins=barge_ins,
        late_barge_ins=late_barge_ins,
    )


def config_key(*parts: object) -> str:
    """A short stable hash of dataclasses / JSON-able values (the cache key of generated data)."""
    plain = [asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts]  # type: ignore[arg-type]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


__all__ = [
    "IGNORE",
    "DialogueConfig",
    "DialogueScript",
    "DuplexEnvironment",
    "OraclePolicy",
    "Rendering",
    "SpeechPool",
    "UserTurn",
    "config_key",
    "make_script",
    "make_scripts",
    "simulate",
    "simulate_many",
    "BatchPolicy",
    "PerDialogue",
    "speech_pool",
    "split_texts",
]

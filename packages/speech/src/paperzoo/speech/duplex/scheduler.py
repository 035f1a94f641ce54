"""The duplex time-block loop of SALMONN-omni: a listen/speak state machine driven by a per-block policy.

SALMONN-omni (Yu et al., "SALMONN-omni: A Codec-free LLM for Full-duplex Speech Understanding and Generation",
https://arxiv.org/abs/2411.18138; the later version "... A Standalone Speech LLM without Codec Injection for
Full-duplex Conversation", https://arxiv.org/abs/2505.17060) runs its LLM in fixed time blocks. In each block the
LLM reads the streaming encoder's embeddings of what the microphone heard (the user, background sound and the echo
of its own voice) and of what it is itself playing, and emits either response text or a state token: in the
listening state a `<think>` token keeps it silent, and a `<shift>` token switches between listening and speaking
(start answering at the end of the user's turn; stop when the user barges in). Response hidden states, not codec
tokens, drive a streaming TTS.

Implemented here:
- `DuplexScheduler`: the block loop and state machine. Per block it hands the TTS's next audio to the loudspeaker
  (`playback_block`), then reads the microphone block, asks a `BlockPolicy` for the state token and applies it:
  LISTEN --<shift>--> SPEAK (the TTS starts the next response), SPEAK --<shift>--> LISTEN (the TTS is cut: a
  barge-in stop), SPEAK --(the TTS ran out of audio)--> LISTEN (the response finished; no token needed).
- `BlockPolicy`: what decides per block (the learned `DuplexStateModel` through `ModelPolicy`, the energy-VAD
  baseline, or the privileged oracle that labels the training dialogues).
- `StreamingSpeechGenerator`: the embedding-to-TTS interface, as a Protocol. NOT implemented beyond the interface:
  there is no LLM producing response embeddings and no speech generation here. `ScriptedSpeech` is the stand-in
  used in the simulation: it plays pre-synthesized (espeak-ng) responses and ignores the embeddings.

Timing convention (shared by the simulator, the labels and the metrics): block b covers samples
[b * block, (b + 1) * block). The token decided at the end of block b sets the state of block b + 1, so an event's
time is the end of the block where it was decided, (b + 1) * block / sample_rate seconds.
"""

from dataclasses import dataclass, field
from typing import Protocol

import torch

from paperzoo.core.errors import require
from paperzoo.speech.data.audio import SAMPLE_RATE

#: the two states of the loop.
LISTEN, SPEAK = 0, 1
#: the state tokens, by id: `<think>` (listening, stay silent), `<shift>` (switch state), `<speak>` (keep speaking;
#: in the paper the LLM emits response text here).
THINK, SHIFT, CONTINUE = 0, 1, 2
TOKENS = ("<think>", "<shift>", "<speak>")
#: the label of blocks with no decision to learn (padding; the block where the response ran out by itself).
IGNORE = -100
#: 80 ms blocks at 16 kHz.
BLOCK_SAMPLES = 1280


class BlockPolicy(Protocol):
    """Decides, at the end of each block, whether to `<shift>` (True) or stay in the current state (False)."""

    def reset(self) -> None:
        """Forget everything (a new dialogue starts)."""

    def decide(self, mic: torch.Tensor, playback: torch.Tensor, state: int) -> bool:
        """mic, playback: this block's samples [block]; state: LISTEN or SPEAK during this block."""
        ...


class StreamingSpeechGenerator(Protocol):
    """The embedding-to-TTS interface of SALMONN-omni (the LLM's response hidden states drive a streaming
    flow-matching synthesizer). Only the interface is defined: paperzoo has no LLM or TTS for it. `ScriptedSpeech`
    plays recorded responses in its place."""

    def start(self, embeddings: torch.Tensor | None = None) -> None:
        """Begin a response; `embeddings` [N, D] are the LLM's response hidden states so far (None: none yet)."""

    def feed(self, embeddings: torch.Tensor) -> None:
        """More response hidden states [N, D], as the LLM produces them while speaking."""

    def read(self, num_samples: int) -> torch.Tensor:
        """The next `num_samples` of speech [num_samples] (zeros past the end of the response)."""
        ...

    @property
    def finished(self) -> bool:
        """Whether the current response has been played to its end."""
        ...

    def stop(self) -> None:
        """Cut the current response (barge-in); the rest is never played."""


class ScriptedSpeech:
    """A `StreamingSpeechGenerator` stand-in that plays `responses` (waveforms [S]) one per `start`, in order,
    ignoring the embeddings. After the last one it starts again from the first."""

    def __init__(self, responses: list[torch.Tensor]):
        require(len(responses) > 0, "ScriptedSpeech needs at least one response waveform")
        self.responses = responses
        self.reset()

    def reset(self) -> None:
        self.index = -1  # the response being played (or last played)
        self.position = 0
        self.active = False

    def start(self, embeddings: torch.Tensor | None = None) -> None:
        self.index += 1
        self.position = 0
        self.active = True

    def feed(self, embeddings: torch.Tensor) -> None:  # the recorded responses need no embeddings
        pass

    @property
    def current(self) -> torch.Tensor:
        return self.responses[self.index % len(self.responses)]

    def read(self, num_samples: int) -> torch.Tensor:
        out = torch.zeros(num_samples)
        if self.active:
            chunk = self.current[self.position : self.position + num_samples]
            out[: chunk.numel()] = chunk
            self.position += num_samples
        return out

    @property
    def finished(self) -> bool:
        return not self.active or self.position >= self.current.numel()

    def stop(self) -> None:
        self.active = False


@dataclass
class Event:
    """A state change: "start" (<shift> to SPEAK), "stop" (<shift> to LISTEN), "finished" (the response ended)."""

    kind: str
    block: int  # decided at the end of this block
    time: float  # seconds: (block + 1) * block_samples / sample_rate


@dataclass
class DuplexScheduler:
    """The time-block loop. Per block: `playback_block()` (what the loudspeaker plays now), then
    `observe(mic_block)` (what the microphone heard meanwhile) -> the token decided for the next block.

    Args:
        policy: decides `<shift>` per block.
        speech: the streaming TTS (here `ScriptedSpeech`).
        block_samples: samples per block (1280 = 80 ms at 16 kHz).
        sample_rate: Hz, for event times.
    """

    policy: BlockPolicy
    speech: StreamingSpeechGenerator
    block_samples: int = BLOCK_SAMPLES
    sample_rate: int = SAMPLE_RATE
    state: int = LISTEN
    block: int = 0
    events: list[Event] = field(default_factory=list)
    states: list[int] = field(default_factory=list)  # the state during each observed block
    tokens: list[int] = field(default_factory=list)  # the token decided at the end of each block (IGNORE: none)
    _playback: torch.Tensor | None = None

    def reset(self) -> None:
        self.policy.reset()
        if hasattr(self.speech, "reset"):
            self.speech.reset()  # type: ignore[attr-defined]
        self.state, self.block, self._playback = LISTEN, 0, None
        self.events, self.states, self.tokens = [], [], []

    def playback_block(self) -> torch.Tensor:
        """The samples [block_samples] played during the current block (zeros while listening)."""
        if self._playback is None:
            if self.state == SPEAK:
                self._playback = self.speech.read(self.block_samples)
            else:
                self._playback = torch.zeros(self.block_samples)
        return self._playback

    def observe(self, mic: torch.Tensor) -> int:
        """Close the current block: the policy sees (mic, playback, state); returns the token (or IGNORE when the
        response ended by itself during this block) and moves to the next block."""
        require(
            mic.shape == (self.block_samples,),
            f"a mic block must have shape ({self.block_samples},), got {tuple(mic.shape)}",
        )
        playback = self.playback_block()
        shift = self.policy.decide(mic, playback, self.state)  # always called: a stateful policy sees every block
        time = (self.block + 1) * self.block_samples / self.sample_rate
        self.states.append(self.state)
        if self.state == SPEAK and self.speech.finished:
            token = IGNORE
            self.state = LISTEN
            self.events.append(Event("finished", self.block, time))
        elif shift:
            token = SHIFT
            if self.state == LISTEN:
                self.speech.start(None)
                self.state = SPEAK
                self.events.append(Event("start", self.block, time))
            else:
                self.speech.stop()
                self.state = LISTEN
                self.events.append(Event("stop", self.block, time))
        else:
            token = THINK if self.state == LISTEN else CONTINUE
        self.tokens.append(token)
        self.block += 1
        self._playback = None
        return token

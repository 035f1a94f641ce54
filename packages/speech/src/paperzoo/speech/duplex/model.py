"""A small streaming model of SALMONN-omni's per-block state decisions, and its policy for the scheduler.

SALMONN-omni (https://arxiv.org/abs/2411.18138) feeds a streaming (Mamba) speech encoder's embeddings of two
streams, what the microphone hears and what the model itself plays, to an LLM once per time block; the LLM emits
`<think>` (stay listening), `<shift>` (switch between listening and speaking) or response text (speaking).

Implemented (the component, at toy scale): `DuplexStateModel` reads per-block Kaldi fbank features of the two
streams (8 frames of 10 ms per 80 ms block) and the current state, runs a causal GRU over blocks (the stand-in for
the streaming encoder + LLM; strictly causal, so a block's output never depends on later blocks) and predicts the
block's state token among `<think>`, `<shift>`, `<speak>`; the token that the current state rules out is masked
(listening cannot `<speak>`, speaking cannot `<think>`), so each block is effectively "shift or stay".
Not implemented: the LLM, response text, the Mamba encoder, the embedding-driven streaming TTS, the paper's
training stages and DPO.

Block features are computed with `paperzoo.speech.data.features.fbank` on each block plus the 240 samples before
it (a 25 ms window at a 10 ms shift needs 15 ms of history): identical to the whole-signal features, so training
(one fbank call per dialogue) and streaming (one call per block) see the same numbers.
"""

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import require
from paperzoo.speech.data.audio import SAMPLE_RATE
from paperzoo.speech.data.features import FRAME_LENGTH_MS, FRAME_SHIFT_MS, fbank
from paperzoo.speech.duplex.scheduler import BLOCK_SAMPLES, LISTEN, SHIFT, SPEAK

FRAME_SHIFT = int(SAMPLE_RATE * FRAME_SHIFT_MS / 1000)  # 160 samples
FRAME_LENGTH = int(SAMPLE_RATE * FRAME_LENGTH_MS / 1000)  # 400 samples
#: samples of history a block's first frame needs.
CONTEXT = FRAME_LENGTH - FRAME_SHIFT
#: fixed input scaling of the log-mel values (digital silence is log(eps) = -15.9; noise ~7, speech up to ~26).
FBANK_OFFSET, FBANK_SCALE = 12.0, 6.0
#: which tokens each state allows: listening -> <think> | <shift>; speaking -> <shift> | <speak>.
VALID_TOKENS = torch.tensor([[True, True, False], [False, True, True]])


def frames_per_block(block_samples: int = BLOCK_SAMPLES) -> int:
    require(block_samples % FRAME_SHIFT == 0, f"block_samples must be a multiple of {FRAME_SHIFT}, got {block_samples}")
    return block_samples // FRAME_SHIFT


def block_features(waveform: torch.Tensor, num_mel_bins: int = 40, block_samples: int = BLOCK_SAMPLES) -> torch.Tensor:
    """Per-block fbank features [N, frames_per_block, num_mel_bins] of `waveform` [N * block_samples] (a shorter
    last block is zero-padded). Block b's frames end exactly at the block's last sample."""
    frames = frames_per_block(block_samples)
    blocks = -(-waveform.numel() // block_samples)
    padded = F.pad(waveform, (CONTEXT, blocks * block_samples - waveform.numel()))
    return fbank(padded, num_mel_bins=num_mel_bins).reshape(blocks, frames, num_mel_bins)


def segment_features(segments: torch.Tensor, num_mel_bins: int = 40) -> torch.Tensor:
    """Streaming features [C, frames_per_block, num_mel_bins] of C channels' current blocks, each given with its
    history as `segments` [C, CONTEXT + block_samples], in one fbank call (each segment is padded to a whole number
    of frame shifts and the frames straddling two segments are dropped)."""
    channels, length = segments.shape
    block_samples = length - CONTEXT
    frames = frames_per_block(block_samples)
    stride = -(-length // FRAME_SHIFT)  # frames per padded segment
    padded = F.pad(segments, (0, stride * FRAME_SHIFT - length)).reshape(-1)
    features = fbank(padded, num_mel_bins=num_mel_bins)  # [~stride * C, F]
    index = (torch.arange(channels)[:, None] * stride + torch.arange(frames)[None, :]).reshape(-1)
    return features[index].reshape(channels, frames, num_mel_bins)


def mask_invalid(logits: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """logits [..., 3] with the token the state rules out set to a large negative value; state [...] (0/1)."""
    valid = VALID_TOKENS.to(logits.device)[state.clamp(LISTEN, SPEAK)]
    return logits.masked_fill(~valid, -1e4)


class DuplexStateModel(nn.Module):
    """Per-block state-token logits from the microphone and playback streams, causal over blocks.

    Args:
        num_features: mel bins per frame.
        dim: width of the block embedding and the GRU.
        num_layers: GRU layers.
        frames: fbank frames per block.
        dropout: between GRU layers and on the block embedding.

    Shapes:
        mic, playback: [B, N, frames, num_features]; state: [B, N] long (LISTEN/SPEAK during each block);
        returns logits [B, N, 3] (invalid tokens masked) and the GRU state [num_layers, B, dim].
    """

    def __init__(
        self, num_features: int = 40, dim: int = 64, num_layers: int = 1, frames: int = 8, dropout: float = 0.0
    ):
        super().__init__()
        require(num_features > 0 and dim > 0 and num_layers > 0, "num_features, dim and num_layers must be positive")
        self.num_features, self.frames = num_features, frames
        self.frame = nn.Linear(2 * num_features, dim)
        self.block = nn.Linear(frames * dim, dim)
        self.state_embedding = nn.Embedding(2, dim)
        self.dropout = nn.Dropout(dropout)
        self.rnn = nn.GRU(dim, dim, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(dim, len(VALID_TOKENS[0]))

    def forward(
        self,
        mic: torch.Tensor,
        playback: torch.Tensor,
        state: torch.Tensor,
        hidden: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = (torch.cat([mic, playback], dim=-1) - FBANK_OFFSET) / FBANK_SCALE  # [B, N, frames, 2F]
        x = F.gelu(self.frame(x)).flatten(2)  # [B, N, frames * dim]
        x = F.gelu(self.block(x)) + self.state_embedding(state)  # [B, N, dim]
        y, hidden = self.rnn(self.dropout(x), hidden)  # [B, N, dim]
        return mask_invalid(self.head(y), state), hidden


class ModelPolicy:
    """Runs `DuplexStateModel` one block at a time: `<shift>` when its probability exceeds `threshold`.

    A `BlockPolicy` for one dialogue (`decide`, for `DuplexScheduler`) and a `BatchPolicy` for dialogues played in
    lockstep (`decide_batch`, for `dialogues.simulate_many`: one fbank call and one model call per block for all).
    `probabilities[i]` records dialogue i's `<shift>` probability per block.
    """

    def __init__(self, model: DuplexStateModel, threshold: float = 0.5):
        self.model, self.threshold = model, threshold
        self.reset()

    def reset(self, count: int = 1) -> None:
        rnn = self.model.rnn
        self.hidden = torch.zeros(rnn.num_layers, count, rnn.hidden_size)
        self.history = torch.zeros(count, 2, CONTEXT)  # the last samples of each stream, for the next block's frames
        self.probabilities: list[list[float]] = [[] for _ in range(count)]

    @torch.no_grad()
    def shift_probabilities(
        self, indices: list[int], mic: torch.Tensor, playback: torch.Tensor, states: list[int]
    ) -> torch.Tensor:
        """[b] `<shift>` probabilities of dialogues `indices` for this block; mic, playback: [b, block_samples]."""
        index = torch.tensor(indices)
        segments = torch.cat([self.history[index], torch.stack([mic, playback], dim=1)], dim=2)  # [b, 2, C + S]
        self.history[index] = segments[..., -CONTEXT:]
        b = len(indices)
        features = segment_features(segments.reshape(2 * b, -1), self.model.num_features)
        features = features.reshape(b, 2, *features.shape[1:])  # [b, 2, frames, F]
        was_training = self.model.training
        self.model.eval()
        logits, hidden = self.model(
            features[:, 0, None], features[:, 1, None], torch.tensor(states)[:, None], self.hidden[:, index]
        )
        self.model.train(was_training)
        self.hidden[:, index] = hidden
        probabilities = logits[:, 0].softmax(-1)[:, SHIFT]
        for i, p in zip(indices, probabilities.tolist(), strict=True):
            self.probabilities[i].append(p)
        return probabilities

    def decide_batch(
        self, indices: list[int], mic: torch.Tensor, playback: torch.Tensor, states: list[int]
    ) -> list[bool]:
        return (self.shift_probabilities(indices, mic, playback, states) > self.threshold).tolist()

    def decide(self, mic: torch.Tensor, playback: torch.Tensor, state: int) -> bool:
        return self.decide_batch([0], mic[None], playback[None], [state])[0]

"""The autoregressive attention baseline: an encoder and a causal transformer decoder, trained by teacher forcing with
label smoothing, decoded greedily or by beam search.

The AR baseline of "Paraformer: Fast and Accurate Parallel Transformer for Non-autoregressive End-to-End Speech
Recognition" (Gao et al., 2022, https://arxiv.org/abs/2206.08317), an attention encoder-decoder ("Attention Is All You
Need", https://arxiv.org/abs/1706.03762; "Listen, Attend and Spell", https://arxiv.org/abs/1508.01211) on the same
encoder as Paraformer. Tokens are embedded (initialised N(0, 1/D), a deviation from ESPnet's N(0, 1)), scaled by
sqrt(D) and given FunASR's sinusoidal positions; the decoder input is <sos> y and the target y <eos> (<sos> and <eos>
share id 1).

Loss: cross-entropy with label smoothing eps, averaged over target tokens. PyTorch's smoothing spreads eps over all V
classes (ESPnet spreads it over the V - 1 others): a deviation of eps / V in the target's weight. An optional CTC loss
on the encoder (`ctc_weight`, hybrid CTC/attention training as in ESPnet) is off by default and never used in
decoding.

Decoding (`decode`, batched over utterances): `beam_size` 1 is greedy search; larger sizes run a beam search over all
utterances and beams at once, with the decoder's key/value cache reordered per step. A hypothesis is scored by the
sum of its token log-probabilities including <eos> (no length normalisation); an utterance of T' encoder frames is
cut at ceil(`max_length_ratio` T') tokens (then <eos> is forced). The CTC blank (id 0) is never emitted.

Shapes: B = batch, K = beam, T = frames, N = tokens, D = model width, V = vocabulary.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import require
from paperzoo.speech.asr.ctc import CTCHead
from paperzoo.speech.asr.decoder_layers import DecoderState, TransformerDecoder
from paperzoo.speech.asr.layers import sinusoidal_encoding
from paperzoo.speech.asr.recognizer import SpeechRecognizer
from paperzoo.speech.data.tokenizer import BLANK_ID, IGNORE_ID, SOS_EOS_ID, SPECIALS


class AttentionRecognizer(SpeechRecognizer):
    """An encoder plus an autoregressive transformer decoder.

    Args:
        encoder: maps (features [B, T, F], lengths [B]) to (hidden [B, T, D], lengths) and has `output_dim` = D.
        vocab_size: V, including the special ids.
        num_heads, decoder_layers, ffn_dim, dropout: the decoder (`TransformerDecoder`, causal).
        label_smoothing: eps of the cross-entropy.
        ctc_weight: weight of an auxiliary CTC loss on the encoder (0 = none); loss = (1 - w) att + w ctc.
        beam_size: 1 = greedy search, else beam search (may be changed after training).
        max_length_ratio: decoding stops after ceil(ratio x encoder frames) tokens.
    """

    def __init__(
        self,
        encoder: nn.Module,
        vocab_size: int,
        num_heads: int = 4,
        decoder_layers: int = 2,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        label_smoothing: float = 0.1,
        ctc_weight: float = 0.0,
        beam_size: int = 1,
        max_length_ratio: float = 1.0,
    ):
        super().__init__()
        require(vocab_size > len(SPECIALS), f"the vocabulary must hold tokens beyond the specials, got {vocab_size}")
        require(0.0 <= label_smoothing < 1.0, f"label smoothing must be in [0, 1), got {label_smoothing}")
        require(0.0 <= ctc_weight <= 1.0, f"the CTC weight must be in [0, 1], got {ctc_weight}")
        require(max_length_ratio > 0, f"the maximum length ratio must be positive, got {max_length_ratio}")
        dim = int(encoder.output_dim)
        self.encoder = encoder
        self.embedding = nn.Embedding(vocab_size, dim)
        # std D^-1/2, so that the sqrt(D)-scaled embeddings start at unit scale like the positions (ESPnet and FunASR
        # keep PyTorch's N(0, 1), which starts the residual stream at std sqrt(D))
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)
        self.decoder = TransformerDecoder(dim, num_heads, decoder_layers, ffn_dim, dropout, causal=True)
        self.output = nn.Linear(dim, vocab_size)
        self.ctc = CTCHead(dim, vocab_size) if ctc_weight > 0 else None
        self.vocab_size = vocab_size
        self.label_smoothing = label_smoothing
        self.ctc_weight = ctc_weight
        self.beam_size = beam_size
        self.max_length_ratio = max_length_ratio
        self.positions = sinusoidal_encoding(64, dim)  # [L, D], grown on demand (not a parameter, not saved)

    # --- training ---------------------------------------------------------------------------------------------
    def embed(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """tokens [B, N] -> [B, N, D]: sqrt(D)-scaled embeddings plus positions offset + 1 ... offset + N."""
        dim, end = self.embedding.embedding_dim, offset + tokens.shape[1]
        if self.positions.shape[0] < end or self.positions.device != tokens.device:  # a table cached across steps
            self.positions = sinusoidal_encoding(max(end, 2 * self.positions.shape[0]), dim, device=tokens.device)
        return self.embedding(tokens) * math.sqrt(dim) + self.positions[offset:end]

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        tokens: torch.Tensor,
        token_lengths: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        memory, memory_lengths = self.encoder(features, feature_lengths)
        batch = tokens.shape[0]
        sos = tokens.new_full((batch, 1), SOS_EOS_ID)
        inputs = torch.cat((sos, tokens.clamp(min=0)), dim=1)  # [B, N + 1]: <sos> y (padding read as blank)
        targets = torch.cat((tokens, tokens.new_full((batch, 1), IGNORE_ID)), dim=1)  # [B, N + 1]
        targets[torch.arange(batch, device=tokens.device), token_lengths] = SOS_EOS_ID  # y <eos>
        hidden = self.decoder(self.embed(inputs), memory, memory_lengths)
        logits = self.output(hidden)  # [B, N + 1, V]
        attention = F.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=IGNORE_ID, label_smoothing=self.label_smoothing
        )
        valid = targets != IGNORE_ID
        accuracy = ((logits.argmax(-1) == targets) & valid).sum() / valid.sum()
        losses = {"att": attention.detach(), "acc": accuracy.detach()}
        loss = attention
        if self.ctc is not None:
            ctc = self.ctc.loss(memory, memory_lengths, tokens, token_lengths)
            loss = (1 - self.ctc_weight) * attention + self.ctc_weight * ctc
            losses["ctc"] = ctc.detach()
        losses["loss"] = loss
        return losses

    # --- decoding ---------------------------------------------------------------------------------------------
    def _log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """Decoder output [..., D] -> next-token log-probabilities [..., V], the blank excluded."""
        logits = self.output(hidden)
        logits[..., BLANK_ID] = float("-inf")
        return logits.log_softmax(dim=-1)

    def max_lengths(self, memory_lengths: torch.Tensor) -> torch.Tensor:
        """[B] the most tokens (before <eos>) each utterance may decode."""
        return torch.ceil(memory_lengths.float() * self.max_length_ratio).long().clamp(min=1)

    @torch.no_grad()
    def decode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> list[list[int]]:
        memory, memory_lengths = self.encoder(features, feature_lengths)
        max_lengths = self.max_lengths(memory_lengths)
        if self.beam_size == 1:
            return self.greedy_search(memory, memory_lengths, max_lengths)
        return self.beam_search(memory, memory_lengths, max_lengths, self.beam_size)[0]

    def _step(self, tokens: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState]:
        """The last tokens [R] -> the next-token log-probabilities [R, V] and the advanced state."""
        hidden, state = self.decoder.step(self.embed(tokens[:, None], offset=state.length), state)
        return self._log_probs(hidden[:, -1]), state

    def greedy_search(
        self, memory: torch.Tensor, memory_lengths: torch.Tensor, max_lengths: torch.Tensor
    ) -> list[list[int]]:
        """The argmax token at each step, all utterances at once, until every one has emitted <eos>."""
        batch = memory.shape[0]
        state = self.decoder.init_state(memory, memory_lengths)
        last = memory_lengths.new_full((batch,), SOS_EOS_ID)
        finished = torch.zeros(batch, dtype=torch.bool, device=memory.device)
        outputs = []
        for t in range(int(max_lengths.max()) + 1):
            log_probs, state = self._step(last, state)
            log_probs[t >= max_lengths, :] = float("-inf")  # force <eos> at the length limit
            log_probs[t >= max_lengths, SOS_EOS_ID] = 0.0
            last = log_probs.argmax(dim=-1).masked_fill(finished, SOS_EOS_ID)
            outputs.append(last)
            finished |= last == SOS_EOS_ID
            if bool(finished.all()):
                break
        tokens = torch.stack(outputs, dim=1).tolist()  # [B, steps]
        return [row[: row.index(SOS_EOS_ID)] if SOS_EOS_ID in row else row for row in tokens]

    def beam_search(
        self, memory: torch.Tensor, memory_lengths: torch.Tensor, max_lengths: torch.Tensor, beam_size: int
    ) -> tuple[list[list[int]], torch.Tensor]:
        """Beam search over all utterances and beams at once.

        Each of the B x K rows is one hypothesis. At every step each unfinished hypothesis is extended by every
        token, a finished one only by <eos> at no cost (so it keeps competing with its score), and the best K of
        the K x V extensions per utterance survive. Stops when every hypothesis has ended.

        Returns:
            The best hypothesis of each utterance (without <eos>) and its score [B] (sum of log-probabilities with
            <eos>).
        """
        require(beam_size >= 1, f"the beam size must be >= 1, got {beam_size}")
        batch, vocab, device = memory.shape[0], self.vocab_size, memory.device
        rows = torch.arange(batch, device=device).repeat_interleave(beam_size)  # [B K] row -> utterance
        state = self.decoder.init_state(memory, memory_lengths).select(rows)
        row_max = max_lengths[rows]  # [B K]
        scores = torch.full((batch, beam_size), float("-inf"), device=device)
        scores[:, 0] = 0.0  # one live hypothesis (<sos>) per utterance at the start
        last = torch.full((batch * beam_size,), SOS_EOS_ID, dtype=torch.long, device=device)
        finished = torch.zeros(batch * beam_size, dtype=torch.bool, device=device)
        history = torch.zeros(batch * beam_size, 0, dtype=torch.long, device=device)
        eos_only = torch.full((vocab,), float("-inf"), device=device)
        eos_only[SOS_EOS_ID] = 0.0
        for t in range(int(max_lengths.max()) + 1):
            log_probs, state = self._step(last, state)  # [B K, V]
            at_limit = t >= row_max
            log_probs[at_limit] = torch.where(eos_only == 0.0, log_probs[at_limit], eos_only)
            log_probs[finished] = eos_only
            candidates = (scores.view(-1, 1) + log_probs).view(batch, beam_size * vocab)  # [B, K V]
            scores, best = candidates.topk(beam_size, dim=-1)  # [B, K]
            source = (best // vocab + torch.arange(batch, device=device)[:, None] * beam_size).view(-1)  # [B K]
            last = (best % vocab).view(-1)
            state = state.select(source)
            history = torch.cat((history[source], last[:, None]), dim=1)
            finished = finished[source] | (last == SOS_EOS_ID) | torch.isinf(scores.view(-1))
            if bool(finished.all()):
                break
        winner = scores.argmax(dim=-1)  # [B]
        best_rows = history[torch.arange(batch, device=device) * beam_size + winner].tolist()
        hypotheses = [row[: row.index(SOS_EOS_ID)] if SOS_EOS_ID in row else row for row in best_rows]
        return hypotheses, scores.gather(1, winner[:, None]).squeeze(1)

    @torch.no_grad()
    def score(self, features: torch.Tensor, feature_lengths: torch.Tensor, hypothesis: list[int]) -> float:
        """log P(hypothesis <eos> | one utterance) with the decoding log-probabilities, by one teacher-forced pass
        (the reference that beam search is tested against)."""
        memory, memory_lengths = self.encoder(features[:1], feature_lengths[:1])
        tokens = torch.tensor([[SOS_EOS_ID, *hypothesis]], device=features.device)
        log_probs = self._log_probs(self.decoder(self.embed(tokens), memory, memory_lengths))[0]  # [N + 1, V]
        targets = torch.tensor([*hypothesis, SOS_EOS_ID], device=features.device)
        return float(log_probs.gather(1, targets[:, None]).sum())

"""ColBERTer: a single-vector score fused with late interaction over unique, gated whole-word vectors.

Paper: Hofstätter, Khattab, Althammer, Sertkan, Hanbury, "Introducing Neural Bag of Whole-Words with ColBERTer:
Contextualized Late Interactions using Enhanced Reduction", https://arxiv.org/abs/2203.13088 (CATALOG 33).

What is implemented (on all-MiniLM-L6-v2, `paperzoo.retrieval.encoder.MiniLMEncoder`):
- the single-vector component: the pooled encoder output projected to `cls_dim` (the paper's CLS vector, used
  for candidate retrieval), scored by inner product (a scaled cosine with `normalize`, see below);
- the token component: the encoder's token states projected to `token_dim` (dimension reduction, applied before
  the pooling as in the reference code; a linear map commutes with the mean, so the order does not change the
  result), scored by MaxSim;
- BOW^2 ("bag of whole-words"): the subword vectors of each whole word are mean-pooled, and every occurrence of
  the same word in a text goes into the same pool, so a text keeps one vector per unique word (`bow2_pool`);
- contextualised stopwords: a gate `g = ReLU(W x + b)` per document word (bias initialised to 1, so training
  starts with every word kept) multiplies the word's vector; its mean is the sparsity loss (task.py) and words
  with `g = 0` are dropped at index time;
- the learned score aggregation `s = sigmoid(a) * s_cls + (1 - sigmoid(a)) * s_tok`, `a` initialised to 0;
- Uni-ColBERTer: a second projection down to `stored_dim` (1) after the gate, with exact-match scoring: a query
  word only interacts with the document word that is the same word (`exact_match_maxsim`).

Plain ColBERT (the baseline) is the same module with `cls_dim=0, bow2=False, stopwords=False, token_dim=128`: every
subword vector of the text, [CLS] and [SEP] included, is kept.

Deviations from the paper:
- the single vector pools the token states by their mean (`cls_pooling="mean"`) by default: all-MiniLM-L6-v2 was
  trained to be read out that way, while the paper's DistilBERT used its [CLS] state (`cls_pooling="cls"`);
- the gate is the reference code's ReLU gate: it reaches exact zeros, and a word whose gate is 0 is what gets
  removed at index time; the issue text called it a sigmoid gate, which never reaches 0 and would need a
  threshold;
- whole words are identified by their exact WordPiece subword sequence (the uncased tokenizer lowercases), not by
  a stemmed form as in one of the paper's variants;
- with `normalize=True` (default) the single vector and the token vectors are L2-normalised (ColBERT's cosine
  MaxSim; the single vector's cosine is scaled by `single_scale` = 20, sentence-transformers' contrastive scale),
  before the stopword gate, so a kept word's gate is its vector's length; Uni-ColBERTer's second projection then
  maps the normalised, gated 32-d vector to its one dimension. The reference ColBERTer scores raw inner products;
  on a frozen or briefly tuned MiniLM the cosine geometry is where the encoder is good, and the projections start
  (semi-)orthogonal so that it is approximately preserved at initialisation.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.errors import require
from paperzoo.retrieval.encoder import MiniLMEncoder
from paperzoo.retrieval.late.scoring import maxsim

NO_WORD = -1  # the word key of [CLS], [SEP] and padding (Python's hash never returns -1)


class Representation(NamedTuple):
    """A batch of encoded texts.

    Fields:
        single: [B, cls_dim] the single vector, None without the single-vector component.
        vectors: [B, W, D] one vector per unique whole word (BOW^2) or per subword token, gated for documents.
        mask: [B, W] bool, the vectors that are stored / scored.
        keys: [B, W] long, what each vector stands for (whole-word key with BOW^2, else the token id), for
            exact-match scoring.
        gate: [B, W] the stopword gate of each document vector (None for queries or without stopwords).
    """

    single: torch.Tensor | None
    vectors: torch.Tensor
    mask: torch.Tensor
    keys: torch.Tensor
    gate: torch.Tensor | None


def whole_word_keys(input_ids: torch.Tensor, word_ids: torch.Tensor) -> torch.Tensor:
    """The identity of the whole word each token belongs to: a hash of the word's subword ids, equal for every
    occurrence of the word in any text. input_ids, word_ids [B, L] (word_ids from `encoder.tokenize`, -1 for
    special tokens and padding) -> [B, L] long, `NO_WORD` where word_ids is -1."""
    rows = []
    for ids, words in zip(input_ids.tolist(), word_ids.tolist(), strict=True):
        subwords: dict[int, list[int]] = {}
        for token, word in zip(ids, words, strict=True):
            if word >= 0:
                subwords.setdefault(word, []).append(token)
        key_of = {word: hash(tuple(tokens)) for word, tokens in subwords.items()}
        rows.append([key_of[word] if word >= 0 else NO_WORD for word in words])
    return torch.tensor(rows, dtype=torch.long, device=input_ids.device).reshape(input_ids.shape)


def bow2_pool(vectors: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BOW^2: mean-pool the subword vectors of each unique whole word of a text (all its occurrences together).

    Args:
        vectors: [B, L, D] subword vectors.
        keys: [B, L] whole-word keys (`whole_word_keys`), `NO_WORD` for tokens that belong to no word.

    Returns:
        pooled [B, W, D] (W = most unique words in a text, rows padded with zeros), their keys [B, W] (`NO_WORD` in
        padding) and mask [B, W] bool. Within a row the words are in order of their keys.
    """
    batch, _, dim = vectors.shape
    real = keys != NO_WORD  # [B, L]
    rows = torch.arange(batch, device=keys.device)[:, None].expand_as(keys)[real]  # [T]
    # unique (row, key) pairs through one 1-d unique: keys -> dense ranks, then row * ranks + rank
    distinct, rank = torch.unique(keys[real], return_inverse=True)
    pair_ids, inverse = torch.unique(rows * len(distinct) + rank, return_inverse=True)  # sorted by row, then key
    unique = torch.stack([pair_ids // len(distinct), distinct[pair_ids % len(distinct)]], dim=1)  # [U, (row, key)]
    count = unique.shape[0]
    sums = vectors.new_zeros(count, dim).index_add(0, inverse, vectors[real])
    sizes = torch.bincount(inverse, minlength=count).to(vectors.dtype)
    pooled_flat = sums / sizes[:, None]  # [U, D]
    words_per_row = torch.bincount(unique[:, 0], minlength=batch)  # [B]
    first_of_row = torch.cumsum(words_per_row, 0) - words_per_row
    slot = torch.arange(count, device=keys.device) - first_of_row[unique[:, 0]]  # position within its row
    width = max(int(words_per_row.max()) if batch else 0, 1)
    pooled = vectors.new_zeros(batch, width, dim)
    pooled[unique[:, 0], slot] = pooled_flat
    pooled_keys = torch.full((batch, width), NO_WORD, dtype=keys.dtype, device=keys.device)
    pooled_keys[unique[:, 0], slot] = unique[:, 1]
    mask = pooled_keys != NO_WORD
    return pooled, pooled_keys, mask


def exact_match_maxsim(
    queries: torch.Tensor,
    query_mask: torch.Tensor,
    query_keys: torch.Tensor,
    docs: torch.Tensor,
    doc_mask: torch.Tensor,
    doc_keys: torch.Tensor,
    chunk: int = 256,
) -> torch.Tensor:
    """Uni-ColBERTer's exact-match MaxSim: sum over query vectors of the max over document vectors, where a pair of
    different words scores 0 (as in the reference code: a query word with no match adds 0, and a match with a
    negative product loses to the zeros of the non-matching words).

    Args:
        queries [Q, Lq, D], query_mask, query_keys [Q, Lq]; docs [N, Ld, D], doc_mask, doc_keys [N, Ld].

    Returns:
        [Q, N].
    """
    scores = []
    for start in range(0, docs.shape[0], chunk):
        block, block_mask, block_keys = (t[start : start + chunk] for t in (docs, doc_mask, doc_keys))
        sims = torch.einsum("qid,njd->qnij", queries, block)  # [Q, n, Lq, Ld]
        same_word = query_keys[:, None, :, None] == block_keys[None, :, None, :]  # [Q, n, Lq, Ld]
        sims = torch.where(same_word, sims, torch.zeros((), dtype=sims.dtype, device=sims.device))
        sims = sims.masked_fill(~block_mask.bool()[None, :, None, :], float("-inf"))
        best = sims.amax(-1).nan_to_num(0.0, neginf=0.0)  # [Q, n, Lq]
        scores.append((best * query_mask[:, None, :].to(best.dtype)).sum(-1))
    return torch.cat(scores, dim=1)


class ColBERTer(nn.Module):
    """ColBERTer over all-MiniLM-L6-v2 (see the module docstring for the paper and the deviations).

    Args:
        cls_dim: dimension of the single vector; 0 turns the single-vector component (and the score aggregation) off.
        token_dim: dimension the token states are projected to (BOW^2 pooling and the stopword gate work here).
        stored_dim: a second projection after the gate (Uni-ColBERTer: 1); None stores `token_dim` vectors.
        bow2: pool subwords into unique whole words; False keeps every subword token ([CLS] and [SEP] included).
        stopwords: learn contextualised stopwords on documents.
        exact_match: score only pairs of the same word (the same token without BOW^2), Uni-ColBERTer's scoring.
        cls_pooling: "mean" (all-MiniLM-L6-v2's readout) or "cls" (the [CLS] state, the paper's).
        normalize: L2-normalise the single and the token vectors (cosine scores); False scores raw inner products
            as the reference code.
        single_scale: the factor on the single vector's cosine (with `normalize`).
        trainable_layers, pretrained, num_layers: the encoder's (`MiniLMEncoder`).

    Shapes:
        encode: input_ids, attention_mask, word_ids [B, L] -> `Representation` (W vectors per text).
        score: queries (Q texts), documents (N texts) -> {"fused", "single", "tokens"} each [Q, N].
    """

    def __init__(
        self,
        cls_dim: int = 128,
        token_dim: int = 32,
        stored_dim: int | None = None,
        bow2: bool = True,
        stopwords: bool = True,
        exact_match: bool = False,
        cls_pooling: str = "mean",
        normalize: bool = True,
        single_scale: float = 20.0,
        trainable_layers: int = 2,
        pretrained: bool = True,
        num_layers: int = 6,
    ):
        super().__init__()
        require(cls_dim >= 0, f"cls_dim must be >= 0 (0 turns the single vector off), got {cls_dim}")
        require(token_dim >= 1, f"token_dim must be >= 1, got {token_dim}")
        require(stored_dim is None or stored_dim >= 1, f"stored_dim must be None or >= 1, got {stored_dim}")
        require(cls_pooling in ("mean", "cls"), f"cls_pooling must be 'mean' or 'cls', got {cls_pooling!r}")
        require(single_scale > 0, f"single_scale must be positive, got {single_scale}")
        self.encoder = MiniLMEncoder(trainable_layers=trainable_layers, pretrained=pretrained, num_layers=num_layers)
        hidden = self.encoder.dim
        self.cls_dim, self.bow2, self.exact_match, self.cls_pooling = cls_dim, bow2, exact_match, cls_pooling
        self.normalize, self.single_scale = normalize, single_scale
        self.cls_projection = nn.Linear(hidden, cls_dim) if cls_dim > 0 else None
        self.token_projection = nn.Linear(hidden, token_dim)
        for projection in (self.cls_projection, self.token_projection):
            if projection is not None:  # a random (semi-)orthogonal map roughly keeps the encoder's geometry
                nn.init.orthogonal_(projection.weight)
                nn.init.zeros_(projection.bias)
        self.stopword_gate = nn.Linear(token_dim, 1) if stopwords else None
        if self.stopword_gate is not None:
            nn.init.constant_(self.stopword_gate.bias, 1.0)  # start with every word kept
        self.second_projection = nn.Linear(token_dim, stored_dim) if stored_dim is not None else None
        self.stored_dim = stored_dim if stored_dim is not None else token_dim
        # sigmoid(0) = 0.5: the two scores start with equal weight
        self.score_merger = nn.Parameter(torch.zeros(1)) if cls_dim > 0 else None

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_ids: torch.Tensor,
        is_document: bool,
        hidden: torch.Tensor | None = None,
        remove_stopwords: bool = False,
    ) -> Representation:
        """Encode a tokenized batch (`encoder.tokenize`'s dict).

        Args:
            hidden: the encoder's frozen prefix states [B, L, 384] (`PrefixCache.batch`), to skip the prefix.
            remove_stopwords: index time: drop the document words whose gate is 0 from the mask (during training
                they stay, with their vectors scaled by the gate, so the gate receives gradients).
        """
        if hidden is None:
            hidden = self.encoder.prefix(input_ids, attention_mask)
        states = self.encoder.suffix(hidden, attention_mask)  # [B, L, 384]
        single = None
        if self.cls_projection is not None:
            if self.cls_pooling == "mean":
                weights = attention_mask.unsqueeze(-1).to(states.dtype)
                pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
            else:
                pooled = states[:, 0]
            single = self.cls_projection(pooled)  # [B, cls_dim]
            if self.normalize:
                single = F.normalize(single, dim=-1)
        tokens = self.token_projection(states)  # [B, L, token_dim]
        if self.bow2:
            vectors, keys, mask = bow2_pool(tokens, whole_word_keys(input_ids, word_ids))
        else:
            vectors, keys, mask = tokens, input_ids, attention_mask.bool()
        if self.normalize:
            vectors = F.normalize(vectors, dim=-1)
        gate = None
        if is_document and self.stopword_gate is not None:
            gate = torch.relu(self.stopword_gate(vectors)).squeeze(-1)  # [B, W]
            vectors = vectors * gate.unsqueeze(-1)
            if remove_stopwords:
                mask = mask & (gate > 0)
        if self.second_projection is not None:
            vectors = self.second_projection(vectors)  # [B, W, stored_dim]
        vectors = vectors * mask.unsqueeze(-1).to(vectors.dtype)  # padding and removed words hold zeros
        return Representation(single, vectors, mask, keys, gate)

    def single_scores(self, queries: Representation, docs: Representation) -> torch.Tensor | None:
        """[Q, N] inner products of the single vectors, times `single_scale` when normalised (None without them)."""
        if queries.single is None or docs.single is None:
            return None
        scores = queries.single @ docs.single.T
        return scores * self.single_scale if self.normalize else scores

    def token_scores(self, queries: Representation, docs: Representation) -> torch.Tensor:
        """[Q, N] MaxSim over the token / whole-word vectors (exact-match MaxSim for Uni-ColBERTer)."""
        if self.exact_match:
            return exact_match_maxsim(queries.vectors, queries.mask, queries.keys, docs.vectors, docs.mask, docs.keys)
        return maxsim(queries.vectors, queries.mask, docs.vectors, docs.mask)

    def fuse(self, single: torch.Tensor | None, tokens: torch.Tensor) -> torch.Tensor:
        """The learned aggregation sigmoid(a) * s_cls + (1 - sigmoid(a)) * s_tok (s_tok alone without s_cls)."""
        if single is None or self.score_merger is None:
            return tokens
        weight = torch.sigmoid(self.score_merger)
        return weight * single + (1 - weight) * tokens

    def score(self, queries: Representation, docs: Representation) -> dict[str, torch.Tensor]:
        """All query-document pairs: {"fused", "tokens"} and, with the single vector, "single"; each [Q, N]."""
        single = self.single_scores(queries, docs)
        tokens = self.token_scores(queries, docs)
        out = {"fused": self.fuse(single, tokens), "tokens": tokens}
        if single is not None:
            out["single"] = single
        return out


def colbert_baseline(token_dim: int = 128, **encoder: int | bool) -> ColBERTer:
    """Plain ColBERT: MaxSim over every subword vector, no single vector, no BOW^2, no stopwords."""
    return ColBERTer(cls_dim=0, token_dim=token_dim, bow2=False, stopwords=False, **encoder)  # type: ignore[arg-type]


def colberter(cls_dim: int = 128, token_dim: int = 32, **encoder: int | bool) -> ColBERTer:
    """ColBERTer with BOW^2 and contextualised stopwords (the paper's CLS 128, BOW^2 32 setting by default)."""
    return ColBERTer(cls_dim=cls_dim, token_dim=token_dim, **encoder)  # type: ignore[arg-type]


def uni_colberter(cls_dim: int = 128, token_dim: int = 32, **encoder: int | bool) -> ColBERTer:
    """Uni-ColBERTer: one dimension per whole word, exact-match scoring."""
    return ColBERTer(cls_dim=cls_dim, token_dim=token_dim, stored_dim=1, exact_match=True, **encoder)  # type: ignore[arg-type]

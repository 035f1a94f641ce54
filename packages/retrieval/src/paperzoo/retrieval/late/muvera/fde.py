"""Fixed Dimensional Encodings (FDEs) of MUVERA.

"MUVERA: Multi-Vector Retrieval via Fixed Dimensional Encodings" (Dhulipala, Hadian, Jayaram, Lee, Mirrokni, 2024),
https://arxiv.org/abs/2405.19504, Section 2.

An FDE maps a set of vectors to one vector whose inner product approximates the Chamfer (MaxSim) similarity
CH(Q, P) = sum_{q in Q} max_{p in P} <q, p>:

1. SimHash space partitioning: k_sim Gaussian hyperplanes g_1..g_k give each vector x the bits
   b_j(x) = 1[<g_j, x> > 0]; its partition is the Gray-code rank of (b_1..b_k), so partitions whose indices differ
   by one differ in one hyperplane bit (the ordering of the reference implementation).
2. Per partition, a query takes the **sum** of its vectors and a document the **average** of its vectors
   (asymmetric: then <sum_q, mean_p> sums every query vector's similarity to the document's centroid in its cell).
3. Empty-partition filling (documents only): a partition that holds none of the document's vectors gets the
   document vector whose SimHash bits are nearest in Hamming distance to the partition's bits.
4. Inner projection to d_proj per vector: an AMS sketch (each coordinate goes to one random output coordinate with a
   random sign, the reference code's choice) or the paper's dense random +/-1 matrix scaled by 1/sqrt(d_proj).
   Both preserve inner products in expectation.
5. R repetitions with fresh randomness, concatenated: dimension R * 2^k_sim * d_proj; <FDE_q, FDE_p> / R estimates
   CH(Q, P).
6. Optional final projection to `final_dim` with a Count Sketch (random bucket and sign per coordinate).

Everything is vectorised over a batch of padded sets (`vectors [B, L, D]`, `mask [B, L]`) and deterministic from
`FDEConfig.seed` (the random matrices come from one seeded `torch.Generator`, drawn on the CPU).

Deviations:
- Random generators differ from the reference C++ and from muvera-python (bit equality is not expected).
- Empty-partition filling decodes a partition index to its SimHash bits with the inverse of the Gray-code ranking
  (bits = g ^ (g >> 1)), so that a vector's own partition is at Hamming distance 0. The reference code (and
  muvera-python, which ports it) decodes with `GrayCodeToBinary` instead, which for k_sim >= 3 compares against the
  bits of another partition; we follow the paper's definition (Hamming distance to the partition's bits).
"""

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch

from paperzoo.core.errors import ConfigError, require

Projection = Literal["ams", "rademacher"]
MAX_K_SIM = 20  # 2^20 partitions per repetition is already far beyond any useful encoding


@dataclass(frozen=True)
class FDEConfig:
    """Settings of a Fixed Dimensional Encoding (the paper's notation in brackets).

    Args:
        k_sim: SimHash hyperplanes per repetition [k_sim]; 2^k_sim partitions. 0 puts every vector in one partition.
        d_proj: inner projection dimension [d_proj]; None keeps the input dimension (identity projection).
        repetitions: independent repetitions [R_reps], concatenated.
        final_dim: Count Sketch final projection [d_final]; None keeps R * 2^k_sim * d_proj.
        seed: seed of every random matrix.
        fill_empty: fill a document's empty partitions with its Hamming-nearest vector.
        projection: "ams" (sparse AMS sketch, the reference code) or "rademacher" (dense +/-1 / sqrt(d_proj), the
            paper's formula); only used when `d_proj` is set.
    """

    k_sim: int = 5
    d_proj: int | None = 16
    repetitions: int = 20
    final_dim: int | None = None
    seed: int = 0
    fill_empty: bool = True
    projection: Projection = "ams"

    def __post_init__(self) -> None:
        require(0 <= self.k_sim <= MAX_K_SIM, f"k_sim must be in [0, {MAX_K_SIM}], got {self.k_sim}")
        require(self.d_proj is None or self.d_proj >= 1, f"d_proj must be None or at least 1, got {self.d_proj}")
        require(self.repetitions >= 1, f"repetitions must be at least 1, got {self.repetitions}")
        require(
            self.final_dim is None or self.final_dim >= 1, f"final_dim must be None or at least 1, got {self.final_dim}"
        )
        require(
            self.projection in ("ams", "rademacher"),
            f"projection must be 'ams' or 'rademacher', got {self.projection!r}",
        )

    @property
    def num_partitions(self) -> int:
        return 2**self.k_sim

    def projected_dim(self, dim: int) -> int:
        return dim if self.d_proj is None else self.d_proj

    def raw_dim(self, dim: int) -> int:
        """R * 2^k_sim * d_proj: the dimension before the final projection."""
        return self.repetitions * self.num_partitions * self.projected_dim(dim)

    def output_dim(self, dim: int) -> int:
        """Dimension of the FDE of `dim`-dimensional vectors."""
        return self.raw_dim(dim) if self.final_dim is None else self.final_dim


def bits_to_int(bits: torch.Tensor) -> torch.Tensor:
    """Bits [..., k] (b_1 most significant) -> the integer they spell [...] int64."""
    k = bits.shape[-1]
    weights = 2 ** torch.arange(k - 1, -1, -1, device=bits.device)
    return (bits.long() * weights).sum(-1)


def gray_to_rank(gray: torch.Tensor) -> torch.Tensor:
    """The rank of a Gray code (Gray-to-binary: bit j of the rank is the XOR of the code's bits 1..j)."""
    rank, shift = gray.clone(), 1
    while shift < 64:
        rank ^= rank >> shift
        shift <<= 1
    return rank


def gray_code_rank(bits: torch.Tensor) -> torch.Tensor:
    """Partition index of SimHash bits: the rank of (b_1..b_k) read as a Gray code, b_1 most significant.

    Consecutive ranks differ in one hyperplane bit. bits [..., k] (bool or 0/1) -> [...] int64.
    """
    return gray_to_rank(bits_to_int(bits))


def partition_codes(k_sim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The SimHash bits of every partition as integers (binary-to-Gray of the index): [2^k_sim] int64."""
    index = torch.arange(2**k_sim, device=device)
    return index ^ (index >> 1)


def partition_bits(k_sim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The SimHash bits of every partition, the inverse of `gray_code_rank`: [2^k_sim, k_sim] float (0/1)."""
    shifts = torch.arange(k_sim - 1, -1, -1, device=device)
    return ((partition_codes(k_sim, device)[:, None] >> shifts) & 1).float()


@lru_cache(maxsize=8)
def popcount_table(k_sim: int) -> torch.Tensor:
    """Number of set bits of every k_sim-bit integer: [2^k_sim] int64 (Hamming distance = popcount of the XOR)."""
    shifts = torch.arange(k_sim - 1, -1, -1)
    return ((torch.arange(2**k_sim)[:, None] >> shifts) & 1).sum(-1)


@dataclass(frozen=True)
class FDERandomness:
    """The random matrices of one (config, input dimension): everything an encoding draws.

    Shapes:
        hyperplanes [R, D, k_sim]; projection [R, D, d_proj] or None (identity);
        sketch_bucket, sketch_sign [R * 2^k_sim * d_proj] or None (no final projection).
    """

    hyperplanes: torch.Tensor
    projection: torch.Tensor | None
    sketch_bucket: torch.Tensor | None
    sketch_sign: torch.Tensor | None

    def to(self, device: torch.device) -> "FDERandomness":
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return FDERandomness(
            move(self.hyperplanes), move(self.projection), move(self.sketch_bucket), move(self.sketch_sign)
        )


@lru_cache(maxsize=16)
def fde_randomness(config: FDEConfig, dim: int) -> FDERandomness:
    """Draw the random matrices of `config` for `dim`-dimensional vectors from one generator seeded with
    `config.seed` (hyperplanes, then the inner projection, then the final Count Sketch); cached."""
    require(dim >= 1, f"the vectors must have at least one dimension, got {dim}")
    generator = torch.Generator().manual_seed(config.seed)
    R, k = config.repetitions, config.k_sim
    hyperplanes = torch.randn(R, dim, k, generator=generator)  # [R, D, k]
    projection = None
    if config.d_proj is not None:
        e = config.d_proj
        signs = torch.randint(0, 2, (R, dim, e), generator=generator).float() * 2 - 1
        if config.projection == "rademacher":
            projection = signs / e**0.5  # [R, D, e] dense +/-1 / sqrt(d_proj)
        else:  # AMS sketch: row d has one non-zero, at a random column, with a random sign
            bucket = torch.randint(0, e, (R, dim), generator=generator)
            projection = torch.zeros(R, dim, e).scatter_(2, bucket[..., None], signs[..., :1])
    bucket_of, sign_of = None, None
    if config.final_dim is not None:
        raw = config.raw_dim(dim)
        bucket_of = torch.randint(0, config.final_dim, (raw,), generator=generator)
        sign_of = torch.randint(0, 2, (raw,), generator=generator).float() * 2 - 1
    return FDERandomness(hyperplanes, projection, bucket_of, sign_of)


def _check_sets(vectors: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if vectors.ndim != 3:
        raise ConfigError(f"vectors must be a padded batch of sets [B, L, D], got shape {tuple(vectors.shape)}")
    if mask is None:
        return torch.ones(vectors.shape[:2], dtype=torch.bool, device=vectors.device)
    if mask.shape != vectors.shape[:2]:
        raise ConfigError(f"mask must have shape {tuple(vectors.shape[:2])} [B, L], got {tuple(mask.shape)}")
    return mask.bool()


def _encode(
    vectors: torch.Tensor, mask: torch.Tensor, config: FDEConfig, randomness: FDERandomness, is_query: bool
) -> torch.Tensor:
    """The FDE of one batch, before the final projection: [B, L, D] -> [B, R * P * e].

    Layout: every (set b, repetition r, partition p) is one row `(b * R + r) * P + p` of a [B * R * P, e] table;
    padded vectors go to one extra row that is dropped, so they never count.
    """
    B, L, D = vectors.shape
    R, P, k = config.repetitions, config.num_partitions, config.k_sim
    x = vectors.reshape(B * L, D).float()  # [B*L, D]
    real = mask.reshape(B * L)
    # SimHash bits of every vector in every repetition: one GEMM over all repetitions
    hyperplanes = randomness.hyperplanes.permute(1, 0, 2).reshape(D, R * k)
    codes = bits_to_int((x @ hyperplanes).view(B * L, R, k) > 0)  # [B*L, R] each vector's bits as an integer
    partition = gray_to_rank(codes)  # [B*L, R] (all 0 when k = 0)
    row = (torch.arange(B).repeat_interleave(L)[:, None] * R + torch.arange(R)) * P + partition  # [B*L, R]
    row = row.masked_fill(~real[:, None], B * R * P)  # padding -> the extra row
    identity = randomness.projection is None
    if identity:
        e = D
        projected = x  # [B*L, e], the same in every repetition
        sums = torch.zeros(B * R * P + 1, e)
        for r in range(R):
            sums.index_add_(0, row[:, r], x)
    else:
        e = randomness.projection.shape[-1]
        projected = (x @ randomness.projection.permute(1, 0, 2).reshape(D, R * e)).view(B * L * R, e)
        sums = torch.zeros(B * R * P + 1, e).index_add_(0, row.reshape(-1), projected)
    sums = sums[:-1]  # [B*R*P, e]
    if is_query:
        return sums.view(B, R * P * e)
    counts = torch.bincount(row.reshape(-1), minlength=B * R * P + 1)[:-1]  # [B*R*P]
    means = sums / counts.clamp_min(1)[:, None].to(sums.dtype)
    if config.fill_empty and k > 0:
        empty = (counts.view(B, R, P) == 0) & mask.any(1)[:, None, None]  # a set with no vector stays zero
        b, r, p = empty.nonzero(as_tuple=True)  # the empty cells [E]
        if len(b):
            # Hamming distance of each vector's bits to the partition's bits: popcount of the XOR of the integers;
            # padding is put beyond any real distance
            per_set = codes.view(B, L, R).permute(0, 2, 1).contiguous()  # [B, R, L]
            distance = popcount_table(k)[per_set[b, r] ^ partition_codes(k)[p][:, None]]  # [E, L]
            distance.masked_fill_(~mask[b], k + 1)
            nearest = distance.argmin(-1)  # [E]; ties go to the first vector
            source = b * L + nearest  # rows of x
            means[(b * R + r) * P + p] = x[source] if identity else projected[source * R + r]
    return means.view(B, R * P * e)


def _final_projection(fde: torch.Tensor, config: FDEConfig, randomness: FDERandomness) -> torch.Tensor:
    """Count Sketch [B, raw] -> [B, final_dim]: out[:, h(i)] += s(i) * fde[:, i]."""
    if config.final_dim is None:
        return fde
    out = torch.zeros(fde.shape[0], config.final_dim, dtype=fde.dtype)
    return out.index_add_(1, randomness.sketch_bucket, fde * randomness.sketch_sign)


def encode(
    vectors: torch.Tensor,
    mask: torch.Tensor | None,
    config: FDEConfig,
    is_query: bool,
    batch_size: int = 256,
    randomness: FDERandomness | None = None,
) -> torch.Tensor:
    """FDEs of a padded batch of sets, in chunks of `batch_size` sets (bounded memory).

    Args:
        vectors: [B, L, D] sets of vectors, padded.
        mask: [B, L], True (or 1) for real vectors; None = all real.
        config: the encoding.
        is_query: sum per partition and no filling (queries) or average plus filling (documents).
        batch_size: sets encoded at once.
        randomness: the random matrices to use instead of `fde_randomness(config, D)` (e.g. another
            implementation's, to compare the two on the same draws).

    Returns:
        [B, config.output_dim(D)] float32, on the CPU.
    """
    mask = _check_sets(vectors, mask)
    require(batch_size >= 1, f"batch_size must be at least 1, got {batch_size}")
    vectors, mask = vectors.detach().cpu(), mask.cpu()
    if randomness is None:
        randomness = fde_randomness(config, int(vectors.shape[-1]))
    chunks = [
        _final_projection(
            _encode(
                vectors[start : start + batch_size], mask[start : start + batch_size], config, randomness, is_query
            ),
            config,
            randomness,
        )
        for start in range(0, vectors.shape[0], batch_size)
    ]
    if not chunks:
        return torch.zeros(0, config.output_dim(int(vectors.shape[-1])))
    return torch.cat(chunks)


def encode_queries(
    vectors: torch.Tensor, mask: torch.Tensor | None, config: FDEConfig, batch_size: int = 256
) -> torch.Tensor:
    """Query FDEs (sum per partition): vectors [Q, Lq, D], mask [Q, Lq] -> [Q, F]."""
    return encode(vectors, mask, config, is_query=True, batch_size=batch_size)


def encode_documents(
    vectors: torch.Tensor, mask: torch.Tensor | None, config: FDEConfig, batch_size: int = 256
) -> torch.Tensor:
    """Document FDEs (average per partition, empty partitions filled): vectors [N, Ld, D], mask [N, Ld] -> [N, F]."""
    return encode(vectors, mask, config, is_query=False, batch_size=batch_size)

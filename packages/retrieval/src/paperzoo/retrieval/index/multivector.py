"""`MultiVectorStore`: the token vectors of a late-interaction index (ColBERT, ColBERTer, MUVERA's rerank stage),
stored compactly.

Every document is a variable-length set of D-dimensional vectors. The store keeps all of them in one contiguous
[T, D] matrix of codes with the document boundaries in an offsets vector [n + 1] (document i owns rows
offsets[i]:offsets[i+1]), which is how PLAID/ColBERTv2 lay out their index too. Codecs:
- "fp32": the vectors as they are (4 D bytes per vector), the reference.
- "fp16": half precision (2 D bytes), what ColBERTer stores ("Introducing Neural Bag of Whole-Words with ColBERTer:
  Contextualized Late Interactions using Enhanced Reduction", Hofstaetter et al., https://arxiv.org/abs/2203.13088,
  whose storage figures count fp16 vectors, down to its 1-dimensional variant, which works here with D = 1).
- "pq": product quantization ("Product Quantization for Nearest Neighbor Search", Jegou, Douze, Schmid, TPAMI 2011;
  faiss' ProductQuantizer): the vector splits into M sub-vectors, each replaced by the id of its nearest of 2^bits
  centroids learned by k-means on the stored vectors, so a vector costs M * bits / 8 bytes plus one shared
  codebook. Deviation: ColBERTv2 compresses residuals to the nearest of many centroids instead (not done here).

`gather` decodes the vectors of some documents into a zero-padded float32 batch and mask, the input of
`paperzoo.retrieval.late.scoring.maxsim`. `save` writes one safetensors file (codes, offsets, codebook, codec
settings) atomically; `bytes_on_disk()` is that file's measured size.
"""

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import faiss
import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save as safetensors_save

from paperzoo.core.errors import ConfigError, DataError, require
from paperzoo.core.io import atomic_open

Codec = Literal["fp32", "fp16", "pq"]
CODECS: tuple[str, ...] = get_args(Codec)
FORMAT = "paperzoo.retrieval.MultiVectorStore/1"


def train_product_quantizer(
    vectors: np.ndarray, subquantizers: int, bits: int, max_training_vectors: int | None, seed: int
) -> faiss.ProductQuantizer:
    """A faiss ProductQuantizer trained by k-means on `vectors` [T, D] (a seeded sample of at most
    `max_training_vectors` of them)."""
    count, dim = vectors.shape
    require(subquantizers >= 1, f"pq_subquantizers must be at least 1, got {subquantizers}")
    if dim % subquantizers:
        raise ConfigError(f"pq_subquantizers={subquantizers} must divide the vector dimension {dim}")
    require(1 <= bits <= 16, f"pq_bits must be in [1, 16], got {bits}")
    if count < 2**bits:
        raise ConfigError(
            f"PQ with pq_bits={bits} learns {2**bits} centroids and needs at least as many vectors, got {count}; "
            "use fewer bits or another codec"
        )
    if max_training_vectors is not None and count > max_training_vectors:
        rows = np.random.default_rng(seed).choice(count, max_training_vectors, replace=False)
        vectors = vectors[np.sort(rows)]
    quantizer = faiss.ProductQuantizer(dim, subquantizers, bits)
    quantizer.cp.seed = seed
    quantizer.cp.min_points_per_centroid = 1  # enough points was checked above; faiss would warn below 39 per centroid
    quantizer.train(np.ascontiguousarray(vectors))
    return quantizer


def product_quantizer_from_codebook(
    dim: int, subquantizers: int, bits: int, centroids: np.ndarray
) -> faiss.ProductQuantizer:
    """Rebuild a ProductQuantizer from its codebook [M, 2^bits, D / M] (what `save` stores)."""
    quantizer = faiss.ProductQuantizer(dim, subquantizers, bits)
    faiss.copy_array_to_vector(np.ascontiguousarray(centroids, dtype=np.float32).ravel(), quantizer.centroids)
    return quantizer


class MultiVectorStore:
    """Variable-length sets of vectors, one set per document, in one compact code matrix.

    Build it with `build` (a [T, D] matrix and per-document lengths), `from_padded` (encoder output [N, L, D] and
    its mask) or `from_sequences` (a list of [T_i, D]); read it with `gather` or `document`.

    Args:
        codes: [T, D] float32 (fp32), [T, D] float16 (fp16) or [T, code_size] uint8 (pq).
        offsets: [n + 1] int64, nondecreasing, offsets[0] = 0, offsets[-1] = T.
        dim: vector dimension D.
        codec: "fp32", "fp16" or "pq".
        product_quantizer: the trained quantizer (pq only).
    """

    def __init__(
        self,
        codes: torch.Tensor,
        offsets: torch.Tensor,
        dim: int,
        codec: Codec,
        product_quantizer: faiss.ProductQuantizer | None = None,
    ):
        if codec not in CODECS:
            raise ConfigError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
        require((codec == "pq") == (product_quantizer is not None), "a product quantizer goes with (only) the pq codec")
        require(offsets.ndim == 1 and len(offsets) >= 1, "offsets must be a vector [n + 1]")
        require(int(offsets[0]) == 0 and int(offsets[-1]) == codes.shape[0], "offsets must run from 0 to the code rows")
        require(bool((offsets[1:] >= offsets[:-1]).all()), "offsets must be nondecreasing")
        self.codes, self.offsets = codes, offsets.long()
        self.dim, self.codec, self.product_quantizer = dim, codec, product_quantizer
        self.path: Path | None = None  # where it was last saved or loaded from

    @classmethod
    def build(
        cls,
        vectors: torch.Tensor,
        lengths: Sequence[int] | torch.Tensor,
        codec: Codec = "fp16",
        pq_subquantizers: int | None = None,
        pq_bits: int = 8,
        pq_max_training_vectors: int | None = 65536,
        seed: int = 0,
    ) -> "MultiVectorStore":
        """Encode `vectors` [T, D], the documents' vectors one after another, document i having `lengths[i]` rows.

        Args:
            codec: "fp32", "fp16" or "pq".
            pq_subquantizers: M sub-vectors per vector (must divide D); None picks D / 4 (4 dimensions per byte
                at 8 bits, 8x smaller than fp16), or 1 when D < 4.
            pq_bits: bits per sub-vector code (2^bits centroids each).
            pq_max_training_vectors: k-means trains on a seeded sample of at most this many vectors (None: all).
            seed: PQ training seed.
        """
        if codec not in CODECS:
            raise ConfigError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
        if vectors.ndim != 2:
            raise ConfigError(f"vectors must be a matrix [T, D], got shape {tuple(vectors.shape)}")
        vectors = vectors.detach().to("cpu", torch.float32)
        if not torch.isfinite(vectors).all():
            raise ConfigError("vectors contain NaN or infinite values")
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        require(lengths.ndim == 1 and bool((lengths >= 0).all()), "lengths must be a vector of counts >= 0")
        if int(lengths.sum()) != vectors.shape[0]:
            raise ConfigError(f"lengths sum to {int(lengths.sum())}, but there are {vectors.shape[0]} vectors")
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])  # [n + 1]
        dim = vectors.shape[1]
        if codec == "fp32":
            return cls(vectors.clone(), offsets, dim, codec)
        if codec == "fp16":
            return cls(vectors.half(), offsets, dim, codec)
        subquantizers = pq_subquantizers if pq_subquantizers is not None else max(1, dim // 4)
        array = np.ascontiguousarray(vectors.numpy())
        quantizer = train_product_quantizer(array, subquantizers, pq_bits, pq_max_training_vectors, seed)
        codes = torch.from_numpy(quantizer.compute_codes(array))  # [T, code_size] uint8
        return cls(codes, offsets, dim, codec, quantizer)

    @classmethod
    def from_padded(
        cls, vectors: torch.Tensor, mask: torch.Tensor, codec: Codec = "fp16", **settings: object
    ) -> "MultiVectorStore":
        """From a padded batch: vectors [N, L, D] and mask [N, L] (nonzero = a real vector). See `build`."""
        require(vectors.ndim == 3 and mask.shape == vectors.shape[:2], "expected vectors [N, L, D] and mask [N, L]")
        keep = mask.bool()
        return cls.build(vectors[keep], keep.sum(1), codec, **settings)  # type: ignore[arg-type]

    @classmethod
    def from_sequences(
        cls, documents: Sequence[torch.Tensor], codec: Codec = "fp16", **settings: object
    ) -> "MultiVectorStore":
        """From one [T_i, D] matrix per document. See `build`."""
        require(len(documents) > 0, "from_sequences needs at least one document")
        dims = {int(d.shape[-1]) for d in documents}
        require(
            len(dims) == 1 and all(d.ndim == 2 for d in documents), f"documents must be [T_i, D] with one D, got {dims}"
        )
        return cls.build(torch.cat(list(documents)), [d.shape[0] for d in documents], codec, **settings)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> torch.Tensor:
        """[n] vectors per document."""
        return self.offsets[1:] - self.offsets[:-1]

    @property
    def num_vectors(self) -> int:
        return int(self.offsets[-1])

    @property
    def nbytes(self) -> int:
        """Bytes of the payload in memory: codes, offsets and the PQ codebook (the file adds a small header)."""
        codebook = 0 if self.product_quantizer is None else self.product_quantizer.centroids.size() * 4
        return self.codes.numel() * self.codes.element_size() + self.offsets.numel() * 8 + codebook

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Code rows [t, ...] -> float32 vectors [t, D]."""
        if self.codec == "pq":
            if codes.shape[0] == 0:
                return torch.zeros(0, self.dim)
            return torch.from_numpy(self.product_quantizer.decode(np.ascontiguousarray(codes.numpy())))
        return codes.float()

    def document(self, index: int) -> torch.Tensor:
        """The decoded vectors [T_i, D] float32 of document `index`."""
        if not -len(self) <= index < len(self):
            raise ConfigError(f"document index {index} is out of range for a store of {len(self)} documents")
        index %= len(self)
        return self.decode(self.codes[self.offsets[index] : self.offsets[index + 1]])

    def gather(self, doc_indices: Sequence[int] | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode documents into a zero-padded batch for `maxsim`.

        Args:
            doc_indices: [n] document indices (repeats allowed); None for all documents in order.

        Returns:
            vectors [n, Lmax, D] float32, zero beyond each document's length; mask [n, Lmax] bool. Lmax is the
            longest gathered document, at least 1 (so an all-empty batch still has a vector axis).
        """
        if doc_indices is None:
            indices = torch.arange(len(self))
        else:
            indices = torch.as_tensor(doc_indices, dtype=torch.long).reshape(-1)
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= len(self)):
            raise ConfigError(f"document indices must be in [0, {len(self)}), got {indices.min()}..{indices.max()}")
        starts = self.offsets[indices]  # [n]
        lengths = self.offsets[indices + 1] - starts  # [n]
        width = max(1, int(lengths.max())) if len(indices) else 1
        positions = torch.arange(width)  # [Lmax]
        mask = positions[None, :] < lengths[:, None]  # [n, Lmax]
        rows = (starts[:, None] + positions[None, :])[mask]  # [sum lengths], row-major = document order
        vectors = torch.zeros(len(indices), width, self.dim)
        vectors[mask] = self.decode(self.codes[rows])
        return vectors, mask

    def save(self, path: str | os.PathLike[str]) -> int:
        """Write the store to one safetensors file at `path` atomically; returns its bytes on disk."""
        tensors = {"codes": self.codes.contiguous().numpy(), "offsets": self.offsets.contiguous().numpy()}
        metadata = {"format": FORMAT, "codec": self.codec, "dim": str(self.dim)}
        if self.product_quantizer is not None:
            pq = self.product_quantizer
            tensors["pq_centroids"] = faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)
            metadata |= {"pq_subquantizers": str(pq.M), "pq_bits": str(pq.nbits)}
        with atomic_open(path, "wb") as handle:
            handle.write(safetensors_save(tensors, metadata=metadata))
        self.path = Path(path)
        return self.bytes_on_disk()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "MultiVectorStore":
        """Read a store written by `save`; a missing, truncated or foreign file is a `DataError` naming it."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"multi-vector store {path} does not exist")
        try:
            with safe_open(path, framework="numpy") as handle:
                metadata = handle.metadata() or {}
                if metadata.get("format") != FORMAT:
                    raise DataError(f"{path} is not a paperzoo MultiVectorStore (format {metadata.get('format')!r})")
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            codec, dim = metadata["codec"], int(metadata["dim"])
            quantizer = None
            if codec == "pq":
                quantizer = product_quantizer_from_codebook(
                    dim, int(metadata["pq_subquantizers"]), int(metadata["pq_bits"]), tensors["pq_centroids"]
                )
            store = cls(torch.from_numpy(tensors["codes"]), torch.from_numpy(tensors["offsets"]), dim, codec, quantizer)  # type: ignore[arg-type]
        except DataError:
            raise
        except Exception as err:  # safetensors, faiss and the consistency checks raise several types
            raise DataError(f"multi-vector store {path} is truncated or corrupt ({err})") from err
        store.path = path
        return store

    def bytes_on_disk(self) -> int:
        """Size in bytes of the file this store was last saved to or loaded from (measured, header included)."""
        if self.path is None:
            raise ConfigError("the store has not been saved yet: call save(path) first")
        return os.path.getsize(self.path)

    def __repr__(self) -> str:
        return (
            f"MultiVectorStore(codec={self.codec!r}, dim={self.dim}, documents={len(self)}, vectors={self.num_vectors})"
        )

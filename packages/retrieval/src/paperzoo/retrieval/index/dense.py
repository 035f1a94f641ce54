"""`DenseIndex`: a single-vector inner-product index over faiss (exact flat search, IVF or HNSW).

The approximate kinds are faiss' implementations of
- IVF: the inverted file with a k-means coarse quantizer, "Product Quantization for Nearest Neighbor Search"
  (Jegou, Douze, Schmid, TPAMI 2011; the IVFADC non-exhaustive search, here with uncompressed residual lists,
  faiss' IndexIVFFlat), and
- HNSW: "Efficient and robust approximate nearest neighbor search using Hierarchical Navigable Small World graphs"
  (Malkov & Yashunin, https://arxiv.org/abs/1603.09320), faiss' IndexHNSWFlat.

Scores are inner products (cosine similarity when `normalize=True`, which L2-normalises documents and queries).
An index is saved as one safetensors file holding the `faiss.serialize_index` bytes and the settings faiss does not
keep (normalisation), written through a temporary file and renamed into place (`paperzoo.core.io.atomic_open`).
"""

import math
import os
from pathlib import Path
from typing import Literal, get_args

import faiss
import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save as safetensors_save

from paperzoo.core.errors import ConfigError, DataError, require
from paperzoo.core.io import atomic_open

IndexKind = Literal["flat", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)
FORMAT = "paperzoo.retrieval.DenseIndex/1"


def as_float32_matrix(vectors: torch.Tensor | np.ndarray, dim: int | None, what: str) -> np.ndarray:
    """A contiguous float32 numpy [N, D] copy of `vectors`, checked for rank, width and finiteness."""
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().to("cpu", torch.float32).numpy()
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ConfigError(f"{what} must be a matrix [N, D], got shape {tuple(array.shape)}")
    if dim is not None and array.shape[1] != dim:
        raise ConfigError(f"{what} have dimension {array.shape[1]}, but the index holds {dim}-dimensional vectors")
    if not np.isfinite(array).all():
        raise ConfigError(f"{what} contain NaN or infinite values")
    return array


def default_nlist(count: int) -> int:
    """IVF lists for `count` vectors: about 4 sqrt(N) (faiss' guideline), with at least 39 training points per list."""
    return max(1, min(round(4 * math.sqrt(count)), count // 39))


class DenseIndex:
    """A faiss inner-product index over [N, D] vectors; row i of the added vectors is id i.

    Args:
        dim: vector dimension D.
        kind: "flat" (exact), "ivf" (inverted lists; trained on the first `add`) or "hnsw" (graph).
        normalize: L2-normalise added vectors and queries (scores become cosine similarities).
        nlist: IVF lists; None picks `default_nlist(N)` from the first batch added.
        nprobe: IVF lists visited per query.
        hnsw_m: HNSW neighbours per node (M).
        ef_construction: HNSW candidate list size while building.
        ef_search: HNSW candidate list size while searching (at least k is used).

    Shapes:
        add: vectors [N, D]; search: queries [Q, D] -> scores [Q, k] float32, indices [Q, k] int64.
    """

    def __init__(
        self,
        dim: int,
        kind: IndexKind = "flat",
        normalize: bool = False,
        nlist: int | None = None,
        nprobe: int = 8,
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
    ):
        if kind not in INDEX_KINDS:
            raise ConfigError(f"unknown index kind {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
        require(dim >= 1, f"dim must be at least 1, got {dim}")
        require(nlist is None or nlist >= 1, f"nlist must be at least 1, got {nlist}")
        require(nprobe >= 1, f"nprobe must be at least 1, got {nprobe}")
        require(hnsw_m >= 2, f"hnsw_m must be at least 2, got {hnsw_m}")
        require(ef_construction >= 1 and ef_search >= 1, "ef_construction and ef_search must be at least 1")
        self.dim, self.kind, self.normalize = dim, kind, normalize
        self.nlist, self.nprobe = nlist, nprobe
        self.hnsw_m, self.ef_construction, self.ef_search = hnsw_m, ef_construction, ef_search
        self.path: Path | None = None  # where it was last saved or loaded from
        self.index: faiss.Index | None = None if kind == "ivf" else self._new_index(0)

    def _new_index(self, nlist: int) -> faiss.Index:
        if self.kind == "flat":
            return faiss.IndexFlatIP(self.dim)
        if self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
            return index
        quantizer = faiss.IndexFlatIP(self.dim)
        # faiss' Python wrapper keeps the quantizer alive as long as the index (referenced_objects)
        return faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)

    @classmethod
    def build(cls, vectors: torch.Tensor, kind: IndexKind = "flat", **settings: object) -> "DenseIndex":
        """A new index of `kind` over `vectors` [N, D] (the ids are the rows)."""
        index = cls(int(vectors.shape[-1]), kind, **settings)  # type: ignore[arg-type]
        index.add(vectors)
        return index

    def __len__(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def _prepare(self, vectors: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
        array = as_float32_matrix(vectors, self.dim, what)
        if self.normalize:
            array = array.copy()
            faiss.normalize_L2(array)
        return array

    def add(self, vectors: torch.Tensor | np.ndarray) -> None:
        """Append `vectors` [N, D]; they get ids len(self) .. len(self) + N - 1. IVF trains on its first batch."""
        array = self._prepare(vectors, "vectors")
        if self.index is None:  # IVF, untrained
            nlist = self.nlist if self.nlist is not None else default_nlist(len(array))
            if nlist > len(array):
                raise ConfigError(
                    f"an IVF index with nlist={nlist} needs at least {nlist} vectors to train, got {len(array)}"
                )
            index = self._new_index(nlist)
            index.train(array)
            self.nlist = nlist
            self.index = index
        if len(array):
            self.index.add(array)

    def search(self, queries: torch.Tensor | np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The `k` highest-scoring ids per query, best first.

        `k` larger than the index is cut to its size. An approximate kind may find fewer than `k` vectors (an IVF
        probe of nearly empty lists); the missing places hold id -1 and score -inf.

        Returns:
            scores [Q, k'] float32 and indices [Q, k'] int64 with k' = min(k, len(self)).
        """
        require(k >= 1, f"k must be at least 1, got {k}")
        if len(self) == 0:
            raise ConfigError("the index is empty: add vectors before searching")
        array = self._prepare(queries, "queries")
        k = min(k, len(self))
        if self.kind == "ivf":
            self.index.nprobe = min(self.nprobe, self.index.nlist)
        elif self.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.ef_search, k)
        scores, indices = self.index.search(array, k)
        scores = torch.from_numpy(scores)
        indices = torch.from_numpy(indices).long()
        scores = scores.masked_fill(indices < 0, float("-inf"))
        return scores, indices

    def score_matrix(self, queries: torch.Tensor | np.ndarray, k: int) -> torch.Tensor:
        """The top-`k` search as a dense [Q, N] score matrix, -inf for ids not retrieved (for
        `paperzoo.retrieval.metrics.retrieval_metrics`)."""
        scores, indices = self.search(queries, k)
        matrix = torch.full((scores.shape[0], len(self)), float("-inf"))
        found = indices >= 0
        rows = torch.arange(scores.shape[0])[:, None].expand_as(indices)
        matrix[rows[found], indices[found]] = scores[found]
        return matrix

    def save(self, path: str | os.PathLike[str]) -> int:
        """Write the index to `path` atomically (temporary sibling, then rename); returns the bytes on disk."""
        if self.index is None:
            raise ConfigError("an IVF index with no vectors is untrained and cannot be saved: add vectors first")
        blob = faiss.serialize_index(self.index)  # uint8 [B]
        metadata = {
            "format": FORMAT,
            "kind": self.kind,
            "dim": str(self.dim),
            "normalize": str(self.normalize),
            "nprobe": str(self.nprobe),
            "hnsw_m": str(self.hnsw_m),
            "ef_construction": str(self.ef_construction),
            "ef_search": str(self.ef_search),
        }
        with atomic_open(path, "wb") as handle:
            handle.write(safetensors_save({"faiss_index": blob}, metadata=metadata))
        self.path = Path(path)
        return self.bytes_on_disk()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "DenseIndex":
        """Read an index written by `save`; a missing, truncated or foreign file is a `DataError` naming it."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"index file {path} does not exist")
        try:
            with safe_open(path, framework="numpy") as handle:
                metadata = handle.metadata() or {}
                blob = handle.get_tensor("faiss_index")
            if metadata.get("format") != FORMAT:
                raise DataError(f"index file {path} is not a paperzoo DenseIndex (format {metadata.get('format')!r})")
            faiss_index = faiss.deserialize_index(blob)
        except DataError:
            raise
        except Exception as err:  # safetensors and faiss raise several types for a damaged file
            raise DataError(f"index file {path} is truncated or corrupt ({err})") from err
        index = cls(
            int(metadata["dim"]),
            metadata["kind"],  # type: ignore[arg-type]
            normalize=metadata["normalize"] == "True",
            nprobe=int(metadata["nprobe"]),
            hnsw_m=int(metadata["hnsw_m"]),
            ef_construction=int(metadata["ef_construction"]),
            ef_search=int(metadata["ef_search"]),
        )
        if faiss_index.d != index.dim:
            raise DataError(f"index file {path} holds {faiss_index.d}-dimensional vectors, its header says {index.dim}")
        index.index = faiss_index
        if index.kind == "ivf":
            index.nlist = int(faiss.extract_index_ivf(faiss_index).nlist)
        index.path = path
        return index

    def bytes_on_disk(self) -> int:
        """Size in bytes of the file this index was last saved to or loaded from (measured, header included)."""
        if self.path is None:
            raise ConfigError("the index has not been saved yet: call save(path) first")
        return os.path.getsize(self.path)

    def __repr__(self) -> str:
        return f"DenseIndex(kind={self.kind!r}, dim={self.dim}, size={len(self)}, normalize={self.normalize})"

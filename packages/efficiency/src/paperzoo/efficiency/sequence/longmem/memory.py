"""LongMem's cached memory bank: one backbone layer's attention keys and values, stored in fixed-size chunks in
first-in-first-out order, searched by query-to-chunk-key similarity.

"Augmenting Language Models with Long-Term Memory" (Wang et al., arXiv:2306.07174), section 2.3: the keys and
values of past segments are split into chunks of `chunk_size` tokens; a chunk is represented for retrieval by the
mean of its keys; each query token (per head) retrieves the top `K / chunk_size` chunks by inner product with its
attention query, so it attends to K memory tokens. When the bank is full the oldest chunks are dropped.

Implemented here: `MemoryBank` for a batch of independent documents (one bank per document, searched in lockstep),
with exact search in torch (default) or through faiss' flat inner-product index (`search="faiss"`), which returns the
same chunks and is the choice for large banks on CPU.

Deviations from the reference code (Victorwz/LongMem, `dynamic_memory_with_chunk.py`), each deliberate:
- one bank per document of the batch, where the reference pools the whole batch into one bank (its documents are
  slices of one stream); here documents are unrelated, and one must not read another's facts;
- eviction drops exactly the chunks that overflow the capacity, where the reference drops a block of
  2 x batch x segment tokens at once (an amortisation of faiss' `remove_ids`);
- the tokens of an incomplete last chunk wait in a pending buffer and join the next segment's first chunk, where the
  reference drops them.

Shapes: B = documents, H = heads, T = tokens of a segment, Dh = head width, C = stored chunks, S = chunk size.
"""

from typing import Literal, Protocol

import torch

from paperzoo.core.errors import require

SearchBackend = Literal["torch", "faiss"]


class Memory(Protocol):
    """What a memory-augmented layer reads: `MemoryBank` (streaming) or `DocumentMemory` (a whole document at once)."""

    chunk_size: int

    def __len__(self) -> int: ...

    def retrieve(self, queries: torch.Tensor, n_chunks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def gather_chunks(stored: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of chunks by index, per document and head: stored [B, H, C, ...], index [B, H, M] -> [B, H, M, ...].

    One `index_select` over the flattened (document, head, chunk) axis: much faster on CPU than `torch.gather`
    with an index expanded over the chunk's S x Dh entries.
    """
    batch, heads, chunks = stored.shape[:3]
    offsets = torch.arange(batch * heads, device=index.device).view(batch, heads, 1) * chunks
    flat = stored.reshape(batch * heads * chunks, *stored.shape[3:])
    return flat.index_select(0, (index + offsets).flatten()).view(*index.shape, *stored.shape[3:])


class MemoryBank:
    """A FIFO bank of chunked keys and values for B documents.

    Args:
        batch: B, documents searched in lockstep (each has its own bank).
        n_heads: H.
        head_dim: Dh.
        capacity: most tokens held per document; a multiple of `chunk_size`.
        chunk_size: S, tokens per chunk (the paper's csz, 4).
        search: "torch" (exact, batched matmul + top-k) or "faiss" (exact, `IndexFlatIP` per document and head).

    Attributes:
        keys, values: [B, H, C, S, Dh], oldest chunk first.
        positions: [C] int64, the stream position of each stored chunk's first token (the same for every document).
    """

    def __init__(
        self,
        batch: int,
        n_heads: int,
        head_dim: int,
        capacity: int,
        chunk_size: int = 4,
        search: SearchBackend = "torch",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        require(chunk_size > 0, f"chunk_size must be positive, got {chunk_size}")
        require(
            capacity >= chunk_size and capacity % chunk_size == 0,
            f"memory capacity must be a positive multiple of chunk_size {chunk_size}, got {capacity}",
        )
        require(search in ("torch", "faiss"), f"search must be 'torch' or 'faiss', got {search!r}")
        self.batch, self.n_heads, self.head_dim = batch, n_heads, head_dim
        self.capacity, self.chunk_size, self.search_backend = capacity, chunk_size, search
        shape = (batch, n_heads, 0, chunk_size, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.positions = torch.zeros(0, dtype=torch.long)
        self._pending_keys = torch.zeros(batch, n_heads, 0, head_dim, device=device, dtype=dtype)
        self._pending_values = torch.zeros_like(self._pending_keys)
        self._seen = 0  # tokens ever added (the stream position of the next one)
        self._faiss_indexes: list | None = None  # built lazily from the chunk keys, dropped on every add

    @property
    def num_chunks(self) -> int:
        return self.keys.shape[2]

    def __len__(self) -> int:
        """Tokens held in complete chunks (pending tokens are not searchable yet)."""
        return self.num_chunks * self.chunk_size

    def add(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Append a segment's keys and values [B, H, T, Dh] (detached), evicting the oldest chunks over capacity."""
        require(
            keys.shape == values.shape and keys.shape[0] == self.batch and keys.shape[1] == self.n_heads,
            f"memory expects keys and values of shape [{self.batch}, {self.n_heads}, T, {self.head_dim}], "
            f"got {tuple(keys.shape)} and {tuple(values.shape)}",
        )
        keys = torch.cat((self._pending_keys, keys.detach().to(self.keys.dtype)), dim=2)  # [B, H, r + T, Dh]
        values = torch.cat((self._pending_values, values.detach().to(self.values.dtype)), dim=2)
        first = self._seen - self._pending_keys.shape[2]  # stream position of keys[:, :, 0]
        self._seen += keys.shape[2] - self._pending_keys.shape[2]
        full = keys.shape[2] // self.chunk_size * self.chunk_size
        self._pending_keys, self._pending_values = keys[:, :, full:], values[:, :, full:]
        if full == 0:
            return
        new_shape = (self.batch, self.n_heads, full // self.chunk_size, self.chunk_size, self.head_dim)
        new_positions = first + self.chunk_size * torch.arange(full // self.chunk_size)
        keep = self.capacity // self.chunk_size
        self.keys = torch.cat((self.keys, keys[:, :, :full].reshape(new_shape)), dim=2)[:, :, -keep:]
        self.values = torch.cat((self.values, values[:, :, :full].reshape(new_shape)), dim=2)[:, :, -keep:]
        self.positions = torch.cat((self.positions, new_positions))[-keep:]
        self._faiss_indexes = None

    def chunk_keys(self) -> torch.Tensor:
        """The retrieval key of each chunk: the mean of its S keys. [B, H, C, Dh]"""
        return self.keys.mean(dim=3)

    def search(self, queries: torch.Tensor, n_chunks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-`n_chunks` chunks per query token by inner product with the chunk keys, best first.

        Args:
            queries: [B, H, T, Dh] attention queries (not scaled).
            n_chunks: chunks per query (K / S).

        Returns:
            index [B, H, T, n_chunks] int64 into the stored chunks (0 where invalid) and valid [B, H, T, n_chunks]
            bool (False where the bank holds fewer than `n_chunks` chunks).
        """
        batch, heads, length, _ = queries.shape
        found = min(n_chunks, self.num_chunks)
        index = torch.zeros(batch, heads, length, n_chunks, dtype=torch.long, device=queries.device)
        valid = torch.zeros(batch, heads, length, n_chunks, dtype=torch.bool, device=queries.device)
        if found == 0:
            return index, valid
        if self.search_backend == "faiss":
            index[..., :found] = self._faiss_search(queries, found)
        else:
            scores = queries.detach() @ self.chunk_keys().to(queries.dtype).transpose(-1, -2)  # [B, H, T, C]
            index[..., :found] = scores.topk(found, dim=-1).indices
        valid[..., :found] = True
        return index, valid

    def _faiss_search(self, queries: torch.Tensor, found: int) -> torch.Tensor:
        import faiss
        import numpy as np

        if self._faiss_indexes is None:
            chunk_keys = self.chunk_keys().float().cpu().numpy()  # [B, H, C, Dh]
            self._faiss_indexes = []
            for b in range(self.batch):
                for h in range(self.n_heads):
                    flat = faiss.IndexFlatIP(self.head_dim)
                    flat.add(np.ascontiguousarray(chunk_keys[b, h]))
                    self._faiss_indexes.append(flat)
        batch, heads, length, _ = queries.shape
        flat_queries = queries.detach().float().cpu().numpy()
        ids = np.empty((batch, heads, length, found), dtype=np.int64)
        for b in range(batch):
            for h in range(heads):
                ids[b, h] = self._faiss_indexes[b * heads + h].search(np.ascontiguousarray(flat_queries[b, h]), found)[
                    1
                ]
        return torch.from_numpy(ids).to(queries.device)

    def retrieve(self, queries: torch.Tensor, n_chunks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The keys and values of each query's top-`n_chunks` chunks, flattened to K = n_chunks x S tokens.

        Returns:
            keys [B, H, T, K, Dh], values [B, H, T, K, Dh] and valid [B, H, T, K] bool.
        """
        batch, heads, length, _ = queries.shape
        index, valid = self.search(queries, n_chunks)  # [B, H, T, n]
        out_shape = (batch, heads, length, n_chunks * self.chunk_size, self.head_dim)
        valid = valid.repeat_interleave(self.chunk_size, dim=-1)
        if self.num_chunks == 0:
            empty = queries.new_zeros(out_shape)
            return empty, empty, valid
        flat_index = index.view(batch, heads, length * n_chunks)
        keys = gather_chunks(self.keys.to(queries.dtype), flat_index).reshape(out_shape)
        values = gather_chunks(self.values.to(queries.dtype), flat_index).reshape(out_shape)
        return keys, values, valid


class DocumentMemory:
    """The memory every segment of a document would read from a `MemoryBank`, for all segments at once.

    The bank's contents depend only on the frozen backbone's keys and values, never on the SideNet, so segment s of a
    document reads exactly the last `capacity / S` complete chunks of the tokens before it. With those keys known up
    front (one backbone pass over all segments), the SideNet processes every segment in parallel; retrieval
    then masks, per segment, the chunks the bank would not hold. It returns what `MemoryBank.retrieve` returns
    segment by segment (the tests compare the two).

    Args:
        keys, values: the whole document's cached keys and values [B, H, N, Dh], N = segments x T.
        segment_len: T, a multiple of `chunk_size`.
        capacity: tokens the bank holds, a multiple of `chunk_size`.
        chunk_size: S.

    The queries of `retrieve` are [B * segments, H, T, Dh], segment-major within each document.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, segment_len: int, capacity: int, chunk_size: int = 4):
        batch, heads, length, head_dim = keys.shape
        require(
            segment_len % chunk_size == 0 and length % segment_len == 0,
            f"a document memory needs segment_len ({segment_len}) a multiple of chunk_size ({chunk_size}) and the "
            f"document length ({length}) a multiple of segment_len",
        )
        require(
            capacity >= chunk_size and capacity % chunk_size == 0,
            f"memory capacity must be a positive multiple of chunk_size {chunk_size}, got {capacity}",
        )
        self.chunk_size, self.segment_len, self.capacity = chunk_size, segment_len, capacity
        self.batch, self.segments = batch, length // segment_len
        shape = (batch, heads, length // chunk_size, chunk_size, head_dim)
        self.keys, self.values = keys.detach().reshape(shape), values.detach().reshape(shape)  # [B, H, C, S, Dh]
        chunks_per_segment = segment_len // chunk_size
        ends = torch.arange(self.segments, device=keys.device)[:, None] * chunks_per_segment  # [segments, 1]
        chunk = torch.arange(length // chunk_size, device=keys.device)[None, :]  # [1, C]
        self.visible = (chunk < ends) & (chunk >= ends - capacity // chunk_size)  # [segments, C]

    def __len__(self) -> int:
        return self.keys.shape[2] * self.chunk_size

    def retrieve(self, queries: torch.Tensor, n_chunks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Like `MemoryBank.retrieve`, for queries [B * segments, H, T, Dh] of every segment at once."""
        _, heads, length, head_dim = queries.shape
        batch, segments, size = self.batch, self.segments, self.chunk_size
        q = queries.view(batch, segments, heads, length, head_dim)
        chunk_keys = self.keys.mean(dim=3).to(queries.dtype)  # [B, H, C, Dh]
        scores = torch.einsum("bshtd,bhcd->bshtc", q.detach(), chunk_keys)  # [B, segments, H, T, C]
        scores = scores.masked_fill(~self.visible[None, :, None, None, :], float("-inf"))
        found = min(n_chunks, scores.shape[-1])
        top = scores.topk(found, dim=-1)
        index, valid = top.indices, top.values > float("-inf")  # [B, segments, H, T, found]
        if found < n_chunks:
            pad = (0, n_chunks - found)
            index, valid = torch.nn.functional.pad(index, pad), torch.nn.functional.pad(valid, pad, value=False)
        flat_index = index.permute(0, 2, 1, 3, 4).reshape(batch, heads, -1)  # [B, H, segments * T * n]
        out = []
        for stored in (self.keys, self.values):
            gathered = gather_chunks(stored.to(queries.dtype), flat_index)  # [B, H, segments * T * n, S, Dh]
            gathered = gathered.view(batch, heads, segments, length, n_chunks * size, head_dim)
            out.append(gathered.transpose(1, 2).reshape(batch * segments, heads, length, n_chunks * size, head_dim))
        valid = valid.reshape(batch * segments, heads, length, n_chunks).repeat_interleave(size, dim=-1)
        return out[0], out[1], valid

"""Vector indexes: faiss flat and approximate (IVF, HNSW) single-vector indexes, and a compact multi-vector store.

- `DenseIndex` (dense.py): one vector per document, faiss IndexFlatIP / IndexIVFFlat / IndexHNSWFlat.
- `MultiVectorStore` (multivector.py): token vectors per document in fp32, fp16 or product-quantized codes,
  gathered into padded batches for `paperzoo.retrieval.late.scoring.maxsim`.
Both save to one file atomically and report their measured bytes on disk.
"""

from paperzoo.retrieval.index.dense import DenseIndex
from paperzoo.retrieval.index.multivector import MultiVectorStore

__all__ = ["DenseIndex", "MultiVectorStore"]

"""Vector indexes: faiss flat and approximate (IVF, HNSW) single-vector indexes, and a compact multi-vector store."""

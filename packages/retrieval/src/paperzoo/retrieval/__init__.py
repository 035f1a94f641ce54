"""paperzoo retrieval: Matryoshka embeddings (MRL), ColBERTer, MUVERA and stationary representations on the
all-MiniLM-L6-v2 sentence encoder, with faiss indexes and offline passage-retrieval benchmarks.

Layout: `encoder` (the MiniLM backbone, tokenization, pooling), `data` (benchmarks, BEIR loader, datamodules),
`metrics` (nDCG/Recall/MRR), `losses` (in-batch contrastive), `index` (faiss and the multi-vector store),
`dense` (single-vector methods: MRL, stationary representations), `late` (multi-vector methods: ColBERTer, MUVERA).
"""

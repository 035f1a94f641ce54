"""Multi-vector (late interaction) retrieval: ColBERTer (CATALOG 33) and MUVERA (CATALOG 82)."""

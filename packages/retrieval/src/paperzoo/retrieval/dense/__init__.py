"""Single-vector (dense) retrieval: Matryoshka representations (CATALOG 120) and stationary representations
(CATALOG 42)."""

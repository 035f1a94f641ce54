"""The claim checks of the merging papers: one module per card (`CARD` and `check(quick)`), on the shared testbed."""

"""The claim checks of the merging papers, one module per card (`CARD` and `check(quick)`), all on the shared testbed."""

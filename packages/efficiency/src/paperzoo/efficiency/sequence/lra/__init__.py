"""Long Range Arena (arXiv:2011.04006), generated offline and scaled for CPUs, plus the Mamba paper's diagnostics."""

"""Tiny Time Mixers (TTM, CATALOG 59): adaptive patching, resolution prefix tuning, multi-level fine-tuning."""

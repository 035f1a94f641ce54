"""paperzoo speech: non-autoregressive ASR (Paraformer) with AR and CTC baselines, and full-duplex turn-taking."""

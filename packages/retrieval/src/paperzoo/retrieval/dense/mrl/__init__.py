"""Matryoshka Representation Learning (MRL, CATALOG 120; Kusupati et al., https://arxiv.org/abs/2205.13147):
one embedding whose nested prefixes are each trained to retrieve (`model.matryoshka_loss`), MiniLM fine-tuned with
it (`task.MRLTask`), and adaptive retrieval that shortlists with a short prefix and reranks with the full embedding
(`retrieval.adaptive_retrieve`)."""

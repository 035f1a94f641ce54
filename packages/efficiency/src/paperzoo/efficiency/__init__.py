"""paperzoo-efficiency: LLM efficiency and long-sequence models."""

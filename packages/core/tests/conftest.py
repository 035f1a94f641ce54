import json

import pytest


@pytest.fixture
def small_corpus(tmp_path):
    """A JSON-lines corpus in the standard format, small enough for a few epochs in seconds."""
    path = tmp_path / "corpus.jsonl"
    rows = [{"title": f"doc{i}", "text": f"Article {i} talks about topic {i * 7 % 11}. " * 12} for i in range(12)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path

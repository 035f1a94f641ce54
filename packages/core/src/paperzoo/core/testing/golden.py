"""Golden values: outputs on a fixed initialisation, stored beside the tests and compared within a tolerance.

Regenerate deliberately with `PAPERZOO_UPDATE_GOLDEN=1 pytest ...` and commit the JSON with a reason.
"""

import json
import os
from pathlib import Path

import torch

from paperzoo.core.io import atomic_write_text

UPDATE_ENV = "PAPERZOO_UPDATE_GOLDEN"


def assert_golden(path: str | os.PathLike[str], values: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Compare `values` (any shape) with the golden file at `path` (JSON: shape and flattened values)."""
    path = Path(path)
    values = values.detach().double().cpu()
    if os.environ.get(UPDATE_ENV) == "1":
        atomic_write_text(path, json.dumps({"shape": list(values.shape), "values": values.flatten().tolist()}))
        return
    if not path.exists():
        raise AssertionError(f"golden file {path} is missing; create it with {UPDATE_ENV}=1")
    golden = json.loads(path.read_text())
    expected = torch.tensor(golden["values"], dtype=torch.float64).reshape(golden["shape"])
    assert values.shape == expected.shape, f"{path}: shape {tuple(values.shape)} != golden {tuple(expected.shape)}"
    torch.testing.assert_close(values, expected, atol=atol, rtol=rtol, msg=lambda m: f"{path}: {m}")

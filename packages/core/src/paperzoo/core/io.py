"""Atomic file writes and the paperzoo cache directory.

Every file paperzoo writes (checkpoints, caches, results) goes to a temporary file in the same directory first
and is renamed into place, so a run killed mid-write never leaves a truncated file behind.
"""

import contextlib
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from paperzoo.core.errors import DataError

CACHE_ENV = "PAPERZOO_CACHE"


def cache_dir(*parts: str) -> Path:
    """`$PAPERZOO_CACHE` (default `~/.cache/paperzoo`) joined with `parts`, created if missing."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "paperzoo")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of `path` for writing; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


def load_checkpoint_file(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """`torch.load` a checkpoint, turning a missing, truncated or corrupt file into a `DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise DataError(f"checkpoint {path} is truncated or corrupt ({err})") from err


def verify_checkpoint_file(path: str | os.PathLike[str]) -> None:
    """Check that a checkpoint (a torch zip archive) exists and is whole, without unpickling it; a `DataError`
    names the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise DataError(f"checkpoint {path} is truncated or corrupt ({err})") from err
    if broken is not None:
        raise DataError(f"checkpoint {path} is truncated or corrupt (member {broken} fails its checksum)")

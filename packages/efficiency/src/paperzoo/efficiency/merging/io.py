"""Checkpoints in and out of the merge tool: inspect without loading, read lazily, write safetensors atomically.

Formats read (`checkpoint_format` names them):
- "safetensors": a `.safetensors` file;
- "torch": a `torch.save` file (`.pt`, `.pth`, `.bin`, `.ckpt`); a dict holding a "state_dict" dict (a Lightning
  checkpoint) is read through that entry;
- "hf": a Hugging Face model directory with `model.safetensors`, `pytorch_model.bin`, or a sharded
  `model.safetensors.index.json` / `pytorch_model.bin.index.json` (its "weight_map": tensor name -> shard file).

`inspect` gives {name: (shape, dtype)} without reading weights: safetensors from the file header (`safe_open`),
torch files through `torch.load(mmap=True, weights_only=True)` (tensors stay on disk, paged in on use).
`LazyStateDict` reads one tensor at a time on access, so a merge holds one tensor per input at once, plus its output.
`save_safetensors_stream` writes the safetensors layout (8-byte little-endian header length, JSON header, raw
little-endian bytes) from a known {name: (shape, dtype)} layout and then (name, tensor) pairs as a generator yields
them (the merge tool feeds it `procedure.merge_iter`, so no merged model is ever held whole); `save_safetensors` does
the same for an in-memory dict. Both go through `paperzoo.core.io.atomic_open`, so a killed run leaves no partial
file.

Deviations: a torch file saved in the legacy (pre-1.6, non-zip) format cannot be memory-mapped and is read whole; a
torch file holding objects other than tensors and containers (a Lightning checkpoint's hyperparameters) is unpickled
with `weights_only=False`, as `paperzoo.core.io.load_checkpoint_file` does, so read only checkpoints you trust.
"""

import hashlib
import json
import math
import pickle
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from paperzoo.core.errors import DataError
from paperzoo.core.io import atomic_open

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
HF_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")
TensorInfo = tuple[tuple[int, ...], torch.dtype]

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


def checkpoint_format(path: str | Path) -> str:
    """ "safetensors", "torch" or "hf" for an existing checkpoint; a `DataError` names a missing or unknown one."""
    path = Path(path)
    if path.is_dir():
        if any((path / name).is_file() for name in HF_FILES):
            return "hf"
        raise DataError(f"directory {path} holds none of {', '.join(HF_FILES)}, so it is not a Hugging Face model")
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return "safetensors"
    if path.suffix in TORCH_SUFFIXES:
        return "torch"
    raise DataError(
        f"checkpoint {path} has suffix {path.suffix!r}; expected .safetensors, {', '.join(TORCH_SUFFIXES)} "
        "or a Hugging Face model directory"
    )


def checkpoint_files(path: str | Path) -> dict[Path, list[str] | None]:
    """The files of a checkpoint -> the tensor names each holds (None: all of them; from a shard index)."""
    path = Path(path)
    if checkpoint_format(path) != "hf":
        return {path: None}
    for name in HF_FILES:
        candidate = path / name
        if not candidate.is_file():
            continue
        if not name.endswith(".index.json"):
            return {candidate: None}
        try:
            weight_map = json.loads(candidate.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"shard index {candidate} has no readable 'weight_map' ({err})") from err
        shards: dict[Path, list[str] | None] = {}
        for tensor, shard in weight_map.items():
            names = shards.setdefault(path / shard, [])
            assert names is not None
            names.append(tensor)
        for shard in shards:
            if not shard.is_file():
                raise DataError(f"shard {shard} listed in {candidate} does not exist")
        return shards
    raise AssertionError("unreachable: checkpoint_format found a Hugging Face file")


def _torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a torch file, memory-mapped where the format allows; a Lightning checkpoint's "state_dict"."""
    mmap = zipfile.is_zipfile(path)  # the legacy (non-zip) format cannot be memory-mapped
    try:
        try:
            loaded = torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
        except pickle.UnpicklingError:
            loaded = torch.load(path, map_location="cpu", mmap=mmap, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
        raise DataError(f"checkpoint {path} is truncated or corrupt ({err})") from err
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise DataError(f"checkpoint {path} holds a {type(loaded).__name__}, expected a dict of tensors")
    for name, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise DataError(f"checkpoint {path} entry {name!r} is a {type(value).__name__}, expected a tensor")
    return dict(loaded)


def _safetensors_header(path: Path) -> dict[str, TensorInfo]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            found = {}
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a Mapping
                tensor_slice = handle.get_slice(name)
                found[name] = (tuple(tensor_slice.get_shape()), SAFETENSORS_DTYPES[tensor_slice.get_dtype()])
            return found
    except KeyError as err:
        raise DataError(f"checkpoint {path} stores dtype {err} that paperzoo does not read") from err
    except Exception as err:  # noqa: BLE001 - safetensors raises its own SafetensorError for a bad header
        raise DataError(f"checkpoint {path} is not a readable safetensors file ({err})") from err


def inspect(path: str | Path) -> dict[str, TensorInfo]:
    """{tensor name: (shape, dtype)} of a checkpoint, read without loading its weights."""
    found: dict[str, TensorInfo] = {}
    for file, names in checkpoint_files(path).items():
        if file.suffix == ".safetensors":
            infos = _safetensors_header(file)
        else:
            infos = {name: (tuple(t.shape), t.dtype) for name, t in _torch_state_dict(file).items()}
        if names is not None:
            missing = sorted(set(names) - set(infos))
            if missing:
                raise DataError(f"shard {file} lacks tensor {missing[0]!r} that its index assigns to it")
            infos = {name: infos[name] for name in names}
        found.update(infos)
    return found


class LazyStateDict(Mapping[str, torch.Tensor]):
    """A checkpoint's tensors by name, each read from disk when accessed (a fresh CPU tensor; never cached).

    `layout` holds {name: (shape, dtype)} from the headers (as `inspect` gives it), so code that only needs shapes,
    such as a compatibility check, can read them without loading any tensor.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._source: dict[str, Path] = {}
        self._torch: dict[Path, dict[str, torch.Tensor]] = {}
        self.layout: dict[str, TensorInfo] = {}
        for file, names in checkpoint_files(self.path).items():
            if file.suffix == ".safetensors":
                infos = _safetensors_header(file)
            else:
                self._torch[file] = _torch_state_dict(file)  # memory-mapped: nothing is read yet
                infos = {name: (tuple(t.shape), t.dtype) for name, t in self._torch[file].items()}
            keys = names if names is not None else list(infos)
            missing = sorted(set(keys) - set(infos))
            if missing:
                raise DataError(f"shard {file} lacks tensor {missing[0]!r} that its index assigns to it")
            self._source.update(dict.fromkeys(keys, file))
            self.layout.update({name: infos[name] for name in keys})

    def __getitem__(self, name: str) -> torch.Tensor:
        file = self._source[name]
        if file in self._torch:
            return self._torch[file][name]
        with safe_open(str(file), framework="pt") as handle:
            return handle.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._source)

    def __len__(self) -> int:
        return len(self._source)


def sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a checkpoint: of its one file, or of "name:hash" lines over the files of a directory model."""
    path = Path(path)
    if path.is_dir():
        lines = [f"{file.relative_to(path)}:{sha256(file)}" for file in sorted(checkpoint_files(path))]
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def layout_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, TensorInfo]:
    """{name: (shape, dtype)} of in-memory tensors, in their order (what `save_safetensors_stream` takes)."""
    return {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}


def save_safetensors_stream(
    layout: Mapping[str, TensorInfo],
    tensors: Iterable[tuple[str, torch.Tensor]],
    path: str | Path,
    metadata: Mapping[str, str],
) -> int:
    """Write (name, tensor) pairs as they come into one safetensors file, atomically; returns the bytes written.

    The header is written first from `layout` ({name: (shape, dtype)}, in file order), so `tensors` may be a
    generator (e.g. `procedure.merge_iter`): each tensor is written and released before the next is requested. A
    tensor that comes out of `layout`'s order, with another shape or dtype, or a stream that ends early or runs
    long, is a `DataError` and leaves no file.
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, (shape, dtype) in layout.items():
        if dtype not in DTYPE_NAMES:
            raise DataError(f"tensor {name!r} has dtype {dtype}, which safetensors does not store")
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to a multiple of 8 bytes
    expected = iter(layout.items())
    with atomic_open(path, "wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little"))
        handle.write(encoded)
        for name, tensor in tensors:
            want_name, (shape, dtype) = next(expected, (None, ((), None)))
            if name != want_name:
                raise DataError(f"tensor {name!r} came where the layout expects {want_name!r}")
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise DataError(
                    f"tensor {name!r} is {list(tensor.shape)} {tensor.dtype}; the layout says {list(shape)} {dtype}"
                )
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)  # [numel]
            if flat.numel():
                handle.write(flat.view(torch.uint8).numpy().data)  # a view of the tensor's bytes, not a copy
            del flat, tensor  # the caller's generator may now produce the next tensor without this one alive
        missing = next(expected, None)
        if missing is not None:
            raise DataError(f"the tensors ended before {missing[0]!r} of the layout")
    return 8 + len(encoded) + offset


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str]) -> int:
    """Write `tensors` as one safetensors file with string `metadata`, atomically; returns the bytes written."""
    return save_safetensors_stream(layout_of(tensors), tensors.items(), path, metadata)

"""ComPEFT: compress a task vector to its top-k signs and one scale, and store it in a compact file.

"ComPEFT: Compression for Communicating Parameter Efficient Updates via Sparsification and Quantization" (Yadav,
Choshen, Raffel, Bansal; https://arxiv.org/abs/2311.13171).

Method (Sec. 3 of the paper, `compress_and_update_parms` of the reference code prateeky2806/ComPEFT):
- tau = theta_ft - theta_pre; keep the top-k fraction `density` of |tau|, zero the rest;
- ternarize: tau_hat = alpha * sigma(tau) * sign(tau_kept), where sigma is the standard deviation of the ORIGINAL
  tau (before the top-k) and alpha (the reference's `replace_factor`) is tuned on a small validation set.
  scope "global" is the reference's: one top-k threshold and one sigma over the whole flattened task vector (the
  reference flattens every parameter into one vector and calls `tv.std()`, the unbiased std); scope "tensor" takes
  both per tensor. Either way each tensor is stored with its own float scale alpha * sigma.

Storage (`save_compeft` / `load_compeft`): one safetensors file of uint8 streams per tensor plus a JSON metadata
entry (shape, count of kept entries, encoding, scale). The positions of the kept entries are coded one of two ways,
whichever takes fewer bytes for that tensor (ties go to the bitmap):
- "bitmap": a kept bitmap of n bits;
- "rice": Golomb-Rice codes of the gaps between consecutive kept positions with the parameter b that minimises
  the size, as two streams: the unary quotients (q ones then a zero per entry) and the b-bit remainders. Split
  streams cost exactly the bits of interleaved Rice codes and decode without a sequential scan.
Then the signs of the kept entries, one bit each in position order ("signs"). A tensor with no kept entry stores no
stream. The metadata records the CRC-32 of the data section, so a flipped bit is an error, not a wrong task vector.
At density d the Rice coding costs about H(d)/d + 1 bits per kept entry (about 7 bits at d = 0.05), the
bitmap 1/d + 1, so Rice wins below d of about 0.4. Every stream is padded to whole bytes only at its end, so the
file is 8 + header + sum over streams of ceil(bits / 8) bytes (`payload_bytes`).

Also: `topk_task_vector` (the reference's "just pruning" baseline: top-k, no ternarization, no rescale) and
`quantize_absmax` (naive symmetric per-tensor int-b quantization of a task vector, the paper's quantization
baseline).

Deviations: k = round(density * n) entries are kept (the engine's `keep_count`), entries tied with the k-th
magnitude are kept too; the reference keeps int(density * n) (they differ by at most one entry). Scales are stored
as float32.
"""

import json
import math
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from paperzoo.core.errors import ConfigError, DataError, require
from paperzoo.efficiency.merging.io import save_safetensors
from paperzoo.efficiency.merging.sparsify import global_threshold, magnitude_mask
from paperzoo.efficiency.merging.task_vector import StateDict, check_compatible, task_vector

__all__ = [
    "CompressedTaskVector",
    "TernaryTensor",
    "compeft_compress",
    "dense_bytes",
    "load_compeft",
    "payload_bytes",
    "quantize_absmax",
    "save_compeft",
    "task_vector_std",
    "topk_task_vector",
]

FORMAT = "paperzoo-compeft"
FORMAT_VERSION = "1"
_MAX_RICE = 40
_STREAMS = {"empty": (), "bitmap": ("kept", "signs"), "rice": ("unary", "remainder", "signs")}


def _f32(value: float) -> float:
    """`value` rounded to float32 (what the file stores)."""
    return float(np.float32(value))


@dataclass(frozen=True)
class TernaryTensor:
    """One compressed tensor: tau_hat = scale * signs.

    Args:
        signs: int8 tensor in {-1, 0, 1}, the tensor's shape; 0 where the entry was not kept.
        scale: alpha * sigma, a float32 value.
        sigma: the sigma the scale was made from (so alpha can be changed exactly).
    """

    signs: torch.Tensor
    scale: float
    sigma: float

    def dense(self) -> torch.Tensor:
        """tau_hat as float32, the signs' shape."""
        return self.signs.to(torch.float32) * torch.tensor(self.scale, dtype=torch.float32)


@dataclass(frozen=True)
class CompressedTaskVector:
    """A ComPEFT-compressed task vector: name -> TernaryTensor, with the settings that made it."""

    tensors: dict[str, TernaryTensor]
    density: float
    alpha: float
    scope: str

    def with_alpha(self, alpha: float) -> "CompressedTaskVector":
        """The same signs with scales alpha * sigma (tuning alpha needs no new top-k)."""
        require(alpha > 0 and math.isfinite(alpha), f"alpha={alpha} is not a positive finite number.")
        tensors = {n: TernaryTensor(t.signs, _f32(alpha * t.sigma), t.sigma) for n, t in self.tensors.items()}
        return CompressedTaskVector(tensors, self.density, float(alpha), self.scope)

    def task_vector(self) -> StateDict:
        """name -> tau_hat (float32)."""
        return {name: t.dense() for name, t in self.tensors.items()}

    def apply(self, base: Mapping[str, torch.Tensor]) -> StateDict:
        """base + tau_hat in the base's dtypes; tensors without a compressed delta are copied from the base."""
        out: StateDict = {}
        for name, tensor in base.items():
            if name in self.tensors:
                require(
                    tuple(tensor.shape) == tuple(self.tensors[name].signs.shape),
                    f"Tensor {name!r} has shape {tuple(tensor.shape)} in the base but "
                    f"{tuple(self.tensors[name].signs.shape)} in the compressed task vector.",
                )
                out[name] = (tensor.float() + self.tensors[name].dense()).to(tensor.dtype)
            else:
                out[name] = tensor.detach().clone()
        missing = [n for n in self.tensors if n not in base]
        if missing:
            raise ConfigError(f"The base has no tensor {missing[0]!r} of the compressed task vector.")
        return out

    def kept_fraction(self) -> float:
        """Fraction of the task vector's entries stored (non-zero signs)."""
        total = sum(t.signs.numel() for t in self.tensors.values())
        kept = sum(int(t.signs.count_nonzero()) for t in self.tensors.values())
        return kept / max(total, 1)


def _mergeable(base: Mapping[str, torch.Tensor], exclude: Sequence[str]) -> list[str]:
    import fnmatch

    return [n for n, t in base.items() if t.is_floating_point() and not any(fnmatch.fnmatchcase(n, p) for p in exclude)]


def task_vector_std(deltas: Iterable[torch.Tensor]) -> float:
    """Unbiased standard deviation over all entries of the tensors `deltas` yields (one at a time, float64 sums)."""
    count, total, squares = 0, 0.0, 0.0
    for delta in deltas:
        d = delta.detach().reshape(-1).to(torch.float64)
        count += d.numel()
        total += float(d.sum())
        squares += float((d * d).sum())
    if count < 2:
        return 0.0
    mean = total / count
    return math.sqrt(max(squares - count * mean * mean, 0.0) / (count - 1))


def _check_density(density: float) -> None:
    require(0.0 < density <= 1.0, f"density={density} is out of range; expected 0 < density <= 1.")


def _scope_stats(
    base: Mapping[str, torch.Tensor], model: Mapping[str, torch.Tensor], names: list[str], density: float, scope: str
) -> tuple[float | None, float | None]:
    """(global threshold, global sigma) for scope "global"; (None, None) for "tensor"."""
    require(scope in ("global", "tensor"), f"scope={scope!r} is not 'global' or 'tensor'.")
    if scope == "tensor":
        return None, None
    threshold = global_threshold(lambda: (task_vector(base[n], model[n], n) for n in names), density)
    sigma = task_vector_std(task_vector(base[n], model[n], n) for n in names)
    return threshold, sigma


def compeft_compress(
    base: Mapping[str, torch.Tensor],
    model: Mapping[str, torch.Tensor],
    *,
    density: float,
    alpha: float = 1.0,
    scope: str = "global",
    exclude: Sequence[str] = (),
) -> CompressedTaskVector:
    """ComPEFT-compress the task vector model - base.

    Args:
        base: name -> tensor of the pre-trained model.
        model: the fine-tuned model, same names and shapes.
        density: the kept fraction k (0.05 to 0.5 in the paper).
        alpha: the scale factor (the reference's replace_factor); tune it with `with_alpha` on validation data.
        scope: "global" (the reference: threshold and sigma over the whole task vector) or "tensor".
        exclude: fnmatch patterns of names left out (e.g. task heads, a tied copy); integer tensors are left out.
    """
    _check_density(density)
    require(alpha > 0 and math.isfinite(alpha), f"alpha={alpha} is not a positive finite number.")
    check_compatible(base, [model])
    names = _mergeable(base, exclude)
    threshold, sigma = _scope_stats(base, model, names, density, scope)
    tensors: dict[str, TernaryTensor] = {}
    with torch.no_grad():
        for name in names:
            delta = task_vector(base[name], model[name], name).cpu()  # float32, (*shape)
            keep = magnitude_mask(delta, density, threshold)
            tensor_sigma = sigma if sigma is not None else task_vector_std([delta])
            signs = (torch.sign(delta) * keep).to(torch.int8)
            tensors[name] = TernaryTensor(signs, _f32(alpha * tensor_sigma), float(tensor_sigma))
    return CompressedTaskVector(tensors, float(density), float(alpha), scope)


def topk_task_vector(
    base: Mapping[str, torch.Tensor],
    model: Mapping[str, torch.Tensor],
    *,
    density: float,
    scope: str = "global",
    exclude: Sequence[str] = (),
) -> StateDict:
    """The sparsify-only baseline: base + top-k(tau), kept values unchanged (the reference's "just pruning")."""
    _check_density(density)
    check_compatible(base, [model])
    names = set(_mergeable(base, exclude))
    threshold, _ = _scope_stats(base, model, sorted(names), density, scope)
    out: StateDict = {}
    with torch.no_grad():
        for name, tensor in base.items():
            if name not in names:
                out[name] = tensor.detach().clone()  # as `CompressedTaskVector.apply` does
                continue
            delta = task_vector(tensor, model[name], name)
            out[name] = (tensor.float() + delta * magnitude_mask(delta, density, threshold)).to(tensor.dtype)
    return out


def quantize_absmax(delta: torch.Tensor, bits: int) -> torch.Tensor:
    """Naive symmetric quantization of one tensor to `bits` bits (2..8) with one absmax scale; returns the
    dequantized float32 tensor. Levels are integers in [-(2^(b-1) - 1), 2^(b-1) - 1] times absmax / that bound."""
    require(2 <= bits <= 8, f"bits={bits} is out of range; expected 2 <= bits <= 8.")
    levels = 2 ** (bits - 1) - 1
    x = delta.detach().float()
    peak = float(x.abs().max()) if x.numel() else 0.0
    if peak == 0.0:
        return torch.zeros_like(x)
    step = peak / levels
    return torch.clamp(torch.round(x / step), -levels, levels) * step


def dense_bytes(tensors: Mapping[str, torch.Tensor], bytes_per_entry: int) -> int:
    """Payload bytes of a dense copy of `tensors` at `bytes_per_entry` (4 for fp32, 2 for fp16)."""
    return sum(t.numel() for t in tensors.values()) * bytes_per_entry


# ---------------------------------------------------------------------------------------------------------------
# the on-disk format


def _bytes(bits: int) -> int:
    return (bits + 7) // 8


def _gaps(positions: np.ndarray) -> np.ndarray:
    """Gaps between sorted kept positions: g_0 = p_0, g_i = p_i - p_{i-1} - 1 (all >= 0)."""
    return np.diff(positions, prepend=-1) - 1


def _rice_parameter(gaps: np.ndarray) -> tuple[int, int]:
    """(b, total bits) minimising sum_i (g_i >> b) + k * (1 + b)."""
    k = gaps.size
    best = (0, int((gaps >> 0).sum()) + k)
    for b in range(1, _MAX_RICE):
        bits = int((gaps >> b).sum()) + k * (1 + b)
        if bits < best[1]:
            best = (b, bits)
        if (gaps >> b).max(initial=0) == 0:
            break
    return best


@dataclass(frozen=True)
class _Plan:
    """How one tensor is coded: its encoding, kept count, Rice parameter and stream sizes in bytes."""

    encoding: str  # "empty", "bitmap" or "rice"
    count: int
    rice: int
    streams: dict[str, int]  # stream suffix -> bytes


def _plan(signs: torch.Tensor) -> tuple[_Plan, np.ndarray]:
    flat = signs.reshape(-1).numpy()
    positions = np.flatnonzero(flat).astype(np.int64)
    k, n = positions.size, flat.size
    if k == 0:
        return _Plan("empty", 0, 0, {}), positions
    bitmap = {"kept": _bytes(n), "signs": _bytes(k)}
    b, bits = _rice_parameter(_gaps(positions))
    rice = {"unary": _bytes(bits - k * b), "signs": _bytes(k)}
    if b > 0:
        rice["remainder"] = _bytes(k * b)
    if sum(rice.values()) < sum(bitmap.values()):
        return _Plan("rice", k, b, rice), positions
    return _Plan("bitmap", k, 0, bitmap), positions


def _encode(signs: torch.Tensor) -> tuple[_Plan, dict[str, np.ndarray]]:
    """The plan and the uint8 streams of one tensor's signs."""
    plan, positions = _plan(signs)
    flat = signs.reshape(-1).numpy()
    if plan.encoding == "empty":
        return plan, {}
    streams = {"signs": np.packbits(flat[positions] > 0)}
    if plan.encoding == "bitmap":
        streams["kept"] = np.packbits(flat != 0)
        return plan, streams
    gaps = _gaps(positions)
    b, k = plan.rice, plan.count
    quotients = gaps >> b  # (k,)
    ends = np.cumsum(quotients + 1) - 1  # index of each code's terminating zero in the unary stream
    # padded with ones, not zeros: then the k terminators are the only zeros, and a wrong count cannot decode
    unary = np.ones(8 * _bytes(int(ends[-1]) + 1), dtype=bool)
    unary[ends] = False
    streams["unary"] = np.packbits(unary)
    if b > 0:
        shifts = np.arange(b - 1, -1, -1, dtype=np.int64)  # most significant bit first
        remainder_bits = ((gaps[:, None] >> shifts[None, :]) & 1).astype(bool)  # (k, b)
        streams["remainder"] = np.packbits(remainder_bits.reshape(-1))
    assert all(streams[s].size == plan.streams[s] for s in plan.streams), "stream sizes disagree with the plan"
    assert k == positions.size
    return plan, streams


def payload_bytes(compressed: CompressedTaskVector) -> int:
    """The bytes of every stream of `compressed` as `save_compeft` writes them (the file adds 8 + its header)."""
    return sum(sum(_plan(t.signs)[0].streams.values()) for t in compressed.tensors.values())


def save_compeft(compressed: CompressedTaskVector, path: str | Path) -> int:
    """Write `compressed` to the safetensors file `path` atomically; returns the file's size in bytes."""
    tensors: dict[str, torch.Tensor] = {}
    entries: dict[str, dict[str, Any]] = {}
    for name, tensor in compressed.tensors.items():
        plan, streams = _encode(tensor.signs.cpu())
        for suffix, data in streams.items():
            tensors[f"{name}/{suffix}"] = torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8))
        entries[name] = {
            "shape": list(tensor.signs.shape),
            "encoding": plan.encoding,
            "count": plan.count,
            "rice": plan.rice,
            "scale": float(tensor.scale).hex(),
            "sigma": float(tensor.sigma).hex(),
        }
    checksum = 0
    for stream in tensors.values():
        checksum = zlib.crc32(stream.numpy().tobytes(), checksum)
    metadata = {
        "crc32": f"{checksum:08x}",
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "density": repr(compressed.density),
        "alpha": repr(compressed.alpha),
        "scope": compressed.scope,
        "tensors": json.dumps(entries, separators=(",", ":")),
    }
    return save_safetensors(tensors, path, metadata)


def _read(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Metadata and uint8 streams of a safetensors file; a DataError names a missing, truncated or corrupt file."""
    if not path.is_file():
        raise DataError(f"ComPEFT file {path} does not exist.")
    raw = path.read_bytes()
    problem = f"ComPEFT file {path} is truncated or corrupt"
    if len(raw) < 8:
        raise DataError(f"{problem}: {len(raw)} bytes, shorter than the 8-byte header length.")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if 8 + header_len > len(raw):
        raise DataError(f"{problem}: its header claims {header_len} bytes but the file has {len(raw) - 8} after it.")
    try:
        header = json.loads(raw[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{problem}: its header is not JSON ({err}).") from err
    if not isinstance(header, dict):
        raise DataError(f"{problem}: its header is not a JSON object.")
    metadata = header.pop("__metadata__", None) or {}
    data = raw[8 + header_len :]
    streams: dict[str, np.ndarray] = {}
    end = 0
    for name, info in header.items():
        try:
            start, stop = (int(v) for v in info["data_offsets"])
            ok = info["dtype"] == "U8" and list(info["shape"]) == [stop - start] and 0 <= start <= stop
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise DataError(f"{problem}: tensor {name!r} is not a 1-D uint8 stream with valid offsets.")
        if stop > len(data):
            raise DataError(f"{problem}: tensor {name!r} ends at byte {stop} of {len(data)} data bytes.")
        streams[name] = np.frombuffer(data, dtype=np.uint8, count=stop - start, offset=start)
        end = max(end, stop)
    if end != len(data):
        raise DataError(f"{problem}: {len(data) - end} bytes follow the last tensor.")
    if not isinstance(metadata, dict) or metadata.get("crc32") != f"{zlib.crc32(data):08x}":
        raise DataError(f"{problem}: the CRC-32 of its data is not the {metadata.get('crc32')!r} its header records.")
    return metadata, streams


def _decode(path: Path, name: str, entry: dict[str, Any], streams: dict[str, np.ndarray]) -> TernaryTensor:
    problem = f"ComPEFT file {path} is corrupt: tensor {name!r}"
    try:
        shape = tuple(int(s) for s in entry["shape"])
        encoding, k, b = str(entry["encoding"]), int(entry["count"]), int(entry["rice"])
        scale, sigma = float.fromhex(entry["scale"]), float.fromhex(entry["sigma"])
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{problem} has an unreadable entry {entry!r} ({err}).") from err
    n = math.prod(shape)
    if not (0 <= k <= n and 0 <= b < _MAX_RICE and encoding in ("empty", "bitmap", "rice")):
        raise DataError(f"{problem} has encoding {encoding!r}, count {k}, rice {b}; expected 0 <= count <= {n}.")

    def stream(suffix: str, nbytes: int) -> np.ndarray:
        data = streams.get(f"{name}/{suffix}")
        if data is None or data.size != nbytes:
            got = "none" if data is None else f"{data.size} bytes"
            raise DataError(f"{problem}: stream {suffix!r} has {got}; expected {nbytes} bytes.")
        return data

    flat = np.zeros(n, dtype=np.int8)
    if encoding == "bitmap":
        kept_bits = np.unpackbits(stream("kept", _bytes(n)), count=n).astype(bool)
        positions = np.flatnonzero(kept_bits)
        if positions.size != k:
            raise DataError(f"{problem}: its bitmap marks {positions.size} entries; expected {k}.")
    elif encoding == "rice":
        # the unary stream holds exactly k zeros (its padding is ones), the last of them in its last byte
        packed = streams.get(f"{name}/unary")
        unary = np.unpackbits(packed) if packed is not None else np.empty(0, dtype=np.uint8)
        ends = np.flatnonzero(unary == 0)
        if ends.size != k or k == 0 or _bytes(int(ends[-1]) + 1) != unary.size // 8:
            raise DataError(f"{problem}: its unary stream holds {ends.size} codes in {unary.size // 8} bytes, not {k}.")
        quotients = np.diff(ends, prepend=-1) - 1
        remainders = np.zeros(k, dtype=np.int64)
        if b > 0:
            bits = np.unpackbits(stream("remainder", _bytes(k * b)), count=k * b).reshape(k, b).astype(np.int64)
            remainders = bits @ (1 << np.arange(b - 1, -1, -1, dtype=np.int64))
        positions = np.cumsum((quotients.astype(np.int64) << b) + remainders + 1) - 1
        if positions.size and positions[-1] >= n:
            raise DataError(f"{problem}: a kept position {int(positions[-1])} is beyond its {n} entries.")
    else:
        positions = np.empty(0, dtype=np.int64)
        if k != 0:
            raise DataError(f"{problem} is 'empty' but counts {k} kept entries.")
    if k:
        positive = np.unpackbits(stream("signs", _bytes(k)), count=k).astype(bool)
        flat[positions] = np.where(positive, 1, -1).astype(np.int8)
    signs = torch.from_numpy(flat.copy()).reshape(shape)
    return TernaryTensor(signs, scale, sigma)


def load_compeft(path: str | Path) -> CompressedTaskVector:
    """Read a file written by `save_compeft`; a DataError names a missing, truncated or corrupt file."""
    path = Path(path)
    metadata, streams = _read(path)
    if metadata.get("format") != FORMAT or metadata.get("version") != FORMAT_VERSION:
        raise DataError(
            f"ComPEFT file {path} has format {metadata.get('format')!r} version {metadata.get('version')!r}; "
            f"expected {FORMAT!r} version {FORMAT_VERSION!r}."
        )
    try:
        entries = json.loads(metadata["tensors"])
        density, alpha, scope = float(metadata["density"]), float(metadata["alpha"]), str(metadata["scope"])
    except (KeyError, ValueError) as err:
        raise DataError(f"ComPEFT file {path} has unreadable metadata ({err}).") from err
    if not isinstance(entries, dict):
        raise DataError(f"ComPEFT file {path} has unreadable metadata: 'tensors' is not a JSON object.")
    tensors = {name: _decode(path, name, entry, streams) for name, entry in entries.items()}
    expected = {f"{name}/{suffix}" for name, entry in entries.items() for suffix in _STREAMS[entry["encoding"]]}
    expected -= {f"{name}/remainder" for name, entry in entries.items() if int(entry["rice"]) == 0}
    if set(streams) != expected:
        odd = sorted(set(streams) ^ expected)
        raise DataError(f"ComPEFT file {path} is corrupt: streams {odd[:3]} do not match its tensor entries.")
    return CompressedTaskVector(tensors, density, alpha, scope)

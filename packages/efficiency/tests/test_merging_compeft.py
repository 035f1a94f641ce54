"""ComPEFT: hand-computed ternarization, sigma of the original task vector, exact file round trip, file size equal
to the bit budget plus the header, and a DataError naming a truncated or corrupt file."""

import json
import math
import struct
from pathlib import Path

import pytest
import torch

from paperzoo.core.errors import ConfigError, DataError
from paperzoo.core.testing.conformance import check_no_mutation
from paperzoo.efficiency.merging.compeft import (
    CompressedTaskVector,
    compeft_compress,
    load_compeft,
    payload_bytes,
    quantize_absmax,
    save_compeft,
    task_vector_std,
    topk_task_vector,
)


def test_ternarization_hand_computed() -> None:
    base = {"w": torch.zeros(2, 3), "b": torch.ones(2)}
    model = {"w": torch.tensor([[0.5, -2.0, 0.1], [0.0, 1.0, -0.3]]), "b": torch.tensor([1.0, 0.2])}
    # tau over the whole vector: [0.5, -2, 0.1, 0, 1, -0.3, 0, -0.8]; density 0.25 keeps round(2) = 2: -2 and 1
    tau = torch.tensor([0.5, -2.0, 0.1, 0.0, 1.0, -0.3, 0.0, -0.8])
    sigma = float(tau.std())  # the unbiased std of the ORIGINAL tau, as the reference's tv.std()
    out = compeft_compress(base, model, density=0.25, alpha=2.0)
    torch.testing.assert_close(out.tensors["w"].signs, torch.tensor([[0, -1, 0], [0, 1, 0]], dtype=torch.int8))
    torch.testing.assert_close(out.tensors["b"].signs, torch.tensor([0, 0], dtype=torch.int8))
    assert out.tensors["w"].scale == pytest.approx(2.0 * sigma, rel=1e-6)
    merged = out.apply(base)
    s = 2.0 * sigma
    torch.testing.assert_close(merged["w"], torch.tensor([[0.0, -s, 0.0], [0.0, s, 0.0]]))
    torch.testing.assert_close(merged["b"], torch.ones(2))
    # per-tensor scope: w keeps round(0.25 * 6) = 2 (-2, 1) with w's own sigma; b keeps round(0.5) = 0
    per = compeft_compress(base, model, density=0.25, alpha=1.0, scope="tensor")
    assert per.tensors["w"].scale == pytest.approx(float(tau[:6].std()), rel=1e-6)
    assert int(per.tensors["b"].signs.count_nonzero()) == 0
    # with_alpha rescales exactly, and the sparsify-only baseline keeps the values
    assert out.with_alpha(3.0).tensors["w"].scale == pytest.approx(3.0 * sigma, rel=1e-6)
    sparse = topk_task_vector(base, model, density=0.25)
    torch.testing.assert_close(sparse["w"], torch.tensor([[0.0, -2.0, 0.0], [0.0, 1.0, 0.0]]))
    torch.testing.assert_close(sparse["b"], torch.ones(2))


def test_std_streams_like_the_whole_vector() -> None:
    parts = [torch.randn(100, generator=torch.Generator().manual_seed(i)) * (i + 1) for i in range(4)]
    assert task_vector_std(parts) == pytest.approx(float(torch.cat(parts).double().std()), rel=1e-9)


def test_no_mutation_and_excluded_names() -> None:
    g = torch.Generator().manual_seed(0)
    base = {"a": torch.randn(8, 4, generator=g), "head.weight": torch.randn(3, 4, generator=g)}
    model = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base.items()}
    check_no_mutation(lambda b, m: compeft_compress(b, m, density=0.5, exclude=("head.*",)), b=base, m=model)
    out = compeft_compress(base, model, density=0.5, exclude=("head.*",))
    assert set(out.tensors) == {"a"}
    torch.testing.assert_close(out.apply(base)["head.weight"], base["head.weight"])


def test_quantize_absmax_naive_reference() -> None:
    x = torch.tensor([-1.0, -0.4, 0.0, 0.26, 0.5, 1.0])
    # 2 bits: levels {-1, 0, 1} * absmax; 3 bits: step 1/3
    torch.testing.assert_close(quantize_absmax(x, 2), torch.tensor([-1.0, 0.0, 0.0, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(quantize_absmax(x, 3), torch.tensor([-1.0, -1 / 3, 0.0, 1 / 3, 2 / 3, 1.0]))
    y = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    step = float(y.abs().max()) / 127
    assert (quantize_absmax(y, 8) - y).abs().max() <= step / 2 + 1e-6
    with pytest.raises(ConfigError, match="bits=1"):
        quantize_absmax(y, 1)


def _compressed(density: float, seed: int = 0) -> tuple[dict[str, torch.Tensor], CompressedTaskVector]:
    g = torch.Generator().manual_seed(seed)
    base = {
        "big": torch.randn(64, 300, generator=g),
        "small": torch.randn(7, generator=g),
        "fp16": torch.randn(33, 5, generator=g).half(),
        "steps": torch.tensor([3]),
    }
    model = {
        k: (v.float() + torch.randn(v.shape, generator=g)).to(v.dtype) if v.is_floating_point() else v
        for k, v in base.items()
    }
    model["small"] = base["small"].clone()  # a tensor with no change at all: nothing kept ("empty")
    return base, compeft_compress(base, model, density=density, alpha=1.7)


@pytest.mark.parametrize("density", [0.02, 0.1, 0.5, 1.0])
def test_file_round_trip_and_size(tmp_path: Path, density: float) -> None:
    base, out = _compressed(density)
    path = tmp_path / "tau.safetensors"
    size = save_compeft(out, path)
    assert size == path.stat().st_size
    (header_len,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert size == 8 + header_len + payload_bytes(out)
    back = load_compeft(path)
    assert set(back.tensors) == set(out.tensors) == {"big", "small", "fp16"}
    for name, tensor in out.tensors.items():
        assert torch.equal(back.tensors[name].signs, tensor.signs)
        assert back.tensors[name].scale == tensor.scale and back.tensors[name].sigma == tensor.sigma
    assert (back.density, back.alpha, back.scope) == (out.density, out.alpha, out.scope)
    for name, value in back.apply(base).items():
        assert torch.equal(value, out.apply(base)[name])
    encodings = {n: e["encoding"] for n, e in json.loads(_metadata(path)["tensors"]).items()}
    assert encodings["small"] == "empty"
    # sparse tensors take Rice-coded gaps, dense ones the bitmap
    assert encodings["big"] == ("rice" if density <= 0.1 else "bitmap")


def _metadata(path: Path) -> dict[str, str]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n])["__metadata__"]


def _naive_bytes(signs: torch.Tensor) -> int:
    """Per tensor, plain Python: the smaller of kept bitmap + sign bits and Rice-coded gaps + sign bits."""
    flat = signs.reshape(-1).tolist()
    positions = [i for i, v in enumerate(flat) if v != 0]
    n, k = len(flat), len(positions)
    if k == 0:
        return 0
    gaps = [p - q - 1 for p, q in zip(positions, [-1, *positions[:-1]], strict=True)]
    costs = [sum(g >> b for g in gaps) + k * (1 + b) for b in range(30)]
    b = costs.index(min(costs))
    rice = math.ceil((sum(g >> b for g in gaps) + k) / 8) + math.ceil(k * b / 8) + math.ceil(k / 8)
    bitmap = math.ceil(n / 8) + math.ceil(k / 8)
    return rice if rice < bitmap else bitmap


@pytest.mark.parametrize("density", [0.05, 0.3])
def test_budget_matches_the_bit_count(density: float) -> None:
    _, out = _compressed(density)
    total = sum(t.signs.numel() for t in out.tensors.values())
    assert sum(int(t.signs.count_nonzero()) for t in out.tensors.values()) == round(density * total)
    assert payload_bytes(out) == sum(_naive_bytes(t.signs) for t in out.tensors.values())
    big = out.tensors["big"].signs
    d = int(big.count_nonzero()) / big.numel()
    entropy_bits = big.numel() * (-(d * math.log2(d) + (1 - d) * math.log2(1 - d))) + int(big.count_nonzero())
    assert _naive_bytes(big) * 8 < 1.1 * float(entropy_bits)  # near the entropy bound of positions + signs


def test_truncated_or_corrupt_file_is_a_data_error(tmp_path: Path) -> None:
    _, out = _compressed(0.1)
    path = tmp_path / "tau.safetensors"
    save_compeft(out, path)
    raw = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    for cut in (4, 100, len(raw) - 1):
        bad.write_bytes(raw[:cut])
        with pytest.raises(DataError, match="bad.safetensors"):
            load_compeft(bad)
    bad.write_bytes(raw + b"\x00")
    with pytest.raises(DataError, match="bad.safetensors"):
        load_compeft(bad)
    # a flipped count in the metadata: the streams no longer decode to it
    (n,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + n].decode()
    entries = json.loads(json.loads(header)["__metadata__"]["tensors"])
    count = entries["big"]["count"]
    tampered = header.replace(f'\\"count\\":{count},', f'\\"count\\":{count + 1},', 1)
    assert tampered != header and len(tampered) == len(header) + len(str(count + 1)) - len(str(count))
    tampered += " " * (-len(tampered) % 8)
    bad.write_bytes(struct.pack("<Q", len(tampered)) + tampered.encode() + raw[8 + n :])
    with pytest.raises(DataError, match="bad.safetensors"):
        load_compeft(bad)
    flipped = bytearray(raw)
    flipped[-3] ^= 0x10  # one bit of the signs or codes
    bad.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="bad.safetensors.*CRC-32"):
        load_compeft(bad)
    with pytest.raises(DataError, match="missing.safetensors"):
        load_compeft(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"a":1}' + b" " * 9)
    with pytest.raises(DataError, match="other.safetensors"):
        load_compeft(other)


def test_bad_settings() -> None:
    base = {"w": torch.zeros(4)}
    with pytest.raises(ConfigError, match="density=0"):
        compeft_compress(base, base, density=0.0)
    with pytest.raises(ConfigError, match="alpha=-1"):
        compeft_compress(base, base, density=0.5, alpha=-1.0)
    with pytest.raises(ConfigError, match="scope='x'"):
        compeft_compress(base, base, density=0.5, scope="x")

"""Measurement helpers shared by claim checks and the performance benchmarks (`benchmarks/perf/`)."""

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn


def device_name(device: torch.device) -> str:
    """The card's name for CUDA; for a CPU its model name and the torch intra-op thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "CPU")
    threads = torch.get_num_threads()
    return f"{name}, {threads} thread{'s' if threads != 1 else ''}"


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so a timer read afterwards measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_bytes(run: Callable[[], Any], device: torch.device | None = None) -> int:
    """Peak bytes allocated while `run()` executes, above what was allocated before it.

    CUDA: the caching allocator's peak. CPU: the torch CPU allocator's peak live bytes, replayed in time order from
    the profiler's memory events (each op's own allocations; frees outside ops appear as "[memory]" events), which,
    unlike the process RSS, neither includes the interpreter nor stays at an earlier high-water mark.
    """
    if device is not None and device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with (
        warnings.catch_warnings(action="ignore"),
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        run()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def saved_activation_bytes(model: nn.Module, loss: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd saves for the backward pass of `loss()`, parameters excluded.

    This is the activation memory of a training step, and unlike the process RSS it does not depend on what the
    allocator cached before. Runs one forward and backward, then clears the gradients.
    """
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        value = loss()
    value.backward()
    model.zero_grad(set_to_none=True)
    return sum(saved.values())

"""``ddtool bench-speed``: time, memory and FLOP throughput of one distillation iteration.

Figures for a given problem shape (dataset shape, model, IPC, batch_syn, syn_steps) and each unroll
mode, on random data and parameters, so no dataset or buffer is needed. The achieved FLOP rate
(the step's FLOPs counted by ``torch.utils.flop_counter`` over measured time) shows how far a
configuration is from the hardware's limit. Results are printed and appended to a JSON-lines file
with the device, software versions and date, so numbers from different machines stay comparable.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from .augment import DSA
from .io import atomic_write
from .models import FlatModel, create_model
from .unroll import unroll, unroll_checkpointed

MODES = {"full": unroll, "checkpointed": unroll_checkpointed}

#: Dense peak TFLOP/s (float32 on CUDA cores, TF32 on tensor cores) from NVIDIA's data sheets, for
#: the GPUs distillation is usually run on. More specific names come first ("H100 PCIe" before "H100").
GPU_PEAK_TFLOPS = {
    "H100 PCIe": (51.2, 378.0), "H100": (66.9, 494.7), "H200": (66.9, 494.7), "GH200": (66.9, 494.7),
    "A100": (19.5, 156.0), "A10G": (31.2, 62.5), "L40S": (91.6, 183.0), "L4": (30.3, 60.0),
    "RTX 4090": (82.6, 82.6), "RTX 3090": (35.6, 35.6), "V100": (15.7, None), "T4": (8.1, None),
}


def hardware_peak_tflops(device: torch.device, tf32: bool = False) -> tuple[float, str] | None:
    """The device's float32 peak and where the figure comes from, or None when unknown.

    A measured rate means little without the ceiling it is measured against; on CPUs the ceiling is
    an upper estimate (cores x clock x SIMD lanes x 2 for FMA x 2 FMA units), since the number of
    FMA units per core is not visible from Linux.
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (fp32, tf32_peak) in GPU_PEAK_TFLOPS.items():
            if key in name:
                if tf32 and tf32_peak:
                    return tf32_peak, f"{name} dense TF32, data sheet"
                return fp32, f"{name} float32, data sheet"
        return None
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    lanes = 16 if " avx512f" in flags else 8 if " avx2" in flags else 4
    if not mhz or " fma" not in flags and lanes > 4:
        return None
    threads = torch.get_num_threads()
    peak = threads * max(mhz) * 1e6 * lanes * 2 * 2 / 1e12
    return peak, f"estimate: {threads} cores x {max(mhz):.0f} MHz x {lanes} float32 lanes x 2 (FMA) x 2 FMA units"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_iteration(fn, student, theta0, theta_star, images, labels, lr, steps, batch_syn, augment):
    theta_n, _ = fn(student, theta0, images, labels, lr, steps, batch_syn, F.cross_entropy, augment)
    loss = ((theta_n - theta_star) ** 2).sum() / ((theta0 - theta_star) ** 2).sum()
    loss.backward()
    images.grad = None
    lr.grad = None


def cpu_peak_bytes(run) -> int:
    """Peak extra host memory of ``run()``, from the profiler's allocation events in time order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    current = peak = 0
    for e in events:
        current += e.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def measure(mode, *, channels, size, num_classes, model, model_options, ipc, batch_syn, syn_steps,
            device, iterations=3, warmup=1, dsa=True, seed=0) -> dict:
    torch.manual_seed(seed)
    net = create_model(model, channels, num_classes, size, **model_options).to(device)
    student = FlatModel(net)
    theta0 = student.flatten()
    theta_star = theta0 + 0.01 * torch.randn_like(theta0)
    n = ipc * num_classes
    images = torch.randn(n, channels, size, size, device=device, requires_grad=True)
    labels = torch.arange(num_classes, device=device).repeat_interleave(ipc)
    lr = torch.tensor(0.01, device=device, requires_grad=True)
    augment = DSA() if dsa else None
    batch_syn = batch_syn or n
    fn = MODES[mode]

    def run():
        one_iteration(fn, student, theta0, theta_star, images, labels, lr, syn_steps, batch_syn, augment)

    with FlopCounterMode(display=False) as counter:
        run()
    flops = counter.get_total_flops()
    for _ in range(warmup):
        run()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    for _ in range(iterations):
        _sync(device)
        t = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - t)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = cpu_peak_bytes(run)
    seconds = statistics.median(times)
    return {
        "mode": mode, "seconds_per_iteration": seconds, "peak_memory_bytes": int(peak),
        "gflop_per_iteration": flops / 1e9, "achieved_tflops": flops / seconds / 1e12,
        "params": student.num_params, "images": n,
        # on a shared CPU the times mean little without the load they were measured under
        "load_average": [load_before, os.getloadavg()[0] if load_before is not None else None],
    }


def append_results(path, rows: list[dict]) -> None:
    path = Path(path)
    old = path.read_bytes() if path.exists() else b""
    new = b"".join((json.dumps(r) + "\n").encode() for r in rows)
    atomic_write(path, lambda fh: fh.write(old + new))

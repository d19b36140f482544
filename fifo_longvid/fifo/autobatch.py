"""``--max-batch auto``: how many samples go through the U-Net per call, chosen for speed.

One FIFO iteration is ``rows`` samples (every window, cond and uncond). On a GPU, bigger calls amortise
launches and fill the device, so ``auto`` takes as many samples as free memory allows, measured by one
probe forward at the run's real context length with the run's techniques installed. On a CPU a
compute-bound model gains nothing from a big call and often loses (cache misses), so ``auto`` times one
call of each candidate size (2, 4, 8, ... up to ``rows``; cond/uncond pairs stay together) on the
run's shapes and keeps the fastest per sample; the larger size wins within ``TIE``.

Chunk sizes change float rounding (not the maths), so the choice is recorded in the sidecar and the
resume state: a resumed run keeps it, and ``--max-batch N`` reproduces a run exactly. Within one process
the calibration is done once per U-Net and shape (``_CALIBRATED``): every video of a batch run, and two
runs with the same seed, use the same chunks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

TIE = 0.03  # a larger batch within 3 % of the fastest per-sample time wins (fewer calls, less overhead)
MEMORY_HEADROOM = 0.8  # fraction of the free CUDA memory the probe's per-sample peak may use


_CALIBRATED: dict[tuple, BatchChoice] = {}


@dataclass
class BatchChoice:
    value: int | None  # samples per U-Net call; None: the whole iteration in one call
    how: str  # one line for the log and the sidecar
    timings: dict[int, float] = field(default_factory=dict)  # CPU calibration: candidate -> s per sample


def candidates(rows: int) -> list[int]:
    """Even sizes 2, 4, 8, ... below ``rows``, then ``rows`` itself."""
    sizes, c = [], 2
    while c < rows:
        sizes.append(c)
        c *= 2
    return sizes + [rows]


def _inputs(n: int, channels: int, frames: int, latent_hw: tuple[int, int], context: torch.Tensor,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, channels, frames, *latent_hw, generator=g).to(device)
    t = torch.full((n, frames), 500, dtype=torch.long, device=device)
    ctx = context[:1].to(device).expand(n, -1, -1)
    return x, t, ctx


def calibrate_cpu(unet: torch.nn.Module, channels: int, rows: int, frames: int, latent_hw: tuple[int, int],
                  context: torch.Tensor, repeats: int = 1) -> BatchChoice:
    """Time one U-Net call per candidate size (after one warm-up call) and keep the fastest per sample."""
    device = context.device
    key = (id(unet), next(unet.parameters()).dtype, str(device), channels, rows, frames, tuple(latent_hw),
           context.shape[-2], torch.get_num_threads())
    if key in _CALIBRATED:
        return _CALIBRATED[key]
    sizes = candidates(rows)
    if len(sizes) == 1:
        return BatchChoice(None, f"auto: {rows} samples per iteration, one call")
    per_sample: dict[int, float] = {}
    with torch.no_grad():
        x, t, ctx = _inputs(max(sizes), channels, frames, latent_hw, context, device)
        unet(x[:2], t[:2], ctx[:2])  # warm-up: allocator, thread pool, lazy init
        for n in sizes:
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                unet(x[:n], t[:n], ctx[:n])
                best = min(best, time.perf_counter() - t0)
            per_sample[n] = best / n
    fastest = min(per_sample.values())
    chosen = max(n for n, s in per_sample.items() if s <= fastest * (1 + TIE))
    table = ", ".join(f"{n}: {s:.3f}" for n, s in per_sample.items())
    value = None if chosen >= rows else chosen
    choice = BatchChoice(value, f"auto: CPU calibration, s/sample by call size {{{table}}} -> {chosen}", per_sample)
    _CALIBRATED[key] = choice
    return choice


def probe_cuda(unet: torch.nn.Module, channels: int, rows: int, frames: int, latent_hw: tuple[int, int],
               context: torch.Tensor) -> BatchChoice:
    """Peak memory of one (cond, uncond) pair at the real context length -> as many samples as fit."""
    device = context.device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.no_grad():
        x, t, ctx = _inputs(2, channels, frames, latent_hw, context, device)
        unet(x, t, ctx)
    per_sample = max(1, (torch.cuda.max_memory_allocated(device) - base) // 2)
    free, _ = torch.cuda.mem_get_info(device)
    fit = max(2, int(free * MEMORY_HEADROOM) // per_sample // 2 * 2)
    value = None if fit >= rows else fit
    return BatchChoice(value, f"auto: CUDA probe, {per_sample / 2**20:.0f} MiB per sample, "
                              f"{free / 2**30:.1f} GiB free -> {min(fit, rows)} of {rows}")

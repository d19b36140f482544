"""``--max-batch auto``: how many samples go through the U-Net per call, as a fixed rule of the run.

Chunk sizes change float rounding (not the maths), so the choice must never depend on a clock or on memory
that happens to be free: the same command, seed and machine give the same video, however loaded the machine.
``auto`` is therefore a pure function of what the user controls (model config, shapes, context length,
techniques) and of the machine's fixed properties (device kind, total device memory):

* **CPU** (``cpu_rule``). A compute-bound model gains nothing from a big call and loses once a call's
  activations leave the caches, so a call holds at most ``CPU_CALL_ELEMENTS`` activation elements at the
  U-Net's first level (samples x model_channels x frames x h x w), in whole cond/uncond pairs. Measured by
  ``scripts/bench_autobatch.py`` against the best size found by timing (README "Reproducibility").
* **CUDA** (``cuda_rule``). One probe forward of a (cond, uncond) pair at the run's real context length, with
  the run's techniques installed, gives the peak activation bytes per sample (the allocator's count of live
  tensors: the same for the same shapes). The budget is ``CUDA_MEMORY_SHARE`` of the card's *total* memory
  minus what this process already holds (weights, queue) and minus the techniques' per-frame stores at their
  largest (``reserve``: they grow after the probe, as frames fill the queue; ``fifo/costs.py`` sizes them up
  front), and the chunk is the largest power of two that fits: free memory, which other processes change, is
  never read.

The choice and its reason are logged, recorded in the sidecar (``runtime.max_batch_how``) and in the resume
state, so a resumed run keeps it even if the rule's inputs (e.g. the card) changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CPU_CALL_ELEMENTS = 2**18  # first-level activation elements per CPU call (tiny at 128x128: 4 samples; medium: 2)
CUDA_MEMORY_SHARE = 0.8  # of the card's total memory, for this process's weights, queue and one call


@dataclass
class BatchChoice:
    value: int | None  # samples per U-Net call; None: the whole iteration in one call
    how: str  # one line for the log and the sidecar


def pair_floor(n: int) -> int:
    """``n`` rounded down to a whole number of cond/uncond pairs, at least one pair."""
    return max(2, n // 2 * 2)


def pow2_floor(n: int) -> int:
    """The largest power of two <= n (at least 2): a margin against small changes in the rule's inputs."""
    return max(2, 1 << (max(n, 1).bit_length() - 1))


def cpu_rule(model_channels: int, rows: int, frames: int, latent_hw: tuple[int, int]) -> BatchChoice:
    """Samples per CPU call from the activation size of one sample (no timing)."""
    per_sample = model_channels * frames * latent_hw[0] * latent_hw[1]
    fit = pair_floor(CPU_CALL_ELEMENTS // per_sample)
    value = None if fit >= rows else fit
    return BatchChoice(value, f"auto: CPU rule, {per_sample} activation elements per sample, "
                              f"<= {CPU_CALL_ELEMENTS} per call -> {min(fit, rows)} of {rows}")


def cuda_fit(per_sample_bytes: int, held_bytes: int, total_bytes: int, reserve_bytes: int = 0) -> int:
    """Samples per CUDA call: the largest power of two whose activations fit beside what is already held and
    what the techniques' stores will hold at their largest."""
    budget = int(total_bytes * CUDA_MEMORY_SHARE) - held_bytes - reserve_bytes
    return pow2_floor(budget // max(1, per_sample_bytes))


def cuda_rule(unet: torch.nn.Module, channels: int, rows: int, frames: int, latent_hw: tuple[int, int],
              context: torch.Tensor, reserve_bytes: int = 0) -> BatchChoice:
    """Peak activation bytes of one (cond, uncond) pair at the real context length -> samples per call."""
    device = context.device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    held = torch.cuda.memory_allocated(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, channels, frames, *latent_hw, generator=g).to(device)  # fp32, as the sampler passes it
    t = torch.full((2, frames), 500, dtype=torch.long, device=device)
    with torch.no_grad():
        unet(x, t, context[:1].to(device).expand(2, -1, -1))
    per_sample = max(1, (torch.cuda.max_memory_allocated(device) - held) // 2)
    del x, t
    total = torch.cuda.get_device_properties(device).total_memory
    fit = cuda_fit(per_sample, held, total, reserve_bytes)
    value = None if fit >= rows else fit
    stores = f" and {reserve_bytes / 2**30:.2f} GiB of technique stores" if reserve_bytes else ""
    return BatchChoice(value, f"auto: CUDA rule, {per_sample / 2**20:.0f} MiB per sample, "
                              f"{CUDA_MEMORY_SHARE:.0%} of {total / 2**30:.1f} GiB total less "
                              f"{held / 2**30:.2f} GiB held{stores} -> {min(fit, rows)} of {rows}")

"""The diagonal FIFO loop over a window denoiser (knows nothing about U-Nets or techniques).

Each iteration denoises every window by one DDIM step at per-frame timesteps, dequeues the clean
head frame and enqueues fresh noise at the tail. When the windows of an iteration are independent
(always, for the reference layouts) they go through the denoiser as ONE batch; the result equals
the reference's sequential window loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..diffusion.noise import NoiseSource
from ..diffusion.sampling import check_finite
from ..diffusion.schedule import DDIMSchedule, ddim_step
from .queue import FifoPlan, FrameQueue, Window


@dataclass
class WindowBatch:
    """What the denoiser sees: windows stacked on the batch axis, with per-frame metadata."""

    x: torch.Tensor  # (W*B, C, f, h, w)
    t: torch.Tensor  # (W*B, f) timesteps
    step_idx: torch.Tensor  # (W*B, f) schedule indices
    frame_ids: torch.Tensor  # (W*B, f) permanent frame ids


WindowDenoiser = Callable[[WindowBatch], torch.Tensor]


def _denoise_windows(denoise: WindowDenoiser, queue: FrameQueue, windows: list[Window],
                     schedule: DDIMSchedule, noise: NoiseSource | None, use_scale: bool) -> torch.Tensor:
    x, idx, ids = queue.gather(windows)
    t = schedule.timesteps.to(x.device)[idx.to(x.device)]
    eps = denoise(WindowBatch(x, t, idx, ids))
    z = noise.randn(x.shape) if noise is not None else None
    x_prev, _ = ddim_step(x, eps, schedule, idx, noise=z, use_scale=use_scale)
    return x_prev


def fifo_iteration(denoise: WindowDenoiser, queue: FrameQueue, plan: FifoPlan, schedule: DDIMSchedule,
                   noise: NoiseSource, use_scale: bool = False, batch_windows: bool = True,
                   iteration: int = 0) -> tuple[torch.Tensor, int]:
    """One FIFO iteration in place on ``queue``; returns the dequeued (B, C, 1, h, w) latent and its id.

    ``use_scale=False`` replicates the reference FIFO step, which ignores scale_arr (quirk Q1).
    """
    stochastic = bool((schedule.sigmas != 0).any())
    step_noise = noise if stochastic else None
    windows = plan.windows()
    if batch_windows and plan.windows_independent():
        queue.scatter(windows, _denoise_windows(denoise, queue, windows, schedule, step_noise, use_scale))
    else:
        for w in windows:
            queue.scatter([w], _denoise_windows(denoise, queue, [w], schedule, step_noise, use_scale))
    check_finite(queue.latents, f"FIFO iteration {iteration}")
    tail = noise.randn(queue.latents[:, :, -1:].shape)
    return queue.pop_push(plan.head, tail)

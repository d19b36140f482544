"""Plain DDIM sampling of one clip (VideoCrafter's base sampler) over a denoiser callable."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .context import StepContext, publish
from .guidance import Denoiser
from .noise import NoiseSource
from .schedule import DDIMSchedule, ddim_step


class NonFiniteError(FloatingPointError):
    """NaN/inf appeared in the latents; the message names the step."""


def check_finite(x: torch.Tensor, where: str) -> None:
    if not torch.isfinite(x).all():
        raise NonFiniteError(
            f"NaN/inf in the latents at {where}. Try --dtype fp32 (fp16 can overflow), a lower --cfg, "
            "or check the checkpoint."
        )


def sample_ddim(
    denoise: Denoiser,
    x_T: torch.Tensor,
    schedule: DDIMSchedule,
    use_scale: bool = True,
    noise: NoiseSource | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Denoise ``x_T`` (B, C, F, H, W) through every DDIM step, noisiest first; returns clean latents.

    Matches the reference ``DDIMSampler.sample`` (with VideoCrafter2's ``use_scale``). ``noise`` is
    required when the schedule has eta > 0.
    """
    x = x_T.float()
    b, _, f = x.shape[:3]
    if schedule.stochastic and noise is None:
        raise ValueError("eta > 0 needs a NoiseSource for the per-step noise")
    steps = schedule.num_steps
    ts = schedule.timestep_list or tuple(int(v) for v in schedule.timesteps.cpu())
    for n, i in enumerate(reversed(range(steps))):
        t = torch.full((b, f), ts[i], dtype=torch.long, device=x.device)
        idx = torch.full((b, f), i, dtype=torch.long, device=x.device)
        with publish(StepContext(phase="base", iteration=n, step_idx=idx)):
            eps = denoise(x, t)
        z = noise.randn(x.shape) if schedule.stochastic else None
        x, _ = ddim_step(x, eps, schedule, i, noise=z, use_scale=use_scale)
        if callback is not None or n == steps - 1:  # the progress callback syncs anyway
            check_finite(x, f"base sampling step {n + 1}/{steps} (t={ts[i]})")
        if callback is not None:
            callback(n + 1, steps)
    return x

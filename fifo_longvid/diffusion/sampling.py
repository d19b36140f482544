"""Plain sampling of one clip over a denoiser callable: DDIM (VideoCrafter's base sampler) or flow matching's
Euler, whichever the schedule is (it supplies the per-step coefficients and the update)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import NonFiniteError
from .context import StepContext, publish
from .guidance import Denoiser
from .noise import NoiseSource
from .schedule_protocol import Schedule


def check_finite(x: torch.Tensor, where: str) -> None:
    if not torch.isfinite(x).all():
        raise NonFiniteError(
            f"NaN/inf in the latents at {where}. Try --dtype fp32 (fp16 can overflow), a lower --cfg, "
            "or check the checkpoint."
        )


def sample_clip(
    denoise: Denoiser,
    x_T: torch.Tensor,
    schedule: Schedule,
    noise: NoiseSource | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Denoise ``x_T`` (B, C, F, H, W) through every step of ``schedule``, noisiest first; returns clean latents.

    With a DDIM schedule this matches the reference ``DDIMSampler.sample`` (VideoCrafter2's scaled schedule gives
    its ``use_scale`` sampler); with a flow schedule it is diffusers' flow-matching Euler loop. ``noise`` is
    required when the schedule has eta > 0.
    """
    x = x_T.float()
    b, _, f = x.shape[:3]
    if schedule.stochastic and noise is None:
        raise ValueError("eta > 0 needs a NoiseSource for the per-step noise")
    steps = schedule.num_steps
    ts = schedule.timestep_list or tuple(int(v) for v in schedule.timesteps.cpu())
    for n, i in enumerate(reversed(range(steps))):
        t = torch.full((b, f), ts[i], dtype=schedule.timesteps.dtype, device=x.device)
        idx = torch.full((b, f), i, dtype=torch.long, device=x.device)
        host = StepContext(phase="base", iteration=n, step_idx=torch.full((b, f), i, dtype=torch.long))
        with publish(StepContext(phase="base", iteration=n, step_idx=idx, host=host)):  # host: routing, no sync
            eps = denoise(x, t)
        z = noise.randn(x.shape) if schedule.stochastic else None
        x, _ = schedule.coeffs(i, x).update(x, eps, z)
        if callback is not None or n == steps - 1:  # the progress callback syncs anyway
            check_finite(x, f"base sampling step {n + 1}/{steps} (t={ts[i]})")
        if callback is not None:
            callback(n + 1, steps)
    return x

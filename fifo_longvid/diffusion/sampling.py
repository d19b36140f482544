"""Plain sampling of one clip over a denoiser callable: DDIM (VideoCrafter's base sampler) or flow matching's
Euler, whichever the schedule is (it supplies the per-step coefficients and the update).

An *anchor* is a frame whose latent is given, not sampled: every network call sees it clean (its latent, at
timestep 0) and the clip ends with it. A model that takes an image as its first frame runs on this.
"""

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
    anchors: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Denoise ``x_T`` (B, C, F, H, W) through every step of ``schedule``, noisiest first; returns clean latents.

    With a DDIM schedule this matches the reference ``DDIMSampler.sample`` (VideoCrafter2's scaled schedule gives
    its ``use_scale`` sampler); with a flow schedule it is diffusers' flow-matching Euler loop. ``noise`` is
    required when the schedule has eta > 0.

    ``anchors`` maps a frame index to its latent (B or 1, C, 1, h, w): before each call that frame of the input
    is the latent and its timestep is 0, and after each update it is reset to the latent, so the result holds it
    bitwise (diffusers' ``WanImageToVideoPipeline`` with ``expand_timesteps``: the other frames step as usual).
    """
    x = x_T.float()
    b, _, f = x.shape[:3]
    pinned = pinned_frames(anchors, f)
    if pinned:
        x = x.clone()  # the caller's x_T is left as it is
        pin(x, pinned)
    if schedule.stochastic and noise is None:
        raise ValueError("eta > 0 needs a NoiseSource for the per-step noise")
    steps = schedule.num_steps
    ts = schedule.timestep_list or tuple(int(v) for v in schedule.timesteps.cpu())
    for n, i in enumerate(reversed(range(steps))):
        t = torch.full((b, f), ts[i], dtype=schedule.timesteps.dtype, device=x.device)
        idx = torch.full((b, f), i, dtype=torch.long, device=x.device)
        for k in pinned:
            t[:, k] = 0
        host = StepContext(phase="base", iteration=n, step_idx=torch.full((b, f), i, dtype=torch.long))
        with publish(StepContext(phase="base", iteration=n, step_idx=idx, host=host)):  # host: routing, no sync
            eps = denoise(x, t)
        z = noise.randn(x.shape) if schedule.stochastic else None
        x, _ = schedule.coeffs(i, x).update(x, eps, z)
        pin(x, pinned)
        if callback is not None or n == steps - 1:  # the progress callback syncs anyway
            check_finite(x, f"base sampling step {n + 1}/{steps} (t={ts[i]})")
        if callback is not None:
            callback(n + 1, steps)
    return x


def pinned_frames(anchors: dict[int, torch.Tensor] | None, frames: int) -> dict[int, torch.Tensor]:
    """The anchors that fall inside a clip of ``frames`` frames."""
    return {k: v for k, v in (anchors or {}).items() if 0 <= k < frames}


def pin(x: torch.Tensor, pinned: dict[int, torch.Tensor]) -> None:
    """Write each anchor's latent into its frame of ``x`` (B, C, F, h, w), in place."""
    for k, latent in pinned.items():
        x[:, :, k : k + 1] = latent.to(x.device, x.dtype)

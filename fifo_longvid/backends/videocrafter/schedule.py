"""VideoCrafter2's scaled DDIM: its base sampler rescales the latent by a per-timestep ``scale_arr``.

The reference ``DDIMSampler`` (with ``use_scale``) divides the predicted clean latent by ``scale_arr[t]`` and
multiplies the next one by ``scale_arr[t_prev]``. No other family does this, so the scaled schedule is this
family's own ``Schedule``: ``VideoCrafter.schedule`` builds it when the model's config says ``use_scale``, and a
caller that wants FIFO-Diffusion's unscaled step (quirk Q1) takes ``unscaled()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch

from ...diffusion.schedule import (
    DDIMCoeffs,
    DDIMSchedule,
    ddim_coeffs,
    ddim_timesteps,
    gather_per_frame,
    make_ddim_schedule,
)


def scale_array(timesteps: int = 1000, scale_a: float = 1.0, scale_b: float = 0.7, mid_step: int = 400,
                fix_scale_bug: bool = False) -> np.ndarray:
    """VideoCrafter2's latent scale ramp. Without ``fix_scale_bug`` it has T + mid_step entries (quirk Q3)."""
    tail = timesteps - mid_step if fix_scale_bug else timesteps
    return np.concatenate([np.linspace(scale_a, scale_b, mid_step), np.full(tail, scale_b)])


@dataclass
class ScaledDDIMCoeffs(DDIMCoeffs):
    """DDIM factors whose ``sqrt_alpha_prev`` already carries ``scale_arr_prev``; ``scale`` is ``scale_arr`` at the
    current index, undone on the predicted clean latent."""

    scale: torch.Tensor = field(kw_only=True)

    def pred_x0(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return super().pred_x0(x, eps) / self.scale


@dataclass
class ScaledDDIMSchedule(DDIMSchedule):
    """A DDIM schedule with VideoCrafter2's ``scale_arr`` gathered at the same indices (float32, shape (S,))."""

    scale_arr: torch.Tensor = field(kw_only=True)
    scale_arr_prev: torch.Tensor = field(kw_only=True)

    def strided(self, k: int) -> ScaledDDIMSchedule:
        out = super().strided(k)
        if out is self:
            return self
        return replace(out, scale_arr_prev=torch.cat([self.scale_arr_prev[:1].repeat(k), self.scale_arr[:-k]]))

    def unscaled(self) -> DDIMSchedule:
        return DDIMSchedule(**{f.name: getattr(self, f.name) for f in fields(DDIMSchedule)})

    def coeffs(self, idx: torch.Tensor | int, like: torch.Tensor) -> ScaledDDIMCoeffs:
        c = ddim_coeffs(self, idx, like)
        scale = gather_per_frame(self.scale_arr, idx, like)
        sqrt_a_prev = c.sqrt_alpha_prev * gather_per_frame(self.scale_arr_prev, idx, like)
        return ScaledDDIMCoeffs(c.sqrt_alpha, c.sqrt_one_minus_alpha, sqrt_a_prev, c.dir_coef, c.sigma, scale=scale)


def scaled_ddim_schedule(alphas_cumprod: torch.Tensor, scale_arr: torch.Tensor, num_steps: int,
                         eta: float = 0.0) -> ScaledDDIMSchedule:
    """``make_ddim_schedule``'s sub-schedule with the model's float32 ``scale_arr`` gathered at its timesteps."""
    plain = make_ddim_schedule(alphas_cumprod, num_steps, eta)
    if scale_arr.dtype != torch.float32:
        raise ValueError("the scale_arr buffer must be float32 (half precision rounds the ramp); rebuild it from the "
                         "model config")
    sa = scale_arr.detach().cpu()
    ts = ddim_timesteps(num_steps, alphas_cumprod.shape[0])
    return ScaledDDIMSchedule(**{f.name: getattr(plain, f.name) for f in fields(DDIMSchedule)},
                              scale_arr=sa[ts].clone(), scale_arr_prev=torch.cat([sa[:1], sa[ts[:-1]]]).clone())

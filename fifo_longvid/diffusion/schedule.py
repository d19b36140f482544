"""Noise schedules and the per-frame DDIM step.

The training schedule is built exactly as the reference (float64 numpy maths, stored as float32);
the DDIM sub-schedule follows FIFO-Diffusion's patched grid ``round(linspace(0, T-1, S))`` with no
``+1`` (quirk Q2). Every DDIM array is indexed by a *schedule index*, so a step can take one index
per frame (FIFO) as easily as one per sample (k-diffusion style broadcasting).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def train_schedule(timesteps: int = 1000, linear_start: float = 0.00085,
                   linear_end: float = 0.012) -> dict[str, np.ndarray]:
    """The 12 DDPM buffers of the reference ``register_schedule`` (float64; caller casts)."""
    betas = np.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    ac = np.cumprod(alphas, axis=0)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    return {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }


def scale_array(timesteps: int = 1000, scale_a: float = 1.0, scale_b: float = 0.7, mid_step: int = 400,
                fix_scale_bug: bool = False) -> np.ndarray:
    """VideoCrafter2's latent scale ramp. Without ``fix_scale_bug`` it has T + mid_step entries (quirk Q3)."""
    tail = timesteps - mid_step if fix_scale_bug else timesteps
    return np.concatenate([np.linspace(scale_a, scale_b, mid_step), np.full(tail, scale_b)])


def ddim_timesteps(num_steps: int, num_train_steps: int = 1000) -> np.ndarray:
    """FIFO-Diffusion's uniform grid: ``round(linspace(0, T-1, S))`` (no +1, quirk Q2)."""
    return np.linspace(0, num_train_steps - 1, num_steps).round().astype(np.int64)


@dataclass
class DDIMSchedule:
    """DDIM arrays indexed by schedule index i (0 = least noisy). All float32 tensors, shape (S,)."""

    timesteps: torch.Tensor  # int64 (S,)
    alphas: torch.Tensor
    alphas_prev: torch.Tensor
    sigmas: torch.Tensor
    sqrt_one_minus_alphas: torch.Tensor
    scale_arr: torch.Tensor | None = None
    scale_arr_prev: torch.Tensor | None = None

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    def to(self, device: torch.device | str) -> DDIMSchedule:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return DDIMSchedule(**moved)


def make_ddim_schedule(alphas_cumprod: torch.Tensor, num_steps: int, eta: float = 0.0,
                       scale_arr: torch.Tensor | None = None) -> DDIMSchedule:
    """Build the DDIM sub-schedule from the model's float32 ``alphas_cumprod`` (and ``scale_arr``)."""
    if num_steps < 1:
        raise ValueError(f"DDIM needs at least 1 step, got {num_steps}")
    ac = alphas_cumprod.detach().cpu().to(torch.float32)
    ts = ddim_timesteps(num_steps, ac.shape[0])
    a = ac[ts].double()
    a_prev = torch.cat([ac[:1], ac[ts[:-1]]]).double()
    sigmas = eta * torch.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    sched = DDIMSchedule(
        timesteps=torch.from_numpy(ts),
        alphas=a.float(),
        alphas_prev=a_prev.float(),
        sigmas=sigmas.float(),
        sqrt_one_minus_alphas=torch.sqrt(1.0 - a).float(),
    )
    if scale_arr is not None:
        sa = scale_arr.detach().cpu().to(torch.float32)
        sched.scale_arr = sa[ts].clone()
        sched.scale_arr_prev = torch.cat([sa[:1], sa[ts[:-1]]]).clone()
    return sched


def _per_frame(values: torch.Tensor, idx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gather ``values[idx]`` and shape it to broadcast over x (B, C, F, H, W).

    ``idx`` may be a scalar, (B,) per sample, (F,) per frame (when B != F is ambiguous, pass (1, F)),
    or (B, F).
    """
    idx = torch.as_tensor(idx, device=values.device, dtype=torch.long)
    v = values[idx].to(device=x.device, dtype=x.dtype)
    if v.ndim == 0:
        return v
    if v.ndim == 1:  # per sample
        return v.reshape(-1, 1, 1, 1, 1)
    return v.reshape(v.shape[0], 1, v.shape[1], 1, 1)  # (B|1, F)


def ddim_step(x: torch.Tensor, eps: torch.Tensor, schedule: DDIMSchedule, idx: torch.Tensor | int,
              noise: torch.Tensor | None = None, use_scale: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update x_t -> x_{t-1} at schedule index ``idx`` (scalar, (B,), or (B|1, F)).

    Returns ``(x_prev, pred_x0)``. ``use_scale`` applies VideoCrafter2's scale_arr (base sampling);
    the reference's FIFO step ignores it (quirk Q1). ``noise`` is needed only when eta > 0.
    """
    a_t = _per_frame(schedule.alphas, idx, x)
    a_prev = _per_frame(schedule.alphas_prev, idx, x)
    sigma = _per_frame(schedule.sigmas, idx, x)
    s1m = _per_frame(schedule.sqrt_one_minus_alphas, idx, x)
    pred_x0 = (x - s1m * eps) / a_t.sqrt()
    dir_xt = (1.0 - a_prev - sigma**2).sqrt() * eps
    if use_scale:
        if schedule.scale_arr is None:
            raise ValueError("use_scale=True needs a schedule built with scale_arr")
        pred_x0 = pred_x0 / _per_frame(schedule.scale_arr, idx, x)
        x_prev = a_prev.sqrt() * _per_frame(schedule.scale_arr_prev, idx, x) * pred_x0 + dir_xt
    else:
        x_prev = a_prev.sqrt() * pred_x0 + dir_xt
    if noise is not None:
        x_prev = x_prev + sigma * noise
    return x_prev, pred_x0


def q_sample(x0: torch.Tensor, schedule: DDIMSchedule, idx: torch.Tensor | int,
             noise: torch.Tensor) -> torch.Tensor:
    """Forward-noise clean latents to DDIM index ``idx`` as FIFO's queue init does (no scale_arr)."""
    a = _per_frame(schedule.alphas, idx, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise

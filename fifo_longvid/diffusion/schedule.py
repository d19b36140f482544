"""Noise schedules and the per-frame DDIM step.

The training schedule is built exactly as the reference (float64 numpy maths, stored as float32);
the DDIM sub-schedule follows FIFO-Diffusion's patched grid ``round(linspace(0, T-1, S))`` with no
``+1`` (quirk Q2). Every DDIM array is indexed by a *schedule index*, so a step can take one index
per frame (FIFO) as easily as one per sample (k-diffusion style broadcasting). ``DDIMSchedule`` answers the
``Schedule`` protocol (``schedule_protocol``); VideoCrafter2's scaled variant lives with its family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

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


def ddim_timesteps(num_steps: int, num_train_steps: int = 1000) -> np.ndarray:
    """FIFO-Diffusion's uniform grid: ``round(linspace(0, T-1, S))`` (no +1, quirk Q2)."""
    return np.linspace(0, num_train_steps - 1, num_steps).round().astype(np.int64)


@dataclass
class DDIMSchedule:
    """DDIM arrays indexed by schedule index i (0 = least noisy). All float32 tensors, shape (S,).

    ``timestep_list`` is the host copy of ``timesteps``: loops read it instead of the device tensor.
    """

    timesteps: torch.Tensor  # int64 (S,)
    alphas: torch.Tensor
    alphas_prev: torch.Tensor
    sigmas: torch.Tensor
    sqrt_one_minus_alphas: torch.Tensor
    timestep_list: tuple[int, ...] = ()
    stochastic: bool = False  # eta > 0: every step draws noise
    eta: float = 0.0
    kind: ClassVar[str] = "ddim"
    label: ClassVar[str] = "DDIM"  # the sampler, as logs and progress name it

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def device(self) -> torch.device:
        return self.alphas.device

    def to(self, device: torch.device | str) -> DDIMSchedule:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return type(self)(**moved)

    def strided(self, k: int) -> DDIMSchedule:
        """The same levels with every step going ``k`` indices down (index i to i - k; the first k to the clean
        end): FIFO's staggered blocks, where a frame takes every k-th level of this finer grid."""
        if k == 1:
            return self
        if not 1 <= k <= self.num_steps:
            raise ValueError(f"a stride of {k} needs at least {k} levels, the schedule has {self.num_steps}")
        a = self.alphas.double()
        a_prev = torch.cat([self.alphas_prev[:1].repeat(k), self.alphas[:-k]]).double()
        sigmas = self.eta * torch.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        return replace(self, alphas_prev=a_prev.float(), sigmas=sigmas.float())

    def unscaled(self) -> DDIMSchedule:
        return self  # plain DDIM rescales nothing

    # the stepping side of the ``Schedule`` protocol (flow matching has the same three)
    def coeffs(self, idx: torch.Tensor | int, like: torch.Tensor) -> DDIMCoeffs:
        return ddim_coeffs(self, idx, like)

    def add_noise(self, x0: torch.Tensor, idx: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        return q_sample(x0, self, idx, noise)

    def renoise(self) -> tuple[float, float]:
        """(keep, fresh): one jump from the level the noisiest slot steps to (alphas_prev[-1]) up to the tail's
        (alphas[-1]), ``sqrt(a_T / a_src) x + sqrt(1 - a_T / a_src) eps``."""
        ratio = min(1.0, float(self.alphas[-1]) / float(self.alphas_prev[-1]))
        return math.sqrt(ratio), math.sqrt(1.0 - ratio)


def make_ddim_schedule(alphas_cumprod: torch.Tensor, num_steps: int, eta: float = 0.0) -> DDIMSchedule:
    """Build the DDIM sub-schedule from the model's float32 ``alphas_cumprod``."""
    if num_steps < 1:
        raise ValueError(f"DDIM needs at least 1 step, got {num_steps}")
    if alphas_cumprod.dtype != torch.float32:
        raise ValueError("the schedule buffers must be float32 (half precision rounds 1 - alpha_bar near the clean "
                         "end); rebuild them from the model config")
    ac = alphas_cumprod.detach().cpu()
    ts = ddim_timesteps(num_steps, ac.shape[0])
    a = ac[ts].double()
    a_prev = torch.cat([ac[:1], ac[ts[:-1]]]).double()
    sigmas = eta * torch.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    return DDIMSchedule(
        timesteps=torch.from_numpy(ts),
        alphas=a.float(),
        alphas_prev=a_prev.float(),
        sigmas=sigmas.float(),
        sqrt_one_minus_alphas=torch.sqrt(1.0 - a).float(),
        timestep_list=tuple(int(t) for t in ts),
        stochastic=bool(eta != 0 and (sigmas != 0).any()),
        eta=float(eta),
    )


def gather_per_frame(values: torch.Tensor, idx: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """Gather ``values[idx]`` (float32) and shape it to broadcast over a (B, C, F, H, W) tensor.

    ``idx`` may be a scalar, (B,) per sample, (F,) per frame (when B != F is ambiguous, pass (1, F)),
    or (B, F). A Python int indexes directly: as a 0-dim device tensor it would cost a blocking host-to-device
    copy plus an ``.item()`` inside the indexing (6 host syncs per base-clip DDIM step on CUDA).
    """
    if isinstance(idx, (int, np.integer)):
        v = values[int(idx)]
    else:
        v = values[torch.as_tensor(idx, device=values.device, dtype=torch.long)]
    v = v.to(device=like.device, dtype=torch.promote_types(values.dtype, torch.float32))
    if v.ndim == 0:
        return v
    if v.ndim == 1:  # per sample
        return v.reshape(-1, 1, 1, 1, 1)
    return v.reshape(v.shape[0], 1, v.shape[1], 1, 1)  # (B|1, F)


@dataclass
class DDIMCoeffs:
    """The per-frame factors of one DDIM update, shaped to broadcast over (B, C, F, H, W), float32.

    FIFO's slot -> schedule index map is fixed for a run, so the sampler builds these once on the
    device and reuses them every iteration (no gathers, no host syncs in the loop).
    """

    sqrt_alpha: torch.Tensor
    sqrt_one_minus_alpha: torch.Tensor
    sqrt_alpha_prev: torch.Tensor
    dir_coef: torch.Tensor  # sqrt(1 - alpha_prev - sigma^2), clamped at 0
    sigma: torch.Tensor

    def pred_x0(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The clean latent the step aims at (a scaled schedule's factors also undo its scale here)."""
        return (x - self.sqrt_one_minus_alpha * eps) / self.sqrt_alpha

    def update(self, x: torch.Tensor, eps: torch.Tensor,
               noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return ddim_update(x, eps, self, noise)


def ddim_coeffs(schedule: DDIMSchedule, idx: torch.Tensor | int, like: torch.Tensor) -> DDIMCoeffs:
    """Coefficients at schedule index ``idx`` (scalar, (B,), or (B|1, F)) for tensors shaped like ``like``."""
    a_t = gather_per_frame(schedule.alphas, idx, like)
    a_prev = gather_per_frame(schedule.alphas_prev, idx, like)
    sigma = gather_per_frame(schedule.sigmas, idx, like)
    s1m = gather_per_frame(schedule.sqrt_one_minus_alphas, idx, like)
    dir_coef = (1.0 - a_prev - sigma**2).clamp_min(0.0).sqrt()
    return DDIMCoeffs(a_t.sqrt(), s1m, a_prev.sqrt(), dir_coef, sigma)


def ddim_update(x: torch.Tensor, eps: torch.Tensor, c: DDIMCoeffs,
                noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t -> x_{t-1} with precomputed coefficients, in float32 whatever the dtype of ``x``/``eps``."""
    dt = torch.promote_types(x.dtype, torch.float32)
    x, eps = x.to(dt), eps.to(dt)
    pred_x0 = c.pred_x0(x, eps)
    x_prev = c.sqrt_alpha_prev * pred_x0 + c.dir_coef * eps
    if noise is not None:
        x_prev = x_prev + c.sigma * noise.to(dt)
    return x_prev, pred_x0


def ddim_step(x: torch.Tensor, eps: torch.Tensor, schedule: DDIMSchedule, idx: torch.Tensor | int,
              noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update x_t -> x_{t-1} at schedule index ``idx`` (scalar, (B,), or (B|1, F)), as ``schedule``
    steps (a scaled schedule applies its scale). Returns ``(x_prev, pred_x0)`` in float32; ``noise`` is needed
    only when eta > 0.
    """
    return schedule.coeffs(idx, x).update(x, eps, noise)


def q_sample(x0: torch.Tensor, schedule: DDIMSchedule, idx: torch.Tensor | int,
             noise: torch.Tensor) -> torch.Tensor:
    """Forward-noise clean latents to DDIM index ``idx`` as FIFO's queue init does (never scaled), in float32."""
    a = gather_per_frame(schedule.alphas, idx, x0)
    dt = torch.promote_types(x0.dtype, torch.float32)
    return a.sqrt() * x0.to(dt) + (1 - a).sqrt() * noise.to(dt)

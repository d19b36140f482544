"""Flow matching with velocity prediction: the schedule of Wan-family DiTs, as data, and its Euler step.

A flow model sees ``x_sigma = (1 - sigma) x0 + sigma eps`` and predicts the velocity ``v = eps - x0``; one
Euler step moves ``x <- x + (sigma_next - sigma) v`` (diffusers' ``FlowMatchEulerDiscreteScheduler.step``).
``FlowSchedule`` answers the ``Schedule`` protocol: its arrays are indexed by schedule index i, 0 = least noisy,
exactly as ``DDIMSchedule``'s, so FIFO's
slot -> index map, partitions and lookahead carry over unchanged: a slot at index i steps to the sigma of
index i - 1 (index 0 steps to sigma 0, a clean frame).

The sigmas and timesteps are the ones diffusers' own scheduler computes from the folder's scheduler config
(its shift, its twice-shifted ``sigma_min``), so a base clip here equals ``WanPipeline`` with that scheduler.
Euler carries no solver history, so nothing has to travel with a frame through the queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .schedule import gather_per_frame


@dataclass
class FlowCoeffs:
    """The per-frame factors of one Euler step, shaped to broadcast over (B, C, F, H, W), float32."""

    sigma: torch.Tensor
    dt: torch.Tensor  # sigma_next - sigma (negative: towards clean)

    def update(self, x: torch.Tensor, v: torch.Tensor,
               noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x_sigma -> x_sigma_next in float32; returns ``(x_next, pred_x0)``. Euler is deterministic: ``noise``
        must be None."""
        if noise is not None:
            raise ValueError("the flow-matching Euler step draws no noise")
        dt = torch.promote_types(x.dtype, torch.float32)
        x, v = x.to(dt), v.to(dt)
        return x + self.dt * v, x - self.sigma * v


@dataclass
class FlowSchedule:
    """Flow-matching arrays indexed by schedule index i (0 = least noisy); float32 tensors of shape (S,).

    ``timesteps`` are what the network is called with (sigma x num_train_timesteps, not integers).
    """

    timesteps: torch.Tensor
    sigmas: torch.Tensor
    sigmas_next: torch.Tensor
    timestep_list: tuple[float, ...] = ()
    shift: float = 1.0
    stochastic: bool = False  # Euler: no per-step noise
    kind: ClassVar[str] = "flow"
    label: ClassVar[str] = "flow-matching"  # the sampler, as logs and progress name it

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def device(self) -> torch.device:
        return self.sigmas.device

    def to(self, device: torch.device | str) -> FlowSchedule:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return FlowSchedule(**moved)

    def strided(self, k: int) -> FlowSchedule:
        """The same sigmas with every step going ``k`` indices down (index i to i - k; the first k to sigma 0):
        FIFO's staggered blocks, where a frame takes every k-th level of this finer grid."""
        if k == 1:
            return self
        if not 1 <= k <= self.num_steps:
            raise ValueError(f"a stride of {k} needs at least {k} levels, the schedule has {self.num_steps}")
        nxt = torch.cat([self.sigmas_next[:1].repeat(k), self.sigmas[:-k]])
        return FlowSchedule(**dict(self.__dict__, sigmas_next=nxt))

    def unscaled(self) -> FlowSchedule:
        return self  # flow matching rescales nothing

    def coeffs(self, idx: torch.Tensor | int, like: torch.Tensor) -> FlowCoeffs:
        """Euler factors at schedule index ``idx`` (scalar, (B,), or (B|1, F)) for tensors shaped like ``like``."""
        sigma = gather_per_frame(self.sigmas, idx, like)
        return FlowCoeffs(sigma, gather_per_frame(self.sigmas_next, idx, like) - sigma)

    def add_noise(self, x0: torch.Tensor, idx: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """Forward-noise clean latents to index ``idx``: ``(1 - sigma) x0 + sigma eps``, in float32."""
        s = gather_per_frame(self.sigmas, idx, x0)
        dt = torch.promote_types(x0.dtype, torch.float32)
        return (1 - s) * x0.to(dt) + s * noise.to(dt)

    def renoise(self) -> tuple[float, float]:
        """(keep, fresh) so that ``keep x + fresh eps`` takes a latent at the level the noisiest slot steps to
        (sigma_next of the last index) up to the tail's level (its sigma): the flow interpolant's own forward
        jump, ``keep = (1 - s_t) / (1 - s_src)``, ``fresh = sqrt(s_t^2 - keep^2 s_src^2)``. At ``s_t = 1`` there
        is no signal left to keep (keep = 0)."""
        s_t, s_src = float(self.sigmas[-1]), float(self.sigmas_next[-1])
        keep = (1.0 - s_t) / (1.0 - s_src) if s_src < 1.0 else 0.0
        return keep, math.sqrt(max(0.0, s_t**2 - (keep * s_src) ** 2))


def flow_scheduler(config: dict[str, Any]) -> Any:
    """diffusers' ``FlowMatchEulerDiscreteScheduler`` for a folder's scheduler config.

    Wan folders ship ``UniPCMultistepScheduler`` settings (``flow_shift``, ``use_flow_sigmas``); its flow shift
    is the Euler scheduler's ``shift``. A FlowMatchEuler config is taken as it is.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    pred = config.get("prediction_type", "flow_prediction")
    if pred not in ("flow_prediction", None) and config.get("_class_name") != "FlowMatchEulerDiscreteScheduler":
        raise ValueError(f"scheduler prediction_type {pred!r}: a flow-matching model predicts velocity "
                         "(flow_prediction)")
    if config.get("_class_name") == "FlowMatchEulerDiscreteScheduler":
        sch = FlowMatchEulerDiscreteScheduler.from_config(config)
    else:
        shift = config.get("flow_shift", config.get("shift", 1.0))
        sch = FlowMatchEulerDiscreteScheduler(num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
                                              shift=float(shift if shift is not None else 1.0))
    if sch.config.use_dynamic_shifting:
        raise ValueError("scheduler use_dynamic_shifting=true needs a resolution-dependent mu, which the FIFO "
                         "samplers do not set; use a fixed shift")
    return sch


def flow_schedule_from_config(config: dict[str, Any], num_steps: int) -> FlowSchedule:
    """The Euler schedule of ``num_steps`` steps, exactly as diffusers' scheduler computes it, reindexed so that
    index 0 is the least noisy step."""
    if num_steps < 1:
        raise ValueError(f"flow matching needs at least 1 step, got {num_steps}")
    sch = flow_scheduler(config)
    sch.set_timesteps(num_steps)
    sigmas = sch.sigmas.float()  # (S + 1,) noisiest first, then 0
    ts = sch.timesteps.float().flip(0)
    return FlowSchedule(timesteps=ts, sigmas=sigmas[:-1].flip(0).contiguous(),
                        sigmas_next=sigmas[1:].flip(0).contiguous(), timestep_list=tuple(float(t) for t in ts),
                        shift=float(sch.shift))

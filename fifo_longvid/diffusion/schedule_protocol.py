"""What FIFO, the base sampler, the tails and the techniques ask of a noise schedule, and of one step's factors.

DDIM (``schedule.DDIMSchedule``), flow matching's Euler (``flow.FlowSchedule``) and VideoCrafter2's scaled DDIM
(built by its family) all answer it, so no caller asks which one it holds. Every array is indexed by a *schedule
index*, 0 = least noisy, so FIFO's slot -> index map works unchanged for each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol

import torch


class StepCoeffs(Protocol):
    """One step's per-frame factors, gathered once (FIFO keeps them for the whole run) and applied by ``update``."""

    def update(self, x: torch.Tensor, model_out: torch.Tensor,
               noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` one step down, from the network's output; returns ``(x_next, pred_x0)`` in float32."""
        ...


class Schedule(Protocol):
    """A sub-schedule of ``num_steps`` levels that steps any frame at any level (one schedule index per frame)."""

    kind: ClassVar[str]  # "ddim" or "flow": what the run's log calls its steps
    label: ClassVar[str]  # the sampler as logs and progress name it ("DDIM", "flow-matching")

    @property
    def timesteps(self) -> torch.Tensor:
        """(S,) what the network is called with at each index."""
        ...

    @property
    def timestep_list(self) -> Sequence[float]:
        """The host copy of ``timesteps``: loops read it instead of the device tensor."""
        ...

    @property
    def stochastic(self) -> bool:
        """Whether every step draws noise (DDIM with eta > 0)."""
        ...

    @property
    def num_steps(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def to(self, device: torch.device | str) -> Schedule: ...

    def strided(self, k: int) -> Schedule:
        """The same levels with every step going ``k`` indices down: FIFO's staggered blocks."""
        ...

    def unscaled(self) -> Schedule:
        """The same levels stepped without a family's latent rescaling (FIFO-Diffusion's own step, quirk Q1);
        a schedule that rescales nothing returns itself."""
        ...

    def coeffs(self, idx: torch.Tensor | int, like: torch.Tensor) -> StepCoeffs:
        """The step's factors at index ``idx`` (scalar, (B,), or (B|1, F)) for tensors shaped like ``like``."""
        ...

    def add_noise(self, x0: torch.Tensor, idx: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """Clean latents forward-noised to index ``idx`` (FIFO's queue init), in float32."""
        ...

    def renoise(self) -> tuple[float, float]:
        """(keep, fresh): one jump from the level the noisiest slot steps to up to the tail's level."""
        ...

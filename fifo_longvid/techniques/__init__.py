"""Optional techniques that attach to the U-Net from outside (the model code never names them).

``apply_techniques(unet, spec)`` installs every technique configured in ``spec`` (the run config's
``techniques`` section) and returns a ``TechniqueSet`` that the pipeline drives: it sees each FIFO
window batch (per-frame schedule indices and frame ids) before the U-Net runs, and ``remove()``
restores the model and drops all state, in a ``finally:`` after every video.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from ..diffusion.guidance import Denoiser
from ..diffusion.schedule import DDIMSchedule


class Technique(Protocol):
    name: str

    def on_step(self, step_idx: torch.Tensor) -> None:
        """Per-sample/per-frame DDIM schedule indices (B, F) of the next U-Net call."""

    def remove(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


# name -> installer(unet, settings) -> Technique; techniques register themselves on import
REGISTRY: dict[str, Callable[[torch.nn.Module, dict[str, Any]], Technique]] = {}


class TechniqueSet:
    def __init__(self, items: list[Technique]):
        self.items = items

    def on_window_batch(self, batch: Any) -> None:
        for t in self.items:
            t.on_step(batch.step_idx)

    def wrap_denoiser(self, denoise: Denoiser, schedule: DDIMSchedule) -> Denoiser:
        """For whole-clip sampling: publish the step index (from the timestep) before each call."""
        if not self.items:
            return denoise
        lookup = {int(t): i for i, t in enumerate(schedule.timesteps.tolist())}

        def wrapped(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            idx = torch.tensor([[lookup[int(v)] for v in row] for row in t.tolist()])
            for tech in self.items:
                tech.on_step(idx)
            return denoise(x, t)

        return wrapped

    def remove(self) -> None:
        for t in reversed(self.items):
            t.remove()
        self.items = []

    def describe(self) -> dict[str, Any]:
        return {t.name: t.describe() for t in self.items}


def apply_techniques(unet: torch.nn.Module, spec: dict[str, Any] | None) -> TechniqueSet:
    items = []
    for name, settings in (spec or {}).items():
        if settings is None or (isinstance(settings, dict) and not settings.get("enabled", True)):
            continue
        if name not in REGISTRY:
            raise ValueError(f"unknown technique {name!r}; available: {', '.join(sorted(REGISTRY)) or 'none'}")
        items.append(REGISTRY[name](unet, dict(settings)))
    return TechniqueSet(items)

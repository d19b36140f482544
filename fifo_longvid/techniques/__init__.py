"""Optional techniques that attach to the U-Net from outside (the model code never names them).

Each technique is one module with a config dataclass and an ``apply(unet, cfg)`` that installs it
(attention processors, forward hooks) and returns an object with ``bind(schedule)``,
``set_phase("base" | "fifo")``, ``remove()`` and ``describe()``. The pipeline installs what the run
config enables, and removes everything in a ``finally:`` after every video, so no state leaks between
videos. With every technique disabled nothing is installed at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..diffusion.schedule import DDIMSchedule
from . import qcache


@dataclass
class TechniquesConfig:
    qcache: qcache.QCacheConfig = field(default_factory=qcache.QCacheConfig)


class TechniqueSet:
    def __init__(self, items: list[Any]):
        self.items = items

    def bind(self, schedule: DDIMSchedule) -> None:
        for t in self.items:
            t.bind(schedule)

    def set_phase(self, phase: str) -> None:
        for t in self.items:
            t.set_phase(phase)

    def remove(self) -> None:
        for t in reversed(self.items):
            t.remove()
        self.items = []

    def describe(self) -> dict[str, Any]:
        return {t.name: t.describe() for t in self.items}


def apply_techniques(unet: torch.nn.Module, cfg: TechniquesConfig | None) -> TechniqueSet:
    items: list[Any] = []
    if cfg is not None and cfg.qcache.enabled:
        items.append(qcache.apply(unet, cfg.qcache))
    return TechniqueSet(items)

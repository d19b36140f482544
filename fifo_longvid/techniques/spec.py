"""What each technique module declares so that the registry (``techniques/__init__.py``) needs no if-chain.

A technique is one module with a config dataclass, a ``check_config`` and an installer; its ``SPEC`` says
what the shared checks need to know: the CLI flag that names it in messages, whether it makes per-frame
decisions on the host inside the U-Net (then ``--compile`` and torchrun worker ranks cannot carry it), and
which attention processors it replaces (two techniques may not replace the same ones), and which structures of
the network it needs (a family declares what it provides; the registry refuses a mismatch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..diffusion.schedule_protocol import Schedule
from .store import FrameStore


class Technique(Protocol):
    """What an installer returns: the pipeline binds it to the run's schedule, tells it the phase (``base`` clip,
    plain ``clip``, ``fifo``), records ``describe()`` in the sidecar and calls ``remove()`` after every video.
    Optional: ``wrap_network(net)`` to wrap the network call (DeepCache)."""

    name: str

    def bind(self, schedule: Schedule) -> None: ...
    def set_phase(self, phase: str) -> None: ...
    def remove(self) -> None: ...
    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TechniqueSpec:
    name: str  # the TechniquesConfig field
    flag: str  # the CLI flag, for messages
    check: Callable[[Any], Any]  # raises ValueError naming the bad setting
    install: Callable[[Any, Any, FrameStore], Technique]  # (network, config, shared store) -> installed
    host_decisions: bool = False  # per-frame host-side choices inside the U-Net
    replaces: Callable[[Any], set[str]] = field(default=lambda cfg: set())  # attention targets it takes over
    needs: frozenset[str] = frozenset()  # network structures it needs: "mirror" (encoder/decoder), "levels"

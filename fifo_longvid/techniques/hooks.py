"""Small plumbing shared by the acceleration techniques: forward patches and host views of the step context.

* ``ProcessorSwap`` installs attention processors on a network's sites by target and restores the old ones.
* ``ForwardPatch`` swaps one module instance's ``forward`` (as diffusers' hook registry does) and puts the
  previous one back on ``remove()``; patches stack and unstack in reverse order.
* ``row_facts(n)`` gives the current ``StepContext`` (published by the sampler, republished by guidance,
  chunking and the techniques' own batch splits) as host tensors, once per context object. Decisions
  such as "which rows reuse a cache" are made on the host from these small integer tables; the latents
  never leave the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..diffusion.context import COND, StepContext, current, rows_for


class ProcessorSwap:
    """Attention processors a technique installs, and the ones they replaced: ``restore()`` puts those back.

    Sites come from the network (``attention_sites()``, any backend), so a technique names a target
    (``spatial_attn2``...) and a processor factory, never a module path.
    """

    def __init__(self) -> None:
        self._saved: dict[Any, Any] = {}

    def set(self, handle: Any, processor: Any) -> None:
        self._saved.setdefault(handle, handle.processor)
        handle.set_processor(processor)

    def wrap(self, net: nn.Module, target: str, make: Callable[[Any, Any], Any]) -> list[Any]:
        """Every site of ``target`` gets ``make(site, its current processor)``; returns those sites."""
        sites = []
        for site, handle in net.attention_sites():
            if site.target == target:
                self.set(handle, make(site, handle.processor))
                sites.append(site)
        return sites

    def restore(self) -> None:
        for handle, processor in self._saved.items():
            handle.set_processor(processor)
        self._saved.clear()


class ForwardPatch:
    """``module.forward = fn(original_forward, *args, **kwargs)`` until ``remove()``."""

    def __init__(self, module: nn.Module, fn: Callable[..., Any]):
        self.module = module
        self._had_own = "forward" in module.__dict__
        self._previous = module.__dict__.get("forward")
        original = module.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            return fn(original, *args, **kwargs)

        module.forward = forward  # type: ignore[method-assign]

    def remove(self) -> None:
        if self._had_own:
            self.module.forward = self._previous  # type: ignore[method-assign]
        else:
            self.module.__dict__.pop("forward", None)


@dataclass(frozen=True)
class RowFacts:
    """Host copy of a FIFO step context: one entry per network row (sample), F frames each."""

    iteration: int
    step_idx: torch.Tensor  # (N, F) long
    frame_ids: torch.Tensor  # (N, F) long
    commit: torch.Tensor  # (N, F) bool
    window: torch.Tensor  # (N,) long
    branch: torch.Tensor  # (N,) long, COND / UNCOND

    @property
    def rows(self) -> int:
        return int(self.step_idx.shape[0])

    @property
    def frames(self) -> int:
        return int(self.step_idx.shape[1])


_last: tuple[StepContext, RowFacts] | None = None


def facts_of(ctx: StepContext) -> RowFacts | None:
    """Host view of a FIFO context (None outside the FIFO phase); cached for the last context object."""
    global _last
    if ctx.phase != "fifo" or ctx.frame_ids is None:
        return None
    if _last is not None and _last[0] is ctx:
        return _last[1]
    if ctx.host is not None:  # the sampler's CPU mirror: no device -> host copy
        ctx = ctx.host
    n, f = ctx.step_idx.shape
    commit = ctx.commit.cpu() if ctx.commit is not None else torch.ones(n, f, dtype=torch.bool)
    window = ctx.window.cpu() if ctx.window is not None else torch.zeros(n, dtype=torch.long)
    branch = ctx.branch.cpu() if ctx.branch is not None else torch.full((n,), COND, dtype=torch.long)
    facts = RowFacts(int(ctx.iteration), ctx.step_idx.cpu(), ctx.frame_ids.cpu(), commit, window, branch)
    _last = (ctx, facts)
    return facts


def row_facts(rows: int) -> RowFacts | None:
    """Facts of the current context if it describes exactly ``rows`` network rows in the FIFO phase."""
    ctx = rows_for(rows)
    return None if ctx is None else facts_of(ctx)


def frame_facts(n: int) -> RowFacts | None:
    """Facts for a tensor with one row per (sample, frame), ``n = rows * F`` (spatial layers, U-Net blocks)."""
    ctx = current()
    if ctx is None or ctx.rows * int(ctx.step_idx.shape[1]) != n:
        return None
    return facts_of(ctx)


def forget() -> None:
    """Drop the cached host view (techniques call this on remove, so no tensors outlive a video)."""
    global _last
    _last = None

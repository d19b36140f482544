"""Attention reuse (FasterCache) under FIFO: spatial self-attention computed on alternate iterations per frame.

FasterCache finds that attention outputs at adjacent steps are close, and that their change is smooth
enough to extrapolate. A skipped step reuses

    F = C1 + w·(C1 − C0)

with C0, C1 the last two *computed* outputs (w = 0.5 by default, as diffusers; computed outputs are two
steps apart and the reuse is one step after C1, so w = 0.5 is a linear extrapolation). Not in the
noisiest part of the schedule: only while the timestep is below 681 (diffusers'
``spatial_attention_timestep_skip_range``).

FIFO mapping: spatial attention (attn1 of the spatial transformers) treats every (sample, frame) row on
its own, so the decision is per row (on a DiT, whose self-attention spans the window's frames, the computed
rows' queries still attend to every frame: FasterCache's reuse of the full attention output, per frame): a
frame computes when ``(iteration + frame id)`` is even (half of the frames each iteration: constant cost), and
otherwise reuses its own history, kept per frame id and per CFG branch in the shared store and written only by
the window that commits the frame. Rows without two computed outputs yet compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..backends.base import AttentionHandle as Attention
from ..backends.base import AttnSite
from ..devices import index_tensor
from ..diffusion.context import COND
from ..diffusion.schedule_protocol import Schedule
from .hooks import ProcessorSwap, frame_facts
from .spec import TechniqueSpec
from .store import FrameStore


@dataclass
class AttnReuseConfig:
    enabled: bool = False
    weight: float = 0.5  # w in F = C1 + w (C1 - C0)
    max_timestep: int = 681  # reuse only for frames whose timestep is below this (not the noisiest part)


def check_config(cfg: AttnReuseConfig) -> None:
    if not 0.0 <= cfg.weight <= 1.0:
        raise ValueError(f"techniques.attn_reuse.weight must be in [0, 1], got {cfg.weight}")
    if not 0 < cfg.max_timestep <= 1000:
        raise ValueError(f"techniques.attn_reuse.max_timestep must be in (0, 1000], got {cfg.max_timestep}")


def extrapolate(c0: torch.Tensor, c1: torch.Tensor, weight: float) -> torch.Tensor:
    """F = C1 + w·(C1 − C0)."""
    return c1 + weight * (c1 - c0)


def computes(iteration: int, frame_id: int) -> bool:
    """A frame computes on alternate iterations, staggered by its id."""
    return (iteration + frame_id) % 2 == 0


def _select(attn: Attention, x: torch.Tensor, todo: list[int], rows: torch.Tensor) -> torch.Tensor:
    """The rows that compute. Within-frame attention (a U-Net's spatial attn1) treats rows independently; a
    handle whose self-attention spans frames (a DiT's) is told which rows they are, to attend them to all."""
    select = getattr(attn, "select_rows", None)
    return x.index_select(0, rows) if select is None else select(x, todo, rows)


class _ReusedSelfAttention:
    def __init__(self, site: AttnSite, inner: Any, owner: AttnReuse):
        self.site, self.inner, self.owner = site, inner, owner
        self.ns = {b: (f"attn_reuse/{site.path}/{name}/c0", f"attn_reuse/{site.path}/{name}/c1")
                   for b, name in ((COND, "cond"), (1 - COND, "uncond"))}

    def __call__(self, attn: Attention, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        facts = frame_facts(x.shape[0]) if self.owner.active else None
        if facts is None:
            return self.inner(attn, x, context)
        store = self.owner.store
        ids = facts.frame_ids.reshape(-1).tolist()
        may = self.owner.may_reuse[facts.step_idx.reshape(-1)].tolist()
        commit = facts.commit.reshape(-1).tolist()
        branch = facts.branch.repeat_interleave(facts.frames).tolist()
        reuse = [m and not computes(facts.iteration, i) and store.get(self.ns[b][0], i) is not None
                 for m, i, b in zip(may, ids, branch, strict=True)]
        todo = [r for r, u in enumerate(reuse) if not u]
        out = None
        if todo:
            rows = index_tensor(todo, x.device)
            y = self.inner(attn, x if len(todo) == len(ids) else _select(attn, x, todo, rows), context)
            self._record(y, todo, ids, commit, branch)
            if len(todo) == len(ids):
                return y
            out = x.new_empty(x.shape[0], y.shape[1], y.shape[2], dtype=y.dtype)
            out[rows] = y
        for b in (COND, 1 - COND):
            sel = [r for r, u in enumerate(reuse) if u and branch[r] == b]
            if sel:
                fid = [ids[r] for r in sel]
                c0, c1 = store.gather(self.ns[b][0], fid), store.gather(self.ns[b][1], fid)
                f = extrapolate(c0.float(), c1.float(), self.owner.cfg.weight).to(x.dtype)
                if out is None:
                    out = x.new_empty(x.shape[0], f.shape[1], f.shape[2])
                out[index_tensor(sel, x.device)] = f
        return out

    def _record(self, y: torch.Tensor, todo: list[int], ids: list[int], commit: list[bool], branch: list[int]) -> None:
        store = self.owner.store
        for b in (COND, 1 - COND):
            keep = [k for k, r in enumerate(todo) if commit[r] and branch[r] == b]
            if not keep:
                continue
            fid = [ids[todo[k]] for k in keep]
            had = [k for k, i in zip(keep, fid, strict=True) if store.get(self.ns[b][1], i) is not None]
            if had:
                store.put(self.ns[b][0], [ids[todo[k]] for k in had],
                          store.gather(self.ns[b][1], [ids[todo[k]] for k in had]))
            store.put(self.ns[b][1], fid, y.index_select(0, index_tensor(keep, y.device)))


class AttnReuse:
    name = "attn_reuse"

    def __init__(self, unet: torch.nn.Module, cfg: AttnReuseConfig, store: FrameStore):
        check_config(cfg)
        self.cfg, self.store = cfg, store
        self.active = False
        self.may_reuse = torch.zeros(0, dtype=torch.bool)
        self._swap = ProcessorSwap()
        self.sites: list[AttnSite] = self._swap.wrap(unet, "spatial_attn1",
                                                     lambda site, inner: _ReusedSelfAttention(site, inner, self))

    def bind(self, schedule: Schedule) -> None:
        self.may_reuse = schedule.timesteps.cpu() < self.cfg.max_timestep

    def set_phase(self, phase: str) -> None:
        self.active = phase == "fifo"

    def remove(self) -> None:
        self._swap.restore()

    def describe(self) -> dict[str, Any]:
        return {"weight": self.cfg.weight, "max_timestep": self.cfg.max_timestep,
                "sites": [s.path for s in self.sites], "attention": "spatial attn1",
                "schedule": "compute when (iteration + frame id) is even, else C1 + w (C1 - C0)"}


def apply(unet: torch.nn.Module, cfg: AttnReuseConfig, store: FrameStore) -> AttnReuse:
    return AttnReuse(unet, cfg, store)


SPEC = TechniqueSpec("attn_reuse", "--attn-reuse", check_config, apply, host_decisions=True,
                     replaces=lambda cfg: {"spatial_attn1"}, needs=frozenset({"frame_attention"}))

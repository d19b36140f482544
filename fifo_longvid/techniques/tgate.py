"""TGATE under FIFO: cache the cross-attention once it has converged, and drop guidance after the gate.

TGATE (Liu et al., "Faster diffusion via temporal attention decomposition") observes that text
cross-attention converges early. With ``gate`` a fraction of the schedule counted from the noisy end
(TGATE's 10 of 25 steps = 0.4), ``g = round(gate * S)`` steps compute it; at the g-th step the output
is recorded as the mean of the cond and uncond outputs, and every later step reuses that record and
runs the cond branch only (guidance off).

FIFO mapping: a frame at schedule index i (0 = cleanest, S-1 = noisiest) has taken ``S - i`` steps, so
it is *past the gate* when ``i < S - g`` and *at the gate* when ``i == S - g``. Each frame carries its own
record in the shared ``FrameStore`` (keyed by frame id, written only by the window that commits it), so
the spatial cross-attention (attn2) is skipped row by row, per frame. A window whose frames are all past
the gate runs cond only: that is the guidance-level half, applied by ``guided.mixed_cfg_denoiser``.

A frame that reaches the gate in a window whose uncond pass was skipped (CFG-Cache) records its cond
output alone; a frame that is past the gate without a record (it started there, e.g. the initial queue)
computes its cross-attention and records it on its next committed step.
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
from .hooks import ProcessorSwap, RowFacts, frame_facts
from .spec import TechniqueSpec
from .store import FrameStore


@dataclass
class TGateConfig:
    enabled: bool = False
    gate: float = 0.4  # fraction of the schedule (from the noisy end) that computes cross-attention


def check_config(cfg: TGateConfig) -> None:
    if not 0.0 < cfg.gate <= 1.0:
        raise ValueError(f"--tgate GATE must be in (0, 1] (the fraction of the schedule, from the noisy end, that "
                         f"computes cross-attention; TGATE uses 10 of 25 steps = 0.4), got {cfg.gate}")


def gate_steps(num_steps: int, gate: float) -> int:
    """Steps that compute cross-attention: ``round(gate * S)``, at least 1."""
    return max(1, min(num_steps, round(gate * num_steps)))


def gate_index(num_steps: int, gate: float) -> int:
    """Schedule index at which a frame takes its gate step; indices below it are past the gate."""
    return num_steps - gate_steps(num_steps, gate)


def cond_only_rows(step_idx: torch.Tensor, gate_at: int) -> list[bool]:
    """Rows (windows) whose frames are all past the gate run the cond branch only. ``step_idx``: (N, F)."""
    return (step_idx < gate_at).all(dim=1).tolist()


class _CachedCrossAttention:
    """attn2 processor: rows of frames past the gate read the frame's record; the rest compute (and record)."""

    def __init__(self, site: AttnSite, inner: Any, owner: TGate):
        self.site, self.inner, self.owner = site, inner, owner
        self.ns = {COND: f"tgate/{site.path}/cond", 1 - COND: f"tgate/{site.path}/uncond"}

    def __call__(self, attn: Attention, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        facts = frame_facts(x.shape[0]) if self.owner.active else None
        if facts is None:
            return self.inner(attn, x, context)
        f = facts.frames
        ids = facts.frame_ids.reshape(-1).tolist()
        idx = facts.step_idx.reshape(-1)
        commit = facts.commit.reshape(-1).tolist()
        branch = facts.branch.repeat_interleave(f).tolist()
        store, gate_at = self.owner.store, self.owner.gate_at
        have = store.has(self.ns[COND], ids)
        past = (idx < gate_at).tolist()
        use = [p and h for p, h in zip(past, have, strict=True)]
        todo = [r for r, u in enumerate(use) if not u]
        if not todo:
            return self._recorded(ids).to(x.dtype)
        rows = index_tensor(todo, x.device)
        y = self.inner(attn, x.index_select(0, rows), None if context is None else context.index_select(0, rows))
        self._record(todo, y, ids, idx.tolist(), commit, branch, have)
        if len(todo) == len(use):
            return y
        out = x.new_empty(x.shape[0], y.shape[1], y.shape[2], dtype=y.dtype)
        out[rows] = y
        reuse = [r for r, u in enumerate(use) if u]
        out[index_tensor(reuse, x.device)] = self._recorded([ids[r] for r in reuse]).to(y.dtype)
        return out

    def _recorded(self, ids: list[int]) -> torch.Tensor:
        """Each frame's record: the mean of its cond and uncond outputs at the gate (cond alone if that is all)."""
        store = self.owner.store
        c = store.gather(self.ns[COND], ids).float()
        has_u = store.has(self.ns[1 - COND], ids)
        if not any(has_u):
            return c
        u = torch.stack([store.get(self.ns[1 - COND], i).float() if h else c[k]
                         for k, (i, h) in enumerate(zip(ids, has_u, strict=True))])
        return (c + u) / 2

    def _record(self, todo: list[int], y: torch.Tensor, ids: list[int], idx: list[int], commit: list[bool],
                branch: list[int], have: list[bool]) -> None:
        gate_at = self.owner.gate_at
        for b in (COND, 1 - COND):
            keep = [k for k, r in enumerate(todo) if commit[r] and idx[r] <= gate_at and not have[r] and branch[r] == b]
            if keep:
                self.owner.store.put(self.ns[b], [ids[todo[k]] for k in keep],
                                     y.index_select(0, index_tensor(keep, y.device)))


class TGate:
    name = "tgate"

    def __init__(self, unet: torch.nn.Module, cfg: TGateConfig, store: FrameStore):
        check_config(cfg)
        self.cfg, self.store = cfg, store
        self.active = False
        self.gate_at = 0
        self.num_steps = 0
        self._swap = ProcessorSwap()
        self.sites: list[AttnSite] = self._swap.wrap(unet, "spatial_attn2",
                                                     lambda site, inner: _CachedCrossAttention(site, inner, self))

    def bind(self, schedule: Schedule) -> None:
        self.num_steps = schedule.num_steps
        self.gate_at = gate_index(schedule.num_steps, self.cfg.gate)

    def set_phase(self, phase: str) -> None:
        self.active = phase == "fifo"

    def cond_only(self, facts: RowFacts) -> list[bool]:
        return cond_only_rows(facts.step_idx, self.gate_at) if self.active else [False] * facts.rows

    def remove(self) -> None:
        self._swap.restore()

    def describe(self) -> dict[str, Any]:
        return {"gate": self.cfg.gate, "gate_steps": "round(gate * S) noisiest steps compute cross-attention",
                "sites": [s.path for s in self.sites], "cross_attention": "spatial attn2",
                "guidance_after_gate": "off (cond only)"}


def apply(unet: torch.nn.Module, cfg: TGateConfig, store: FrameStore) -> TGate:
    return TGate(unet, cfg, store)


SPEC = TechniqueSpec("tgate", "--tgate", check_config, apply, host_decisions=True,
                     replaces=lambda cfg: {"spatial_attn2"})

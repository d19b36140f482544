"""Deep-feature reuse (DeepCache) under FIFO: run only the outermost resolution level between full passes.

DeepCache (Ma et al., 2023) observes that a U-Net's deep features change slowly across steps: a full
pass caches the feature that enters the shallowest decoder blocks, and the next K-1 steps run only the
shallow encoder and decoder blocks, splicing the cached deep feature in.

Derived from the architecture by the network's ``deep_split()`` (``backends/base.py``), not hard-coded: the
*shallow* blocks form the outermost resolution level (for VideoCrafter the input blocks before the first
downsampling block, plus ``init_attn``, and the output blocks after the last upsampling block); all other
blocks are *deep*. The cached feature is the output of the last deep block (the upsampled feature that
enters the first shallow decoder block), per frame.

FIFO mapping: windows are numbered w and window w runs the full U-Net when ``(iteration + w) % K == 0``
(staggered: about 1/K of the windows per iteration), or when a frame of it has no cached deep feature. The
feature is stored per frame id and CFG branch, written only by the window that commits the frame.

Mechanics, with no change to the model: the technique wraps the network call and splits the batch into
full rows and shallow rows (two calls, each republishing its rows' step context). In a shallow call the
deep blocks' ``forward`` is swapped for one that returns an empty placeholder of the right resolution
(so the U-Net's skip concatenations still line up), and the last deep block returns the cached features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..devices import index_tensor
from ..diffusion.context import COND, publish, rows_for
from ..diffusion.guidance import NetworkFn
from ..diffusion.schedule_protocol import Schedule
from .hooks import ForwardPatch, facts_of, frame_facts
from .spec import TechniqueSpec
from .store import FrameStore


@dataclass
class DeepCacheConfig:
    enabled: bool = False
    every: int = 3  # K: a window runs the full U-Net every K iterations


def check_config(cfg: DeepCacheConfig) -> None:
    if cfg.every < 1:
        raise ValueError(f"--deepcache K must be >= 1 (a window runs the full U-Net every K iterations), "
                         f"got {cfg.every}")


def full_turn(iteration: int, window: int, every: int) -> bool:
    return (iteration + window) % every == 0


def split_levels(unet: nn.Module) -> tuple[list[nn.Module], nn.Module]:
    """(deep blocks in forward order, the last of them), as the network's ``deep_split()`` names them."""
    split = unet.deep_split()
    return split.deep, split.last


class DeepCache:
    name = "deepcache"

    def __init__(self, unet: nn.Module, cfg: DeepCacheConfig, store: FrameStore):
        check_config(cfg)
        self.cfg, self.store = cfg, store
        self.active = False
        self.shallow = False  # True while a shallow call runs
        split = unet.deep_split()
        self.placeholder = split.placeholder
        self.num_deep = len(split.deep)
        self._patches = [ForwardPatch(b, self._deep_forward(b, b is split.last)) for b in split.deep]

    def _deep_forward(self, block: nn.Module, is_last: bool):  # noqa: ANN202 - a forward patch
        def forward(original, *args: Any, **kwargs: Any) -> Any:
            if self.shallow:
                return self._cached() if is_last else self.placeholder(block, args, kwargs)
            out = original(*args, **kwargs)
            if is_last and self.active:
                self._record(out)
            return out

        return forward

    def _ns(self, branch: int) -> str:
        return "deepcache/cond" if branch == COND else "deepcache/uncond"

    def _record(self, out: torch.Tensor) -> None:
        facts = frame_facts(out.shape[0])
        if facts is None:
            return
        ids = facts.frame_ids.reshape(-1).tolist()
        commit = facts.commit.reshape(-1).tolist()
        branch = facts.branch.repeat_interleave(facts.frames).tolist()
        for b in (COND, 1 - COND):
            keep = [r for r in range(len(ids)) if commit[r] and branch[r] == b]
            if keep:
                self.store.put(self._ns(b), [ids[r] for r in keep],
                               out.index_select(0, index_tensor(keep, out.device)))

    def _cached(self) -> torch.Tensor:
        ctx = rows_for(self._rows)
        facts = facts_of(ctx)
        ids = facts.frame_ids.reshape(-1).tolist()
        branch = facts.branch.repeat_interleave(facts.frames).tolist()
        out = None
        for b in (COND, 1 - COND):
            sel = [r for r in range(len(ids)) if branch[r] == b]
            if sel:
                feats = self.store.gather(self._ns(b), [ids[r] for r in sel])
                if out is None:
                    out = feats.new_empty(len(ids), *feats.shape[1:])
                out[index_tensor(sel, feats.device)] = feats
        return out

    # -- network-level hook --------------------------------------------------------------------------
    def full_rows(self, rows: int) -> list[bool] | None:
        """Per row of the current call: run the full U-Net? (None: not a FIFO call, run as usual)."""
        ctx = rows_for(rows)
        facts = facts_of(ctx) if (ctx is not None and self.active) else None
        if facts is None:
            return None
        out = []
        for r in range(facts.rows):
            ns = self._ns(int(facts.branch[r]))
            have = all(self.store.has(ns, facts.frame_ids[r].tolist()))
            out.append(not have or full_turn(facts.iteration, int(facts.window[r]), self.cfg.every))
        return out

    def wrap_network(self, net: NetworkFn) -> NetworkFn:
        def run(x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
            full = self.full_rows(x.shape[0])
            if full is None or all(full):
                return net(x, t, ctx)
            step = rows_for(x.shape[0])
            groups = [[r for r, f in enumerate(full) if f], [r for r, f in enumerate(full) if not f]]
            out = None
            for shallow, rows in zip((False, True), groups, strict=True):
                if not rows:
                    continue
                ri = index_tensor(rows, x.device)
                with publish(step.select(rows)):
                    self.shallow, self._rows = shallow, len(rows)
                    try:
                        y = net(x.index_select(0, ri), t.index_select(0, ri), ctx.index_select(0, ri))
                    finally:
                        self.shallow = False
                if len(rows) == x.shape[0]:
                    return y
                if out is None:
                    out = y.new_empty(x.shape[0], *y.shape[1:])
                out[ri] = y
            return out

        return run

    def bind(self, schedule: Schedule) -> None:
        pass

    def set_phase(self, phase: str) -> None:
        self.active = phase == "fifo"

    def remove(self) -> None:
        for p in reversed(self._patches):
            p.remove()
        self._patches = []

    def describe(self) -> dict[str, Any]:
        return {"every": self.cfg.every, "deep_blocks": self.num_deep,
                "stagger": "(iteration + window) % every == 0", "cached": "input of the outermost decoder level"}


def apply(unet: nn.Module, cfg: DeepCacheConfig, store: FrameStore) -> DeepCache:
    return DeepCache(unet, cfg, store)


SPEC = TechniqueSpec("deepcache", "--deepcache", check_config, apply, host_decisions=True, needs=frozenset({"levels"}))

"""Weighted Q-cache (FIFO-Diffusion+): blend encoder queries into the mirrored decoder attention.

Within one U-Net forward, every encoder (input-block) attention site of the chosen target records its
head-split query; the mirrored decoder (output-block) site then attends with

    Q* = (1 - v) * Q_decoder + v * Q_encoder

keys and values unchanged. v = 0 is exactly the plain U-Net; v = 1 replaces the decoder's queries by the
encoder's (the fork's hard-coded behaviour). v may follow a schedule over denoising progress; under FIFO
every frame of a window has its own schedule index, so v is per frame. Each U-Net call (cond and uncond
rows alike) blends its own queries: nothing survives a forward.

Installed from outside: processors on the chosen attention modules, plus forward hooks on the U-Net
that read the per-frame timesteps of each call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..backends.base import AttentionHandle as Attention
from ..backends.base import AttnSite, expand_timesteps, mirror_pairs
from ..diffusion.context import rows_for
from ..diffusion.schedule_protocol import Schedule
from .hooks import ProcessorSwap
from .spec import TechniqueSpec

TARGETS = ("temporal_attn1", "temporal_attn2", "spatial_attn1", "spatial_attn2")

SCHEDULE_GRAMMAR = (
    "V (constant, e.g. 0.9) | const:V | linear:V_NOISIEST:V_CLEANEST (e.g. linear:0.9:0.8) | "
    "list:V1,V2,...,VS (one value per DDIM step, in denoising order: V1 = noisiest); every V in [0, 1]"
)


@dataclass
class QCacheConfig:
    enabled: bool = False
    v: float = 0.9  # constant weight, used when no schedule is given
    schedule: str | None = None  # see SCHEDULE_GRAMMAR
    targets: list[str] = field(default_factory=lambda: ["temporal_attn1"])
    base_clip: bool = False  # also apply while sampling FIFO's initial base clip


class VSchedule:
    """v as a function of the DDIM schedule index i (0 = cleanest, S-1 = noisiest)."""

    def __init__(self, spec: str | float):
        self.spec = str(spec)
        self.kind, self.values = self._parse(self.spec)

    @staticmethod
    def _parse(spec: str) -> tuple[str, list[float]]:
        def bad(why: str) -> ValueError:
            return ValueError(f"bad --qcache-schedule {spec!r}: {why}. Grammar: {SCHEDULE_GRAMMAR}")

        head, _, rest = spec.partition(":")
        try:
            if not rest and head not in ("const", "linear", "list"):
                kind, vals = "const", [float(head)]
            elif head == "const":
                kind, vals = "const", [float(rest)]
            elif head == "linear":
                parts = rest.split(":")
                if len(parts) != 2:
                    raise bad("linear takes two values")
                kind, vals = "linear", [float(p) for p in parts]
            elif head == "list":
                kind, vals = "list", [float(p) for p in rest.split(",") if p.strip()]
                if not vals:
                    raise bad("empty list")
            else:
                raise bad(f"unknown kind {head!r}")
        except ValueError as e:
            if "Grammar" in str(e):
                raise
            raise bad("not a number") from None
        if any(not 0.0 <= v <= 1.0 for v in vals):
            raise bad("values must be in [0, 1]")
        return kind, vals

    @property
    def constant(self) -> float | None:
        return self.values[0] if self.kind == "const" else None

    def table(self, num_steps: int) -> torch.Tensor:
        """v for every schedule index 0..S-1."""
        if self.kind == "const":
            return torch.full((num_steps,), self.values[0])
        if self.kind == "linear":
            noisy, clean = self.values
            frac = torch.arange(num_steps, dtype=torch.float64) / max(1, num_steps - 1)
            return (clean + (noisy - clean) * frac).float()
        if len(self.values) != num_steps:
            raise ValueError(f"--qcache-schedule list has {len(self.values)} values for {num_steps} DDIM steps; "
                             "give one per step (first = noisiest)")
        return torch.tensor(self.values[::-1], dtype=torch.float32)


class _CallState:
    """What one U-Net forward shares between producer and consumer sites."""

    def __init__(self) -> None:
        self.queries: dict[AttnSite, torch.Tensor] = {}
        self.v: torch.Tensor | None = None  # (B, F) weights for the current call

    def clear(self) -> None:
        self.queries.clear()
        self.v = None


class _Recorder:
    def __init__(self, site: AttnSite, state: _CallState):
        self.site, self.state = site, state

    def __call__(self, attn: Attention, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        q = attn.split_heads(attn.to_q(x))
        self.state.queries[self.site] = q
        return attn.attend_and_project(q, x, context)


class _Blender:
    def __init__(self, site: AttnSite, source: AttnSite, state: _CallState):
        self.site, self.source, self.state = site, source, state

    def __call__(self, attn: Attention, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        q = attn.split_heads(attn.to_q(x))
        v = self.state.v
        q_enc = self.state.queries.get(self.source)
        if v is not None and q_enc is not None:  # v = 0 rows blend to exactly q: (1 - 0) * q + 0 * q_enc
            w = self._weights(v, q)
            q = (1 - w) * q + w * q_enc
        return attn.attend_and_project(q, x, context)

    def _weights(self, v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Per-(sample, frame) v laid out to broadcast over q (N, heads, L, d)."""
        b = v.shape[0]
        v = v.to(q.dtype)
        if self.site.kind == "temporal":  # N = b*h*w rows, L = frames
            return v.repeat_interleave(q.shape[0] // b, dim=0)[:, None, :, None]
        return v.reshape(-1)[:, None, None, None]  # spatial: N = b*f rows


def check_config(cfg: QCacheConfig) -> VSchedule:
    """Validate the settings (ValueError naming the bad one); returns the v schedule they describe."""
    if not 0.0 <= cfg.v <= 1.0:
        raise ValueError(f"--qcache v must be in [0, 1] (the weight of the encoder queries), got {cfg.v}")
    bad = [t for t in cfg.targets if t not in TARGETS]
    if bad or not cfg.targets:
        raise ValueError(f"unknown Q-cache target {', '.join(bad) or '(none)'}; choose from {', '.join(TARGETS)}")
    return VSchedule(cfg.schedule if cfg.schedule else cfg.v)


class QCache:
    name = "qcache"

    def __init__(self, unet: nn.Module, cfg: QCacheConfig):
        self.vs = check_config(cfg)
        self.cfg = cfg
        self.unet = unet
        self.state = _CallState()
        self.active = True
        self._index_of_timestep: torch.Tensor | None = None  # lookup table: timestep -> schedule index
        self._v_table: torch.Tensor | None = None
        located = unet.attention_sites()
        modules = {s: m for s, m in located}
        self._swap = ProcessorSwap()
        self.pairs: dict[AttnSite, AttnSite] = {}
        for target in cfg.targets:
            self.pairs.update(mirror_pairs(located, target))
        for dec, enc in self.pairs.items():
            for site, proc in ((enc, _Recorder(enc, self.state)),
                               (dec, _Blender(dec, enc, self.state))):
                self._swap.set(modules[site], proc)
        self._hooks = [
            unet.register_forward_pre_hook(self._pre_forward, with_kwargs=True),
            unet.register_forward_hook(lambda *a, **k: self.state.clear()),
        ]

    # -- lifecycle ---------------------------------------------------------------------------------
    def bind(self, schedule: Schedule) -> None:
        """Per-run device tables: timestep -> schedule index, and v per schedule index (non-constant v)."""
        ts = schedule.timesteps.cpu()
        lookup = torch.full((int(ts.max()) + 1,), -1, dtype=torch.long)
        lookup[ts] = torch.arange(len(ts))
        self._index_of_timestep = lookup.to(schedule.device)
        self._v_table = self.vs.table(schedule.num_steps).to(schedule.device)

    def set_phase(self, phase: str) -> None:
        self.active = phase != "base" or self.cfg.base_clip

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._swap.restore()
        self.state.clear()

    def describe(self) -> dict[str, Any]:
        return {"v": self.cfg.v if not self.cfg.schedule else None, "schedule": self.vs.spec,
                "targets": list(self.cfg.targets), "base_clip": self.cfg.base_clip,
                "pairs": {d.path: e.path for d, e in self.pairs.items()}}

    # -- per call ----------------------------------------------------------------------------------
    def _pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.state.clear()
        if not self.active:
            return
        x = args[0] if args else kwargs["x"]
        b, f = x.shape[0], x.shape[2]
        if self.vs.constant is not None:
            if self.vs.constant != 0.0:  # v = 0 is the plain U-Net: nothing to blend
                self.state.v = torch.full((b, f), self.vs.constant, device=x.device)
            return
        if self._index_of_timestep is None:
            raise RuntimeError("a scheduled Q-cache needs bind(schedule) before sampling")
        step = rows_for(b)  # the sampler's schedule indices when published, else look the timesteps up
        if step is not None:
            idx = step.step_idx
        else:
            t = args[1] if len(args) > 1 else kwargs["timesteps"]
            t = expand_timesteps(t, b, f, bool(kwargs.get("per_frame", False)))
            idx = self._index_of_timestep[t.to(self._index_of_timestep.device)]
        self.state.v = self._v_table[idx].to(x.device)


def apply(unet: nn.Module, cfg: QCacheConfig) -> QCache:
    """Install the Q-cache on ``unet``; ``.remove()`` restores it exactly."""
    return QCache(unet, cfg)


SPEC = TechniqueSpec("qcache", "--qcache", check_config, lambda net, cfg, store: apply(net, cfg),
                     replaces=lambda cfg: set(cfg.targets), needs=frozenset({"mirror"}))

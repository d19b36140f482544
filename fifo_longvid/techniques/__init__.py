"""Optional techniques that attach to the U-Net from outside (the model code never names them).

Each technique is one module with a config dataclass, a ``check_config``, an installer (attention
processors, forward hooks or patches) and a ``SPEC`` (``spec.py``) that registers it in ``REGISTRY``; what it
installs is an object with ``bind(schedule)``,
``set_phase("base" | "clip" | "fifo")``, ``remove()`` and ``describe()``. The pipeline installs what the
run config enables, and removes everything in a ``finally:`` after every video, so no state leaks
between videos. With every technique disabled nothing is installed at all, and the guidance and network
wrappers below are the plain ones: output is bitwise what it is without this package.

The acceleration techniques (TGATE, CFG-Cache, attention reuse, DeepCache) share one ``FrameStore`` of
per-frame state keyed by frame id; the sampler loop calls ``end_iteration(first_id)`` after each FIFO
iteration (publishes the iteration's writes, drops frames that left the queue) and the resume state
carries ``state_dict()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..diffusion.guidance import Denoiser, NetworkFn, cfg_denoiser
from ..diffusion.schedule_protocol import Schedule
from . import attn_reuse, cfg_cache, deepcache, hooks, qcache, tgate
from .spec import TechniqueSpec
from .store import FrameStore

STATE_PREFIX = "techniques/"


@dataclass
class TechniquesConfig:
    qcache: qcache.QCacheConfig = field(default_factory=qcache.QCacheConfig)
    tgate: tgate.TGateConfig = field(default_factory=tgate.TGateConfig)
    cfg_cache: cfg_cache.CFGCacheConfig = field(default_factory=cfg_cache.CFGCacheConfig)
    attn_reuse: attn_reuse.AttnReuseConfig = field(default_factory=attn_reuse.AttnReuseConfig)
    deepcache: deepcache.DeepCacheConfig = field(default_factory=deepcache.DeepCacheConfig)


# install order: Q-cache's processors first, DeepCache's block patches, then the per-site caches, CFG-Cache last
REGISTRY = (qcache.SPEC, deepcache.SPEC, tgate.SPEC, attn_reuse.SPEC, cfg_cache.SPEC)
ACCELERATION = ("tgate", "cfg_cache", "attn_reuse", "deepcache")
FLAGS = {spec.name: spec.flag for spec in REGISTRY}


def enabled(cfg: TechniquesConfig | None) -> list[TechniqueSpec]:
    return [] if cfg is None else [spec for spec in REGISTRY if getattr(cfg, spec.name).enabled]


def enabled_acceleration(cfg: TechniquesConfig | None) -> list[str]:
    return [spec.name for spec in enabled(cfg) if spec.name in ACCELERATION]


def check_config(cfg: TechniquesConfig) -> None:
    """Validate every enabled technique and their combination (ValueError naming the option)."""
    on = enabled(cfg)
    for spec in on:
        spec.check(getattr(cfg, spec.name))
    for i, a in enumerate(on):
        for b in on[i + 1:]:
            shared = sorted(a.replaces(getattr(cfg, a.name)) & b.replaces(getattr(cfg, b.name)))
            if shared:
                name = {"qcache": "--qcache-targets " + ",".join(shared)}
                raise ValueError(f"{name.get(a.name, a.flag)} and {name.get(b.name, b.flag)} both replace the "
                                 f"{', '.join(t.replace('_', ' ') for t in shared)} layers; drop one of them "
                                 "(Q-cache's default target temporal_attn1 composes with every technique)")


NEEDS_WORDS = {"mirror": "encoder layers that mirror its decoder layers (a U-Net)",
               "levels": "U-Net resolution levels",
               "frame_attention": "self-attention whose output can be computed for some frames' rows only"}


def check_family(cfg: TechniquesConfig | None, family: str, provides: frozenset[str], note: str = "") -> None:
    """Refuse a technique whose needs the model family does not provide, in one sentence naming both."""
    for spec in enabled(cfg):
        missing = sorted(spec.needs - provides)
        if missing:
            what = " and ".join(NEEDS_WORDS.get(m, m) for m in missing)
            usable = ", ".join(s.flag for s in REGISTRY if not s.needs - provides)
            raise ValueError(f"{spec.flag} needs {what}; the {family} family has none{note}. Drop {spec.flag} "
                             f"({usable} work on it)")


def _host_deciders(cfg: TechniquesConfig | None) -> str:
    """Flags of the enabled techniques that decide per frame on the host, in ACCELERATION's order."""
    on = {spec.name: spec for spec in enabled(cfg) if spec.host_decisions}
    return ", ".join(on[n].flag for n in ACCELERATION if n in on)


def check_distributed(cfg: TechniquesConfig | None) -> None:
    """Multi-process runs compute U-Net rows on other ranks, which do not see the per-frame store."""
    flags = _host_deciders(cfg)
    if flags:
        raise ValueError(f"{flags} keep per-frame caches inside the U-Net, which torchrun worker ranks do not "
                         "share; run on one process, or drop " + flags + " (--cfg-cache works multi-process)")


def check_compile(cfg: TechniquesConfig | None) -> None:
    """TGATE, attention reuse and DeepCache decide per frame on the host inside the U-Net (Python lists of frame
    ids, ``.tolist()``): dynamo would break the graph at every site and recompile as the ids move, until its
    recompile limit sends the U-Net back to eager. Q-cache and CFG-Cache compile (tensor maths, or outside the
    U-Net)."""
    flags = _host_deciders(cfg)
    if flags:
        raise ValueError(f"--compile cannot be combined with {flags}: their per-frame decisions inside the U-Net "
                         "are host-side Python, which torch.compile would split and recompile as frame ids change; "
                         f"drop --compile (the caches already cut the work) or drop {flags}")


class TechniqueSet:
    def __init__(self, items: list[Any], store: FrameStore | None = None):
        self.items = items
        self.store = store if store is not None else FrameStore()

    def get(self, name: str) -> Any:
        return next((t for t in self.items if t.name == name), None)

    def bind(self, schedule: Schedule) -> None:
        for t in self.items:
            t.bind(schedule)

    def set_phase(self, phase: str) -> None:
        for t in self.items:
            t.set_phase(phase)

    def remove(self) -> None:
        for t in reversed(self.items):
            t.remove()
        self.items = []
        self.store.clear()
        hooks.forget()

    def describe(self) -> dict[str, Any]:
        return {t.name: t.describe() for t in self.items}

    # -- FIFO loop ------------------------------------------------------------------------------------
    def end_iteration(self, first_id: int) -> None:
        """After each FIFO iteration: publish its cache writes, drop frames with ids below ``first_id``."""
        self.store.end_iteration(first_id)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {STATE_PREFIX + k: v for k, v in self.store.state_dict().items()}

    def load_state_dict(self, sd: dict[str, torch.Tensor], device: torch.device | str | None = None) -> None:
        self.store.load_state_dict({k[len(STATE_PREFIX):]: v for k, v in sd.items() if k.startswith(STATE_PREFIX)},
                                   device)

    # -- wrappers around the network and the guidance ----------------------------------------------------
    def wrap_network(self, net: NetworkFn) -> NetworkFn:
        for t in self.items:
            if hasattr(t, "wrap_network"):
                net = t.wrap_network(net)
        return net

    def cfg_denoiser(self, net: NetworkFn, cond: torch.Tensor, uncond: torch.Tensor | None, scale: float,
                     max_batch: int | None = None) -> Denoiser:
        """``diffusion.guidance.cfg_denoiser``, or the guidance-level hook when TGATE or CFG-Cache is on."""
        tg, cc = self.get("tgate"), self.get("cfg_cache")
        if tg is None and cc is None:
            return cfg_denoiser(net, cond, uncond, scale, max_batch)
        from .guided import mixed_cfg_denoiser

        return mixed_cfg_denoiser(net, cond, uncond, scale, max_batch, tg, cc)


def apply_techniques(unet: torch.nn.Module, cfg: TechniquesConfig | None) -> TechniqueSet:
    """Install every enabled technique on ``unet`` (any backend's network: it names its attention sites and
    levels, ``backends/base.py``); ``TechniqueSet.remove()`` puts the network back exactly as it was."""
    store = FrameStore()
    items: list[Any] = []
    if cfg is None:
        return TechniqueSet(items, store)
    check_config(cfg)
    try:
        for spec in enabled(cfg):
            items.append(spec.install(unet, getattr(cfg, spec.name), store))
    except BaseException:
        TechniqueSet(items, store).remove()  # leave the model as it was
        raise
    return TechniqueSet(items, store)

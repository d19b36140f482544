"""The guidance-level hook: classifier-free guidance whose rows need not all run both branches.

Like diffusers' ``FasterCacheDenoiserHook`` this sits around the cfg denoiser, not inside the U-Net: it
decides per row (window) which passes go through the network, runs them as ONE batch in
``cfg_denoiser``'s interleaved layout without the skipped uncond rows (two calls when the contexts differ
in length),
republishes the step context with the rows' branches, and combines:

* both branches computed: ε = ε_u + s·(ε_c − ε_u), and CFG-Cache records the frames' deltas;
* TGATE cond-only window (all frames past the gate): guidance off, ε = ε_c;
* CFG-Cache window off its turn: ε_u rebuilt from ε_c and the frames' deltas, then guided as usual.

Outside the FIFO phase (no frame ids in the context) it is exactly ``cfg_denoiser``.
"""

from __future__ import annotations

import torch

from ..devices import index_tensor, to_device
from ..diffusion.context import publish, rows_for
from ..diffusion.guidance import Denoiser, NetworkFn, _expand, cfg_denoiser, chunked
from .cfg_cache import CFGCache
from .hooks import facts_of
from .tgate import TGate


def _pairs(z: torch.Tensor) -> torch.Tensor:
    """Each row twice, as cfg_denoiser lays out the cond and uncond passes."""
    return torch.stack([z, z], dim=1).flatten(0, 1)


def mixed_cfg_denoiser(net: NetworkFn, cond: torch.Tensor, uncond: torch.Tensor | None, scale: float,
                       max_batch: int | None, tgate: TGate | None, cfg_cache: CFGCache | None) -> Denoiser:
    plain = cfg_denoiser(net, cond, uncond, scale, max_batch)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        step = rows_for(b)
        facts = facts_of(step) if step is not None else None
        if facts is None or uncond is None or scale == 1.0:
            return plain(x, t)
        cond_only = tgate.cond_only(facts) if tgate is not None else [False] * b
        rebuild = cfg_cache.skip_uncond(facts) if cfg_cache is not None else [False] * b
        full = [r for r in range(b) if not cond_only[r] and not rebuild[r]]
        c, u = _expand(cond, b), _expand(uncond, b)
        fi = index_tensor(full, x.device)
        if c.shape[1:] == u.shape[1:]:
            # cfg_denoiser's interleaved layout [r0 cond, r0 uncond, r1 cond, ...] minus the skipped uncond rows:
            # with every row computing both branches this is exactly the plain batch
            full_set = set(full)
            order = [2 * r + k for r in range(b) for k in (0, 1) if k == 0 or r in full_set]
            sel = torch.tensor(order, dtype=torch.long)
            pairs = step.interleave_branches()
            with publish(pairs.select(sel)):
                sel = to_device(sel, x.device)
                eps = chunked(net, _pairs(x).index_select(0, sel), _pairs(t).index_select(0, sel),
                              torch.stack([c, u], dim=1).flatten(0, 1).index_select(0, sel), max_batch).float()
            pos_c = index_tensor([k for k, o in enumerate(order) if o % 2 == 0], x.device)
            pos_u = index_tensor([k for k, o in enumerate(order) if o % 2 == 1], x.device)
            e_c, e_u_full = eps.index_select(0, pos_c), eps.index_select(0, pos_u)
        else:
            with publish(step.cond_only()):
                e_c = chunked(net, x, t, c, max_batch).float()
            e_u_full = None
            if full:
                with publish(step.select(full).uncond_only()):
                    e_u_full = chunked(net, x[fi], t[fi], u[fi], max_batch).float()
        e_u = e_c.clone()  # cond-only rows: ε_u = ε_c turns guidance off
        if full:
            e_u[fi] = e_u_full
            if cfg_cache is not None:
                cfg_cache.record(facts, full, e_c[fi], e_u_full)
        rows = [r for r in range(b) if rebuild[r] and not cond_only[r]]
        if rows:
            ri = index_tensor(rows, x.device)
            e_u[ri] = cfg_cache.rebuild(facts, rows, e_c[ri])
        return e_u + scale * (e_c - e_u)

    return denoise

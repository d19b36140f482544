"""Classifier-free guidance as a denoiser wrapper (kept out of the network, as in k-diffusion).

``cfg_denoiser`` turns a U-Net into ``denoise(x, t) -> eps`` where cond and uncond go through the
network together, interleaved per sample ([s0 cond, s0 uncond, s1 cond, ...]) in ONE forward,
optionally split into chunks of ``max_batch`` samples to bound peak memory. Both reshape the batch, so
both republish the step context (``diffusion/context.py``) with the rows the network actually sees. The
guidance combination runs in float32 whatever the network's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .context import StepContext, publish, rows_for

# (x (B, C, F, H, W), t (B, F) int64) -> eps (B, C, F, H, W)
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# the raw network: (x, t (B, F), context (B, L, D)) -> eps
NetworkFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def unet_network(unet: torch.nn.Module, fps: int | torch.Tensor = 8) -> NetworkFn:
    """Adapt the U-Net to ``(x, t, context)`` with per-frame timesteps."""

    def net(x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return unet(x, t, context, fps=fps)

    return net


def _expand(ctx: torch.Tensor, b: int) -> torch.Tensor:
    if ctx.shape[0] == b:
        return ctx
    if ctx.shape[0] == 1:
        return ctx.expand(b, *ctx.shape[1:])
    raise ValueError(f"context batch {ctx.shape[0]} fits neither 1 nor the latent batch {b}")


def chunked(net: NetworkFn, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor,
            max_batch: int | None) -> torch.Tensor:
    """Run ``net`` over the batch in chunks of at most ``max_batch`` samples."""
    if not max_batch or x.shape[0] <= max_batch:
        return net(x, t, ctx)
    step = rows_for(x.shape[0])
    outs = []
    for i in range(0, x.shape[0], max_batch):
        j = min(i + max_batch, x.shape[0])
        with publish(step.narrow(i, j) if step is not None else None):
            outs.append(net(x[i:j], t[i:j], ctx[i:j]))
    return torch.cat(outs, dim=0)


def _branches(step: StepContext | None, layout: str) -> StepContext | None:
    if step is None:
        return None
    if layout == "interleaved":
        return step.interleave_branches()
    return step.cond_only() if layout == "cond" else step.uncond_only()


# a guidance scale: one number, or one per frame from the (B, F) timesteps (a model whose experts differ in it)
Scale = float | Callable[[torch.Tensor], torch.Tensor]


def frame_scale(scale: Scale, t: torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    """``scale`` as a number, or as a (B, 1, F, 1, 1) float32 tensor broadcasting over ``like`` (B, C, F, H, W)."""
    if not callable(scale):
        return scale
    b, f = like.shape[0], like.shape[2]
    table = t if t.ndim == 2 else t.reshape(-1, 1)
    return scale(table.expand(b, f)).float().view(b, 1, f, 1, 1)


def cfg_denoiser(net: NetworkFn, cond: torch.Tensor, uncond: torch.Tensor | None, scale: Scale,
                 max_batch: int | None = None) -> Denoiser:
    """eps = e_u + scale * (e_c - e_u), computed in one batched forward (reference quirk Q5 order).

    ``cond``/``uncond`` are (1 or B, L, D). With ``uncond=None`` or ``scale == 1`` only the cond
    pass runs. Contexts of different lengths (e.g. 77 text tokens vs 93 text+image tokens) cannot
    share a batch; they then run as two forwards. ``scale`` may be per frame (``frame_scale``): two experts
    with their own guidance.
    """

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        step = rows_for(b)
        c = _expand(cond, b)
        if uncond is None or (not callable(scale) and scale == 1.0):
            with publish(_branches(step, "cond")):
                return chunked(net, x, t, c, max_batch).float()
        u = _expand(uncond, b)
        if c.shape[1:] != u.shape[1:]:
            with publish(_branches(step, "cond")):
                e_c = chunked(net, x, t, c, max_batch).float()
            with publish(_branches(step, "uncond")):
                e_u = chunked(net, x, t, u, max_batch).float()
        else:
            x2 = torch.stack([x, x], dim=1).flatten(0, 1)
            t2 = torch.stack([t, t], dim=1).flatten(0, 1)
            ctx2 = torch.stack([c, u], dim=1).flatten(0, 1)
            with publish(_branches(step, "interleaved")):
                eps = chunked(net, x2, t2, ctx2, max_batch).float().unflatten(0, (b, 2))
            e_c, e_u = eps[:, 0], eps[:, 1]
        return e_u + frame_scale(scale, t, e_c) * (e_c - e_u)

    return denoise

"""diffusers attention layers as technique handles (``backends.base.AttentionHandle``).

A diffusers ``Attention`` calls ``processor(attn, hidden_states, encoder_hidden_states, attention_mask,
temb)``; the techniques speak ``processor(attn, x, context)`` with ``attn.to_q``, ``attn.split_heads`` and
``attn.attend_and_project``. Each layer gets one :class:`DiffusersAttention` handle and one bridge processor
that calls whatever processor the handle holds. The handle's plain processor is diffusers'
``AttnProcessor2_0`` maths op for op (so the network equals ``UNetMotionModel``), with the batch chunked under
CUDA's grid limit (``backends/sdpa.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..sdpa import sdpa


class PlainProcessor:
    """q from x, attention over the context (or x), output projection: no technique."""

    def __call__(self, attn: DiffusersAttention, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return attn.attend_and_project(attn.split_heads(attn.to_q(x)), x, context)


class _Bridge:
    """The processor diffusers calls; it forwards to the handle's current (technique-convention) processor."""

    def __init__(self, handle: DiffusersAttention):
        self.handle = handle

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        if attention_mask is not None or temb is not None or hidden_states.ndim != 3:
            raise NotImplementedError(f"{self.handle.path}: attention masks, temb and 4-D inputs are not supported "
                                      "by the FIFO backend (SD-1.5 and AnimateDiff use none of them)")
        return self.handle.processor(self.handle, hidden_states, encoder_hidden_states)


def unsupported(mod: nn.Module) -> list[str]:
    """Features of a diffusers Attention that the plain processor does not reproduce (none in SD-1.5 or
    AnimateDiff's motion modules)."""
    bad = []
    for name in ("spatial_norm", "group_norm", "norm_q", "norm_k"):
        if getattr(mod, name, None) is not None:
            bad.append(name)
    if getattr(mod, "residual_connection", False):
        bad.append("residual_connection")
    if getattr(mod, "rescale_output_factor", 1.0) != 1.0:
        bad.append("rescale_output_factor")
    if getattr(mod, "added_kv_proj_dim", None) is not None:
        bad.append("added_kv_proj_dim")
    if getattr(mod, "inner_kv_dim", mod.inner_dim) != mod.inner_dim:
        bad.append("kv_heads")
    return bad


class DiffusersAttention:
    """One diffusers ``Attention`` layer, driven in the techniques' processor convention."""

    def __init__(self, path: str, mod: nn.Module):
        bad = unsupported(mod)
        if bad:
            raise ValueError(f"attention layer {path} uses {', '.join(bad)}, which the AnimateDiff backend does not "
                             "reproduce; this does not look like an SD-1.5 / AnimateDiff U-Net")
        self.path, self.mod = path, mod
        self.heads = int(mod.heads)
        self.dim_head = int(mod.inner_dim) // self.heads
        self.processor: Any = PlainProcessor()
        mod.set_processor(_Bridge(self))

    def set_processor(self, processor: Any) -> None:
        self.processor = processor

    def to_q(self, x: torch.Tensor) -> torch.Tensor:
        return self.mod.to_q(x)

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(N, L, H*D) -> (N, H, L, D), as AttnProcessor2_0 lays them out."""
        return t.view(t.shape[0], -1, self.heads, self.dim_head).transpose(1, 2)

    def attend_and_project(self, q: torch.Tensor, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        mod = self.mod
        ctx = x if context is None else context
        if context is not None and mod.norm_cross:
            ctx = mod.norm_encoder_hidden_states(ctx)
        k = self.split_heads(mod.to_k(ctx))
        v = self.split_heads(mod.to_v(ctx))
        out = sdpa(q, k, v)
        out = out.transpose(1, 2).reshape(q.shape[0], -1, self.heads * self.dim_head).to(q.dtype)
        return mod.to_out[1](mod.to_out[0](out))

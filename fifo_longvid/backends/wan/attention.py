"""Wan's attention layers as technique handles (``backends.base.AttentionHandle``), in frame rows.

diffusers calls ``processor(attn, hidden_states (B, F*S, D), encoder_hidden_states, attention_mask, rotary_emb)``
on a ``WanAttention`` (or ``SkyReelsV2Attention``); the techniques speak ``processor(attn, x, context)`` and
decide per (sample, frame) row: they look up the step context with ``frame_facts(x.shape[0])``, which expects
``B*F`` rows. So each layer's bridge hands its handle's processor the tokens in *frame rows*, ``(B*F, S, D)``
(S = h'*w' tokens per frame; a free view, since Wan orders tokens frame-major), and folds the result back:

* cross-attention (attn2) is row-wise in its queries: each frame row attends to its sample's text, repeated per
  frame. Exact for any subset of rows, so TGATE can reuse it per frame; called with all rows and the bridge's own
  context it attends per sample to the unrepeated text (no F-fold key/value projections).
* self-attention (attn1) attends over every token of every frame: ``attend_and_project`` folds the rows back into
  samples, applies the rotary embedding, attends, and unfolds. A processor that computes only *some* frame rows
  (attention reuse: half of the frames per iteration) picks them with ``select_rows``; their queries then attend
  to the keys and values of *every* frame of their sample (the bridge keeps the full rows for the call), so each
  computed row equals the same row of the full call. The saving is the skipped rows' share of the query
  projection, the attention itself and the output projection; keys and values are still projected for all.

The handle's maths is ``WanAttnProcessor``'s op for op: q/k RMS norms across heads before the head split, the
rotary embedding on (q, k) in float64 as diffusers applies it, SDPA, the output projection.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...devices import index_tensor
from ..sdpa import sdpa


class PlainProcessor:
    """q from x, attention, output projection: no technique."""

    def __call__(self, attn: WanAttentionHandle, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return attn.attend_and_project(attn.split_heads(attn.to_q(x)), x, context)


def apply_rotary(t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding on interleaved pairs; ``t`` (..., D), cos/sin broadcastable (..., D)."""
    x1, x2 = t.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(t)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out.type_as(t)


class _Bridge:
    """The processor diffusers calls; it regroups tokens into frame rows for the handle's processor."""

    def __init__(self, handle: WanAttentionHandle):
        self.handle = handle

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, rotary_emb: Any = None, **kwargs: Any) -> torch.Tensor:
        h = self.handle
        if attention_mask is not None:
            raise NotImplementedError(f"{h.path}: attention masks (causal diffusion-forcing blocks) are not supported; "
                                      "the FIFO backend runs SkyReels-V2 with num_frame_per_block=1")
        b, n, d = hidden_states.shape
        f = h.frames
        if f < 1 or n % f:
            raise RuntimeError(f"{h.path}: {n} tokens do not split into {f} frames (the network sets the frame count)")
        rows = hidden_states.reshape(b * f, n // f, d)
        ctx = None
        if encoder_hidden_states is not None:
            ctx = encoder_hidden_states.repeat_interleave(f, dim=0)
        h._call = (b, f, rotary_emb)
        h._context = (ctx, encoder_hidden_states)
        h._rows, h._subset = rows, None
        try:
            out = h.processor(h, rows, ctx)
        finally:
            h._call, h._context, h._rows, h._subset = None, None, None, None
        return out.reshape(b, n, out.shape[-1])


def unsupported(mod: nn.Module) -> list[str]:
    """Features of a Wan attention layer the handle does not reproduce (none in Wan2.1 T2V / SkyReels-V2 DF)."""
    bad = []
    if getattr(mod, "add_k_proj", None) is not None:
        bad.append("added_kv_proj (image conditioning, I2V)")
    if getattr(mod, "fused_projections", False):
        bad.append("fused projections")
    if not isinstance(getattr(mod, "norm_q", None), nn.RMSNorm) or not isinstance(getattr(mod, "norm_k", None),
                                                                                 nn.RMSNorm):
        bad.append("q/k norms other than RMSNorm across heads")
    if getattr(mod, "kv_inner_dim", mod.inner_dim) != mod.inner_dim:
        bad.append("kv heads")
    return bad


class WanAttentionHandle:
    """One Wan attention layer, driven in the techniques' processor convention over frame rows."""

    def __init__(self, path: str, mod: nn.Module, self_attention: bool):
        bad = unsupported(mod)
        if bad:
            raise ValueError(f"attention layer {path} uses {', '.join(bad)}, which the Wan backend does not reproduce")
        self.path, self.mod, self.self_attention = path, mod, self_attention
        self.heads = int(mod.heads)
        self.dim_head = int(mod.inner_dim) // self.heads
        self.processor: Any = PlainProcessor()
        self.frames = 0  # set by the network before each forward
        self._call: tuple[int, int, Any] | None = None  # (B, F, rotary_emb) during a call
        self._context: tuple[Any, Any] | None = None  # (context in frame rows, the sample's context) during a call
        self._rows: torch.Tensor | None = None  # every frame row of the call (the keys of a subset's queries)
        self._subset: list[int] | None = None  # the frame rows a processor chose with select_rows
        mod.set_processor(_Bridge(self))

    def set_processor(self, processor: Any) -> None:
        self.processor = processor

    def select_rows(self, x: torch.Tensor, rows: list[int], index: torch.Tensor) -> torch.Tensor:
        """The frame rows ``rows`` (host list, ascending; ``index`` the same on the device) of ``x``, remembered so
        that self-attention over them still sees every frame's keys."""
        self._subset = list(rows)
        return x.index_select(0, index)

    def to_q(self, x: torch.Tensor) -> torch.Tensor:
        """Query projection and its RMS norm (Wan normalises across heads, before the head split)."""
        return self.mod.norm_q(self.mod.to_q(x))

    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(N, L, H*D) -> (N, H, L, D)."""
        return t.unflatten(2, (self.heads, -1)).transpose(1, 2)

    def _merge(self, out: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        out = out.transpose(1, 2).flatten(2, 3).type_as(q)
        return self.mod.to_out[1](self.mod.to_out[0](out))

    def _cross(self, q: torch.Tensor, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Cross-attention. All rows with the bridge's own context: the frames of a sample attend together to
        its context, once (as diffusers does); otherwise row by row (any subset of rows gives the same rows)."""
        mod = self.mod
        call, ctx = self._call, self._context
        if call is not None and ctx is not None and context is ctx[0] and x.shape[0] == call[0] * call[1]:
            b, f, _ = call
            s = x.shape[1]
            qs = q.reshape(b, f, self.heads, s, self.dim_head).transpose(1, 2).reshape(b, self.heads, f * s, -1)
            k = self.split_heads(mod.norm_k(mod.to_k(ctx[1])))
            v = self.split_heads(mod.to_v(ctx[1]))
            out = self._merge(sdpa(qs, k, v), qs)
            return out.reshape(b * f, s, out.shape[-1])
        ctx_rows = x if context is None else context
        k = self.split_heads(mod.norm_k(mod.to_k(ctx_rows)))
        v = self.split_heads(mod.to_v(ctx_rows))
        return self._merge(sdpa(q, k, v), q)

    def attend_and_project(self, q: torch.Tensor, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        mod = self.mod
        if not self.self_attention:
            return self._cross(q, x, context)
        if self._call is None:
            raise RuntimeError(f"{self.path}: self-attention handles are driven by the network's forward only")
        b, f, rotary = self._call
        if x.shape[0] != b * f:
            return self._attend_subset(q, x, rotary)
        s = x.shape[1]
        xs = x.reshape(b, f * s, x.shape[2])  # back to the sample's token sequence (frame-major)
        qs = q.reshape(b, f, self.heads, s, self.dim_head).transpose(1, 2).reshape(b, self.heads, f * s, -1)
        k = self.split_heads(mod.norm_k(mod.to_k(xs)))
        v = self.split_heads(mod.to_v(xs))
        if rotary is not None:
            cos, sin = (r.transpose(1, 2) for r in rotary)  # (1, L, 1, D) -> (1, 1, L, D)
            qs, k = apply_rotary(qs, cos, sin), apply_rotary(k, cos, sin)
        out = self._merge(sdpa(qs, k, v), qs)  # (B, F*S, D)
        return out.reshape(b * f, s, out.shape[-1])

    def _attend_subset(self, q: torch.Tensor, x: torch.Tensor, rotary: Any) -> torch.Tensor:
        """Self-attention for the frame rows chosen by ``select_rows``: per sample, its chosen rows' queries (in
        token order) against the keys and values of all of its frames."""
        b, f, _ = self._call
        rows, full = self._subset, self._rows
        if rows is None or full is None or len(rows) != x.shape[0]:
            raise RuntimeError(f"{self.path}: {x.shape[0]} of the {b * f} frame rows without select_rows: Wan's "
                               "self-attention needs to know which frames they are (their keys span the sample)")
        mod, s = self.mod, x.shape[1]
        samples = sorted({r // f for r in rows})
        counts = [sum(1 for r in rows if r // f == j) for j in samples]
        if rotary is not None:  # (1, L, 1, D) -> per frame (F, S, D), then the chosen rows' positions
            cos, sin = (r.reshape(f, s, r.shape[-1]) for r in rotary)
            frames = index_tensor([r % f for r in rows], cos.device)
            q = apply_rotary(q, cos.index_select(0, frames)[:, None], sin.index_select(0, frames)[:, None])
        outs = []
        for j, qj in zip(samples, q.split(counts), strict=True):
            xs = full[j * f:(j + 1) * f].reshape(1, f * s, full.shape[2])
            k = self.split_heads(mod.norm_k(mod.to_k(xs)))
            v = self.split_heads(mod.to_v(xs))
            if rotary is not None:
                cos, sin = (r.transpose(1, 2) for r in rotary)
                k = apply_rotary(k, cos, sin)
            n = qj.shape[0]
            qs = qj.transpose(0, 1).reshape(1, self.heads, n * s, self.dim_head)
            outs.append(self._merge(sdpa(qs, k, v), qs).reshape(n, s, -1))
        return torch.cat(outs)

"""Attention layers of the VideoCrafter 3D U-Net.

Layers own the weights; the maths lives in a swappable *processor* (as in diffusers), so a
technique such as Q-cache can change how one attention computes without editing model code.
Parameter names mirror the reference checkpoint exactly (``to_q``, ``to_out.0``, ``ff.net.0.proj``...).
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..sdpa import MAX_ATTENTION_BATCH, sdpa  # noqa: F401 - re-exported: tests and scripts use them


class AttnProcessor(Protocol):
    def __call__(self, attn: Attention, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor: ...


class SDPAProcessor:
    """Plain scaled-dot-product attention (the reference maths, via torch SDPA)."""

    def __call__(self, attn: Attention, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        q = attn.split_heads(attn.to_q(x))
        return attn.attend_and_project(q, x, context)


class Attention(nn.Module):
    """Multi-head (cross-)attention with an optional image branch (VideoCrafter1 I2V).

    ``x`` is (N, L, C). Spatial layers see N = batch*frames and L = pixels; temporal layers see
    N = batch*pixels and L = frames. With ``image_tokens`` enabled, a context longer than
    ``text_context_len`` is split: text tokens go through ``to_k/to_v``, the rest through
    ``to_k_ip/to_v_ip``, and the two attention outputs are added (reference semantics).
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        image_tokens: bool = False,
        causal: bool = False,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.dim_head = dim_head
        self.scale = dim_head**-0.5
        self.causal = causal
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))
        self.image_tokens = image_tokens
        self.text_context_len = 77
        self.image_scale = 1.0
        if image_tokens:
            self.to_k_ip = nn.Linear(context_dim, inner, bias=False)
            self.to_v_ip = nn.Linear(context_dim, inner, bias=False)
        self.processor: AttnProcessor = SDPAProcessor()

    def set_processor(self, processor: AttnProcessor) -> None:
        self.processor = processor

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.processor(self, x, context)

    # -- building blocks shared by every processor ---------------------------------------------
    def split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """(N, L, H*D) -> (N, H, L, D)."""
        return rearrange(t, "n l (h d) -> n h l d", h=self.heads)

    def attend_and_project(
        self, q: torch.Tensor, x: torch.Tensor, context: torch.Tensor | None
    ) -> torch.Tensor:
        """Given head-split queries, attend over keys/values of ``context`` (or ``x``) and project out."""
        ctx = x if context is None else context
        ctx_img = None
        if self.image_tokens and context is not None:
            ctx, ctx_img = ctx[:, : self.text_context_len], ctx[:, self.text_context_len :]
        k = self.split_heads(self.to_k(ctx))
        v = self.split_heads(self.to_v(ctx))
        out = sdpa(q, k, v, is_causal=self.causal and context is None)
        if ctx_img is not None and ctx_img.shape[1] > 0:
            k_ip = self.split_heads(self.to_k_ip(ctx_img))
            v_ip = self.split_heads(self.to_v_ip(ctx_img))
            out = out + self.image_scale * sdpa(q, k_ip, v_ip)
        return self.to_out(rearrange(out, "n h l d -> n l (h d)"))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        inner = int(dim * mult)
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """attn1 (self) -> attn2 (cross, or self when no context) -> gated FF, pre-norm residuals.

    Submodules are created in the reference order (attn1, ff, attn2, norms) so that
    ``state_dict()`` order matches the checkpoint.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        context_dim: int | None = None,
        dropout: float = 0.0,
        image_tokens: bool = False,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.attn1 = Attention(dim, None, heads, dim_head, dropout, causal=causal)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = Attention(dim, context_dim, heads, dim_head, dropout, image_tokens=image_tokens,
                               causal=causal)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Attention over the pixels of each frame; cross-attends to the text (and image) context."""

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        depth: int = 1,
        context_dim: int | None = None,
        use_linear: bool = True,
        image_tokens: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.in_channels = channels
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(32, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner) if use_linear else nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner, heads, dim_head, context_dim, dropout, image_tokens=image_tokens)
            for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner, channels) if use_linear else nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x: ((b f), c, h, w); context: ((b f), L, D)."""
        _, _, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = rearrange(x, "n c h w -> n (h w) c")
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        if self.use_linear:
            x = self.proj_out(x)
        x = rearrange(x, "n (h w) c -> n c h w", h=h, w=w)
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class TemporalTransformer(nn.Module):
    """Attention across frames at every pixel (self-attention only, as VideoCrafter2 configures it).

    Without ``use_linear`` the projections are kernel-1 Conv1d layers (the U-Net's ``init_attn``);
    they are applied as linear maps, which is the same operation.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        depth: int = 1,
        use_linear: bool = True,
        causal: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.in_channels = channels
        self.use_linear = use_linear
        self.norm = nn.GroupNorm(32, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner) if use_linear else nn.Conv1d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner, heads, dim_head, None, dropout, causal=causal) for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner, channels) if use_linear else nn.Conv1d(inner, channels, 1)

    @staticmethod
    def _pointwise(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, nn.Conv1d):
            return F.linear(x, layer.weight[..., 0], layer.bias)
        return layer(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (b, c, f, h, w)."""
        b, _, _, h, w = x.shape
        x_in = x
        x = rearrange(self.norm(x), "b c f h w -> (b h w) f c")
        x = self._pointwise(self.proj_in, x)
        for block in self.transformer_blocks:
            x = block(x)
        x = self._pointwise(self.proj_out, x)
        x = rearrange(x, "(b h w) f c -> b c f h w", b=b, h=h, w=w)
        return x + x_in

"""Image conditioning of VideoCrafter1 I2V: OpenCLIP vision tokens -> Resampler -> 16 context tokens.

``OpenCLIPImageEmbedder`` mirrors the reference ``FrozenOpenCLIPImageEmbedderV2``: an open_clip CLIP with
only its text transformer deleted (so the checkpoint's ``embedder.model.*`` keys match), returning the
tokens of the last vision block with no ``ln_post``, projection or pooling. ``Resampler`` is the
Perceiver-style ``image_proj_model``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from .text import TextEncoderConfig, _is_batch_first, _resolve_model_config

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class ImageConfig:
    """Vision tower (an open_clip arch or json) and the Resampler's sizes (VideoCrafter1 defaults)."""

    arch: str = "ViT-H-14"
    model_config_file: str | None = None
    dim: int = 1024  # Resampler query width
    depth: int = 4
    dim_head: int = 64
    heads: int = 12
    num_queries: int = 16
    embedding_dim: int = 1280  # width of the vision tokens
    output_dim: int = 1024  # = the U-Net's context_dim
    ff_mult: int = 4


def _gaussian_blur(x: torch.Tensor, sigma: tuple[float, float]) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding, kernel sizes as kornia's anti-aliased resize picks them."""
    for axis, s in ((2, sigma[0]), (3, sigma[1])):
        k = int(max(4.0 * s, 3))
        k += 1 - k % 2
        pos = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
        kernel = torch.exp(-(pos**2) / (2 * s * s))
        kernel = kernel / kernel.sum()
        c = x.shape[1]
        if axis == 2:
            x = F.conv2d(F.pad(x, (0, 0, k // 2, k // 2), mode="reflect"), kernel.view(1, 1, k, 1).repeat(c, 1, 1, 1),
                         groups=c)
        else:
            x = F.conv2d(F.pad(x, (k // 2, k // 2, 0, 0), mode="reflect"), kernel.view(1, 1, 1, k).repeat(c, 1, 1, 1),
                         groups=c)
    return x


def clip_preprocess(x: torch.Tensor, size: int = 224) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> CLIP-normalised (B, 3, size, size), as the reference does it.

    Bicubic resize with align_corners=True and no crop (a non-square frame is squashed, as in the
    reference); when shrinking, kornia's anti-alias blur first (sigma = (in/out - 1) / 2). Then
    [-1, 1] -> [0, 1] and the CLIP mean/std. No clamp.
    """
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        if h > size or w > size:
            x = _gaussian_blur(x, (max((h / size - 1) / 2, 0.001), max((w / size - 1) / 2, 0.001)))
        x = F.interpolate(x, (size, size), mode="bicubic", align_corners=True)
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


class OpenCLIPImageEmbedder(nn.Module):
    def __init__(self, cfg: ImageConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        _, model_cfg = _resolve_model_config(TextEncoderConfig(arch=cfg.arch, model_config_file=cfg.model_config_file))
        model_cfg = dict(model_cfg)
        model_cfg.pop("multimodal_cfg", None)
        with torch.device("meta"):
            model = open_clip.CLIP(**model_cfg)
        del model.transformer  # the reference deletes only the text transformer
        for name in list(model._parameters):
            if name not in ("positional_embedding", "text_projection", "logit_scale"):
                delattr(model, name)
                setattr(model, name, None)
        dev = torch.device(device if device is not None else "cpu")
        if dev.type != "meta":
            model.to_empty(device=dev)
            with torch.no_grad():
                for p in model.parameters():  # defined values; real use loads a checkpoint over them
                    p.normal_(0, 0.02)
        self.model = model
        self.register_buffer("mean", torch.tensor(CLIP_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> vision tokens (B, 1 + grid², width), CLS first, last block, no ln_post."""
        v = self.model.visual
        x = clip_preprocess(images.to(v.conv1.weight.dtype), v.image_size[0] if isinstance(v.image_size, tuple)
                            else v.image_size)
        x = v.conv1(x).flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.ln_pre(x)
        batch_first = _is_batch_first(v.transformer)
        if not batch_first:
            x = x.transpose(0, 1)
        for block in v.transformer.resblocks:
            x = block(x)
        return x if batch_first else x.transpose(0, 1)


class PerceiverAttention(nn.Module):
    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads, self.dim_head = heads, dim_head
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x, latents = self.norm1(x), self.norm2(latents)
        b, n, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        q, k, v = (t.view(b, t.shape[1], self.heads, self.dim_head).transpose(1, 2) for t in (q, k, v))
        scale = 1 / math.sqrt(math.sqrt(self.dim_head))  # both sides scaled: stable in fp16
        w = torch.softmax(((q * scale) @ (k * scale).transpose(-2, -1)).float(), dim=-1).to(q.dtype)
        return self.to_out((w @ v).transpose(1, 2).reshape(b, n, -1))


class Resampler(nn.Module):
    """Perceiver resampler: learned queries attend to the vision tokens (and themselves)."""

    def __init__(self, cfg: ImageConfig) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.dim) / cfg.dim**0.5)
        self.proj_in = nn.Linear(cfg.embedding_dim, cfg.dim)
        self.proj_out = nn.Linear(cfg.dim, cfg.output_dim)
        self.norm_out = nn.LayerNorm(cfg.output_dim)
        inner = int(cfg.dim * cfg.ff_mult)
        self.layers = nn.ModuleList(
            nn.ModuleList([
                PerceiverAttention(cfg.dim, cfg.dim_head, cfg.heads),
                nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, inner, bias=False), nn.GELU(),
                              nn.Linear(inner, cfg.dim, bias=False)),
            ])
            for _ in range(cfg.depth)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        latents = self.latents.repeat(tokens.shape[0], 1, 1)
        x = self.proj_in(tokens)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))

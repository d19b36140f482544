"""The VideoCrafter 3D U-Net (VideoCrafter2 text-to-video; VideoCrafter1 I2V with image tokens).

Faithful to the reference numerics and checkpoint layout, with one deliberate interface change:
timesteps are given **explicitly** per sample ``(B,)`` or per frame ``(B, F)`` (or ``(F,)`` with
``per_frame=True``), so FIFO windows and the CFG pair can share one forward. The reference guessed
the FIFO case from ``x.shape[0] != t.shape[0]`` (quirk Q4), which is wrong when B == F.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..base import DeepSplit, Located, expand_timesteps
from .attention import SpatialTransformer, TemporalTransformer
from .resample import Downsample, Upsample
from .sites import deep_split, find_attention_sites


@dataclass
class UNetConfig:
    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_res_blocks: int = 2
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_head_channels: int = 64
    transformer_depth: int = 1
    context_dim: int = 1024
    use_linear: bool = True
    temporal_conv: bool = True
    temporal_attention: bool = True
    use_causal_attention: bool = False
    temporal_length: int = 16
    addition_attention: bool = True
    fps_cond: bool = True
    use_image_attention: bool = False
    dropout: float = 0.0
    extra: dict = field(default_factory=dict)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of a 1-D tensor (the reference's layout and float32 maths)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 (the reference's ``normalization``), safe under fp16.

    The affine parameters are upcast too: a half model would otherwise hand float32 activations to
    half weights, which the CPU kernel rejects.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).type(x.dtype)


class TemporalConvBlock(nn.Module):
    """Four residual 3x1x1 convolutions across frames (ModelScope-style)."""

    def __init__(self, channels: int, dropout: float = 0.1) -> None:
        super().__init__()

        def stage(with_dropout: bool) -> nn.Sequential:
            layers: list[nn.Module] = [nn.GroupNorm(32, channels), nn.SiLU()]
            if with_dropout:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))
            return nn.Sequential(*layers)

        self.conv1 = stage(False)
        self.conv2 = stage(True)
        self.conv3 = stage(True)
        self.conv4 = stage(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


class ResBlock(nn.Module):
    """2-D residual block with time embedding, followed by an optional temporal conv block."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None,
                 temporal_conv: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(
            GroupNorm32(32, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(32, out_channels), nn.SiLU(), nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )
        if temporal_conv:
            # (sic) the checkpoint spells it "temopral_conv"
            self.temopral_conv = TemporalConvBlock(out_channels, dropout=0.1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, batch: int) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[..., None, None]
        h = self.skip_connection(x) + self.out_layers(h)
        if hasattr(self, "temopral_conv"):
            h = rearrange(h, "(b f) c h w -> b c f h w", b=batch)
            h = rearrange(self.temopral_conv(h), "b c f h w -> (b f) c h w")
        return h


class UNetBlock(nn.Sequential):
    """One entry of input_blocks/middle_block/output_blocks; routes each layer its inputs."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor, batch: int) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, batch)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, TemporalTransformer):
                x = rearrange(x, "(b f) c h w -> b c f h w", b=batch)
                x = rearrange(layer(x), "b c f h w -> (b f) c h w")
            else:
                x = layer(x)
        return x


class UNet3D(nn.Module):
    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mc = cfg.model_channels
        emb_dim = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cfg.fps_cond:
            self.fps_embedding = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def attention_layers(ch: int) -> list[nn.Module]:
            heads, dim_head = ch // cfg.num_head_channels, cfg.num_head_channels
            layers: list[nn.Module] = [
                SpatialTransformer(ch, heads, dim_head, cfg.transformer_depth, cfg.context_dim,
                                   cfg.use_linear, image_tokens=cfg.use_image_attention)
            ]
            if cfg.temporal_attention:
                layers.append(TemporalTransformer(ch, heads, dim_head, 1, cfg.use_linear,
                                                  causal=cfg.use_causal_attention))
            return layers

        def resblock(ch_in: int, ch_out: int | None = None) -> ResBlock:
            return ResBlock(ch_in, emb_dim, ch_out, temporal_conv=cfg.temporal_conv, dropout=cfg.dropout)

        self.input_blocks = nn.ModuleList([UNetBlock(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])
        if cfg.addition_attention:
            # init_attn: 8 heads x num_head_channels regardless of width, Conv1d projections (quirk Q14)
            self.init_attn = UNetBlock(
                TemporalTransformer(mc, 8, cfg.num_head_channels, cfg.transformer_depth, use_linear=False,
                                    causal=cfg.use_causal_attention)
            )
        chans = [mc]
        ch, ds = mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [resblock(ch, mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers += attention_layers(ch)
                self.input_blocks.append(UNetBlock(*layers))
                chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(UNetBlock(Downsample(ch)))
                chans.append(ch)
                ds *= 2

        self.middle_block = UNetBlock(resblock(ch), *attention_layers(ch), resblock(ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [resblock(ch + chans.pop(), mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_resolutions:
                    layers += attention_layers(ch)
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(UNetBlock(*layers))

        self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, padding=1))

    expand_timesteps = staticmethod(expand_timesteps)

    def attention_sites(self) -> Located:
        """Every attention layer with its role (``sites.py``): what techniques select on."""
        return find_attention_sites(self)

    def deep_split(self) -> DeepSplit:
        """The blocks DeepCache may skip (``sites.py``)."""
        return deep_split(self)

    def _embed(self, timesteps: torch.Tensor, fps: torch.Tensor | int, b: int, f: int,
               per_frame: bool) -> torch.Tensor:
        """Time (+fps) embedding with one row per (sample, frame), shape ((b f), emb_dim)."""
        device = self.time_embed[0].weight.device
        t = self.expand_timesteps(timesteps, b, f, per_frame).to(device)
        dtype = self.time_embed[0].weight.dtype
        emb = self.time_embed(timestep_embedding(t.reshape(-1), self.cfg.model_channels).to(dtype))
        if self.cfg.fps_cond:
            if isinstance(fps, int):  # a fill on the device: no host-to-device copy per forward
                fps_t = torch.full((b,), fps, dtype=torch.long, device=device)
            else:
                fps_t = torch.as_tensor(fps, device=device).reshape(-1)
            if fps_t.numel() == 1:
                fps_t = fps_t.expand(b)
            if fps_t.numel() != b:
                raise ValueError(f"fps must be an int or have one entry per sample ({b}), got {fps_t.numel()}")
            fps_emb = self.fps_embedding(timestep_embedding(fps_t, self.cfg.model_channels).to(dtype))
            emb = emb + fps_emb.repeat_interleave(f, dim=0)
        return emb

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                fps: torch.Tensor | int = 8, per_frame: bool = False) -> torch.Tensor:
        """Predict noise for ``x`` (B, C, F, H, W).

        ``timesteps``: (B,) one per sample; (B, F) one per frame; or (F,) with ``per_frame=True``
        (shared by every sample). ``context``: (B, L, D) cross-attention tokens.
        """
        b, _, f, _, _ = x.shape
        emb = self._embed(timesteps, fps, b, f, per_frame)
        if context.shape[0] != b:
            raise ValueError(f"context batch {context.shape[0]} != latent batch {b}")
        dtype = self.time_embed[0].weight.dtype
        context = context.to(dtype).repeat_interleave(f, dim=0)
        h = rearrange(x, "b c f h w -> (b f) c h w").to(dtype)
        skips = []
        for i, block in enumerate(self.input_blocks):
            h = block(h, emb, context, b)
            if i == 0 and hasattr(self, "init_attn"):
                h = self.init_attn(h, emb, context, b)
            skips.append(h)
        h = self.middle_block(h, emb, context, b)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, b)
        y = self.out(h).to(x.dtype)
        return rearrange(y, "(b f) c h w -> b c f h w", b=b)

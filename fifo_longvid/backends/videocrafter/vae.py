"""VideoCrafter's 2D KL autoencoder, applied to videos one frame at a time.

The module tree mirrors the reference ``AutoencoderKL`` (``lvdm.models.autoencoder``) exactly, so a
VideoCrafter checkpoint's ``first_stage_model.*`` tensors load with ``strict=True`` and ``state_dict()``
comes out in the same order. Training-only parts (loss, timestep embedding, linear attention) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["VAEConfig", "AutoencoderKL", "decode_video", "encode_video"]


@dataclass
class VAEConfig:
    """The reference ``ddconfig`` plus ``embed_dim`` (defaults: VideoCrafter 512 px VAE)."""

    embed_dim: int = 4
    z_channels: int = 4
    resolution: int = 512
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    dropout: float = 0.0
    double_z: bool = True


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1)


def _conv1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=1, padding=0)


class ResnetBlock(nn.Module):
    """Pre-activation residual block; the checkpoint has no timestep projection (temb_channels=0)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        # Registration order matters: it fixes the state_dict order.
        self.norm1 = _norm(in_channels)
        self.conv1 = _conv3(in_channels, out_channels)
        self.norm2 = _norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3(out_channels, out_channels)
        if in_channels != out_channels:
            self.nin_shortcut = _conv1(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels (1x1 conv projections), residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = _conv1(channels, channels)
        self.k = _conv1(channels, channels)
        self.v = _conv1(channels, channels)
        self.proj_out = _conv1(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (rearrange(p(hn), "b c h w -> b 1 (h w) c") for p in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(c), as the reference
        out = rearrange(out, "b 1 (h w) c -> b c h w", h=h, w=w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv with the reference's asymmetric (right/bottom) zero padding."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2 followed by a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """Plain container so keys read ``down.{i}.block.{j}`` / ``up.{i}.attn.{j}`` like the reference."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class _Mid(nn.Module):
    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


def _run_level(level: _Level, h: torch.Tensor) -> torch.Tensor:
    # attn (if any) has one entry per block, applied right after it.
    for j, block in enumerate(level.block):
        h = block(h)
        if len(level.attn) > 0:
            h = level.attn[j](h)
    return h


class Encoder(nn.Module):
    """Image -> moments (2*z_channels when double_z), downsampling by 2**(len(ch_mult)-1)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, mult = cfg.ch, tuple(cfg.ch_mult)
        self.num_resolutions = len(mult)
        self.conv_in = _conv3(cfg.in_channels, ch)
        self.down = nn.ModuleList()
        res = cfg.resolution
        block_in = ch
        for i, m in enumerate(mult):
            level = _Level()
            block_out = ch * m
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(block_in))
            if i != self.num_resolutions - 1:
                level.downsample = Downsample(block_in)
                res //= 2
            self.down.append(level)
        self.mid = _Mid(block_in, cfg.dropout)
        self.norm_out = _norm(block_in)
        self.conv_out = _conv3(block_in, 2 * cfg.z_channels if cfg.double_z else cfg.z_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            h = _run_level(level, h)
            if i != self.num_resolutions - 1:
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent -> image; ``up`` is indexed by resolution level (0 = full size), as in the reference."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        ch, mult = cfg.ch, tuple(cfg.ch_mult)
        self.num_resolutions = len(mult)
        block_in = ch * mult[-1]
        res = cfg.resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = _conv3(cfg.z_channels, block_in)
        self.mid = _Mid(block_in, cfg.dropout)
        levels: list[_Level] = []
        for i in reversed(range(self.num_resolutions)):
            level = _Level()
            block_out = ch * mult[i]
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, cfg.dropout))
                block_in = block_out
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(block_in))
            if i != 0:
                level.upsample = Upsample(block_in)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = _conv3(block_in, cfg.out_ch)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for i in reversed(range(self.num_resolutions)):
            level = self.up[i]
            h = _run_level(level, h)
            if i != 0:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """Inference-only KL autoencoder; state-dict compatible with VideoCrafter's ``first_stage_model``."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        if not cfg.double_z:
            raise ValueError("AutoencoderKL needs double_z=True (mean and log-variance)")
        self.cfg = cfg
        self.embed_dim = cfg.embed_dim
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,3,H,W) in [-1,1] -> (mean, logvar); logvar clamped to [-30, 20] as the reference posterior."""
        moments = self.quant_conv(self.encoder(x))
        mean, logvar = torch.chunk(moments, 2, dim=1)
        return mean, torch.clamp(logvar, -30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N,embed_dim,h,w) unscaled latent -> (N,out_ch,8h,8w) pixels; not clamped."""
        return self.decoder(self.post_quant_conv(z))


def _frame_chunks(num_frames: int, chunk: int) -> list[slice]:
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [slice(i, min(i + chunk, num_frames)) for i in range(0, num_frames, chunk)]


def decode_video(
    vae: AutoencoderKL, z: torch.Tensor, scale_factor: float = 0.18215, chunk: int = 1
) -> torch.Tensor:
    """(B,C,F,h,w) scaled latents -> (B,3,F,H,W) pixels, as the reference ``decode_first_stage_2DAE``.

    The VAE is 2D, so frames are independent; ``chunk`` only trades memory for speed.
    """
    b = z.shape[0]
    z = 1.0 / scale_factor * z  # same op order as the reference
    outs = []
    for sl in _frame_chunks(z.shape[2], chunk):
        frames = rearrange(z[:, :, sl], "b c f h w -> (b f) c h w")
        outs.append(rearrange(vae.decode(frames), "(b f) c h w -> b c f h w", b=b))
    return torch.cat(outs, dim=2)


def encode_video(
    vae: AutoencoderKL,
    x: torch.Tensor,
    scale_factor: float = 0.18215,
    chunk: int = 1,
    sample: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B,3,F,H,W) pixels in [-1,1] -> (B,C,F,h,w) scaled latents (posterior mean, or a sample)."""
    b = x.shape[0]
    outs = []
    for sl in _frame_chunks(x.shape[2], chunk):
        frames = rearrange(x[:, :, sl], "b c f h w -> (b f) c h w")
        mean, logvar = vae.encode(frames)
        z = mean
        if sample:
            gen_device = generator.device if generator is not None else mean.device
            noise = torch.randn(mean.shape, generator=generator, device=gen_device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar) * noise.to(mean.device)
        outs.append(rearrange(scale_factor * z, "(b f) c h w -> b c f h w", b=b))
    return torch.cat(outs, dim=2)

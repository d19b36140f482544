"""Wan's causal 3-D VAE: the latent normalisation, and a streamed decoder with constant memory.

The Wan VAE compresses time causally by 4: latent 0 decodes to 1 frame, every later latent to 4, and each
causal convolution keeps its last two input frames in a feature cache. ``AutoencoderKLWan._decode`` runs that
loop one latent frame at a time but clears the cache on every call, so decoding FIFO's dequeued frames one by
one would restart the video each time. :class:`StreamDecoder` runs the same loop with its own cache list kept
across calls: decoding N latents one at a time equals one ``decode`` of all N, and the cache holds the same
number of bytes after frame 3 as after frame 1000.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def latent_stats(vae: nn.Module, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, 1/std) as (1, C, 1, 1, 1) tensors on ``like``'s device and dtype, as ``WanPipeline`` builds them."""
    c = int(vae.config.z_dim)
    mean = torch.tensor(vae.config.latents_mean).view(1, c, 1, 1, 1).to(like.device, like.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, c, 1, 1, 1).to(like.device, like.dtype)
    return mean, inv_std


def unnormalise(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Model latents -> VAE latents: ``z / (1/std) + mean``, in the VAE's dtype (``WanPipeline.__call__``'s end)."""
    z = z.to(vae.dtype)
    mean, inv_std = latent_stats(vae, z)
    return z / inv_std + mean


def normalise(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """VAE latents -> model latents: ``(z - mean) * (1/std)``."""
    mean, inv_std = latent_stats(vae, z)
    return (z - mean) * inv_std


@torch.no_grad()
def first_frame_latent(vae: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1] -> the (1, C, 1, h, w) model latent of a video's first frame, as
    ``WanImageToVideoPipeline.prepare_latents`` computes it under ``expand_timesteps``: the image as a one-frame
    video, the posterior's mode (its mean) cast to float32, then normalised in float32, so it is bitwise
    diffusers' condition (``Wan.encode_frames`` normalises in the VAE's dtype instead)."""
    x = image.unsqueeze(2).to(next(vae.parameters()).device, vae.dtype)
    z = vae.encode(x).latent_dist.mode().float()
    return normalise(vae, z)


def _unpatchify(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    p = vae.config.patch_size
    if p is None:
        return x
    from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

    return unpatchify(x, patch_size=p)


def conv_count(decoder: nn.Module) -> int:
    """Causal convolutions in the decoder: one cache slot each."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    return sum(isinstance(m, WanCausalConv3d) for m in decoder.modules())


class StreamDecoder:
    """Decode latent frames one at a time, keeping the causal VAE's feature cache between calls.

    ``decode(z (B, C, 1, h, w))`` -> (B, 3, k, H, W) in [-1, 1], k = 1 for the first call and the VAE's temporal
    factor (4) after; ``reset()`` starts a new video. Holds nothing but the cache (two frames per convolution).
    """

    def __init__(self, vae: nn.Module):
        if getattr(vae, "use_tiling", False):
            raise ValueError("the streamed decoder does not tile; disable VAE tiling")
        self.vae = vae
        self._slots = conv_count(vae.decoder)
        self.reset()

    def reset(self) -> None:
        self.cache: list[Any] = [None] * self._slots
        self.frames = 0  # latent frames decoded since the last reset

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 5 or z.shape[2] != 1:
            raise ValueError(f"the streamed decoder takes one latent frame (B, C, 1, h, w), got {tuple(z.shape)}")
        vae = self.vae
        x = vae.post_quant_conv(unnormalise(vae, z))
        out = vae.decoder(x, feat_cache=self.cache, feat_idx=[0], first_chunk=self.frames == 0)
        self.frames += 1
        return torch.clamp(_unpatchify(vae, out), min=-1.0, max=1.0)

    def cache_bytes(self) -> int:
        """Bytes the feature cache holds now (constant once two frames have passed)."""
        return sum(t.numel() * t.element_size() for t in self.cache if isinstance(t, torch.Tensor))

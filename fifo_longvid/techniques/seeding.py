"""Latent seeding (FIFO-Diffusion+ ``t2v_seed``) and the image-token context of I2V models.

Seeding decodes the head slot of the initial FIFO queue (base frame 0 with a trace of noise), embeds it
with the I2V image encoder + Resampler, and appends those tokens to the text context of every
conditional U-Net call. Re-seeding (``--latent-seed-every K``) replaces, never appends, the tokens, so
the context length stays constant (the fork's ``t2v_seed_ar`` grew it every iteration and crashed).
"""

from __future__ import annotations

import torch

from ..backends.base import Backend


def i2v_uncond(model: Backend, uncond_text: torch.Tensor) -> torch.Tensor:
    """The reference's unconditional context for any I2V model: "" tokens + tokens of a mid-grey image."""
    if not model.has_image_encoder:
        return uncond_text
    grey = torch.zeros(uncond_text.shape[0], 3, 224, 224, device=model.device)
    return torch.cat([uncond_text, model.encode_image(grey)], dim=1)


def seed_image_tokens(model: Backend, queue_latents: torch.Tensor) -> torch.Tensor:
    """Tokens of the decoded head slot (slot 0) of the initial queue; the decode is not clamped."""
    frame = model.decode_latents(queue_latents[:, :, :1])[:, :, 0]
    return model.encode_image(frame)


def frame_image_tokens(model: Backend, frame: torch.Tensor) -> torch.Tensor:
    """Tokens of one decoded output frame (3, H, W), for periodic re-seeding."""
    return model.encode_image(frame[None])

"""An image into a Wan model: Wan2.2-TI2V-5B takes it as the video's first latent frame.

``first_frame_latent`` encodes it as ``WanImageToVideoPipeline.prepare_latents`` does under ``expand_timesteps``:
the image as a one-frame video, the VAE posterior's mode (its mean), cast to float32, then normalised in float32
(``(z - mean) * (1/std)``), so the latent is bitwise diffusers' condition. The samplers pin it as an anchor (the
first frame at timestep 0). ``image_refusal`` is the sentence for ``--image`` on any other Wan folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .vae import normalise


@torch.no_grad()
def first_frame_latent(vae: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) in [-1, 1] -> (1, C, 1, H/16, W/16) normalised float32 latent of the first frame."""
    x = image.unsqueeze(2).to(next(vae.parameters()).device, vae.dtype)
    z = vae.encode(x).latent_dist.mode().float()
    return normalise(vae, z)


def image_refusal(config: Any, checkpoint: str | Path | None) -> str:
    """Why ``--image`` does not run on this Wan folder, and what does: the folder's own refusal when it is an
    image-to-video folder this backend cannot load (``variants.py``), else one sentence naming the models that take
    an image."""
    from ..base import CheckpointError
    from .load import read_variant

    what = f"{config!r} has no checkpoint folder"
    if checkpoint is not None and (Path(checkpoint) / "model_index.json").is_file():
        try:
            what = f"{checkpoint} is a {read_variant(Path(checkpoint)).name} folder"
        except (CheckpointError, ValueError, OSError) as e:
            return str(e)
    elif checkpoint is not None:
        what = f"{checkpoint} is not a Wan2.2-TI2V folder"
    return (f"--image needs a model that takes an image, and {what}: pass a Wan2.2-TI2V-5B folder "
            "(Wan-AI/Wan2.2-TI2V-5B-Diffusers) with --checkpoint, which pins the image as the video's first frame, "
            "or use VideoCrafter1-I2V (--config videocrafter1_i2v)")

"""An image into a Wan model: Wan2.2-TI2V-5B takes it as the video's first latent frame (``vae.first_frame_latent``,
pinned by the samplers as an anchor at timestep 0); ``image_refusal`` is the sentence for ``--image`` on any other
Wan folder, read from its configs before anything loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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

"""Model families behind one seam (``base.py``): VideoCrafter (``fifo_longvid.models``) and AnimateDiff
(``backends/animatediff``, through diffusers). ``load_backend`` is the only place that picks a family."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .base import Backend, CheckpointError

__all__ = ["Backend", "CheckpointError", "compile_unet", "convert_checkpoint", "family_of", "has_image_encoder",
           "load_backend", "preset_cfg", "weights_id"]


def convert_checkpoint(src: str | Path, dst: str | Path, half: bool = False, overwrite: bool = False) -> Path:
    """``fifo-gen convert``: a VideoCrafter-style .ckpt/.pt -> safetensors (``models/convert.py``)."""
    from ..models.convert import convert_checkpoint as convert

    return convert(src, dst, half=half, overwrite=overwrite)


def compile_unet(model: Any, backend: str = "inductor") -> None:
    """``torch.compile`` a backend's network in place (its hooks and attention processors are traced with it, so
    techniques keep working). The VAE stays eager: one decode per output frame is a small share of the work."""
    model.unet.compile(backend=backend)


def has_image_encoder(config: str | Path | Any) -> bool:
    """Whether ``--config`` names a model with an image branch (I2V: ``--image``, ``--latent-seed``)."""
    if family_of(config) != "videocrafter":
        return False
    from ..models.presets import load_model_config

    return load_model_config(config).image is not None


def family_of(config: str | Path | Any) -> str:
    """``animatediff`` or ``videocrafter`` for a ``--config`` value (a preset name or a model YAML)."""
    from .animatediff.load import is_animatediff

    return "animatediff" if isinstance(config, (str, Path)) and is_animatediff(config) else "videocrafter"


def preset_cfg(config: str | Path | Any) -> float | None:
    """The guidance scale a preset samples with when --cfg is not given (None: not known without loading)."""
    if family_of(config) == "animatediff":
        from .animatediff.load import preset_config

        return preset_config(str(config)).default_cfg
    from ..models.presets import load_model_config

    try:
        return float(load_model_config(config).default_cfg)
    except (ValueError, OSError):
        return None


def load_backend(config: str | Path | Any = "videocrafter2", checkpoint: str | Path | None = None,
                 device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                 motion_adapter: str | Path | None = None) -> Any:
    """Build and load the model of ``--config``, ready for inference on ``device`` in ``dtype``."""
    from ..models.load import load_model, resolve_device, resolve_dtype

    if family_of(config) == "videocrafter":
        if motion_adapter is not None:
            raise CheckpointError(f"--motion-adapter is for AnimateDiff (--config animatediff); --config {config} is "
                                  "a VideoCrafter model")
        return load_model(config, checkpoint, device, dtype)
    from diffusers.utils import logging as diffusers_logging

    from .animatediff.load import load_animatediff

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # its load-time notices are not the user's business
    try:
        model = load_animatediff(str(config), checkpoint, motion_adapter)
    finally:
        diffusers_logging.set_verbosity(level)
    for part in (model.unet, model.vae):  # nn.Module.to: the U-Net and the VAE in the run's dtype
        torch.nn.Module.to(part, dt)
    torch.nn.Module.to(model.text_encoder, torch.float32)  # runs once per prompt: precision costs nothing
    return torch.nn.Module.to(model, dev).eval().requires_grad_(False)


def weights_id(checkpoint: str | Path | None, motion_adapter: str | Path | None, recipe: str) -> str:
    """The weights' identity for hashes and sidecars: sha256 of the file, of a folder's files, or the recipe."""
    from ..io.sidecar import file_sha256

    if checkpoint is None and motion_adapter is None:
        return f"recipe:{recipe}"

    def one(p: str | Path) -> str:
        p = Path(p)
        if not p.is_dir():
            return file_sha256(p)
        import hashlib

        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file() and q.suffix != ".sha256"):
            h.update(f"{f.relative_to(p).as_posix()}:{file_sha256(f)}\n".encode())
        return h.hexdigest()

    parts = [one(checkpoint) if checkpoint is not None else f"recipe:{recipe}"]
    if motion_adapter is not None:
        parts.append(one(motion_adapter))
    return "sha256:" + "+".join(parts)

"""The VideoCrafter model built from its config, and a state dict checked against it key by key.

A checkpoint that does not fit gets a short report (missing, unexpected and mis-shaped keys) with a hint at what
it is instead of a traceback. ``read_checkpoint`` is the family-neutral reader (``backends/checkpoint.py``) with
VideoCrafter's advice when the file is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ..base import CheckpointError
from ..checkpoint import read_checkpoint as read_any_checkpoint
from .videocrafter import ModelConfig, VideoCrafter

NOT_FOUND = ("Download VideoCrafter2 with `fifo-gen download` (it lands in checkpoints/videocrafter2/), "
             "or pass --checkpoint PATH. The `tiny` config runs without any checkpoint.")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Return the flat state dict of a .ckpt/.pt (Lightning, DeepSpeed or bare) or .safetensors file."""
    return read_any_checkpoint(path, NOT_FOUND)


def _architecture_hint(model_keys: set[str], ckpt_keys: set[str], mismatched: list[str]) -> str:
    if not any(k.startswith("model.diffusion_model.") for k in ckpt_keys):
        return ("it does not look like a VideoCrafter checkpoint at all (no model.diffusion_model.* keys); "
                "check that you passed the right file")
    if any(k.startswith(("image_proj_model.", "embedder.")) for k in ckpt_keys - model_keys):
        return ("this looks like a VideoCrafter1 image-to-video checkpoint (it has image_proj_model/embedder "
                "weights); load it with --config videocrafter1_i2v")
    if any(k.startswith(("image_proj_model.", "embedder.")) for k in model_keys - ckpt_keys):
        return ("this is a text-to-video checkpoint (no image encoder weights) but the config is an I2V model; "
                "load it with --config videocrafter2")
    if mismatched:
        return ("the layer names match but the sizes do not: this is a checkpoint for another model size; "
                "pick the --config that matches it (e.g. videocrafter2 for the released model.ckpt)")
    return "the checkpoint and the --config describe different architectures"


def check_state_dict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise a CheckpointError with a short report unless ``sd`` fits ``model`` exactly."""
    expected = model.state_dict()
    model_keys, ckpt_keys = set(expected), set(sd)
    missing = sorted(model_keys - ckpt_keys)
    unexpected = sorted(ckpt_keys - model_keys)
    mismatched = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(model_keys & ckpt_keys)
        if tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return

    def few(items: list[str]) -> str:
        shown = "\n      ".join(items[:5])
        return shown + (f"\n      ... and {len(items) - 5} more" if len(items) > 5 else "")

    lines = [f"{source} does not match the model architecture:"]
    if missing:
        lines.append(f"  missing {len(missing)} keys:\n      {few(missing)}")
    if unexpected:
        lines.append(f"  unexpected {len(unexpected)} keys:\n      {few(unexpected)}")
    if mismatched:
        lines.append(f"  {len(mismatched)} shape mismatches:\n      {few(mismatched)}")
    lines.append("  hint: " + _architecture_hint(model_keys, ckpt_keys, mismatched))
    raise CheckpointError("\n".join(lines))


def materialize_meta_buffers(model: torch.nn.Module) -> None:
    """Non-persistent buffers are not in a checkpoint; after a meta-device build, recompute them."""
    from .image import CLIP_MEAN, CLIP_STD
    from .text import causal_mask

    for mod_name, mod in model.named_modules():
        for name, buf in list(mod._buffers.items()):
            if buf is None or not buf.is_meta:
                continue
            if name == "attn_mask":
                mod._buffers[name] = causal_mask(buf.shape[-1])
            elif name in ("mean", "std"):
                mod._buffers[name] = torch.tensor(CLIP_MEAN if name == "mean" else CLIP_STD)
            else:
                raise RuntimeError(f"buffer {mod_name}.{name} was not in the checkpoint and cannot be rebuilt")


def build_model(cfg: ModelConfig, device: str | torch.device = "cpu") -> VideoCrafter:
    """Instantiate (randomly initialised) on ``device``; use device='meta' for a shape-only model."""
    with torch.device(device):
        return VideoCrafter(cfg)

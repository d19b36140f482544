"""Weights that ship inside the package (the trained ``toy`` model): sha256-verified, strictly loaded.

The file holds the U-Net, the VAE and the text tower in fp16 under the VideoCrafter checkpoint's key
names. The text tower was trained with the U-Net (its metadata says ``text: trained``); a file made with a
frozen tower (``text: recipe``) stores none, and the seeded recipe (``recipe.py``) is rebuilt instead.
Loading fails loudly if the file was altered, has other keys, or came from another training run than the
preset describes (its metadata records the latent scale factor and the text seed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..base import CheckpointError
from .presets import PACKAGE_DATA, TOY_TEXT_SEED
from .recipe import SCHEDULE_BUFFERS, recipe_for_model
from .videocrafter import ModelConfig, VideoCrafter
from .weights import build_model, check_state_dict, read_checkpoint


@dataclass(frozen=True)
class ShippedWeights:
    path: Path
    sha256: str
    text_seed: int


# The sha256 of the shipped export of `scripts/train_toy.py` (6982 U-Net steps; README: "The toy model"). A better
# model ships together with its sha256.
SHIPPED = {
    "toy": ShippedWeights(PACKAGE_DATA / "toy.safetensors",
                          "f1bb58bd29e157e1b53a1fbdd050e6b2fcd3ab0186c0921867d7cdac9e608df6", TOY_TEXT_SEED),
}


def stored_keys(model: VideoCrafter, with_text: bool = True) -> set[str]:
    """Keys a shipped file must hold exactly: everything but the computed schedule (and the text tower when it is
    the recipe's)."""
    return {k for k in model.state_dict() if k not in SCHEDULE_BUFFERS
            and (with_text or not k.startswith("cond_stage_model."))}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_shipped(cfg: ModelConfig) -> VideoCrafter:
    """The preset's model with its packaged weights (float32, CPU), after checking file and keys."""
    entry = SHIPPED[cfg.name]
    if not entry.path.exists():
        raise CheckpointError(f"the {cfg.name!r} weights are not in this installation ({entry.path}); train them with "
                              "scripts/train_toy.py and copy its toy.safetensors there (README: 'The toy model'), "
                              "or use --config tiny")
    digest = file_digest(entry.path)
    if digest != entry.sha256:
        raise CheckpointError(f"{entry.path} has sha256 {digest}, expected {entry.sha256}: the shipped weights "
                              "were modified or truncated; reinstall fifo_longvid")
    from safetensors import safe_open

    with safe_open(str(entry.path), "pt") as f:
        meta = f.metadata() or {}
    if abs(float(meta.get("scale_factor", "nan")) - cfg.scale_factor) > 1e-6 * cfg.scale_factor or \
            int(meta.get("text_seed", -1)) != entry.text_seed:
        raise CheckpointError(f"{entry.path} was trained with scale_factor {meta.get('scale_factor')} and text seed "
                              f"{meta.get('text_seed')}; the {cfg.name!r} preset says {cfg.scale_factor} and "
                              f"{entry.text_seed}. Update the preset together with the weights.")
    sd = read_checkpoint(entry.path)
    model = build_model(cfg, "cpu")
    trained_text = meta.get("text") == "trained"
    expected = stored_keys(model, with_text=trained_text)
    if set(sd) != expected:
        missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
        raise CheckpointError(f"{entry.path} does not match the {cfg.name!r} architecture: "
                              f"missing {missing[:5]} ({len(missing)}), unexpected {extra[:5]} ({len(extra)})")
    text = {} if trained_text else recipe_for_model(model.cond_stage_model, entry.text_seed)
    full = {**model.state_dict(), **{f"cond_stage_model.{k}": v for k, v in text.items()},
            **{k: v.to(torch.float32) for k, v in sd.items()}}
    check_state_dict(model, full, f"shipped weights {entry.path.name}")
    model.load_state_dict(full, strict=True)
    return model

"""OpenCLIP text encoder as VideoCrafter's ``FrozenOpenCLIPEmbedder`` uses it (penultimate layer).

The child ``model`` is an ``open_clip.CLIP`` without its visual tower, so the state dict matches a
VideoCrafter checkpoint's ``cond_stage_model.*`` keys (prefix stripped). The CLIP is built on the meta
device and only the text side is materialised: building ViT-H-14's 630M-parameter vision tower just to
delete it would waste seconds and gigabytes.

The reference ran the resblocks sequence-first, which is only right for open_clip <= 2.24. Here the
layout is taken from the installed open_clip, so the result is the same for old and new versions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from torch import nn

__all__ = ["TextEncoderConfig", "OpenCLIPTextEncoder", "causal_mask"]

# Parameters of open_clip.CLIP that VideoCrafter checkpoints hold; anything else (e.g. logit_bias
# of SigLIP-style configs in newer open_clip) is dropped so strict loading works.
_CLIP_OWN_PARAMS = ("positional_embedding", "text_projection", "logit_scale")


@dataclass
class TextEncoderConfig:
    """Which open_clip architecture to build, and which layer's tokens to return."""

    arch: str = "ViT-H-14"
    layer: str = "penultimate"  # or "last"
    max_length: int = 77
    # An open_clip model json; when given, it defines the architecture and its stem is the arch name.
    model_config_file: str | None = None


def causal_mask(
    n: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Additive (n, n) mask, -inf above the diagonal: each token sees itself and earlier ones."""
    return torch.full((n, n), float("-inf"), device=device, dtype=dtype).triu_(1)


def _resolve_model_config(cfg: TextEncoderConfig) -> tuple[str, dict]:
    """The open_clip model config dict; a json file is registered so open_clip can find it by name too."""
    if cfg.model_config_file is None:
        model_cfg = open_clip.get_model_config(cfg.arch)
        if model_cfg is None:
            raise ValueError(f"unknown open_clip architecture {cfg.arch!r}")
        return cfg.arch, model_cfg
    path = Path(cfg.model_config_file)
    if path.stem not in open_clip.list_models():
        open_clip.add_model_config(path)
    # Read the file itself rather than the registry, so a same-named config registered earlier can't win.
    return path.stem, json.loads(path.read_text())


def _build_text_clip(model_cfg: dict, device: torch.device) -> open_clip.CLIP:
    """open_clip.CLIP minus ``visual``, with only the text tensors allocated on ``device``."""
    model_cfg = dict(model_cfg)
    if model_cfg.pop("custom_text", False) or "hf_model_name" in model_cfg.get("text_cfg", {}):
        raise NotImplementedError("only the built-in open_clip text transformer (CLIP, not CustomTextCLIP)")
    model_cfg.pop("multimodal_cfg", None)
    with torch.device("meta"):
        model = open_clip.CLIP(**model_cfg)
    del model.visual
    for name in list(model._parameters):
        if name not in _CLIP_OWN_PARAMS:
            delattr(model, name)  # e.g. logit_bias: not in VideoCrafter checkpoints
            setattr(model, name, None)  # plain attribute, as open_clip has when the option is off
    if device.type != "meta":
        model.to_empty(device=device)
        _init_text_params(model)
    return model


@torch.no_grad()
def _init_text_params(model: open_clip.CLIP) -> None:
    """Deterministic-shape init after ``to_empty`` (open_clip's scheme), so no tensor holds garbage.

    Real use always loads a checkpoint over this; it only keeps a fresh module well defined.
    """
    width = model.transformer.width
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.MultiheadAttention) and m.in_proj_bias is not None:
            nn.init.zeros_(m.in_proj_bias)
    nn.init.normal_(model.token_embedding.weight, std=0.02)
    nn.init.normal_(model.positional_embedding, std=0.01)
    proj_std = width**-0.5 * (2 * model.transformer.layers) ** -0.5
    for block in model.transformer.resblocks:
        nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
        nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
        nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
        nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
    proj = model.text_projection
    if isinstance(proj, nn.Linear):
        nn.init.normal_(proj.weight, std=width**-0.5)
    elif proj is not None:
        nn.init.normal_(proj, std=width**-0.5)
    model.logit_scale.fill_(math.log(1 / 0.07))
    # Non-persistent; open_clip's own encode_text uses it, so make it valid again.
    model.attn_mask = causal_mask(model.context_length, device=model.positional_embedding.device)


def _is_batch_first(transformer: nn.Module) -> bool:
    """Layout the installed open_clip's resblocks expect (open_clip <= 2.24 was sequence-first)."""
    flag = getattr(transformer, "batch_first", None)
    if flag is None:
        attn = getattr(transformer.resblocks[0], "attn", None)
        flag = getattr(attn, "batch_first", False)
    return bool(flag)


class OpenCLIPTextEncoder(nn.Module):
    """Frozen CLIP text tokens for cross-attention: (N, 77, width), no pooling and no projection."""

    LAYERS = ("last", "penultimate")

    def __init__(self, cfg: TextEncoderConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        if cfg.layer not in self.LAYERS:
            raise ValueError(f"layer must be one of {self.LAYERS}, got {cfg.layer!r}")
        self.cfg = cfg
        self.arch, model_cfg = _resolve_model_config(cfg)
        self.model = _build_text_clip(model_cfg, torch.device(device if device is not None else "cpu"))
        self.model.eval()
        self.requires_grad_(False)
        # Number of final resblocks to skip.
        self.skip_last = 1 if cfg.layer == "penultimate" else 0

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """CLIP BPE tokens (N, max_length), int64, SOT/EOT framed and zero padded (as the reference)."""
        return open_clip.tokenize(list(texts), context_length=self.cfg.max_length)

    def forward(self, texts: list[str] | torch.Tensor) -> torch.Tensor:
        """Embed prompts (or pre-made tokens) -> (N, max_length, width) after ln_final."""
        m = self.model
        device = m.positional_embedding.device
        tokens = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        tokens = tokens.to(device)
        x = m.token_embedding(tokens) + m.positional_embedding
        mask = causal_mask(x.shape[1], device=device, dtype=x.dtype)
        batch_first = _is_batch_first(m.transformer)
        if not batch_first:
            x = x.transpose(0, 1)  # NLD -> LND
        blocks = m.transformer.resblocks
        for block in list(blocks)[: len(blocks) - self.skip_last]:
            x = block(x, attn_mask=mask)
        if not batch_first:
            x = x.transpose(0, 1)
        return m.ln_final(x)

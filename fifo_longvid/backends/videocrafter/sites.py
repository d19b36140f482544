"""Where the attention layers of a U-Net are, by role: so techniques select layers without hard-coded indices.

A site is one ``Attention`` module with its kind (spatial / temporal), role (attn1 = self, attn2 = the
second attention: cross-attention in spatial transformers, self-attention again in temporal ones), U-Net
stage (init / input / middle / output), block index, resolution level and shape (heads x dim_head).
``mirror_pairs`` derives the decoder -> encoder pairing (same level, same shape), which reproduces the
table the FIFO-Diffusion+ fork hard-codes for VideoCrafter2.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..base import AttnSite, DeepSplit, Located
from ..base import mirror_pairs as _mirror_pairs
from .attention import SpatialTransformer, TemporalTransformer
from .resample import Downsample, Upsample

__all__ = ["AttnSite", "Located", "deep_split", "find_attention_sites", "mirror_pairs"]


def _transformer_sites(prefix: str, tr: nn.Module, stage: str, block: int, level: int, skip: int) -> Located:
    kind = "spatial" if isinstance(tr, SpatialTransformer) else "temporal"
    out = []
    for d, tb in enumerate(tr.transformer_blocks):
        for role in ("attn1", "attn2"):
            a = getattr(tb, role)
            site = AttnSite(f"{prefix}.transformer_blocks.{d}.{role}", kind, role, stage, block, d, level, a.heads,
                            a.dim_head, skip)
            out.append((site, a))
    return out


def _block_sites(prefix: str, block: nn.Module, stage: str, idx: int, level: int, skip: int = -1) -> Located:
    out = []
    for j, layer in enumerate(block):
        if isinstance(layer, (SpatialTransformer, TemporalTransformer)):
            out += _transformer_sites(f"{prefix}.{j}", layer, stage, idx, level, skip)
    return out


def find_attention_sites(unet: nn.Module) -> Located:
    """Every attention layer of the U-Net with its role, in forward order. Input block i produces skip tensor i;
    output block j consumes skip tensor n_in - 1 - j (the U-Net pops them in reverse)."""
    sites: Located = []
    level = 0
    n_in = len(unet.input_blocks)
    for i, block in enumerate(unet.input_blocks):
        sites += _block_sites(f"input_blocks.{i}", block, "input", i, level, i)
        if i == 0 and hasattr(unet, "init_attn"):
            sites += _block_sites("init_attn", unet.init_attn, "init", 0, 0)
        if any(isinstance(layer, Downsample) for layer in block):
            level += 1
    sites += _block_sites("middle_block", unet.middle_block, "middle", 0, level)
    for i, block in enumerate(unet.output_blocks):
        sites += _block_sites(f"output_blocks.{i}", block, "output", i, level, n_in - 1 - i)
        if any(isinstance(layer, Upsample) for layer in block):
            level -= 1
    return sites


def mirror_pairs(unet: nn.Module | Located, target: str = "temporal_attn1") -> dict[AttnSite, AttnSite]:
    """Decoder site -> encoder site (``backends.base.mirror_pairs`` over this U-Net's sites)."""
    sites = find_attention_sites(unet) if isinstance(unet, nn.Module) else unet
    return _mirror_pairs(sites, target)


def _placeholder(block: nn.Module, args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    """An empty (0, 0, h, w) tensor at the resolution ``block`` would output: the U-Net's skip concatenations
    (``torch.cat`` along channels) still line up."""
    x = args[0] if args else kwargs["x"]
    h, w = x.shape[-2:]
    if any(isinstance(m, Downsample) for m in block):
        h, w = (h + 1) // 2, (w + 1) // 2
    if any(isinstance(m, Upsample) for m in block):
        h, w = 2 * h, 2 * w
    return x.new_empty(0, 0, h, w)


def deep_split(unet: nn.Module) -> DeepSplit:
    """DeepCache's split: the shallow blocks are the input blocks before the first downsampling block (plus
    ``init_attn``) and the output blocks after the last upsampling block; everything else is deep, and the
    last deep block's output (the upsampled feature entering the first shallow decoder block) is cached."""
    inputs, outputs = list(unet.input_blocks), list(unet.output_blocks)
    first_down = next((i for i, b in enumerate(inputs) if any(isinstance(m, Downsample) for m in b)), None)
    last_up = max((i for i, b in enumerate(outputs) if any(isinstance(m, Upsample) for m in b)), default=None)
    if first_down is None or last_up is None:
        raise ValueError("--deepcache needs a U-Net with at least one downsampling and one upsampling level")
    if first_down != len(outputs) - 1 - last_up:
        raise ValueError(f"--deepcache: the outermost level has {first_down} input blocks but "
                         f"{len(outputs) - 1 - last_up} output blocks; their skip connections would not pair up")
    deep = inputs[first_down:] + [unet.middle_block] + outputs[: last_up + 1]
    return DeepSplit(deep, outputs[last_up], _placeholder)

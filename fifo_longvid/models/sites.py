"""Where the attention layers of a U-Net are, by role: so techniques select layers without hard-coded indices.

A site is one ``Attention`` module with its kind (spatial / temporal), role (attn1 = self, attn2 = the
second attention: cross-attention in spatial transformers, self-attention again in temporal ones), U-Net
stage (init / input / middle / output), block index, resolution level and shape (heads x dim_head).
``mirror_pairs`` derives the decoder -> encoder pairing (same level, same shape), which reproduces the
table the FIFO-Diffusion+ fork hard-codes for VideoCrafter2.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .attention import Attention, SpatialTransformer, TemporalTransformer
from .unet import Downsample, UNet3D, Upsample


@dataclass(frozen=True)
class AttnSite:
    path: str  # module path inside the U-Net, e.g. "input_blocks.4.2.transformer_blocks.0.attn1"
    kind: str  # "spatial" | "temporal"
    role: str  # "attn1" | "attn2"
    stage: str  # "init" | "input" | "middle" | "output"
    block: int  # index within input_blocks / output_blocks (0 for init/middle)
    depth: int  # transformer block index inside its transformer
    level: int  # resolution level: 0 = full latent resolution, +1 per downsampling
    heads: int
    dim_head: int

    @property
    def target(self) -> str:
        return f"{self.kind}_{self.role}"


Located = list[tuple[AttnSite, Attention]]


def _transformer_sites(prefix: str, tr: nn.Module, stage: str, block: int, level: int) -> Located:
    kind = "spatial" if isinstance(tr, SpatialTransformer) else "temporal"
    out = []
    for d, tb in enumerate(tr.transformer_blocks):
        for role in ("attn1", "attn2"):
            a: Attention = getattr(tb, role)
            site = AttnSite(f"{prefix}.transformer_blocks.{d}.{role}", kind, role, stage, block, d, level, a.heads,
                            a.dim_head)
            out.append((site, a))
    return out


def _block_sites(prefix: str, block: nn.Module, stage: str, idx: int, level: int) -> Located:
    out = []
    for j, layer in enumerate(block):
        if isinstance(layer, (SpatialTransformer, TemporalTransformer)):
            out += _transformer_sites(f"{prefix}.{j}", layer, stage, idx, level)
    return out


def find_attention_sites(unet: UNet3D) -> Located:
    """Every attention layer of the U-Net with its role, in forward order."""
    sites: Located = []
    level = 0
    for i, block in enumerate(unet.input_blocks):
        sites += _block_sites(f"input_blocks.{i}", block, "input", i, level)
        if i == 0 and hasattr(unet, "init_attn"):
            sites += _block_sites("init_attn", unet.init_attn, "init", 0, 0)
        if any(isinstance(layer, Downsample) for layer in block):
            level += 1
    sites += _block_sites("middle_block", unet.middle_block, "middle", 0, level)
    for i, block in enumerate(unet.output_blocks):
        sites += _block_sites(f"output_blocks.{i}", block, "output", i, level)
        if any(isinstance(layer, Upsample) for layer in block):
            level -= 1
    return sites


def mirror_pairs(unet: UNet3D, target: str = "temporal_attn1") -> dict[AttnSite, AttnSite]:
    """Decoder site -> encoder site of the same target, level and shape.

    The preferred partner is the transformer of the input block whose features the decoder block
    receives through its skip connection; when that block has none (a downsampling block or the stem),
    the nearest input block of the same level that does.
    """
    sites = [s for s, _ in find_attention_sites(unet) if s.target == target]
    encoder = [s for s in sites if s.stage == "input"]
    n_in = len(unet.input_blocks)
    pairs = {}
    for dec in (s for s in sites if s.stage == "output"):
        skip_src = n_in - 1 - dec.block
        candidates = [e for e in encoder if e.level == dec.level and e.depth == dec.depth
                      and (e.heads, e.dim_head) == (dec.heads, dec.dim_head)]
        if candidates:
            pairs[dec] = min(candidates, key=lambda e: (abs(e.block - skip_src), -e.block))
    return pairs

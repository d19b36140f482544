"""diffusers' ``UNetMotionModel`` under a forward with one timestep per frame.

``UNetMotionModel.forward`` embeds one timestep per sample and repeats the embedding over the frames (the
problem that stalled diffusers PR #8275). FIFO's windows hold frames at different noise levels, so
:class:`MotionUNet` runs the same diffusers blocks in the same order, with the time embedding computed for
every (sample, frame) from a ``(B, F)`` timestep table. With equal timesteps it is ``UNetMotionModel.forward``
(tests/test_animatediff.py proves both that and per-frame independence).

It also describes itself for the techniques: attention sites by role (spatial = the SD-1.5 transformers,
temporal = the motion modules) with their skip-connection places, and DeepCache's deep blocks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..base import AttnSite, DeepSplit, Located, expand_timesteps
from .attention import DiffusersAttention


class MotionUNet(nn.Module):
    """``(x (B, C, F, h, w), t (B,) | (B, F), context (B, L, D)) -> eps``; holds the diffusers model as
    ``.motion`` (its parameter names stay diffusers')."""

    def __init__(self, motion: nn.Module):
        super().__init__()
        self.motion = motion
        if getattr(motion.config, "addition_embed_type", None) or getattr(motion, "encoder_hid_proj", None):
            raise ValueError("this UNetMotionModel has added embeddings (SDXL or IP-adapter); the AnimateDiff backend "
                             "supports SD-1.5 motion U-Nets")
        self._sites = self._find_sites()  # once: each site's handle holds its current processor

    @property
    def dtype(self) -> torch.dtype:
        return self.motion.conv_in.weight.dtype

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                fps: int | torch.Tensor | None = None, per_frame: bool = False) -> torch.Tensor:
        """Predict noise for ``x`` (B, C, F, h, w). ``timesteps``: (B,), (B, F), or (F,) with ``per_frame``.
        ``context``: (B, L, D) text tokens. ``fps`` is accepted for the backend interface and unused
        (AnimateDiff has no frame-rate conditioning)."""
        m = self.motion
        b, c, f, h, w = x.shape
        if context.shape[0] != b:
            raise ValueError(f"context batch {context.shape[0]} != latent batch {b}")
        dtype = self.dtype
        t = expand_timesteps(timesteps, b, f, per_frame).to(x.device).reshape(-1)  # (b f)
        emb = m.time_embedding(m.time_proj(t).to(dtype), None)  # one embedding per (sample, frame)
        ctx = context.to(dtype).repeat_interleave(f, dim=0)
        sample = m.conv_in(x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w).to(dtype))
        skips: tuple[torch.Tensor, ...] = (sample,)
        for block in m.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=ctx, num_frames=f)
            else:
                sample, res = block(hidden_states=sample, temb=emb, num_frames=f)
            skips += res
        if m.mid_block is not None:
            if hasattr(m.mid_block, "motion_modules"):
                sample = m.mid_block(sample, emb, encoder_hidden_states=ctx, num_frames=f)
            else:
                sample = m.mid_block(sample, emb, encoder_hidden_states=ctx)
        for block in m.up_blocks:
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            if getattr(block, "has_cross_attention", False):
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res, encoder_hidden_states=ctx,
                               upsample_size=None, num_frames=f)
            else:
                sample = block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res, upsample_size=None,
                               num_frames=f)
        if m.conv_norm_out is not None:
            sample = m.conv_act(m.conv_norm_out(sample))
        y = m.conv_out(sample)
        return y.reshape(b, f, *y.shape[1:]).permute(0, 2, 1, 3, 4).to(x.dtype)

    # -- what the techniques select on -----------------------------------------------------------------
    def attention_sites(self) -> Located:
        return list(self._sites)

    def _find_sites(self) -> Located:
        """Every attention layer in forward order. Skip tensors are numbered as the forward stacks them:
        conv_in is 0, then one per (resnet, attention, motion) layer of each down block and one per
        downsampler; up block layer j consumes the j-th tensor popped off the end."""
        m = self.motion
        sites: Located = []

        def add(prefix: str, holder: nn.Module | None, kind: str, stage: str, block: int, level: int,
                skip: int) -> None:
            if holder is None:
                return
            for d, tb in enumerate(holder.transformer_blocks):
                for role in ("attn1", "attn2"):
                    mod = getattr(tb, role, None)
                    if mod is None:
                        continue
                    path = f"{prefix}.transformer_blocks.{d}.{role}"
                    handle = DiffusersAttention(path, mod)
                    sites.append((AttnSite(path, kind, role, stage, block, d, level, handle.heads, handle.dim_head,
                                           skip), handle))

        def layer_sites(prefix: str, block: nn.Module, j: int, stage: str, i: int, level: int, skip: int) -> None:
            attns = getattr(block, "attentions", None)
            if attns is not None and j < len(attns):
                add(f"{prefix}.attentions.{j}", attns[j], "spatial", stage, i, level, skip)
            motions = getattr(block, "motion_modules", None)
            if motions is not None and j < len(motions):
                add(f"{prefix}.motion_modules.{j}", motions[j], "temporal", stage, i, level, skip)

        produced = 1  # conv_in's output is skip tensor 0
        for i, block in enumerate(m.down_blocks):
            for j in range(len(block.resnets)):
                layer_sites(f"down_blocks.{i}", block, j, "input", i, i, produced)
                produced += 1
            if block.downsamplers is not None:
                produced += len(block.downsamplers)
        levels = len(m.down_blocks) - 1
        if m.mid_block is not None:
            n_mid = max(len(getattr(m.mid_block, "attentions", [])), len(getattr(m.mid_block, "motion_modules", [])))
            for j in range(n_mid):
                layer_sites("mid_block", m.mid_block, j, "middle", 0, levels, -1)
        stack = list(range(produced))
        for k, block in enumerate(m.up_blocks):
            n = len(block.resnets)
            taken, stack = stack[-n:], stack[:-n]
            for j in range(n):
                layer_sites(f"up_blocks.{k}", block, j, "output", k, levels - k, taken[-(j + 1)])
        return sites

    def deep_split(self) -> DeepSplit:
        """DeepCache's split for diffusers' block layout: the shallow part is conv_in, the first down block's
        layers (not its downsampler) and the last up block; the deep part is everything between, and the
        second-to-last up block (whose upsampler brings the feature back to full resolution) is cached."""
        m = self.motion
        first, ups = m.down_blocks[0], list(m.up_blocks)
        if len(m.down_blocks) < 2 or first.downsamplers is None or len(ups) < 2 or ups[-2].upsamplers is None:
            raise ValueError("--deepcache needs a U-Net with at least one downsampling and one upsampling level")
        deep: list[nn.Module] = list(first.downsamplers) + list(m.down_blocks[1:])
        if m.mid_block is not None:
            deep.append(m.mid_block)
        deep += ups[:-1]
        down_types = tuple(type(b) for b in m.down_blocks)
        return DeepSplit(deep, ups[-2], lambda block, args, kwargs: _placeholder(block, args, kwargs, down_types))


def _placeholder(block: nn.Module, args: tuple, kwargs: dict[str, Any], down_types: tuple[type, ...]) -> Any:
    """What a skipped block returns in a shallow pass: an empty tensor, or (empty, empty skips) for a down
    block. Every consumer of these is itself skipped, so only their structure matters."""
    x = kwargs.get("hidden_states", args[0] if args else None)
    empty = x.new_empty(0)
    if isinstance(block, down_types):
        n = len(block.resnets) + (len(block.downsamplers) if block.downsamplers is not None else 0)
        return empty, tuple(empty for _ in range(n))
    return empty

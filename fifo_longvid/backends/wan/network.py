"""diffusers' Wan2.1 / SkyReels-V2 transformer under FIFO's network call: one timestep per (sample, frame).

:meth:`WanNetwork.forward` runs the transformer's own modules with the timestep modulation kept per frame
(``blocks.frame_forward``), for both classes: the same numbers as diffusers' per-token paths without their
(B, seq, 6, D) copies, and SkyReels with a batch > 1. :meth:`WanNetwork.forward_diffusers` is diffusers' own
forward, the reference the tests hold it to:

* ``WanTransformer3DModel`` accepts a (B, seq_len) timestep table, one per token (Wan2.2 TI2V uses it). Tokens
  are the patch embedding flattened over (F', H', W'), so each frame's h'*w' tokens are contiguous: the (B, F)
  table becomes per-token by repeating each frame's timestep h'*w' times (frame-major). With equal timesteps
  this is the scalar (B,) call.
* ``SkyReelsV2Transformer3DModel`` takes the (B, F) table itself with ``enable_diffusion_forcing=True``. FIFO
  needs bidirectional attention within a window, so the network runs it with ``num_frame_per_block=1`` (no
  causal mask). Its DF checkpoints embed the frame rate (``inject_sample_info``): index 0 for 16 fps, 1 for any
  other, as its pipeline maps them (default 24 fps -> 1).

Both return the velocity (flow matching) in x's dtype. Attention sites are handed to the techniques in frame
rows (``attention.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..base import AttnSite, DeepSplit, Located, expand_timesteps
from .attention import WanAttentionHandle
from .blocks import frame_forward

DEFAULT_FPS = 24  # SkyReelsV2DiffusionForcingPipeline's default; any fps but 16 embeds as index 1


def fps_index(fps: int | torch.Tensor | None, b: int) -> list[int]:
    """SkyReels' fps embedding index per sample: 0 for 16 fps, 1 otherwise (its pipeline's mapping)."""
    if fps is None:
        fps = DEFAULT_FPS
    vals = torch.as_tensor(fps).reshape(-1).tolist()
    if len(vals) == 1:
        vals = vals * b
    if len(vals) != b:
        raise ValueError(f"fps must be one value or one per sample ({b}), got {len(vals)}")
    return [0 if int(v) == 16 else 1 for v in vals]


def token_table(t: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """(B, F) per-frame timesteps -> (B, F * tokens_per_frame) in the transformer's frame-major token order."""
    return t.repeat_interleave(tokens_per_frame, dim=1)


class WanNetwork(nn.Module):
    """``(x (B, C, F, h, w), t (B,) | (B, F), context (B, L, D)) -> velocity``; holds the diffusers model as
    ``.transformer`` (its parameter names stay diffusers')."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        from diffusers import SkyReelsV2Transformer3DModel, WanTransformer3DModel

        self.transformer = transformer
        cfg = transformer.config
        self.native_block = 1  # frames per noise level the checkpoint was trained with (diffusion forcing)
        if isinstance(transformer, SkyReelsV2Transformer3DModel):
            self.variant = "skyreels-df"
            self.native_block = int(cfg.get("fifo_native_block", cfg.num_frame_per_block))
            if int(cfg.num_frame_per_block) != 1:  # FIFO windows attend bidirectionally; FIFO's --block takes it
                transformer.register_to_config(num_frame_per_block=1, fifo_native_block=self.native_block)
        elif isinstance(transformer, WanTransformer3DModel):
            self.variant = "wan"
        else:
            raise ValueError(f"{type(transformer).__name__} is not a WanTransformer3DModel or "
                             "SkyReelsV2Transformer3DModel")
        if getattr(cfg, "image_dim", None) is not None or getattr(cfg, "added_kv_proj_dim", None) is not None:
            raise ValueError("this transformer has an image branch (I2V); the Wan backend takes text-to-video models")
        if int(cfg.patch_size[0]) != 1:
            raise ValueError(f"temporal patch size {cfg.patch_size[0]}: per-frame timesteps need a patch of 1 frame")
        self.patch = tuple(int(p) for p in cfg.patch_size)
        self._sites = self._find_sites()

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.patch_embedding.weight.dtype

    def _inputs(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                per_frame: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, _, f, h, w = x.shape
        if context.shape[0] != b:
            raise ValueError(f"context batch {context.shape[0]} != latent batch {b}")
        if h % self.patch[1] or w % self.patch[2]:
            raise ValueError(f"latent size {h}x{w} is not a multiple of the patch {self.patch[1:]}")
        t = expand_timesteps(timesteps, b, f, per_frame).to(x.device, torch.float32).contiguous()
        for _, handle in self._sites:
            handle.frames = f
        return x.to(self.dtype), t, context.to(self.dtype)

    def _fps(self, fps: int | torch.Tensor | None, b: int) -> list[int] | None:
        return fps_index(fps, b) if getattr(self.transformer.config, "inject_sample_info", False) else None

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                fps: int | torch.Tensor | None = None, per_frame: bool = False) -> torch.Tensor:
        """Velocity for ``x`` (B, C, F, h, w). ``timesteps``: (B,), (B, F), or (F,) with ``per_frame``; float
        (flow matching feeds sigma * 1000). ``context``: (B, L, D) text tokens. ``fps``: SkyReels only."""
        hidden, t, ctx = self._inputs(x, timesteps, context, per_frame)
        out = frame_forward(self.transformer, hidden, t, ctx, self._fps(fps, x.shape[0]),
                            skyreels=self.variant == "skyreels-df")
        return out.to(x.dtype)

    def forward_diffusers(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                          fps: int | torch.Tensor | None = None, per_frame: bool = False) -> torch.Tensor:
        """The same through diffusers' own forward (per-token table / diffusion forcing): the reference."""
        b, _, f, h, w = x.shape
        hidden, t, ctx = self._inputs(x, timesteps, context, per_frame)
        tr = self.transformer
        if self.variant == "wan":
            table = token_table(t, (h // self.patch[1]) * (w // self.patch[2]))
            out = tr(hidden_states=hidden, timestep=table, encoder_hidden_states=ctx, return_dict=False)[0]
        else:
            out = tr(hidden_states=hidden, timestep=t, encoder_hidden_states=ctx, enable_diffusion_forcing=True,
                     fps=self._fps(fps, b), return_dict=False)[0]
        return out.to(x.dtype)

    # -- what the techniques select on -----------------------------------------------------------------
    def attention_sites(self) -> Located:
        """Every block's attn1 (self) and attn2 (cross), in forward order.

        A DiT has no spatial/temporal split and no encoder/decoder: both are ``kind="spatial"`` (the techniques'
        per-frame-row convention: TGATE caches ``spatial_attn2``, attention reuse targets ``spatial_attn1``),
        ``stage="middle"``, ``level=0``, ``block=i``, ``depth=0``, ``skip=-1``. No ``input``/``output`` sites, so
        Q-cache finds no mirror pairs. attn1 attends over all frames: see ``attention.py`` for what it refuses.
        """
        return list(self._sites)

    def _find_sites(self) -> Located:
        sites: Located = []
        for i, block in enumerate(self.transformer.blocks):
            for role in ("attn1", "attn2"):
                path = f"blocks.{i}.{role}"
                handle = WanAttentionHandle(path, getattr(block, role), self_attention=role == "attn1")
                sites.append((AttnSite(path, "spatial", role, "middle", i, 0, 0, handle.heads, handle.dim_head, -1),
                              handle))
        return sites

    def deep_split(self) -> DeepSplit:
        raise ValueError("--deepcache needs a U-Net with resolution levels; Wan is a DiT (one token resolution, no "
                         "encoder/decoder blocks), so there is nothing to split")


def describe_network(net: WanNetwork) -> dict[str, Any]:
    """The transformer's sizes for the sidecar."""
    c = net.transformer.config
    out = {"class": type(net.transformer).__name__, "layers": int(c.num_layers), "heads": int(c.num_attention_heads),
           "head_dim": int(c.attention_head_dim), "ffn_dim": int(c.ffn_dim), "text_dim": int(c.text_dim),
           "patch_size": list(c.patch_size)}
    if net.variant == "skyreels-df":
        out["num_frame_per_block"] = net.native_block  # the checkpoint's; FIFO runs it as --block
        out["inject_sample_info"] = bool(c.inject_sample_info)
    return out

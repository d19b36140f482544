"""The Wan / SkyReels-V2 transformer's forward with per-frame modulation: diffusers' modules, FIFO's timesteps.

diffusers gives every *token* its own timestep modulation: Wan's per-token path builds a (B, seq, 6, D)
``timestep_proj`` table and each block adds it to its float32 ``scale_shift_table`` (a (B, seq, 6, D) float32
temporary), SkyReels' diffusion forcing repeats its (B, F, 6, D) table over h'*w' into (B, 6, seq, D). At 480x832
with 21 latent frames (seq = 21*30*52 = 32760 tokens, D = 1536) that is 576 MiB per sample in bf16 plus a 1.1 GiB
float32 temporary per block: for FIFO's batches of windows x CFG branches, gigabytes of copies of F distinct rows.
SkyReels' forward also fails for a batch > 1 when its checkpoint embeds the frame rate (``inject_sample_info``,
the DF-1.3B folder: its fps table is repeated by frames, not broadcast per sample).

:func:`frame_forward` runs the same modules in the same order with the modulation kept per frame, (B, F, 6, D),
and broadcast over each frame's tokens (a view, (B, F, S, D)). Every element is computed by the same operations
on the same values as diffusers' per-token path, so the result equals it (``tests/test_wan_backend.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..offload import on_device


def _per_frame(t: torch.Tensor, f: int) -> torch.Tensor:
    """(B, F*S, D) -> (B, F, S, D), a view (tokens are frame-major)."""
    return t.unflatten(1, (f, -1))


def block_forward(block: nn.Module, hidden: torch.Tensor, context: torch.Tensor, mod: torch.Tensor,
                  rotary: tuple[torch.Tensor, torch.Tensor], f: int) -> torch.Tensor:
    """One ``WanTransformerBlock`` / ``SkyReelsV2TransformerBlock`` with ``mod`` (B, F, 6, D) per frame. The block's
    own table is read here, not in its forward, so a block streamed from host memory (``offload``) brings it along."""
    table = on_device(block, "scale_shift_table", mod.device)
    e = (table.unsqueeze(0) + mod.float()).unsqueeze(3)  # (B, F, 6, 1, D) float32
    shift, scale, gate, c_shift, c_scale, c_gate = e.unbind(2)  # each (B, F, 1, D): broadcast over the tokens

    def modulate(norm: nn.Module, x: torch.Tensor, sh: torch.Tensor, sc: torch.Tensor) -> torch.Tensor:
        return (_per_frame(norm(x.float()), f) * (1 + sc) + sh).flatten(1, 2).type_as(x)

    attn = block.attn1(modulate(block.norm1, hidden, shift, scale), None, None, rotary)
    hidden = (_per_frame(hidden.float(), f) + _per_frame(attn, f) * gate).flatten(1, 2).type_as(hidden)
    attn = block.attn2(block.norm2(hidden.float()).type_as(hidden), context, None, None)
    hidden = hidden + attn
    ff = block.ffn(modulate(block.norm3, hidden, c_shift, c_scale))
    return (_per_frame(hidden.float(), f) + _per_frame(ff.float(), f) * c_gate).flatten(1, 2).type_as(hidden)


def frame_forward(tr: nn.Module, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                  fps_ids: list[int] | None = None, skyreels: bool = False) -> torch.Tensor:
    """``tr``'s output for ``x`` (B, C, F, h, w) with timesteps ``t`` (B, F) float32, modulation per frame.

    ``fps_ids``: SkyReels' frame-rate embedding index per sample (its ``inject_sample_info`` checkpoints).
    """
    b, _, f, h, w = x.shape
    p_t, p_h, p_w = tr.config.patch_size
    hh, ww = h // p_h, w // p_w
    rotary = tr.rope(x)
    hidden = tr.patch_embedding(x).flatten(2).transpose(1, 2).contiguous()  # (B, F*S, D), frame-major
    if skyreels:  # its own sinusoid (float64) on the (B, F) table
        temb, proj, ctx, _ = tr.condition_embedder(t, context, None)
    else:  # Wan's embedder takes a flat table and regroups it
        temb, proj, ctx, _ = tr.condition_embedder(t.reshape(-1), context, None, timestep_seq_len=f)
    proj = proj.unflatten(-1, (6, -1))  # (B, F, 6, D)
    if fps_ids is not None:
        ids = torch.tensor(fps_ids, dtype=torch.long, device=x.device)
        proj = proj + tr.fps_projection(tr.fps_embedding(ids)).unflatten(1, (6, -1)).unsqueeze(1)
    for block in tr.blocks:
        hidden = block_forward(block, hidden, ctx, proj, rotary, f)
    table = on_device(tr, "scale_shift_table", temb.device).unsqueeze(0)  # (1, 1, 2, D)
    shift, scale = (table + temb.unsqueeze(2)).unsqueeze(3).unbind(2)  # each (B, F, 1, D)
    hidden = (_per_frame(tr.norm_out(hidden.float()), f) * (1 + scale) + shift).flatten(1, 2).type_as(hidden)
    hidden = tr.proj_out(hidden)
    hidden = hidden.reshape(b, f // p_t, hh, ww, p_t, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return hidden.flatten(6, 7).flatten(4, 5).flatten(2, 3)

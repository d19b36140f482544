"""``tiny_animatediff``: seeded random weights with AnimateDiff's real classes, for tests and CPU demos.

Every component is the diffusers / transformers class a real AnimateDiff folder holds (``UNet2DConditionModel`` +
``MotionAdapter`` -> ``UNetMotionModel``, ``AutoencoderKL`` with two blocks, ``CLIPTextModel`` and a byte-level
``CLIPTokenizer``), at widths that run in seconds: 64x64 px frames, 32x32 latents, text cross-attention at the
16x16 level only (spatial attention over 1024 tokens would cost most of the CPU time), motion modules at both
levels. The same seed gives the same weights on any machine (each component is built under its own
``torch.manual_seed``).
"""

from __future__ import annotations

from typing import Any

import torch

TINY_SEED = 0
TINY_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear",
                  "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "linspace",
                  "prediction_type": "epsilon"}  # as AnimateDiff's examples configure DDIM


TINY_BLOCKS = (32, 64)  # channels per level of the tiny U-Net, motion modules and VAE: two levels each


def byte_tokenizer(max_length: int = 77) -> Any:
    """A ``CLIPTokenizer`` over single bytes (no merges): CLIP's byte-to-unicode table, each symbol with and
    without the end-of-word mark, plus the two special tokens (514 ids)."""
    from transformers import CLIPTokenizer

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = [], 0
    for b in range(256):
        if b in printable:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": i + 256 for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = 512, 513
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def _seeded(seed: int, build: Any) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def tiny_components(seed: int = TINY_SEED) -> dict[str, Any]:
    """The parts of a tiny SD-1.5 + motion-adapter model: ``unet`` (2-D), ``motion_adapter``, ``vae``,
    ``text_encoder``, ``tokenizer``, ``scheduler`` (DDIM)."""
    from diffusers import AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = _seeded(seed, lambda: UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, block_out_channels=TINY_BLOCKS, layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8))  # (diffusers' name for the head count)
    adapter = _seeded(seed + 1, lambda: MotionAdapter(
        block_out_channels=TINY_BLOCKS, motion_layers_per_block=2, motion_num_attention_heads=2,
        motion_norm_num_groups=8, motion_max_seq_length=32, use_motion_mid_block=True))
    vae = _seeded(seed + 2, lambda: AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=TINY_BLOCKS, latent_channels=4, norm_num_groups=8,
        sample_size=64))
    text = _seeded(seed + 3, lambda: CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=514,
        max_position_embeddings=77, bos_token_id=512, eos_token_id=513, pad_token_id=513)))
    return {"unet": unet.eval(), "motion_adapter": adapter.eval(), "vae": vae.eval(), "text_encoder": text.eval(),
            "tokenizer": byte_tokenizer(), "scheduler": DDIMScheduler(**TINY_SCHEDULER)}

"""``tiny_wan``: seeded random weights with Wan2.1's real classes, for tests and CPU demos.

Every component is the class a real Wan2.1 / SkyReels-V2 diffusers folder holds (``WanTransformer3DModel`` or
``SkyReelsV2Transformer3DModel``, ``AutoencoderKLWan``, ``UMT5EncoderModel``, a fast tokenizer, the UniPC flow
scheduler config), at sizes where one transformer call on (2, 16, 4, 4, 4) latents takes milliseconds: 2 heads
of 12 dims, 2 layers, text width 32, 32x32 px frames (4x4 latents, 2x2 tokens per frame). The tokenizer is built
offline with ``tokenizers`` (a word-level vocabulary, T5's ``</s>`` appended), so nothing is downloaded. Each
component is built under its own ``torch.manual_seed``: the same seed gives bitwise the same weights.

:func:`write_tiny_folder` saves them with the diffusers pipeline's own ``save_pretrained``, so tests load exactly
the layout diffusers writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

TINY_SEED = 0
TINY_MAX_LENGTH = 16  # the tokenizer's model_max_length = the context length of tiny_wan
TINY_TRANSFORMER = {"patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 12, "in_channels": 16,
                    "out_channels": 16, "text_dim": 32, "freq_dim": 32, "ffn_dim": 32, "num_layers": 2,
                    "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 32}
TINY_VAE = {"base_dim": 3, "z_dim": 16, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
            "temperal_downsample": [False, True, True]}  # as diffusers' own Wan pipeline tests
TINY_TEXT = {"vocab_size": 64, "d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2, "num_heads": 4,
             "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16, "pad_token_id": 0,
             "eos_token_id": 1, "decoder_start_token_id": 0, "dropout_rate": 0.0}
# UniPC in flow mode, as the real folders ship it: Wan2.1-T2V-1.3B (shift 3) and SkyReels-V2-DF-540P (shift 8)
SCHEDULER = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "num_train_timesteps": 1000}
FLOW_SHIFT = {"wan": 3.0, "skyreels-df": 8.0, "wan2.2-ti2v": 3.0, "wan2.2-a14b": 3.0, "wan2.2-i2v-a14b": 3.0}
KINDS = ("wan", "skyreels-df", "wan2.2-ti2v", "wan2.2-a14b", "wan2.2-i2v-a14b")
# Wan2.2-TI2V-5B's layout at toy size: a 48-channel latent, patchified VAE (2x2 pixels -> 12 channels), 16x spatial
# compression (explicit: diffusers' default is 8); per-channel statistics that are not 0/1, so normalisation counts
TINY_TI2V_TRANSFORMER = {**TINY_TRANSFORMER, "in_channels": 48, "out_channels": 48}
TINY_VAE22 = {"base_dim": 3, "z_dim": 48, "in_channels": 12, "out_channels": 12, "is_residual": True,
              "patch_size": 2, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1,
              "temperal_downsample": [False, True, True], "scale_factor_spatial": 16, "scale_factor_temporal": 4,
              "latents_mean": [round(-0.5 + i / 47, 4) for i in range(48)],
              "latents_std": [round(0.5 + i / 47, 4) for i in range(48)]}
BOUNDARY_RATIO = {"wan2.2-a14b": 0.875, "wan2.2-i2v-a14b": 0.9}  # Wan2.2's published T2V / I2V boundaries
EXPERT_SEED_OFFSET = 3  # the low-noise expert gets other weights (equal experts would make routing tests vacuous)
WORDS = ("a", "the", "cat", "dog", "bird", "fish", "car", "tree", "house", "river", "sky", "sun", "moon", "red",
         "blue", "green", "white", "black", "big", "small", "runs", "walks", "flies", "swims", "jumps", "on", "in",
         "over", "under", "at", "night", "day", "city", "forest", "sea", "beach", "snow", "rain", "slowly", "fast")


def tiny_tokenizer(max_length: int = TINY_MAX_LENGTH) -> Any:
    """A word-level fast tokenizer with T5's special ids (pad 0, ``</s>`` 1, ``<unk>`` 2) and T5's post-processor
    (``</s>`` after the text), built offline."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=max_length, padding_side="right")


def _seeded(seed: int, build: Any) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def tiny_scheduler(kind: str = "wan") -> Any:
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(**SCHEDULER, flow_shift=FLOW_SHIFT[kind])


def tiny_components(kind: str = "wan", seed: int = TINY_SEED) -> dict[str, Any]:
    """The parts of a tiny model of one of ``KINDS``: ``transformer``, ``vae``, ``text_encoder``, ``tokenizer``,
    ``scheduler``, and ``transformer_2`` for the two-expert kinds. Wan2.1 and SkyReels share the weights (the two
    transformer classes have the same parameter names)."""
    from diffusers import AutoencoderKLWan, SkyReelsV2Transformer3DModel, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    if kind not in KINDS:
        raise ValueError(f"unknown tiny Wan kind {kind!r}; one of {', '.join(KINDS)}")
    cls = SkyReelsV2Transformer3DModel if kind == "skyreels-df" else WanTransformer3DModel
    dit = {"wan2.2-ti2v": TINY_TI2V_TRANSFORMER,
           "wan2.2-i2v-a14b": {**TINY_TRANSFORMER, "in_channels": 36}}.get(kind, TINY_TRANSFORMER)
    transformer = _seeded(seed, lambda: cls(**dit))
    vae = _seeded(seed + 1, lambda: AutoencoderKLWan(**(TINY_VAE22 if kind == "wan2.2-ti2v" else TINY_VAE)))
    text = _seeded(seed + 2, lambda: UMT5EncoderModel(UMT5Config(**TINY_TEXT)))
    parts = {"transformer": transformer.eval(), "vae": vae.eval(), "text_encoder": text.eval(),
             "tokenizer": tiny_tokenizer(), "scheduler": tiny_scheduler(kind)}
    if kind in BOUNDARY_RATIO:
        parts["transformer_2"] = _seeded(seed + EXPERT_SEED_OFFSET, lambda: cls(**dit)).eval()
    return parts


def write_tiny_folder(path: str | Path, kind: str = "wan") -> Path:
    """A diffusers pipeline folder of the tiny weights, written by the pipeline's own ``save_pretrained``
    (safetensors): ``WanPipeline`` for ``"wan"`` (Wan2.1), ``"wan2.2-ti2v"`` (``expand_timesteps``) and
    ``"wan2.2-a14b"`` (two experts, ``boundary_ratio``); ``SkyReelsV2DiffusionForcingPipeline`` for
    ``"skyreels-df"``; ``WanImageToVideoPipeline`` for ``"wan2.2-i2v-a14b"`` (which the backend refuses)."""
    from diffusers import SkyReelsV2DiffusionForcingPipeline, WanImageToVideoPipeline, WanPipeline

    from ..hub import quiet_loading

    c = tiny_components(kind)
    if kind == "skyreels-df":
        pipe = SkyReelsV2DiffusionForcingPipeline(**c)
    elif kind == "wan2.2-i2v-a14b":
        pipe = WanImageToVideoPipeline(**c, boundary_ratio=BOUNDARY_RATIO[kind])
    else:
        pipe = WanPipeline(**c, boundary_ratio=BOUNDARY_RATIO.get(kind), expand_timesteps=kind == "wan2.2-ti2v")
    path = Path(path)
    with quiet_loading():
        pipe.save_pretrained(str(path), safe_serialization=True)
    return path

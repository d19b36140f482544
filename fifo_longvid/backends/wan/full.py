"""Wan2.1-T2V-1.3B's published component configs (Wan-AI/Wan2.1-T2V-1.3B-Diffusers) and Wan2.2's (below), for
building the full-size models on ``meta``: the FLOP benchmarks (``scripts/bench_wan_flops.py``,
``scripts/measure_wan22_costs.py``) and the fake-CUDA tests (``tests/fakecuda``) read them from here, and
``write_config_folder`` writes a weightless folder that ``fifo-gen plan --checkpoint`` reads. Loading real weights
never uses them: the folder's own configs are read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# transformer/config.json
FULL_TRANSFORMER: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, rope_max_seq_len=1024)
# vae/config.json
FULL_VAE: dict[str, Any] = dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                temperal_downsample=[False, True, True])
# text_encoder/config.json: google/umt5-xxl's encoder (about 5.7B parameters, kept in float32)
FULL_TEXT: dict[str, Any] = dict(
    d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64, vocab_size=256384,
    feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, pad_token_id=0, eos_token_id=1,
    decoder_start_token_id=0, dropout_rate=0.0)
# scheduler/scheduler_config.json (UniPC in flow mode, shift 3)
FULL_SCHEDULER: dict[str, Any] = dict(prediction_type="flow_prediction", use_flow_sigmas=True,
                                      num_train_timesteps=1000, flow_shift=3.0)
FULL_MAX_LENGTH = 512  # tokenizer/ model_max_length: the context length

# -- Wan2.2 (issue #31). The published Hub configs cannot be fetched here: these are the values of the model cards
# (Wan-AI/Wan2.2-TI2V-5B-Diffusers, Wan-AI/Wan2.2-T2V-A14B-Diffusers) and diffusers' docs/class defaults
# (WanTransformer3DModel's defaults are the 14B expert's; AutoencoderKLWan's Wan2.2 arguments are documented in its
# file). A loaded folder always uses its own configs; these only build the full-size models on ``meta``.

# Wan2.2-TI2V-5B transformer/config.json: dim 3072 = 24 heads x 128, 48 latent channels in and out
FULL_TI2V_TRANSFORMER: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128, in_channels=48, out_channels=48,
    text_dim=4096, freq_dim=256, ffn_dim=14336, num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, rope_max_seq_len=1024)
# Wan2.2-TI2V-5B vae/config.json (VAE2.2: 4x16x16 compression, residual up/down blocks, pixels patchified by 2).
# Its 48 latents_mean/std are not reproduced here: the meta builds take 0/1 of the right length (values unused).
FULL_VAE22: dict[str, Any] = dict(
    base_dim=160, decoder_base_dim=256, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
    scale_factor_spatial=16, scale_factor_temporal=4, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
    temperal_downsample=[False, True, True], latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
# Wan2.2-TI2V-5B scheduler: UniPC in flow mode, shift 5 (the model card's sample_shift)
FULL_TI2V_SCHEDULER: dict[str, Any] = {**FULL_SCHEDULER, "flow_shift": 5.0}

# Wan2.2-T2V-A14B transformer/config.json and transformer_2/config.json (each expert: dim 5120 = 40 heads x 128,
# about 14.3B parameters); the VAE is Wan2.1's (FULL_VAE), the text encoder the same UMT5-XXL
FULL_A14B_TRANSFORMER: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, rope_max_seq_len=1024)
# Wan2.2-T2V-A14B scheduler: shift 12; model_index.json: boundary_ratio 0.875
FULL_A14B_SCHEDULER: dict[str, Any] = {**FULL_SCHEDULER, "flow_shift": 12.0}
FULL_A14B_BOUNDARY_RATIO = 0.875

# release -> (transformer, VAE, scheduler): what the fake-CUDA tests and the FLOP benchmark build per release
FULL_RELEASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "wan2.1": (FULL_TRANSFORMER, FULL_VAE, FULL_SCHEDULER),
    "wan2.2-ti2v": (FULL_TI2V_TRANSFORMER, FULL_VAE22, FULL_TI2V_SCHEDULER),
    "wan2.2-a14b": (FULL_A14B_TRANSFORMER, FULL_VAE, FULL_A14B_SCHEDULER),
}


def write_config_folder(path: str | Path, release: str) -> Path:
    """A pipeline folder of ``release``'s configs and no weights: what ``fifo-gen plan --checkpoint`` reads (plan
    needs no weights), for planning a release before downloading it, and for the tests."""
    dit, vae, sched = FULL_RELEASES[release]
    path = Path(path)
    experts = release == "wan2.2-a14b"
    parts = {"transformer": ("WanTransformer3DModel", dit), "vae": ("AutoencoderKLWan", vae),
             "scheduler": ("UniPCMultistepScheduler", sched)}
    if experts:
        parts["transformer_2"] = parts["transformer"]
    index: dict[str, Any] = {"_class_name": "WanPipeline", "_diffusers_version": "0.35.0",
                             "text_encoder": ["transformers", "UMT5EncoderModel"],
                             "tokenizer": ["transformers", "T5TokenizerFast"],
                             "boundary_ratio": FULL_A14B_BOUNDARY_RATIO if experts else None,
                             "expand_timesteps": release == "wan2.2-ti2v",
                             **{k: ["diffusers", cls] for k, (cls, _) in parts.items()}}
    index.setdefault("transformer_2", [None, None])
    for sub, (cls, cfg) in parts.items():
        (path / sub).mkdir(parents=True, exist_ok=True)
        name = "scheduler_config.json" if sub == "scheduler" else "config.json"
        (path / sub / name).write_text(json.dumps({"_class_name": cls, **cfg}, indent=1))
    (path / "model_index.json").write_text(json.dumps(index, indent=1))
    return path

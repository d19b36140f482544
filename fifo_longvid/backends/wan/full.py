"""Wan2.1-T2V-1.3B's published component configs (Wan-AI/Wan2.1-T2V-1.3B-Diffusers), for building the full-size
model on ``meta``: the FLOP benchmark (``scripts/bench_wan_flops.py``) and the fake-CUDA tests (``tests/fakecuda``)
read them from here. Loading real weights never uses them: the folder's own configs are read.
"""

from __future__ import annotations

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

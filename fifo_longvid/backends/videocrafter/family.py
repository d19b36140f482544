"""The VideoCrafter family (VideoCrafter2 T2V, VideoCrafter1 I2V, the ``tiny``/``toy`` presets, any model YAML).

It is the registry's last entry and takes every ``--config`` no other family claims: a preset of its own or a
YAML path (its errors name the presets when neither fits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..costs import FamilyCosts
from ..family import Family, Sizes, lora_refusal, motion_adapter_refusal
from ..hub import Download
from .download import MODELS as DOWNLOADS
from .download import download


def _load(config: Any, checkpoint: str | Path | None, device: Any, dtype: Any, motion_adapter: Any = None,
          loras: Any = ()) -> Any:
    from ..base import CheckpointError
    from .load import load_model

    if motion_adapter is not None:
        raise CheckpointError(motion_adapter_refusal(config, FAMILY))
    if loras:
        from ...errors import ConfigError

        raise ConfigError(lora_refusal(config, FAMILY))
    return load_model(config, checkpoint, device, dtype)


def _preset_cfg(config: Any) -> float | None:
    from .presets import load_model_config

    try:
        return float(load_model_config(config).default_cfg)
    except (ValueError, OSError):
        return None


def _has_image_encoder(config: Any) -> bool:
    from .presets import load_model_config

    return load_model_config(config).image is not None


def _sizes(config: Any, checkpoint: str | Path | None = None) -> Sizes:
    """From the model config (a preset or a YAML): the VAE and the U-Net downsample by 2 per level after the
    first, so a frame side must divide by both."""
    from .presets import load_model_config

    mc = load_model_config(config)
    vae = 2 ** (len(mc.vae.ch_mult) - 1)
    return Sizes(latent_factor=vae, size_multiple=vae * 2 ** (len(mc.unet.channel_mult) - 1), temporal_factor=1,
                 window=mc.default_window or mc.unet.temporal_length, partitions=mc.default_partitions,
                 num_frames=mc.default_num_frames, latent_size=tuple(mc.latent_size))  # type: ignore[arg-type]


_FULL = dict(ref_latent=(40, 64), ref_frames=16, act_bytes_per_sample=825_696_256, unet_flop_per_sample=12.5815e12,
             vae_flop_per_frame=1.5635e12,
             store_bytes_per_frame={"tgate": 19.99e6, "cfg_cache": 0.082e6, "attn_reuse": 54.55e6,
                                    "deepcache": 6.55e6})
COSTS = {  # measured at 320x512 on fake CUDA (tests/test_fake_cuda.py checks them)
    "videocrafter2": FamilyCosts(params_run_dtype=1.4968e9, params_fp32=0.3542e9, **_FULL),  # type: ignore[arg-type]
    "videocrafter1_i2v": FamilyCosts(params_run_dtype=1.5224e9, params_fp32=1.0865e9,
                                     **_FULL),  # type: ignore[arg-type]
}
WEIGHTS = ("videocrafter2", "videocrafter1_i2v")  # presets whose weights `fifo-gen download` fetches


def _default_checkpoint(config: Any) -> str | None:
    """``checkpoints/<preset>/model.ckpt``, where `fifo-gen download` puts it, when it is there."""
    if str(config) not in WEIGHTS:
        return None
    path = Path("checkpoints") / str(config) / "model.ckpt"
    return str(path) if path.exists() else None


FAMILY = Family(
    name="videocrafter",
    presets=("videocrafter2", "videocrafter1_i2v", "tiny", "tiny_i2v", "toy"),
    matches=lambda config, checkpoint: True,
    load=_load,
    preset_cfg=_preset_cfg,
    has_image_encoder=_has_image_encoder,
    sizes=_sizes,
    costs=lambda config, release="": COSTS.get(str(config)),
    default_checkpoint=_default_checkpoint,
    provides=frozenset({"mirror", "levels", "frame_attention"}),
    schedule="ddim",
    summary="VideoCrafter2 / VideoCrafter1 3D U-Net (320x512, DDIM); tiny, tiny_i2v, toy need no weights",
    download=Download(DOWNLOADS, download),
)

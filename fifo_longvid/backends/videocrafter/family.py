"""The VideoCrafter family (VideoCrafter2 T2V, VideoCrafter1 I2V, the ``tiny``/``toy`` presets, any model YAML).

It is the registry's last entry and takes every ``--config`` no other family claims: a preset of its own or a
YAML path (its errors name the presets when neither fits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..family import Family, Sizes, motion_adapter_refusal
from ..hub import Download
from .download import MODELS as DOWNLOADS
from .download import download


def _load(config: Any, checkpoint: str | Path | None, device: Any, dtype: Any, motion_adapter: Any = None) -> Any:
    from ..base import CheckpointError
    from .load import load_model

    if motion_adapter is not None:
        raise CheckpointError(motion_adapter_refusal(config, FAMILY))
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


def _check_size(config: Any, height: int | None, width: int | None) -> None:
    """Sizes against the architecture alone (no weights read); an unreadable config is reported when loading."""
    from ...fifo.sizing import check_frame_size
    from .presets import load_model_config

    try:
        model_cfg = load_model_config(config)
    except ValueError:
        return
    check_frame_size(height, width, model_cfg)


def _sizes(config: Any) -> Sizes:
    from .presets import load_model_config

    mc = load_model_config(config)
    return Sizes(latent_factor=8, size_multiple=8 * 2 ** (len(mc.unet.channel_mult) - 1), temporal_factor=1,
                 window=mc.default_window or mc.unet.temporal_length, partitions=mc.default_partitions,
                 num_frames=mc.default_num_frames)


FAMILY = Family(
    name="videocrafter",
    presets=("videocrafter2", "videocrafter1_i2v", "tiny", "tiny_i2v", "toy"),
    matches=lambda config, checkpoint: True,
    load=_load,
    preset_cfg=_preset_cfg,
    has_image_encoder=_has_image_encoder,
    check_size=_check_size,
    sizes=_sizes,
    provides=frozenset({"mirror", "levels", "frame_attention"}),
    schedule="ddim",
    summary="VideoCrafter2 / VideoCrafter1 3D U-Net (320x512, DDIM); tiny, tiny_i2v, toy need no weights",
    download=Download(DOWNLOADS, download),
)

"""The Wan family: Wan2.1 T2V and SkyReels-V2 diffusion forcing, DiTs with flow matching, through diffusers.

A DiT has no encoder/decoder mirror and no resolution levels, so it provides neither: the registry refuses
``--qcache`` and ``--deepcache`` on it with one sentence, before anything is loaded or written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..family import Family, Sizes, motion_adapter_refusal
from ..hub import Download
from .download import MODELS as DOWNLOADS
from .download import download

PRESETS = ("wan", "tiny_wan")


def _load(config: Any, checkpoint: str | Path | None, device: Any, dtype: Any, motion_adapter: Any = None) -> Any:
    import torch

    from ..base import CheckpointError
    from ..hub import quiet_loading
    from ..placement import resolve_device, resolve_dtype
    from .load import load_wan

    if motion_adapter is not None:
        raise CheckpointError(motion_adapter_refusal(config, FAMILY))
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    with quiet_loading():
        model = load_wan(str(config), checkpoint)
    model.cast(dt)  # diffusers' float32 modules stay float32; the text encoder runs in float32 (once per prompt)
    # on a GPU, UMT5 (21 GiB) stays in host memory and computes on the card piece by piece: a 12 GB card runs Wan
    return model.place(dev, offload_text=torch.device(dev).type == "cuda").eval().requires_grad_(False)


def _preset_cfg(config: Any) -> float | None:
    from .load import preset_config

    return preset_config(str(config)).default_cfg


def _sizes(config: Any) -> Sizes:
    """Wan2.1's published VAE (8x spatial, 4x temporal) and DiT patch (2x2); defaults from the preset."""
    from .full import FULL_TRANSFORMER, FULL_VAE
    from .load import preset_config

    mc = preset_config(str(config))
    factor = 2 ** len(FULL_VAE["temperal_downsample"])
    return Sizes(latent_factor=factor, size_multiple=factor * FULL_TRANSFORMER["patch_size"][1],
                 temporal_factor=2 ** sum(FULL_VAE["temperal_downsample"]), window=mc.default_window or 20,
                 partitions=mc.default_partitions, num_frames=mc.default_num_frames)


FAMILY = Family(
    name="wan",
    presets=PRESETS,
    matches=lambda config, checkpoint: isinstance(config, (str, Path)) and str(config) in PRESETS,
    load=_load,
    preset_cfg=_preset_cfg,
    provides=frozenset({"frame_attention"}),  # no mirror, no levels; self-attention per frame row (select_rows)
    schedule="flow",
    sizes=_sizes,
    summary="Wan2.1-T2V-1.3B or SkyReels-V2-DF-1.3B (DiT, flow matching, 480x832) through diffusers; tiny_wan needs "
            "no weights",
    download=Download(DOWNLOADS, download),
)

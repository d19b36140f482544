"""The Wan family: Wan2.1 T2V and SkyReels-V2 diffusion forcing, DiTs with flow matching, through diffusers.

A DiT has no encoder/decoder mirror and no resolution levels, so it provides neither: the registry refuses
``--qcache`` and ``--deepcache`` on it with one sentence, before anything is loaded or written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..costs import FamilyCosts
from ..family import Family, Sizes, motion_adapter_refusal
from ..hub import Download, part_config
from .download import MODELS as DOWNLOADS
from .download import download
from .image import image_refusal

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


def _release(folder: Path | None) -> Any:
    """The folder's WanVariant, or None (no folder, or one that loading will refuse with the full message)."""
    from ..base import CheckpointError
    from .load import read_variant

    if folder is None or not (folder / "model_index.json").is_file():
        return None
    try:
        return read_variant(folder)
    except (CheckpointError, ValueError, OSError):
        return None


def _sizes(config: Any, checkpoint: str | Path | None = None) -> Sizes:
    """The VAE (8x spatial, 4x temporal for Wan2.1; 16x for Wan2.2-TI2V) and the DiT's patch, read from the
    checkpoint folder's configs when there is one (no weights are read), else the preset's published configs; a
    diffusion-forcing checkpoint's own block size (``num_frame_per_block``) is FIFO's default ``--block``; the
    release (``variants.py``) gives the experts, the image input and its published run defaults."""
    from .full import FULL_TRANSFORMER, FULL_VAE
    from .load import DEFAULT_DIR, preset_config
    from .tiny import TINY_TRANSFORMER, TINY_VAE
    from .variants import RELEASE_DEFAULTS

    mc = preset_config(str(config))
    folder = Path(checkpoint) if checkpoint is not None else (DEFAULT_DIR if str(config) == "wan" else None)
    vae = part_config(folder, "vae") or (TINY_VAE if str(config) == "tiny_wan" else FULL_VAE)
    dit = part_config(folder, "transformer") or (TINY_TRANSFORMER if str(config) == "tiny_wan" else FULL_TRANSFORMER)
    release = _release(folder)
    if release is not None and str(config) == "wan":
        for key, value in RELEASE_DEFAULTS.get(release.name, {}).items():
            setattr(mc, key, value)
    factor = int(vae.get("scale_factor_spatial") or 2 ** len(vae["temperal_downsample"]))
    temporal = int(vae.get("scale_factor_temporal") or 2 ** sum(vae["temperal_downsample"]))
    return Sizes(latent_factor=factor, size_multiple=factor * int(dit["patch_size"][1]), temporal_factor=temporal,
                 window=mc.default_window or 20, partitions=mc.default_partitions, num_frames=mc.default_num_frames,
                 latent_size=tuple(mc.latent_size), default_block=int(dit.get("num_frame_per_block") or 1),
                 network_downsampling="DiT patch", release=release.name if release else "wan2.1",
                 channels=int(dit.get("out_channels", 16)), experts=release.experts if release else 1,
                 image_input=release.image_input if release else None, cfg=mc.default_cfg,
                 cfg_2=mc.default_cfg_2)  # type: ignore[arg-type]


# Wan2.1-T2V-1.3B (full.py): the DiT (its float32 modules: 3.1M params) + the causal VAE; UMT5-XXL's encoder is 5.68B
# fp32 params (21.2 GiB), kept in host memory and computing on the card piece by piece (Wan.place). FLOPs as
# scripts/bench_wan_flops.py counts them: one 20-frame window sample, and one latent frame through the streamed decoder
# (4 output frames).
COSTS = {
    "wan": FamilyCosts(ref_latent=(60, 104), ref_frames=20, params_run_dtype=1.5428e9, params_fp32=5.6840e9,
                       act_bytes_per_sample=1_528_496_384, unet_flop_per_sample=260.5625e12,
                       vae_flop_per_frame=13.552e12, store_bytes_per_frame={"tgate": 191.69e6, "cfg_cache": 0.799e6,
                                                                             "attn_reuse": 548.94e6},
                       temporal_factor=4, channels=16,
                       # attention reuse: a window call with every other frame's self-attention reused is 0.639 of
                       # plain (the DiT's full 3D attention is most of it), on the 41.2 % of steps below t=681
                       flop_ratio={"attn_reuse": 0.851},
                       # UMT5's token embedding (256384 x 4096 fp32, 3.9 GiB) is the largest piece to visit
                       text_visit_bytes=4.2309e9),
}


FAMILY = Family(
    name="wan",
    presets=PRESETS,
    matches=lambda config, checkpoint: isinstance(config, (str, Path)) and str(config) in PRESETS,
    load=_load,
    preset_cfg=_preset_cfg,
    provides=frozenset({"frame_attention"}),  # no mirror, no levels; self-attention per frame row (select_rows)
    schedule="flow",
    sizes=_sizes,
    image_refusal=image_refusal,  # --image: a Wan2.2-TI2V folder takes it as the first frame (image.py)
    costs=lambda config: COSTS.get(str(config)),
    dit=True,
    summary="Wan2.1-T2V-1.3B or SkyReels-V2-DF-1.3B (DiT, flow matching, 480x832) through diffusers; tiny_wan needs "
            "no weights",
    download=Download(DOWNLOADS, download),
)

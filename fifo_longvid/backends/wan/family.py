"""The Wan family: Wan2.1 T2V and SkyReels-V2 diffusion forcing, DiTs with flow matching, through diffusers.

A DiT has no encoder/decoder mirror and no resolution levels, so it provides neither: the registry refuses
``--qcache`` and ``--deepcache`` on it with one sentence, before anything is loaded or written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..costs import FamilyCosts
from ..family import Family, Sizes, motion_adapter_refusal
from ..hub import Download, part_config
from .download import MODELS as DOWNLOADS
from .download import download
from .image import image_refusal
from .variants import EXPERT_RESERVE

PRESETS = ("wan", "tiny_wan")


def _load(config: Any, checkpoint: str | Path | None, device: Any, dtype: Any, motion_adapter: Any = None,
          loras: Any = ()) -> Any:
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
    _apply_loras(model, loras)  # after the cast, before placement: offload hooks must see the LoRA layers
    # on a GPU, UMT5 (21 GiB) stays in host memory and computes on the card piece by piece: a 12 GB card runs Wan
    return model.place(dev, offload_text=torch.device(dev).type == "cuda").eval().requires_grad_(False)


def _apply_loras(model: Any, loras: Any) -> None:
    """--lora / --lora-2 into ``model.lora_modules()`` (``backends/lora.py``; Wan's reader in ``lora.py``)."""
    if loras:
        from ..lora import apply_loras
        from .lora import read_wan_lora

        apply_loras(model, loras, read_wan_lora)


def _lora_targets(config: Any, checkpoint: str | Path | None) -> tuple[str, ...]:
    from .load import DEFAULT_DIR
    from .lora import lora_targets

    folder = Path(checkpoint) if checkpoint is not None else (DEFAULT_DIR if str(config) == "wan" else None)
    return lora_targets(folder)


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
    boundary, levels = _expert_split(folder, release)
    factor = int(vae.get("scale_factor_spatial") or 2 ** len(vae["temperal_downsample"]))
    temporal = int(vae.get("scale_factor_temporal") or 2 ** sum(vae["temperal_downsample"]))
    return Sizes(latent_factor=factor, size_multiple=factor * int(dit["patch_size"][1]), temporal_factor=temporal,
                 window=mc.default_window or 20, partitions=mc.default_partitions, num_frames=mc.default_num_frames,
                 latent_size=tuple(mc.latent_size), default_block=int(dit.get("num_frame_per_block") or 1),
                 network_downsampling="DiT patch", release=release.name if release else "wan2.1",
                 channels=int(dit.get("out_channels", 16)), experts=release.experts if release else 1,
                 image_input=release.image_input if release else None, cfg=mc.default_cfg,
                 cfg_2=mc.default_cfg_2, expert_boundary=boundary, level_timesteps=levels)  # type: ignore[arg-type]


def _expert_split(folder: Path | None, release: Any) -> tuple[float | None, Any]:
    """A two-expert folder's boundary timestep (boundary_ratio x num_train_timesteps, as ``Wan``) and its schedule's
    timesteps per level count, from ``scheduler/scheduler_config.json`` (no weights read)."""
    if folder is None or release is None or release.experts < 2:
        return None, None
    try:
        sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None  # loading reports the folder's problem

    def levels(n: int) -> tuple[float, ...]:
        from ...diffusion.flow import flow_schedule_from_config

        return flow_schedule_from_config(sched, n).timestep_list

    return release.boundary_ratio * int(sched.get("num_train_timesteps", 1000)), levels


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


# Wan2.2 releases (full.py's configs from the model cards), measured the same way by scripts/measure_wan22_costs.py
# on fake CUDA in bf16 (Wan2.1's table above is reproduced exactly by the same script).
RELEASE_COSTS = {
    # TI2V-5B at 704x1280 (latent 44x80), window 30: the 5.0B DiT (11.0M float32 params) + VAE2.2 (0.70B); the
    # VAE2.2 decoder (base 256) costs 66.4 TFLOP per latent frame, 5x Wan2.1's. Stores: 3 iterations, n = 1.
    "wan2.2-ti2v": FamilyCosts(ref_latent=(44, 80), ref_frames=30, params_run_dtype=5.6935e9, params_fp32=5.6919e9,
                               act_bytes_per_sample=2_197_184_768, unet_flop_per_sample=491.789e12,
                               vae_flop_per_frame=66.352e12,
                               store_bytes_per_frame={"tgate": 208.545e6, "cfg_cache": 1.352e6,
                                                      "attn_reuse": 628.531e6},
                               temporal_factor=4, channels=48, text_visit_bytes=4.2309e9),
    # T2V-A14B at 480x832, window 20: two 14.29B experts (29.2M float32 params each), both on the card (until
    # Wan.place keeps the idle expert in host memory) + Wan2.1's VAE; activations of one expert's call (one call
    # at a time); techniques are refused on two experts, so no stores. host_bytes: both experts in bf16 + UMT5.
    "wan2.2-a14b": FamilyCosts(ref_latent=(60, 104), ref_frames=20, params_run_dtype=28.6455e9,
                               params_fp32=5.7393e9, act_bytes_per_sample=3_228_176_640,
                               unet_flop_per_sample=1558.69e12, vae_flop_per_frame=13.552e12, temporal_factor=4,
                               channels=16, text_visit_bytes=4.2309e9, experts=2, expert_params=14.2885e9,
                               host_bytes=79.994e9, expert_reserve=EXPERT_RESERVE,
                               # the largest weight-owning submodule a streamed expert visits: ffn.net.0.proj,
                               # a 5120 -> 13824 Linear with its bias
                               expert_visit_params=5120 * 13824 + 13824),
}


def _costs(config: Any, release: str = "") -> FamilyCosts | None:
    """The measured table of a release (``Sizes.release``) of the full-size preset, else the preset's own
    (Wan2.1-1.3B and SkyReels-V2-DF-1.3B share an architecture: ``wan``)."""
    if str(config) == "wan" and release in RELEASE_COSTS:
        return RELEASE_COSTS[release]
    return COSTS.get(str(config))


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
    costs=_costs,
    dit=True,
    summary="Wan2.1-T2V-1.3B or SkyReels-V2-DF-1.3B (DiT, flow matching, 480x832) through diffusers; tiny_wan needs "
            "no weights",
    download=Download(DOWNLOADS, download),
    lora_targets=_lora_targets,
)

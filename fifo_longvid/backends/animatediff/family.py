"""The AnimateDiff family: an SD-1.5 U-Net with motion modules, through diffusers (``--config animatediff``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..costs import FamilyCosts
from ..family import Family, Sizes
from ..hub import Download, part_config
from .download import MODELS as DOWNLOADS
from .download import download
from .load import PRESETS, is_animatediff, preset_config


def _load(config: Any, checkpoint: str | Path | None, device: Any, dtype: Any, motion_adapter: Any = None,
          loras: Any = ()) -> Any:
    import torch

    from ..hub import quiet_loading
    from ..placement import resolve_device, resolve_dtype
    from .load import load_animatediff

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    with quiet_loading():
        model = load_animatediff(str(config), checkpoint, motion_adapter)
    for part in (model.unet, model.vae):  # nn.Module.to: the U-Net and the VAE in the run's dtype
        torch.nn.Module.to(part, dt)
    torch.nn.Module.to(model.text_encoder, torch.float32)  # runs once per prompt: precision costs nothing
    if loras:  # after the cast, before placement (backends/lora.py)
        from ..lora import apply_loras
        from .lora import read_unet_lora

        apply_loras(model, loras, read_unet_lora)
    return torch.nn.Module.to(model, dev).eval().requires_grad_(False)


def _sizes(config: Any, checkpoint: str | Path | None = None) -> Sizes:
    """From the checkpoint folder's VAE and U-Net configs where there is one (no weights read), else SD-1.5's: the
    VAE and the U-Net each halve the frame per level after the first (8 x 8 = 64 for SD-1.5). The default frame
    is the U-Net's ``sample_size``."""
    from .load import SD15_DIR
    from .tiny import TINY_BLOCKS

    mc = preset_config(str(config))
    if str(config) == "tiny_animatediff":
        vae = unet = {"block_out_channels": TINY_BLOCKS}
    else:
        folder = checkpoint if checkpoint is not None else SD15_DIR
        vae, unet = part_config(folder, "vae") or SD15_VAE, part_config(folder, "unet") or SD15_UNET
    latent = 2 ** (len(vae["block_out_channels"]) - 1)
    size = int(unet.get("sample_size") or mc.latent_size[0]) if str(config) != "tiny_animatediff" else None
    return Sizes(latent_factor=latent, size_multiple=latent * 2 ** (len(unet["block_out_channels"]) - 1),
                 temporal_factor=1, window=mc.default_window or 16, partitions=mc.default_partitions,
                 num_frames=mc.default_num_frames,
                 latent_size=(size, size) if size else tuple(mc.latent_size))  # type: ignore[arg-type]


SD15_VAE = {"block_out_channels": [128, 256, 512, 512]}  # SD-1.5's published configs, the parts sizes depend on
SD15_UNET = {"block_out_channels": [320, 640, 1280, 1280], "sample_size": 64}


COSTS = {  # measured at 512x512 on fake CUDA (tests/test_fake_cuda.py checks them)
    "animatediff": FamilyCosts(ref_latent=(64, 64), ref_frames=16, params_run_dtype=1.3597e9, params_fp32=0.1237e9,
                               act_bytes_per_sample=1_092_452_352, unet_flop_per_sample=17.6750e12,
                               vae_flop_per_frame=2.5145e12,
                               store_bytes_per_frame={"tgate": 31.99e6, "cfg_cache": 0.131e6, "attn_reuse": 87.27e6,
                                                      "deepcache": 10.49e6}),
}


FAMILY = Family(
    name="animatediff",
    presets=PRESETS,
    matches=lambda config, checkpoint: isinstance(config, (str, Path)) and is_animatediff(config),
    load=_load,
    preset_cfg=lambda config: preset_config(str(config)).default_cfg,
    provides=frozenset({"mirror", "levels", "frame_attention", "motion_adapter"}),
    schedule="ddim",
    sizes=_sizes,
    costs=lambda config, release="": COSTS.get(str(config)),
    summary="AnimateDiff (SD-1.5 + motion adapter, 512x512, DDIM) through diffusers; tiny_animatediff needs no weights",
    download=Download(DOWNLOADS, download),
    lora_targets=lambda config, checkpoint: ("unet",),
)

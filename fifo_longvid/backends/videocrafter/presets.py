"""Named model configurations, and reading model configs from YAML.

Presets are code (a registry of specs, as flux does); ``configs/*.yaml`` are editable copies that
a test keeps identical. A YAML may be in our schema (``ModelConfig`` fields) or in the reference
VideoCrafter schema (``model: {target, params}``), so users can point at the original configs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .image import ImageConfig
from .text import TextEncoderConfig
from .unet import UNetConfig
from .vae import VAEConfig
from .videocrafter import ModelConfig

PACKAGE_DATA = Path(__file__).resolve().parent / "data"
TINY_OPENCLIP = PACKAGE_DATA / "tiny_openclip.json"
TINY_OPENCLIP_I2V = PACKAGE_DATA / "tiny_openclip_i2v.json"
# 1 / std of the toy VAE's latents, measured by scripts/train_toy.py (also stored in the weights' metadata).
TOY_SCALE_FACTOR = 0.46608219853951494
TOY_TEXT_SEED = 7  # seed of the toy's frozen text tower (recipe weights)


def videocrafter2() -> ModelConfig:
    """VideoCrafter2 text-to-video, 320x512 (configs/inference_t2v_512_v2.0.yaml of the reference)."""
    return ModelConfig(name="videocrafter2")


def tiny() -> ModelConfig:
    """A 10M-parameter random-weight stand-in with the full architecture (tests, CPU demos).

    Identical to the reference's ``tiny_t2v.yaml``: widths shrunk, everything else as VideoCrafter2.
    """
    return ModelConfig(
        name="tiny",
        unet=UNetConfig(model_channels=32, channel_mult=(1, 2, 2, 2), num_head_channels=16, context_dim=64),
        vae=VAEConfig(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1),
        text=TextEncoderConfig(arch="tiny_openclip", model_config_file=str(TINY_OPENCLIP)),
        latent_size=(16, 16),
        default_window=8,
        default_partitions=2,
        default_num_frames=16,
    )


def toy() -> ModelConfig:
    """The trained toy model (weights: shipped.py): VideoCrafter2's architecture at 64x64 px.

    Trained by ``scripts/train_toy.py`` on procedural shape videos (``fifo_longvid.toy.data``); its text
    tower is the ``tiny_openclip`` architecture, trained with the U-Net from the seeded recipe (its token table
    stays the recipe's). ``use_scale`` is off: it was trained and is
    sampled without VideoCrafter2's scale_arr, so base and FIFO sampling agree.
    """
    return ModelConfig(
        name="toy",
        unet=UNetConfig(model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(1, 2, 4),
                        num_head_channels=16, context_dim=64, temporal_length=8),
        vae=VAEConfig(ch=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, resolution=64),
        text=TextEncoderConfig(arch="tiny_openclip", model_config_file=str(TINY_OPENCLIP)),
        scale_factor=TOY_SCALE_FACTOR,
        use_scale=False,
        latent_size=(8, 8),
        default_window=8,
        default_partitions=2,
        default_num_frames=64,
        default_cfg=3.0,  # measured: at 12 a young model saturates towards yellow (README 'The toy model')
    )


def videocrafter1_i2v() -> ModelConfig:
    """VideoCrafter1 image-to-video 512 (VideoCrafter/Image2Video-512): the T2V U-Net plus image tokens."""
    return ModelConfig(name="videocrafter1_i2v", unet=UNetConfig(use_image_attention=True), image=ImageConfig(),
                       default_partitions=4)


def tiny_i2v() -> ModelConfig:
    """The tiny I2V test model (the reference's ``tiny_i2v.yaml``): tiny widths, Resampler 64/96/48."""
    cfg = tiny()
    cfg.name = "tiny_i2v"
    cfg.unet.use_image_attention = True
    cfg.image = ImageConfig(arch="tiny_openclip_i2v", model_config_file=str(TINY_OPENCLIP_I2V), dim=64, depth=4,
                            dim_head=16, heads=3, num_queries=16, embedding_dim=96, output_dim=64, ff_mult=4)
    return cfg


PRESETS = {"videocrafter2": videocrafter2, "tiny": tiny, "toy": toy, "videocrafter1_i2v": videocrafter1_i2v,
           "tiny_i2v": tiny_i2v}

# Presets whose weights, when no checkpoint is given, come from the seeded recipe (preset -> seed).
RECIPE_PRESETS = {"tiny": 0, "tiny_i2v": 2}
# Presets whose trained weights ship inside the package (shipped.py).
SHIPPED_PRESETS = ("toy",)


def _from_mapping(data: dict[str, Any]) -> ModelConfig:
    """Build a ModelConfig from our schema, rejecting unknown keys with their names."""
    schema = OmegaConf.structured(ModelConfig)
    merged = OmegaConf.merge(schema, OmegaConf.create(data))
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, ModelConfig)
    # OmegaConf turns tuples into lists; restore tuples for hashable, comparable configs
    for sub in (cfg.unet, cfg.vae):
        for f in dataclasses.fields(sub):
            v = getattr(sub, f.name)
            if isinstance(v, list):
                setattr(sub, f.name, tuple(v))
    cfg.latent_size = tuple(cfg.latent_size)
    return cfg


def _from_reference(data: dict[str, Any], base_dir: Path) -> ModelConfig:
    """Translate the reference ``LatentDiffusion`` YAML into our schema."""
    p = data["model"]["params"]
    u = dict(p["unet_config"]["params"])
    unet_fields = {f.name for f in dataclasses.fields(UNetConfig)}
    unet = {k: v for k, v in u.items() if k in unet_fields}
    if u.get("use_relative_position"):
        raise ValueError("use_relative_position=true is not supported (VideoCrafter2 does not use it)")
    dd = p["first_stage_config"]["params"]["ddconfig"]
    vae_fields = {f.name for f in dataclasses.fields(VAEConfig)}
    vae = {k: v for k, v in dd.items() if k in vae_fields}
    vae["embed_dim"] = p["first_stage_config"]["params"]["embed_dim"]
    cs = p["cond_stage_config"]["params"]
    arch = cs.get("arch", "ViT-H-14")
    text = {"arch": arch, "layer": cs.get("layer", "last")}
    local_json = base_dir / f"{arch}.json"
    if local_json.exists():
        text["model_config_file"] = str(local_json)
    elif arch == "tiny_openclip":
        text["model_config_file"] = str(TINY_OPENCLIP)
    size = p.get("image_size", [40, 64])
    size = [size, size] if isinstance(size, int) else size
    return _from_mapping({
        "name": "custom",
        "unet": unet,
        "vae": vae,
        "text": text,
        "timesteps": p.get("timesteps", 1000),
        "linear_start": p.get("linear_start", 0.00085),
        "linear_end": p.get("linear_end", 0.012),
        "scale_factor": p.get("scale_factor", 0.18215),
        "use_scale": p.get("use_scale", False),
        "scale_b": p.get("scale_b", 0.3),
        "fix_scale_bug": p.get("fix_scale_bug", False),
        "channels": p.get("channels", 4),
        "latent_size": list(size),
        "uncond_type": p.get("uncond_type", "empty_seq"),
    })


def load_model_config(config: str | Path | ModelConfig) -> ModelConfig:
    """A preset name, a YAML path (our schema or the reference's), or a ModelConfig."""
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, str) and config in PRESETS:
        return PRESETS[config]()
    path = Path(config)
    if not path.exists():
        raise ValueError(
            f"unknown model config {str(config)!r}: not a preset ({', '.join(sorted(PRESETS))}) "
            "and no such YAML file"
        )
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    if "model" in data and isinstance(data["model"], dict) and "target" in data["model"]:
        return _from_reference(data, path.parent)
    if "model" in data and isinstance(data["model"], (str, dict)):
        data = data["model"] if isinstance(data["model"], dict) else {"name": data["model"]}
        if set(data) == {"name"} and data["name"] in PRESETS:
            return PRESETS[data["name"]]()
    text = data.get("text") or {}
    mcf = text.get("model_config_file")
    if mcf and not Path(mcf).is_absolute():
        candidate = path.parent / mcf
        text["model_config_file"] = str(candidate if candidate.exists() else PACKAGE_DATA / Path(mcf).name)
    try:
        return _from_mapping(data)
    except Exception as e:  # omegaconf errors name the bad key; keep that, drop the traceback noise
        raise ValueError(f"{path}: invalid model config: {e}") from None

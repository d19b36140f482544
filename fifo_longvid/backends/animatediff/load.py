"""Reading AnimateDiff weights: diffusers folders, motion adapters, single files, and the tiny preset.

* ``--checkpoint DIR`` with ``unet/`` holding a ``UNetMotionModel``: an ``AnimateDiffPipeline`` folder.
* ``--checkpoint DIR`` with a ``UNet2DConditionModel`` (an SD-1.5 folder) plus ``--motion-adapter`` (a
  ``MotionAdapter`` folder, or an original motion-module file ``mm_sd_v15_v2.ckpt`` / ``.safetensors``).
* ``--checkpoint FILE.safetensors``: a single-file SD-1.5 checkpoint as the community shares them, read by
  diffusers' ``from_single_file`` against the SD-1.5 folder that ``fifo-gen download --model animatediff``
  fetched (its configs and tokenizer), plus ``--motion-adapter``.

Every tensor file is read without executing pickled code: diffusers and transformers load safetensors (or
``torch.load(weights_only=True)``), and original motion-module files go through ``backends/checkpoint.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..base import CheckpointError
from ..hub import class_name
from .model import AnimateDiff, AnimateDiffConfig

PRESETS = ("animatediff", "tiny_animatediff")
DEFAULT_DIR = Path("checkpoints") / "animatediff"
SD15_DIR = DEFAULT_DIR / "sd15"  # where `fifo-gen download --model animatediff` puts the SD-1.5 base
ADAPTER_DIR = DEFAULT_DIR / "motion_adapter"
MOTION_HEADS, MOTION_GROUPS = 8, 32  # AnimateDiff's motion-module settings (not recorded in the original files)


def is_animatediff(config: str | Path | None) -> bool:
    return str(config) in PRESETS


def preset_config(name: str) -> AnimateDiffConfig:
    if name == "tiny_animatediff":
        return AnimateDiffConfig(name=name, latent_size=(32, 32), default_window=8, default_partitions=2,
                                 default_num_frames=16)
    return AnimateDiffConfig(name=name)


def _class_name(folder: Path) -> str | None:
    cfg = folder / "config.json"
    return class_name(cfg) if cfg.is_file() else None


def _missing(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{what} not found: {path}\n  Pass --checkpoint with a diffusers AnimateDiffPipeline folder, an SD-1.5 folder "
        "(plus --motion-adapter), or a single-file SD-1.5 .safetensors; `fifo-gen download --model animatediff` "
        f"fetches SD-1.5 and a motion adapter into {DEFAULT_DIR}/. (`--config tiny_animatediff` needs no weights.)")


def load_motion_adapter(path: str | Path) -> Any:
    """A ``MotionAdapter`` from its diffusers folder, or from an original AnimateDiff motion-module file."""
    from diffusers import MotionAdapter

    path = Path(path)
    if path.is_dir():
        if _class_name(path) != "MotionAdapter":
            raise CheckpointError(f"--motion-adapter {path}: not a diffusers MotionAdapter folder (config.json with "
                                  "_class_name MotionAdapter)")
        return MotionAdapter.from_pretrained(str(path))
    if not path.is_file():
        raise _missing(path, "motion adapter")
    return adapter_from_original(_read_tensors(path), path)


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from ..checkpoint import read_checkpoint  # safe reading (no pickle execution), readable errors

    return read_checkpoint(path)


def adapter_from_original(sd: dict[str, torch.Tensor], source: Path | str = "state dict") -> Any:
    """Original motion-module keys -> a ``MotionAdapter``; its sizes are read off the tensors' shapes."""
    from diffusers import MotionAdapter
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

    if not any(".motion_modules." in k for k in sd):
        raise CheckpointError(f"{source}: no motion_modules.* keys; this is not an AnimateDiff motion-module file")
    pe = next((v for k, v in sd.items() if k.endswith("pos_encoder.pe")), None)
    converted = convert_animatediff_checkpoint_to_diffusers(sd)
    down = sorted({int(k.split(".")[1]) for k in converted if k.startswith("down_blocks.")})
    channels = tuple(int(converted[f"down_blocks.{i}.motion_modules.0.proj_in.weight"].shape[0]) for i in down)
    layers = len({k.split(".")[3] for k in converted if k.startswith("down_blocks.0.motion_modules.")})
    first = "down_blocks.0.motion_modules.0.transformer_blocks."
    depth = len({k.split(".")[5] for k in converted if k.startswith(first)})
    cfg = {"block_out_channels": channels, "motion_layers_per_block": layers,
           "motion_transformer_layers_per_block": depth, "motion_num_attention_heads": MOTION_HEADS,
           "motion_norm_num_groups": MOTION_GROUPS,
           "motion_max_seq_length": int(pe.shape[1]) if pe is not None else 32,
           "use_motion_mid_block": any(k.startswith("mid_block.") for k in converted)}
    adapter = MotionAdapter(**cfg)
    expected = {k for k in adapter.state_dict() if ".pos_embed." not in k}  # sinusoids, rebuilt by the class
    missing, extra = sorted(expected - set(converted)), sorted(set(converted) - expected)
    if missing or extra:
        raise CheckpointError(f"{source}: the motion-module keys do not fit a MotionAdapter {cfg}: "
                              f"{len(missing)} missing (e.g. {missing[:2]}), {len(extra)} unexpected "
                              f"(e.g. {extra[:2]})")
    adapter.load_state_dict(converted, strict=False)  # every other key checked above
    return adapter


def _components(folder: Path) -> dict[str, Any]:
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    for sub in ("vae", "text_encoder", "tokenizer", "scheduler"):
        if not (folder / sub).is_dir():
            raise CheckpointError(f"{folder} has no {sub}/ folder: it is not a complete diffusers pipeline folder")
    return {"vae": AutoencoderKL.from_pretrained(str(folder / "vae")),
            "text_encoder": CLIPTextModel.from_pretrained(str(folder / "text_encoder")),
            "tokenizer": CLIPTokenizer.from_pretrained(str(folder / "tokenizer")),
            "scheduler_config": dict(DDIMScheduler.load_config(str(folder / "scheduler")))}


def _motion_unet(unet2d: Any, motion_adapter: str | Path | None, what: str) -> Any:
    from diffusers import UNetMotionModel

    if motion_adapter is None:
        raise CheckpointError(f"{what} is a plain SD-1.5 U-Net without motion modules: add --motion-adapter PATH (a "
                              f"diffusers MotionAdapter folder or an original mm_sd_v15_v2.ckpt); "
                              f"`fifo-gen download --model animatediff` fetches one into {ADAPTER_DIR}/")
    adapter = load_motion_adapter(motion_adapter)
    return UNetMotionModel.from_unet2d(unet2d, adapter)


def load_components(checkpoint: str | Path, motion_adapter: str | Path | None = None) -> tuple[dict[str, Any], dict]:
    """(components for :class:`AnimateDiff`, a record of the source for the sidecar)."""
    from diffusers import UNet2DConditionModel, UNetMotionModel

    path = Path(checkpoint)
    source: dict[str, Any] = {"checkpoint": str(path), "motion_adapter": None if motion_adapter is None
                              else str(motion_adapter)}
    if path.is_dir():
        unet_dir = path / "unet"
        kind = _class_name(unet_dir)
        if kind == "UNetMotionModel":
            if motion_adapter is not None:
                raise CheckpointError(f"{path} is an AnimateDiff pipeline folder: its U-Net already has motion "
                                      "modules; drop --motion-adapter (or point --checkpoint at an SD-1.5 folder)")
            parts = {"motion_unet": UNetMotionModel.from_pretrained(str(unet_dir)), **_components(path)}
            source["layout"] = "AnimateDiffPipeline folder"
        elif kind == "UNet2DConditionModel":
            unet2d = UNet2DConditionModel.from_pretrained(str(unet_dir))
            parts = {"motion_unet": _motion_unet(unet2d, motion_adapter, str(path)), **_components(path)}
            source["layout"] = "SD-1.5 folder + motion adapter"
        else:
            raise CheckpointError(f"{path}: no unet/config.json naming UNetMotionModel or UNet2DConditionModel; this "
                                  "is not a diffusers SD-1.5 or AnimateDiff folder")
        return parts, source
    if not path.is_file():
        raise _missing(path, "checkpoint")
    if path.suffix not in (".safetensors", ".ckpt"):
        raise CheckpointError(f"{path}: a single-file checkpoint must be .safetensors (or .ckpt)")
    return _single_file(path, motion_adapter, source)


def _single_file(path: Path, motion_adapter: str | Path | None, source: dict[str, Any]) -> tuple[dict, dict]:
    """A community single-file SD-1.5 checkpoint, with the configs and tokenizer of the local SD-1.5 folder."""
    from diffusers import StableDiffusionPipeline

    if not (SD15_DIR / "model_index.json").is_file():
        raise CheckpointError(f"a single-file checkpoint needs the SD-1.5 configs and tokenizer from {SD15_DIR}/ "
                              "(fifo-gen download --model animatediff fetches them), since the file holds weights only")
    try:
        pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(SD15_DIR), local_files_only=True,
                                                        safety_checker=None, requires_safety_checker=False)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: one actionable message
        raise CheckpointError(f"{path}: could not read it as a single-file SD-1.5 checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None
    parts = {"motion_unet": _motion_unet(pipe.unet, motion_adapter, str(path)), "vae": pipe.vae,
             "text_encoder": pipe.text_encoder, "tokenizer": pipe.tokenizer,
             "scheduler_config": dict(pipe.scheduler.config)}
    source["layout"] = "single-file SD-1.5 + motion adapter"
    return parts, source


def load_animatediff(config: str = "animatediff", checkpoint: str | Path | None = None,
                     motion_adapter: str | Path | None = None) -> AnimateDiff:
    """The backend on the CPU in float32 (the caller moves it and sets dtypes)."""
    from diffusers import UNetMotionModel

    cfg = preset_config(config)
    if checkpoint is None and config == "tiny_animatediff":
        from .tiny import tiny_components

        c = tiny_components()
        motion = UNetMotionModel.from_unet2d(c["unet"], c["motion_adapter"])
        parts = {"motion_unet": motion, "vae": c["vae"], "text_encoder": c["text_encoder"],
                 "tokenizer": c["tokenizer"], "scheduler_config": dict(c["scheduler"].config)}
        source: dict[str, Any] = {"checkpoint": None, "layout": "tiny_animatediff recipe (seeded random weights)"}
    elif checkpoint is None:  # what `fifo-gen download --model animatediff` fetched
        if not (SD15_DIR / "unet").is_dir():
            raise CheckpointError(f"--config {config} needs weights: pass --checkpoint DIR (a diffusers AnimateDiff or "
                                  "SD-1.5 folder, the latter with --motion-adapter), or run `fifo-gen download --model "
                                  f"animatediff` (into {DEFAULT_DIR}/). (`--config tiny_animatediff` needs none.)")
        parts, source = load_components(SD15_DIR, motion_adapter or ADAPTER_DIR)
    else:
        parts, source = load_components(checkpoint, motion_adapter)
    if config == "animatediff":
        size = int(parts["motion_unet"].config.sample_size)
        cfg.latent_size = (size, size)
    try:
        return AnimateDiff(cfg, parts["motion_unet"], parts["vae"], parts["text_encoder"], parts["tokenizer"],
                           parts["scheduler_config"], source)
    except ValueError as e:
        raise CheckpointError(f"{checkpoint}: {e}") from None

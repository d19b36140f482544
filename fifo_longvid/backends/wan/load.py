"""Reading Wan weights: diffusers ``WanPipeline`` folders (Wan2.1, Wan2.2-TI2V-5B, Wan2.2-T2V-A14B's two experts),
``SkyReelsV2DiffusionForcingPipeline`` folders, and the tiny preset.

The layouts are told apart by their configs (``variants.py``, never by the path); any other pipeline
(image-to-video with extra channels or CLIP tokens...) is refused with what was found and what works. Every
component is read by its diffusers / transformers class's ``from_pretrained`` from safetensors
(``use_safetensors=True``: no pickle is executed). ``accelerate`` is needed because the transformer keeps some
modules in float32 when loading.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..base import CheckpointError
from ..hub import quiet_loading
from .download import HUB_REPOS
from .model import Wan, WanConfig
from .tiny import write_tiny_folder
from .variants import RELEASE_DEFAULTS, WanVariant, variant_of

__all__ = ["DEFAULT_DIR", "HUB_REPOS", "PRESETS", "is_wan", "load_wan", "pipeline_kind", "preset_config",
           "read_variant", "write_tiny_folder"]

PRESETS = ("wan", "tiny_wan")
DEFAULT_DIR = Path("checkpoints") / "wan"
PIPELINES = {"WanPipeline": "wan", "SkyReelsV2DiffusionForcingPipeline": "skyreels-df"}
TRANSFORMERS = {"wan": "WanTransformer3DModel", "skyreels-df": "SkyReelsV2Transformer3DModel"}


def is_wan(config: Any) -> bool:
    return isinstance(config, (str, Path)) and str(config) in PRESETS


def preset_config(name: str) -> WanConfig:
    if name == "tiny_wan":
        return WanConfig(name=name, latent_size=(4, 4), default_window=4, default_partitions=2, default_num_frames=21)
    if name != "wan":
        raise ValueError(f"unknown Wan preset {name!r}; one of {', '.join(PRESETS)}")
    return WanConfig(name=name)


def _advice() -> str:
    expected = " or ".join(PIPELINES)
    return (f"pass --checkpoint with a diffusers {expected} folder; `fifo-gen download --model wan` fetches "
            f"{HUB_REPOS['wan']} and `--model skyreels-df` {HUB_REPOS['skyreels-df']} (into {DEFAULT_DIR}/; "
            "`fifo-gen download --list` shows the Wan2.2 models). (`--config tiny_wan` needs no weights.)")


def read_variant(folder: str | Path) -> WanVariant:
    """The folder's :class:`~.variants.WanVariant` from its configs; a CheckpointError for anything else."""
    return variant_of(folder, _advice())


def pipeline_kind(folder: str | Path) -> str:
    """``"wan"`` or ``"skyreels-df"``: the transformer class the folder holds (a CheckpointError otherwise)."""
    return read_variant(folder).kind


def load_components(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(components for :class:`Wan`, a record of the source for the sidecar), in float32 on the CPU."""
    import diffusers
    from transformers import AutoTokenizer, UMT5EncoderModel

    folder = Path(folder)
    variant = read_variant(folder)
    kind = variant.kind
    experts = ("transformer", "transformer_2")[:variant.experts]
    for sub in (*experts, "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (folder / sub).is_dir():
            raise CheckpointError(f"{folder} has no {sub}/ folder: it is not a complete diffusers pipeline folder")
    tr_cls = getattr(diffusers, TRANSFORMERS[kind])
    try:
        with quiet_loading():  # diffusers' own error line would come before ours
            parts = {**{e: tr_cls.from_pretrained(str(folder / e), use_safetensors=True) for e in experts},
                     "vae": diffusers.AutoencoderKLWan.from_pretrained(str(folder / "vae"), use_safetensors=True),
                     "text_encoder": UMT5EncoderModel.from_pretrained(str(folder / "text_encoder"),
                                                                      use_safetensors=True),
                     "tokenizer": AutoTokenizer.from_pretrained(str(folder / "tokenizer")),
                     "scheduler_config": json.loads((folder / "scheduler" / "scheduler_config.json").read_text())}
    except (OSError, ValueError, FileNotFoundError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{folder}: could not load the {kind} pipeline's components ({type(e).__name__}: "
                              f"{first})") from None
    source = {"checkpoint": str(folder), "layout": f"{variant.name} diffusers folder", "pipeline": variant.pipeline}
    parts["variant"] = variant
    return parts, source


def load_wan(name: str = "wan", checkpoint: str | Path | None = None) -> Wan:
    """The backend on the CPU in float32 (the caller moves it and sets dtypes, e.g. with ``Wan.cast``)."""
    cfg = preset_config(name)
    if checkpoint is None and name == "tiny_wan":
        from .tiny import tiny_components

        c = tiny_components("wan")
        parts = {k: c[k] for k in ("transformer", "vae", "text_encoder", "tokenizer")}
        parts["scheduler_config"] = dict(c["scheduler"].config)
        parts["variant"] = WanVariant("wan2.1", "wan", "WanPipeline")
        source: dict[str, Any] = {"checkpoint": None, "layout": "tiny_wan recipe (seeded random weights)",
                                  "pipeline": "WanPipeline"}
    elif checkpoint is None:
        if not (DEFAULT_DIR / "model_index.json").is_file():
            raise CheckpointError(f"--config {name} needs weights: pass --checkpoint DIR (a diffusers WanPipeline or "
                                  "SkyReelsV2DiffusionForcingPipeline folder), or run `fifo-gen download --model wan` "
                                  f"or `fifo-gen download --model skyreels-df` (into {DEFAULT_DIR}/). "
                                  "(`--config tiny_wan` needs none.)")
        parts, source = load_components(DEFAULT_DIR)
    else:
        parts, source = load_components(checkpoint)
    if name == "wan":  # a full-size release's own defaults (frame, length, window, guidance)
        for key, value in RELEASE_DEFAULTS.get(parts["variant"].name, {}).items():
            setattr(cfg, key, value)
    parts["scheduler_config"] = {k: v for k, v in parts["scheduler_config"].items() if k != "_diffusers_version"}
    try:
        return Wan(cfg, parts["transformer"], parts["vae"], parts["text_encoder"], parts["tokenizer"],
                   parts["scheduler_config"], source, variant=parts["variant"],
                   transformer_2=parts.get("transformer_2")).eval().requires_grad_(False)
    except ValueError as e:
        raise CheckpointError(f"{checkpoint}: {e}") from None

"""Building the model and loading checkpoints safely.

Checkpoints are read without executing pickled code (``torch.load(weights_only=True)`` or
safetensors), memory-mapped where possible, and checked key by key against the architecture with a
readable report instead of a traceback.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from ..base import CheckpointError
from .presets import RECIPE_PRESETS, SHIPPED_PRESETS, load_model_config
from .recipe import recipe_for_model
from .videocrafter import ModelConfig, VideoCrafter

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")


def _read_torch(path: Path) -> Mapping[str, object]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):  # legacy (non-zip) files cannot be memory-mapped; retry plainly
            raise
    return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Return the flat state dict of a .ckpt/.pt (Lightning, DeepSpeed or bare) or .safetensors file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint not found: {path}\n"
            "  Download VideoCrafter2 with `fifo-gen download` (it lands in checkpoints/videocrafter2/), "
            "or pass --checkpoint PATH. The `tiny` config runs without any checkpoint."
        )
    if path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is a directory; point at the model.ckpt inside it")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Mapping[str, object] = load_file(str(path))
        else:
            raw = _read_torch(path)
    except Exception as e:  # noqa: BLE001 - classified below into actionable messages
        first = (str(e).splitlines() or [""])[0]
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in str(e):
            detail = next((m for m in str(e).splitlines() if "Unsupported global" in m), first)
            raise CheckpointError(
                f"refusing to load {path}: it contains pickled Python objects, not only tensors "
                f"({detail.strip()}).\n  Loading it would execute code from the file. If it comes from a "
                "source you trust, convert it to safetensors in an isolated environment; otherwise delete it."
            ) from None
        corrupt = (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError)
        if isinstance(e, corrupt) or type(e).__name__ == "SafetensorError":
            raise CheckpointError(
                f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {first}).\n"
                f"  Its size is {path.stat().st_size:,} bytes; re-download it (`fifo-gen download` resumes) "
                "or re-convert it."
            ) from None
        raise
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a state dict")
    if "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        raw = raw["state_dict"]
    elif "module" in raw and isinstance(raw["module"], Mapping):  # DeepSpeed: keys prefixed _forward_module.
        raw = {k.removeprefix("_forward_module."): v for k, v in raw["module"].items()}
    sd = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"{path} contains no tensors (top-level keys: {list(raw)[:8]})")
    return sd


def _architecture_hint(model_keys: set[str], ckpt_keys: set[str], mismatched: list[str]) -> str:
    if not any(k.startswith("model.diffusion_model.") for k in ckpt_keys):
        return ("it does not look like a VideoCrafter checkpoint at all (no model.diffusion_model.* keys); "
                "check that you passed the right file")
    if any(k.startswith(("image_proj_model.", "embedder.")) for k in ckpt_keys - model_keys):
        return ("this looks like a VideoCrafter1 image-to-video checkpoint (it has image_proj_model/embedder "
                "weights); load it with --config videocrafter1_i2v")
    if any(k.startswith(("image_proj_model.", "embedder.")) for k in model_keys - ckpt_keys):
        return ("this is a text-to-video checkpoint (no image encoder weights) but the config is an I2V model; "
                "load it with --config videocrafter2")
    if mismatched:
        return ("the layer names match but the sizes do not: this is a checkpoint for another model size; "
                "pick the --config that matches it (e.g. videocrafter2 for the released model.ckpt)")
    return "the checkpoint and the --config describe different architectures"


def check_state_dict(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise a CheckpointError with a short report unless ``sd`` fits ``model`` exactly."""
    expected = model.state_dict()
    model_keys, ckpt_keys = set(expected), set(sd)
    missing = sorted(model_keys - ckpt_keys)
    unexpected = sorted(ckpt_keys - model_keys)
    mismatched = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(model_keys & ckpt_keys)
        if tuple(sd[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return

    def few(items: list[str]) -> str:
        shown = "\n      ".join(items[:5])
        return shown + (f"\n      ... and {len(items) - 5} more" if len(items) > 5 else "")

    lines = [f"{source} does not match the model architecture:"]
    if missing:
        lines.append(f"  missing {len(missing)} keys:\n      {few(missing)}")
    if unexpected:
        lines.append(f"  unexpected {len(unexpected)} keys:\n      {few(unexpected)}")
    if mismatched:
        lines.append(f"  {len(mismatched)} shape mismatches:\n      {few(mismatched)}")
    lines.append("  hint: " + _architecture_hint(model_keys, ckpt_keys, mismatched))
    raise CheckpointError("\n".join(lines))


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}; choose fp32, fp16 or bf16")
        dtype = names[dtype]
    return dtype  # half precision also runs on the CPU (slowly): that is how it is tested without a GPU


def _materialize_meta_buffers(model: torch.nn.Module) -> None:
    """Non-persistent buffers are not in a checkpoint; after a meta-device build, recompute them."""
    from .image import CLIP_MEAN, CLIP_STD
    from .text import causal_mask

    for mod_name, mod in model.named_modules():
        for name, buf in list(mod._buffers.items()):
            if buf is None or not buf.is_meta:
                continue
            if name == "attn_mask":
                mod._buffers[name] = causal_mask(buf.shape[-1])
            elif name in ("mean", "std"):
                mod._buffers[name] = torch.tensor(CLIP_MEAN if name == "mean" else CLIP_STD)
            else:
                raise RuntimeError(f"buffer {mod_name}.{name} was not in the checkpoint and cannot be rebuilt")


def build_model(cfg: ModelConfig, device: str | torch.device = "cpu") -> VideoCrafter:
    """Instantiate (randomly initialised) on ``device``; use device='meta' for a shape-only model."""
    with torch.device(device):
        return VideoCrafter(cfg)


def load_model(
    config: str | Path | ModelConfig = "videocrafter2",
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> VideoCrafter:
    """Build a model from a preset/YAML and load its weights, ready for inference.

    Without a checkpoint, presets with a weight recipe (``tiny``) get their seeded test weights, ``toy`` its
    packaged trained weights;
    other configs need a checkpoint.
    """
    cfg = load_model_config(config)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if checkpoint is None and cfg.name in SHIPPED_PRESETS:
        from .shipped import load_shipped  # imports this module

        model = load_shipped(cfg)
    elif checkpoint is None:
        if cfg.name not in RECIPE_PRESETS:
            raise CheckpointError(
                f"config {cfg.name!r} needs a checkpoint: pass --checkpoint PATH, or run `fifo-gen download"
                f"{'' if cfg.name == 'videocrafter2' else ' --model ' + cfg.name}` to fetch it into "
                f"checkpoints/{cfg.name}/. (The `toy`, `tiny` and `tiny_i2v` configs need none.)"
            )
        model = build_model(cfg, "cpu")
        model.load_state_dict({**model.state_dict(), **recipe_for_model(model, RECIPE_PRESETS[cfg.name])},
                              strict=True)
    else:
        sd = read_checkpoint(checkpoint)
        model = build_model(cfg, "meta")
        check_state_dict(model, sd, f"checkpoint {checkpoint}")
        model.load_state_dict(sd, strict=True, assign=True)
        _materialize_meta_buffers(model)
    set_inference_dtypes(model, dt)
    model = model.to(device=dev)
    return model.eval().requires_grad_(False)


def set_inference_dtypes(model: VideoCrafter, dtype: torch.dtype) -> None:
    """Mixed precision: the U-Net and the VAE run in ``dtype``; the rest stays float32.

    The schedule buffers are rebuilt from the config in float32, whatever the checkpoint stored: a
    half-precision copy (``convert --half``) rounds 1 - alpha_bar near the clean end by up to 7 %. The
    text and image encoders run in float32: they run once per prompt or image, so precision costs
    nothing, and their 24-32 layer residual streams are where fp16 overflows if anywhere.
    """
    for name, module in model.named_children():
        module.to(dtype if name in ("model", "first_stage_model") else torch.float32)
    model.reset_schedule_buffers()


def compile_unet(model: VideoCrafter, backend: str = "inductor") -> None:
    """``torch.compile`` the U-Net in place (hooks and attention processors are traced with it, so techniques
    keep working; changing them later recompiles). The VAE is left eager: it decodes one frame per output
    frame, under 1 % of an iteration's FLOPs for VideoCrafter2, so compiling it cannot pay for its warm-up."""
    model.unet.compile(backend=backend)

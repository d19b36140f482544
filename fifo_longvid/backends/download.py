"""``fifo-gen download``: fetch any family's weights from the Hugging Face Hub, with the same offline advice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

# AnimateDiff = an SD-1.5 base + a motion adapter (diffusers folders): only the files the backend reads
ANIMATEDIFF = {
    "sd15": ("stable-diffusion-v1-5/stable-diffusion-v1-5",
             ["model_index.json", "scheduler/*", "tokenizer/*", "text_encoder/config.json",
              "text_encoder/model.safetensors", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
              "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]),
    "motion_adapter": ("guoyww/animatediff-motion-adapter-v1-5-2",
                       ["config.json", "diffusion_pytorch_model.safetensors"]),
}
MODELS = ("videocrafter2", "videocrafter1_i2v", "animatediff", "wan", "skyreels-df")


def from_hub(what: str, manual: str, fetch: Callable[[Any], Any]) -> Any:
    """``fetch(huggingface_hub)``; any failure (not installed, offline, DNS, HTTP) becomes one RuntimeError that ends
    with ``manual``, the by-hand way to get ``what``."""
    try:
        import huggingface_hub
    except ImportError:
        raise RuntimeError(f"huggingface_hub is not installed; {manual}") from None
    try:
        return fetch(huggingface_hub)
    except Exception as e:  # noqa: BLE001 - offline, DNS, HTTP errors: all need the same advice
        raise RuntimeError(f"could not download {what} ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}).\n  Without network: {manual}") from None


def download(model: str, dest: str | Path = "checkpoints", log: Callable[[str], None] = print) -> Path:
    """Download ``model`` into ``dest/<model>/``; a RuntimeError says what to do by hand when offline."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; downloadable: {', '.join(MODELS)}")
    if model in ("wan", "skyreels-df"):
        from .wan.load import download_wan

        return download_wan(model, Path(dest) / "wan", log)
    if model != "animatediff":
        from .videocrafter.download import download_checkpoint

        return download_checkpoint(model, dest, log)
    target = Path(dest) / model
    for sub, (repo, patterns) in ANIMATEDIFF.items():
        folder = target / sub
        manual = (f"download the diffusers folder https://huggingface.co/{repo} (files {', '.join(patterns)}) by hand "
                  f"into {folder}/")
        log(f"fetching {repo} -> {folder} (resumes if interrupted)")
        from_hub(repo, manual, lambda hub, repo=repo, patterns=patterns, folder=folder: hub.snapshot_download(
            repo_id=repo, allow_patterns=patterns, local_dir=str(folder)))
    return target

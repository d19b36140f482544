"""``fifo-gen download --model animatediff``: an SD-1.5 base and a motion adapter (diffusers folders), only the files
the backend reads."""

from __future__ import annotations

from pathlib import Path

from ..hub import Log, fetch_folder

MODELS = ("animatediff",)
# --dest/animatediff/<sub>/: where load.py looks without --checkpoint (SD15_DIR, ADAPTER_DIR)
PARTS = {
    "sd15": ("stable-diffusion-v1-5/stable-diffusion-v1-5",
             ["model_index.json", "scheduler/*", "tokenizer/*", "text_encoder/config.json",
              "text_encoder/model.safetensors", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
              "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]),
    "motion_adapter": ("guoyww/animatediff-motion-adapter-v1-5-2",
                       ["config.json", "diffusion_pytorch_model.safetensors"]),
}


def download(model: str, dest: Path, log: Log) -> Path:
    """The family's ``Download.fetch``: both parts into ``dest/animatediff/``."""
    if model not in MODELS:
        raise ValueError(f"unknown AnimateDiff model {model!r}; downloadable: {', '.join(MODELS)}")
    target = Path(dest) / model
    for sub, (repo, patterns) in PARTS.items():
        fetch_folder(repo, patterns, target / sub, log)
    return target

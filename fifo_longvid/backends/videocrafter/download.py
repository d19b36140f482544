"""Fetching released checkpoints from the Hugging Face Hub (resumable, with progress)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..hub import from_hub

SOURCES = {
    "videocrafter2": ("VideoCrafter/VideoCrafter2", "model.ckpt"),
    "videocrafter1_i2v": ("VideoCrafter/Image2Video-512", "model.ckpt"),
}
MODELS = tuple(SOURCES)


def download_checkpoint(model: str, dest: str | Path = "checkpoints",
                        log: Callable[[str], None] = print) -> Path:
    """Download ``model``'s checkpoint into ``dest/<model>/``; explain what to do when offline."""
    if model not in SOURCES:
        raise ValueError(f"unknown model {model!r}; downloadable: {', '.join(SOURCES)}")
    repo, filename = SOURCES[model]
    target = Path(dest) / model
    target.mkdir(parents=True, exist_ok=True)
    final = target / filename
    if final.exists():
        log(f"{final} already present")
        return final
    manual = (f"download https://huggingface.co/{repo}/resolve/main/{filename} (about 5.5 GB) by hand and "
              f"put it at {final}, then pass --checkpoint {final} (or run from this folder: it is the default)")
    log(f"fetching {repo}/{filename} -> {final} (resumes if interrupted)")
    path = from_hub(f"{repo}/{filename}", manual,
                    lambda hub: hub.hf_hub_download(repo_id=repo, filename=filename, local_dir=str(target)))
    return Path(path)


def download(model: str, dest: Path, log: Callable[[str], None]) -> Path:
    """The family's ``Download.fetch``: the checkpoint file into ``dest/<model>/``."""
    return download_checkpoint(model, dest, log)

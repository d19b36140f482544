"""``fifo-gen download --model wan | skyreels-df``: a diffusers folder from the Hub, only the files Wan reads."""

from __future__ import annotations

from pathlib import Path

from ..hub import Log, fetch_folder

HUB_REPOS = {"wan": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "skyreels-df": "Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers"}
HUB_FILES = ["model_index.json", "scheduler/*", "tokenizer/*", "text_encoder/*.json", "text_encoder/*.safetensors",
             "transformer/*.json", "transformer/*.safetensors", "vae/*.json", "vae/*.safetensors"]
MODELS = tuple(HUB_REPOS)
SUBDIR = "wan"  # both land in --dest/wan/, the folder --config wan reads by default (load.DEFAULT_DIR)


def download_wan(kind: str, folder: str | Path, log: Log = print) -> Path:
    """Fetch ``kind`` (``"wan"`` or ``"skyreels-df"``) from the Hub into ``folder``; offline, a RuntimeError says
    what to download by hand."""
    if kind not in HUB_REPOS:
        raise ValueError(f"unknown Wan model {kind!r}; downloadable: {', '.join(HUB_REPOS)}")
    return fetch_folder(HUB_REPOS[kind], HUB_FILES, Path(folder), log)


def download(model: str, dest: Path, log: Log) -> Path:
    """The family's ``Download.fetch``: into ``dest/wan/``."""
    return download_wan(model, Path(dest) / SUBDIR, log)

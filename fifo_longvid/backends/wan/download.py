"""``fifo-gen download --model wan | skyreels-df | wan2.2-ti2v-5b | wan2.2-t2v-a14b``: a diffusers folder from the
Hub, only the files Wan reads."""

from __future__ import annotations

from pathlib import Path

from ..hub import Log, fetch_folder

HUB_REPOS = {"wan": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "skyreels-df": "Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers",
             "wan2.2-ti2v-5b": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
             "wan2.2-t2v-a14b": "Wan-AI/Wan2.2-T2V-A14B-Diffusers"}
HUB_FILES = ["model_index.json", "scheduler/*", "tokenizer/*", "text_encoder/*.json", "text_encoder/*.safetensors",
             "transformer/*.json", "transformer/*.safetensors", "transformer_2/*.json", "transformer_2/*.safetensors",
             "vae/*.json", "vae/*.safetensors"]
MODELS = tuple(HUB_REPOS)
SUBDIR = "wan"  # wan and skyreels-df land in --dest/wan/, the folder --config wan reads by default (load.DEFAULT_DIR)
# the Wan2.2 releases each get their own folder (pass it as --checkpoint); sizes on disk from the model cards
SUBDIRS = {"wan2.2-ti2v-5b": "wan2.2-ti2v-5b", "wan2.2-t2v-a14b": "wan2.2-t2v-a14b"}


def subdir(kind: str) -> str:
    """The folder under ``--dest`` that ``kind`` lands in."""
    return SUBDIRS.get(kind, SUBDIR)


def download_wan(kind: str, folder: str | Path, log: Log = print) -> Path:
    """Fetch ``kind`` (one of ``MODELS``) from the Hub into ``folder``; offline, a RuntimeError says what to
    download by hand."""
    if kind not in HUB_REPOS:
        raise ValueError(f"unknown Wan model {kind!r}; downloadable: {', '.join(HUB_REPOS)}")
    return fetch_folder(HUB_REPOS[kind], HUB_FILES, Path(folder), log)


def download(model: str, dest: Path, log: Log) -> Path:
    """The family's ``Download.fetch``: into ``dest/wan/`` (Wan2.1, SkyReels) or ``dest/<model>/`` (Wan2.2)."""
    return download_wan(model, Path(dest) / subdir(model), log)

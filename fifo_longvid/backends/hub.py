"""The Hugging Face Hub and diffusers folders, below every family: downloads, quiet loading, ``model_index.json``.

Each family says what ``fifo-gen download --model NAME`` fetches for it with one :class:`Download` (its
``Family.download``); the fetch itself goes through :func:`from_hub`, so every family gives the same offline
advice. :func:`quiet_loading` is the one way a family silences diffusers and transformers while it reads weights.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import CheckpointError

Log = Callable[[str], None]


@dataclass(frozen=True)
class Download:
    """What ``fifo-gen download`` offers for one family: the ``--model`` names, and how to fetch one of them."""

    models: tuple[str, ...]
    fetch: Callable[[str, Path, Log], Path]  # (model, --dest, log) -> where the weights landed (under --dest)


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


def fetch_folder(repo: str, patterns: list[str], folder: Path, log: Log) -> Path:
    """The files of ``repo`` matching ``patterns`` into ``folder`` (resumable), with the by-hand way when offline."""
    manual = (f"download the diffusers folder https://huggingface.co/{repo} (files {', '.join(patterns)}) by hand "
              f"into {folder}/")
    log(f"fetching {repo} -> {folder} (resumes if interrupted)")
    from_hub(repo, manual, lambda hub: hub.snapshot_download(repo_id=repo, allow_patterns=patterns,
                                                             local_dir=str(folder)))
    return folder


def class_name(path: Path) -> str | None:
    """The ``_class_name`` of a diffusers ``model_index.json`` / ``config.json`` (None without one); a
    CheckpointError says what is wrong with a file that is not JSON, or is JSON of another shape."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); re-download the folder") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is JSON but not an object with _class_name (it holds a "
                              f"{type(data).__name__}); re-download the folder")
    name = data.get("_class_name")
    return name if isinstance(name, str) else None


def part_config(folder: str | Path | None, part: str) -> dict[str, Any] | None:
    """``<folder>/<part>/config.json`` as a dict (no weights read), or None when there is none or it is unreadable:
    a family states its sizes from it before loading, and loading reports what is wrong with the folder."""
    if folder is None or not (Path(folder) / part / "config.json").is_file():
        return None
    try:
        cfg = json.loads((Path(folder) / part / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


@contextmanager
def quiet_loading() -> Iterator[None]:
    """diffusers' and transformers' log lines and progress bars are not the user's business while weights load.

    Errors are silenced too: every failure of a load raises, and the family turns the exception into one
    CheckpointError that says what to do, which would otherwise follow diffusers' own "An error occurred while
    trying to fetch ..." line.
    """
    import logging

    from diffusers.utils import logging as d_log
    from transformers.utils import logging as t_log

    levels = d_log.get_verbosity(), t_log.get_verbosity()
    bars = d_log.is_progress_bar_enabled(), t_log.is_progress_bar_enabled()
    d_log.set_verbosity(logging.CRITICAL)
    t_log.set_verbosity(logging.CRITICAL)
    d_log.disable_progress_bar()
    t_log.disable_progress_bar()
    try:
        yield
    finally:
        d_log.set_verbosity(levels[0])
        t_log.set_verbosity(levels[1])
        if bars[0]:
            d_log.enable_progress_bar()
        if bars[1]:
            t_log.enable_progress_bar()

"""Metadata written next to every output: enough to reproduce it (config, seed, weights, versions)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .atomic import temp_path


def sidecar_path(output: str | Path) -> Path:
    """fox.mp4 -> fox.json; a PNG folder out/ -> out.json."""
    p = Path(output)
    return p.with_suffix(".json") if p.suffix else p.parent / (p.name + ".json")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write via a temp file in the same folder + fsync + rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("fifo_longvid", "torch", "open_clip_torch", "imageio", "imageio-ffmpeg", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def file_sha256(path: str | Path, cache: bool = True) -> str:
    """sha256 of a (large) file, cached in ``<file>.sha256`` keyed by size and mtime."""
    path = Path(path)
    st = path.stat()
    stamp = f"{st.st_size}:{st.st_mtime_ns}"
    cache_file = path.with_name(path.name + ".sha256")
    if cache and cache_file.exists():
        try:
            cached_stamp, digest = cache_file.read_text().split()
            if cached_stamp == stamp:
                return digest
        except ValueError:
            pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    digest = h.hexdigest()
    if cache:
        try:
            cache_file.write_text(f"{stamp} {digest}\n")
        except OSError:
            pass
    return digest

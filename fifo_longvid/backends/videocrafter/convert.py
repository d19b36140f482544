"""Checkpoint conversion to safetensors (no pickle at load time, memory-mappable, optionally fp16)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .weights import read_checkpoint


def convert_checkpoint(src: str | Path, dst: str | Path, half: bool = False, overwrite: bool = False) -> Path:
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        raise ValueError(f"output must end in .safetensors, got {dst.name}")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass --overwrite or choose another name")
    sd = read_checkpoint(src)
    if half:  # weights only: the schedule buffers (top-level keys) keep their precision
        sd = {k: (v.half() if v.is_floating_point() and "." in k else v) for k, v in sd.items()}
    sd = {k: v.contiguous() for k, v in sd.items()}
    from safetensors.torch import save_file

    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        save_file(sd, tmp, metadata={"converted_by": "fifo_longvid", "dtype": "fp16" if half else "native"})
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dst

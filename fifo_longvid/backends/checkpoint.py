"""Reading a checkpoint file safely, for any family: no pickled code runs, and every failure reads as advice.

Files are read with ``torch.load(weights_only=True)`` (memory-mapped where possible) or safetensors; a file
that holds pickled Python objects is refused, a truncated one is reported with its size.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from .base import CheckpointError

NOT_FOUND_ADVICE = "pass --checkpoint PATH, or fetch the weights with `fifo-gen download`."


def _read_torch(path: Path) -> Mapping[str, object]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):  # legacy (non-zip) files cannot be memory-mapped; retry plainly
            raise
    return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | Path, not_found: str = NOT_FOUND_ADVICE) -> dict[str, torch.Tensor]:
    """The flat state dict of a .ckpt/.pt (Lightning, DeepSpeed or bare) or .safetensors file; ``not_found`` is
    the family's advice when the file does not exist."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}\n  {not_found}")
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

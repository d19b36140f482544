"""Model families behind one seam (``base.py``), side by side: ``videocrafter/``, ``animatediff/`` and ``wan/``.

``FAMILIES`` is the one registry (``family.py``): a run asks it which family a ``--config`` belongs to once, where
its config is resolved (``run/resolve.py``), and carries the answer; nothing else in the package branches on a
family's name. ``fifo/``, ``diffusion/`` and ``techniques/`` import no family.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .animatediff.family import FAMILY as ANIMATEDIFF
from .base import Backend, CheckpointError
from .family import Family
from .videocrafter.family import FAMILY as VIDEOCRAFTER
from .wan.family import FAMILY as WAN

__all__ = ["FAMILIES", "Backend", "CheckpointError", "Family", "compile_unet", "convert_checkpoint", "costs_for",
           "download", "downloadable", "family_for", "load_backend", "weights_id"]

# in the order they are asked; VideoCrafter last: it takes any YAML path and reports unknown names
FAMILIES: tuple[Family, ...] = (ANIMATEDIFF, WAN, VIDEOCRAFTER)


def family_for(config: Any, checkpoint: str | Path | None = None) -> Family:
    """The family whose ``matches`` claims this ``--config`` (and ``--checkpoint``)."""
    return next(f for f in FAMILIES if f.matches(config, checkpoint))


def downloadable() -> list[str]:
    """Every ``fifo-gen download --model`` name, family by family."""
    return [m for f in FAMILIES if f.download is not None for m in f.download.models]


def download(model: str, dest: str | Path = "checkpoints", log: Callable[[str], None] = print) -> Path:
    """``fifo-gen download``: the family that offers ``model`` fetches it under ``dest``; offline, a RuntimeError
    says what to download by hand."""
    for f in FAMILIES:
        if f.download is not None and model in f.download.models:
            return f.download.fetch(model, Path(dest), log)
    raise ValueError(f"unknown model {model!r}; downloadable: {', '.join(downloadable())}")


def convert_checkpoint(src: str | Path, dst: str | Path, half: bool = False, overwrite: bool = False) -> Path:
    """``fifo-gen convert``: a VideoCrafter-style .ckpt/.pt -> safetensors (``videocrafter/convert.py``)."""
    from .videocrafter.convert import convert_checkpoint as convert

    return convert(src, dst, half=half, overwrite=overwrite)


def compile_unet(model: Any, backend: str = "inductor") -> None:
    """``torch.compile`` a backend's network in place (its hooks and attention processors are traced with it, so
    techniques keep working). The VAE stays eager: one decode per output frame is a small share of the work."""
    model.unet.compile(backend=backend)


def costs_for(config: Any, release: str = "") -> Any:
    """The measured cost table of a ``--config`` preset, or of one release of it (``Sizes.release``, e.g. a Wan2.2
    folder under ``--config wan``) (``backends/costs.py``; None: not measured)."""
    return family_for(config).costs(config, release)


def load_backend(config: Any = "videocrafter2", checkpoint: str | Path | None = None,
                 device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                 motion_adapter: str | Path | None = None, loras: Any = ()) -> Any:
    """Build and load the model of ``--config``, ready for inference on ``device`` in ``dtype``; ``loras``:
    objects with ``path``, ``scale`` and ``target`` (``run.config.LoraConfig``; ``backends/lora.py``)."""
    return family_for(config, checkpoint).load(config, checkpoint, device, dtype, motion_adapter, loras=loras)


def weights_id(checkpoint: str | Path | None, motion_adapter: str | Path | None, recipe: str) -> str:
    """The weights' identity for hashes and sidecars: sha256 of the file, of a folder's files, or the recipe."""
    from ..io.sidecar import file_sha256

    if checkpoint is None and motion_adapter is None:
        return f"recipe:{recipe}"

    def one(p: str | Path) -> str:
        p = Path(p)
        if not p.is_dir():
            return file_sha256(p)
        import hashlib

        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file() and q.suffix != ".sha256"):
            h.update(f"{f.relative_to(p).as_posix()}:{file_sha256(f)}\n".encode())
        return h.hexdigest()

    parts = [one(checkpoint) if checkpoint is not None else f"recipe:{recipe}"]
    if motion_adapter is not None:
        parts.append(one(motion_adapter))
    return "sha256:" + "+".join(parts)

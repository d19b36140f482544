"""Samples per U-Net call (``--max-batch``) for a loaded model, and the bytes the techniques' stores reserve.

Shared by ``generate`` and the worker ranks of a distributed run (``parallel.serve_run``), which must size their
U-Net calls exactly as rank 0 does. The run's other sizes are resolved before loading (``run/resolve.py``).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .autobatch import BatchChoice, cpu_rule, cuda_rule
from .costs import FamilyCosts, store_bytes_at_largest


def parse_max_batch(spec: str | int | None) -> int | None | str:
    """``auto`` | ``all``/``none`` (None: no limit) | a positive integer."""
    if spec is None or str(spec) in ("all", "none"):
        return None
    if str(spec) == "auto":
        return "auto"
    try:
        n = int(spec)
    except ValueError:
        raise ConfigError(f"--max-batch must be 'auto', 'all' or a positive integer, got {spec!r}") from None
    if n < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {n}")
    return n


def resolve_max_batch(spec: str | int | None, device: torch.device, model: Any,
                      latent_hw: tuple[int, int], frames: int) -> int | None:
    """Samples per U-Net call of one rank's slice in a multi-process run. ``auto``: everything on CPU; on CUDA
    the rule of ``autobatch.cuda_rule`` at the model's context length, the same on every rank (no free-memory
    reading)."""
    spec = parse_max_batch(spec)
    if spec != "auto":
        return spec  # type: ignore[return-value]
    if device.type != "cuda":
        return None
    ctx = torch.zeros(1, *model.context_shape, device=device)
    return cuda_rule(model.unet, model.cfg.channels, 1 << 30, frames, latent_hw, ctx).value


def choose_max_batch(spec: str | int | None, model: Any, latent_hw: tuple[int, int], frames: int,
                     context: torch.Tensor, rows: int, reserve_bytes: int = 0) -> BatchChoice:
    """``--max-batch`` for a single-process run: a fixed value, or ``auto``'s rule for this run's shapes,
    context length and installed techniques (``fifo/autobatch.py``): never a timing or free memory.
    ``reserve_bytes``: the techniques' stores at their largest (``store_reserve``), kept free on CUDA."""
    parsed = parse_max_batch(spec)
    if parsed != "auto":
        return BatchChoice(parsed, f"--max-batch {spec}")  # type: ignore[arg-type]
    if model.device.type == "cuda":
        return cuda_rule(model.unet, model.cfg.channels, rows, frames, latent_hw, context.to(model.device),
                         reserve_bytes)
    return cpu_rule(model.model_channels, rows, frames, latent_hw)


def store_reserve(techniques: list[str], costs: FamilyCosts | None, latent_hw: tuple[int, int], queue_frames: int,
                  dtype: torch.dtype) -> int:
    """Bytes the techniques' per-frame stores reach once every queued frame holds an entry (``fifo/costs.py``;
    0 for models without a cost table, e.g. the CPU test models, and with no technique on)."""
    if costs is None or not techniques:
        return 0
    return int(store_bytes_at_largest(costs, techniques, latent_hw, queue_frames, dtype))

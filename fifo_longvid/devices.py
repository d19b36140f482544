"""Concrete devices: ``torch.device("cuda") != torch.device("cuda:0")``, while every tensor reports the latter.

A device that a user or a config names without an index is resolved once to the one tensors will report, so
comparisons between a run's tables and its tensors hold on any card.
"""

from __future__ import annotations

import torch


def resolve_device(device: torch.device | str) -> torch.device:
    """``device`` with its index filled in (the current CUDA device, or 0 where CUDA cannot be asked)."""
    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        index = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return torch.device("cuda", index)
    return d


def same_device(a: torch.device | str, b: torch.device | str) -> bool:
    return resolve_device(a) == resolve_device(b)


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device`` without blocking the host: a copy from pageable CPU memory to a GPU waits until the
    GPU has drained its queue, one from pinned memory does not (pinned blocks come from a caching allocator)."""
    d = torch.device(device)
    if d.type != "cuda" or t.device.type != "cpu":
        return t.to(d)
    return t.pin_memory().to(d, non_blocking=True)


def index_tensor(values: list[int] | tuple[int, ...], device: torch.device | str) -> torch.Tensor:
    """A long index tensor built on the host (from Python bookkeeping) and sent without a host sync."""
    return to_device(torch.tensor(values, dtype=torch.long), device)

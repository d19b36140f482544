"""``FakeCuda``: the fake mode, the dispatch mode above it, and stand-ins for what ``torch.cuda`` answers."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode, unset_fake_temporarily

from .mode import HostMode, flash_sdpa, repo_code

GIB = 2**30


def _replace_apply(self: torch.nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True,
                   memo: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.nn.Module:
    """``Module._apply`` that replaces parameters instead of swapping them: torch 2.14's ``swap_tensors`` fails on
    fake parameters (the fake converter's weakref memo), so ``.to``/``.half``/``.to_empty`` would all raise. A
    parameter two modules share (UMT5's tied token embedding) is converted once and stays shared, as torch's own
    in-place ``.to`` keeps it."""
    memo = {} if memo is None else memo
    if recurse:
        for child in self.children():
            _replace_apply(child, fn, memo=memo)
    for name, p in self._parameters.items():
        if p is None:
            continue
        if id(p) not in memo:
            new = fn(p)
            memo[id(p)] = (p, p if new is p else torch.nn.Parameter(new, requires_grad=p.requires_grad))  # p kept alive
        self._parameters[name] = memo[id(p)][1]
    for name, b in self._buffers.items():
        if b is not None:
            self._buffers[name] = fn(b)
    return self


def _from_repo() -> bool:
    """Whether the caller of the stand-in is this repository's code (torch's own calls must see no CUDA)."""
    return repo_code(sys._getframe(2).f_code.co_filename)


class FakeCuda:
    """``with FakeCuda(total_gib=80) as fc:`` -- device ``cuda`` works without a driver; ``fc.syncs`` lists the
    host syncs, ``fc.memory`` the live and peak device bytes; ``fc.checkpoint(path, sd)`` makes ``torch.load``
    of ``path`` return ``sd`` (a full-size checkpoint without its data)."""

    def __init__(self, total_gib: float = 80.0, name: str = "fake CUDA card"):
        self.total_bytes = int(total_gib * GIB)
        self.name = name
        self.fake = FakeTensorMode(allow_non_fake_inputs=True)
        self.host = HostMode()
        self._saved: list[tuple[Any, str, Any]] = []
        self._checkpoints: dict[str, dict[str, torch.Tensor]] = {}
        self.load_syncs: list = []  # syncs while the model was loaded (kept apart by the tests)

    @property
    def syncs(self) -> list:
        return self.host.syncs

    @property
    def memory(self) -> Any:
        return self.host.memory

    def checkpoint(self, path: str | Path, state: dict[str, torch.Tensor]) -> None:
        self._checkpoints[str(Path(path).resolve())] = state

    def fake_cpu(self, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A fake CPU tensor shaped like ``like``: checkpoint contents without the gigabytes."""
        with self.host.passthrough():
            return torch.empty(like.shape, dtype=dtype or like.dtype, device="cpu")

    def _patch(self, owner: Any, name: str, value: Any) -> None:
        self._saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    def __enter__(self) -> FakeCuda:
        host, mem = self.host, self.host.memory
        real_load, real_save, real_avail = torch.load, torch.save, torch.cuda.is_available

        def load(f: Any, *a: Any, **k: Any) -> Any:
            key = str(Path(f).resolve()) if isinstance(f, (str, Path)) else None
            if key in self._checkpoints:
                return dict(self._checkpoints[key])
            with unset_fake_temporarily():  # a state file on disk: real CPU tensors
                return real_load(f, *a, **k)

        def save(obj: Any, *a: Any, **k: Any) -> Any:
            with unset_fake_temporarily():
                return real_save(obj, *a, **k)

        cuda = torch.cuda
        self._patch(torch, "load", load)
        self._patch(torch, "save", save)
        # is_available: True for this repository's code only; the fake mode itself must not try to init CUDA
        self._patch(cuda, "is_available", lambda: _from_repo() or real_avail())
        self._patch(cuda, "device_count", lambda: 1)
        self._patch(cuda, "current_device", lambda: 0)
        self._patch(cuda, "set_device", lambda device: None)
        self._patch(cuda, "synchronize", lambda device=None: host.sync("synchronize"))
        self._patch(cuda, "reset_peak_memory_stats", lambda device=None: mem.reset_peak())
        self._patch(cuda, "memory_allocated", lambda device=None: mem.current)
        self._patch(cuda, "max_memory_allocated", lambda device=None: mem.peak)
        self._patch(cuda, "get_device_properties", lambda device=None: types.SimpleNamespace(
            name=self.name, total_memory=self.total_bytes, major=9, minor=0, multi_processor_count=132))
        self._patch(cuda, "get_device_name", lambda device=None: self.name)
        self._patch(cuda, "set_sync_debug_mode", lambda mode: None)
        self._patch(cuda, "empty_cache", lambda: None)
        self._patch(torch.nn.Module, "_apply", _replace_apply)
        self._patch(F, "scaled_dot_product_attention", flash_sdpa(F.scaled_dot_product_attention))
        self.fake.__enter__()
        self.host.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.host.__exit__(*exc)
            self.fake.__exit__(*exc)
        finally:
            for owner, name, value in reversed(self._saved):
                setattr(owner, name, value)
            self._saved.clear()

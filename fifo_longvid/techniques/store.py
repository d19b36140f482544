"""One per-frame store shared by the acceleration techniques, keyed by permanent frame id.

Under FIFO every iteration gives every queued frame one denoising step, so "this frame's feature at its
previous step" is "its feature from the previous iteration". Keying entries by the frame id that
``FrameQueue`` carries makes them follow their frame through ``pop_push`` with no bookkeeping.

Two rules keep the store independent of how an iteration is cut into network calls (one batch, one
window at a time, ``--max-batch`` chunks):

* writes are *staged*: ``put`` is visible to ``get`` only after ``end_iteration``, so every call of an
  iteration reads the previous iteration's entries, whatever order the windows run in;
* with lookahead a frame sits in two windows; techniques only ``put`` from the window that commits it.

``end_iteration(first_id)`` then drops every frame that has left the queue (id below the queue's first
id). With lookahead an emitted frame stays f/2 more iterations in the queue as context and keeps its
entries until it leaves, so windows that still see it need not recompute it.

Entries live under a namespace (e.g. ``"tgate/<site>/cond"``); all values of a namespace have one shape.
``state_dict`` flattens everything into tensors for the ``--resume`` state file. Namespaces a technique
declares ``host`` (small per-frame bookkeeping it reads on the CPU) stay on the CPU when a state is loaded onto
the run's device, so their old and new entries never meet on two devices.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class FrameStore:
    def __init__(self) -> None:
        self._data: dict[str, dict[int, torch.Tensor]] = {}
        self._staged: dict[str, dict[int, torch.Tensor]] = {}
        self.host_namespaces: set[str] = set()

    def keep_on_host(self, ns: str) -> None:
        """Entries of ``ns`` are CPU tensors, also after ``load_state_dict`` onto another device."""
        self.host_namespaces.add(ns)

    # -- reading -------------------------------------------------------------------------------------
    def get(self, ns: str, frame_id: int) -> torch.Tensor | None:
        return self._data.get(ns, {}).get(int(frame_id))

    def has(self, ns: str, frame_ids: Iterable[int]) -> list[bool]:
        entries = self._data.get(ns, {})
        return [int(i) in entries for i in frame_ids]

    def gather(self, ns: str, frame_ids: Iterable[int]) -> torch.Tensor:
        """Entries of ``frame_ids`` stacked on a new dim 0 (KeyError naming the first missing id)."""
        entries = self._data.get(ns, {})
        ids = [int(i) for i in frame_ids]
        missing = [i for i in ids if i not in entries]
        if missing:
            raise KeyError(f"frame store {ns!r} has no entry for frame {missing[0]}")
        return torch.stack([entries[i] for i in ids])

    def ids(self, ns: str | None = None) -> set[int]:
        """Frame ids with a (committed) entry, in one namespace or in any."""
        spaces = [self._data.get(ns, {})] if ns is not None else list(self._data.values())
        return {i for d in spaces for i in d}

    def namespaces(self) -> list[str]:
        return sorted(self._data)

    # -- writing -------------------------------------------------------------------------------------
    def put(self, ns: str, frame_ids: Iterable[int], values: torch.Tensor) -> None:
        """Stage one entry per frame (``values`` row k belongs to the k-th id); visible after end_iteration."""
        ids = [int(i) for i in frame_ids]
        if len(ids) != values.shape[0]:
            raise ValueError(f"{len(ids)} frame ids for {values.shape[0]} values")
        staged = self._staged.setdefault(ns, {})
        for k, i in enumerate(ids):
            staged[i] = values[k].detach().clone()

    def end_iteration(self, first_id: int | None = None) -> None:
        """Publish the staged entries, then drop frames that left the queue (ids below ``first_id``)."""
        for ns, staged in self._staged.items():
            self._data.setdefault(ns, {}).update(staged)
        self._staged.clear()
        if first_id is not None:
            for entries in self._data.values():
                for i in [i for i in entries if i < first_id]:
                    del entries[i]
            for ns in [ns for ns, d in self._data.items() if not d]:
                del self._data[ns]

    def clear(self) -> None:
        self._data.clear()
        self._staged.clear()

    # -- persistence ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{ns}/ids`` and ``{ns}/values`` per namespace (committed entries only; call between iterations)."""
        if any(self._staged.values()):
            raise RuntimeError("frame store saved mid-iteration (staged entries pending); save after end_iteration")
        out: dict[str, torch.Tensor] = {}
        for ns, entries in sorted(self._data.items()):
            ids = sorted(entries)
            out[f"{ns}/ids"] = torch.tensor(ids, dtype=torch.long)
            out[f"{ns}/values"] = torch.stack([entries[i] for i in ids])
        return out

    def load_state_dict(self, sd: dict[str, torch.Tensor], device: torch.device | str | None = None) -> None:
        self.clear()
        for key in sd:
            if not key.endswith("/ids"):
                continue
            ns = key[: -len("/ids")]
            values = sd.get(f"{ns}/values")
            if values is None:
                raise ValueError(f"frame store state has ids but no values for {ns!r}")
            if ns in self.host_namespaces:
                values = values.cpu()
            elif device is not None:
                values = values.to(device)
            self._data[ns] = {int(i): values[k] for k, i in enumerate(sd[key].tolist())}

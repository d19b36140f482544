"""The step context: per-step facts that reach techniques without new ``forward()`` arguments.

A sampler publishes one ``StepContext`` around each denoiser call. It describes the rows of the
batch the network will see: the schedule index and permanent frame id of every frame, which frames
each row commits (lookahead windows keep only their back half), and, once the guidance wrapper has
laid out its branches, whether a row is the cond or the uncond pass. Wrappers that reshape the batch
(guidance, chunking, multi-process slicing) republish the matching rows, so a hook inside the U-Net
always reads a context whose rows are the rows of its own input.

Everything here is a device tensor built once per run or per iteration with no host sync. The sampler
also attaches ``host``: the same context on the CPU, built from the host-side tables it already has, for
techniques whose bookkeeping is host-side (a per-frame store keyed by frame id); reading it costs no sync.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace

import torch

from ..devices import to_device

COND, UNCOND = 0, 1


@dataclass(frozen=True)
class StepContext:
    phase: str  # "base" (the initial clip, or plain sampling) | "fifo"
    iteration: int  # FIFO iteration, or the base sampler's step number
    step_idx: torch.Tensor  # (N, F) long: DDIM schedule index of each frame of each row (0 = cleanest)
    frame_ids: torch.Tensor | None = None  # (N, F) long: permanent frame ids (FIFO)
    commit: torch.Tensor | None = None  # (N, F) bool: frames whose result this row's window keeps
    window: torch.Tensor | None = None  # (N,) long: window number of each row in this iteration
    branch: torch.Tensor | None = None  # (N,) long: COND / UNCOND, set by the guidance wrapper
    host: StepContext | None = None  # the same rows on the CPU (no device -> host copy needed)

    @property
    def rows(self) -> int:
        return int(self.step_idx.shape[0])

    def narrow(self, start: int, stop: int) -> StepContext:
        """The context of rows ``[start, stop)`` (a chunk, or one rank's slice)."""
        def cut(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[start:stop]

        return replace(self, step_idx=self.step_idx[start:stop], frame_ids=cut(self.frame_ids),
                       commit=cut(self.commit), window=cut(self.window), branch=cut(self.branch),
                       host=None if self.host is None else self.host.narrow(start, stop))

    def select(self, rows: torch.Tensor | list[int]) -> StepContext:
        """The context of the given rows (a list or CPU long tensor: callers decide rows on the host)."""
        host_rows = torch.as_tensor(rows, dtype=torch.long).cpu()
        dev_rows = to_device(host_rows, self.step_idx.device)

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.index_select(0, dev_rows)

        return replace(self, step_idx=pick(self.step_idx), frame_ids=pick(self.frame_ids),
                       commit=pick(self.commit), window=pick(self.window), branch=pick(self.branch),
                       host=None if self.host is None else self.host.select(host_rows))

    def interleave_branches(self) -> StepContext:
        """Rows laid out as the guidance wrapper runs them: [row0 cond, row0 uncond, row1 cond, ...]."""
        def twice(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.repeat_interleave(2, dim=0)

        branch = torch.arange(2 * self.rows, device=self.step_idx.device) % 2  # COND = 0, UNCOND = 1
        return replace(self, step_idx=twice(self.step_idx), frame_ids=twice(self.frame_ids),
                       commit=twice(self.commit), window=twice(self.window), branch=branch,
                       host=None if self.host is None else self.host.interleave_branches())

    def cond_only(self) -> StepContext:
        return self._branch(COND)

    def uncond_only(self) -> StepContext:
        return self._branch(UNCOND)

    def _branch(self, which: int) -> StepContext:
        branch = torch.full((self.rows,), which, dtype=torch.long, device=self.step_idx.device)
        return replace(self, branch=branch, host=None if self.host is None else self.host._branch(which))


_CURRENT: ContextVar[StepContext | None] = ContextVar("fifo_longvid_step_context", default=None)


def current() -> StepContext | None:
    """The context of the network call in progress, or None outside a sampler (e.g. a bare U-Net call)."""
    return _CURRENT.get()


@contextlib.contextmanager
def publish(ctx: StepContext | None) -> Iterator[StepContext | None]:
    """Make ``ctx`` the current context for the duration of the block (``None`` clears it)."""
    token = _CURRENT.set(ctx)
    try:
        yield ctx
    finally:
        _CURRENT.reset(token)


def rows_for(n: int) -> StepContext | None:
    """The current context if it describes exactly ``n`` rows, else None (a caller with its own layout)."""
    ctx = _CURRENT.get()
    return ctx if ctx is not None and ctx.rows == n else None

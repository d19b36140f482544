"""Stopping a long run cleanly when asked to: Ctrl-C (SIGINT) or a scheduler's SIGTERM.

SLURM sends SIGTERM at a time limit (``--signal``), on preemption and on ``scancel``, to every process of
the job. Both signals mean "stop soon": the FIFO loop finishes the current iteration, writes a playable
partial video and saves the state for ``--resume``; the process exits with 130. A second Ctrl-C stops at
once (the last ``--checkpoint-every`` state stays usable); repeated SIGTERMs do not escalate, because a
scheduler may deliver several (to every process, and again through torchrun), and it sends SIGKILL itself
when its grace period is over.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_INTERRUPTED = 130  # for SIGINT and SIGTERM alike: "stopped on request, resumable"


class StopFlag:
    """Set by the signal handler; the FIFO loop checks it between iterations."""

    requested = False
    signum: int | None = None


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def graceful_interrupt(flag: StopFlag | None = None) -> Iterator[StopFlag]:
    """First SIGINT/SIGTERM: finish the current iteration, then stop cleanly (resumable state).
    A second Ctrl-C interrupts at once (KeyboardInterrupt).

    ``flag``: a flag someone else may also set (the studio's Stop button, from another thread); in a worker
    thread no signal handler can be installed, so that flag is the only way to ask for the same clean stop."""
    flag = StopFlag() if flag is None else flag
    if not _main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested, flag.signum = True, signum

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Outside the FIFO loop (loading, base clip, between batch items), SIGTERM acts exactly as Ctrl-C does:
    it calls whatever SIGINT handler is current (by default: KeyboardInterrupt)."""
    if not _main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        h = signal.getsignal(signal.SIGINT)
        if callable(h):
            h(signum, frame)
        elif h != signal.SIG_IGN:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def ignore_stop_signals() -> Iterator[None]:
    """Worker ranks of a distributed run: rank 0 decides when to stop (it finishes the iteration, which needs
    the workers, saves the state, then releases them)."""
    if not _main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

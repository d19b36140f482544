"""Stopping a long run cleanly: the first signal asks the loop to stop after the current iteration."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class StopFlag:
    """Set by the signal handler; the FIFO loop checks it between iterations."""

    requested = False


@contextlib.contextmanager
def graceful_interrupt() -> Iterator[StopFlag]:
    """First Ctrl-C: finish the current iteration, then stop cleanly (resumable state).
    A second Ctrl-C interrupts at once."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)

"""Progress for the CLI: live bars on a terminal, plain log lines in a job file.

A SLURM job log is not a terminal: live bars would be printed once, at the end, cut to 80 columns. There,
progress is a line every 10 % (or every minute, whichever comes first) and a final line per task.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LABELS = {"fifo": "FIFO iterations"}  # other tasks print as named (the base clip names its sampler)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Bars:
    """Progress of the base clip and the FIFO iterations, fed by the pipeline's ``progress(task, done, total)``.

    Use as a context manager; :meth:`print` writes a log line above the live bars (or plainly)."""

    def __init__(self, console: Console, live: bool | None = None, every_s: float = 60.0) -> None:
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.every_s = every_s
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[rate]}"), console=console, transient=False,
            disable=not self.live,
        )
        self.tasks: dict[str, Any] = {}
        self._lines: dict[str, tuple[float, int, float]] = {}  # task -> (start, last tenth logged, last time)

    def __enter__(self) -> Bars:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def print(self, msg: str) -> None:
        self.console.print(msg, highlight=False)

    def __call__(self, task: str, done: int, total: int) -> None:
        if self.live:
            self._bar(task, done, total)
        else:
            self._line(task, done, total)

    def reset(self) -> None:
        """Fresh inner bars for the next video (batch)."""
        for tid in self.tasks.values():
            self.progress.reset(tid, completed=0)
        self._lines.clear()

    def _bar(self, task: str, done: int, total: int) -> None:
        if task not in self.tasks:
            self.tasks[task] = self.progress.add_task(LABELS.get(task, task), total=total, rate="")
        tid = self.tasks[task]
        rate = ""
        elapsed = self.progress.tasks[tid].elapsed
        if task == "fifo" and elapsed:
            rate = f"{done / elapsed:.2f} it/s"
        self.progress.update(tid, completed=done, total=total, rate=rate)

    def _line(self, task: str, done: int, total: int) -> None:
        now = time.monotonic()
        start, tenth, last = self._lines.get(task, (now, 0, now))
        new_tenth = done * 10 // max(1, total)
        if done < total and new_tenth == tenth and now - last < self.every_s:
            self._lines.setdefault(task, (start, tenth, last))
            return
        self._lines[task] = (start, new_tenth, now)
        elapsed = now - start
        text = f"{LABELS.get(task, task)}: {done}/{total} ({100 * done // max(1, total)}%), {_clock(elapsed)} elapsed"
        if task == "fifo" and elapsed > 0 and done:
            text += f", {done / elapsed:.2f} it/s"
            if done < total:
                text += f", {_clock((total - done) * elapsed / done)} left"
        self.print(text)


class BatchBars(Bars):
    """An outer bar over the items plus the per-item inner bars (base clip, FIFO iterations = frames)."""

    def __init__(self, console: Console, total: int, live: bool | None = None) -> None:
        super().__init__(console, live)
        self.total, self.seen = total, 0
        self.items = self.progress.add_task("items", total=total, rate="")

    def item_event(self, event: str, item: Any, record: Any) -> None:
        if event == "start":
            self.reset()
            label = f"[{item.item.index}] {item.name}"
            self.progress.update(self.items, description=f"items {label[:56]}")
            if not self.live:
                self.print(f"item {self.seen + 1}/{self.total}: {label}")
        else:
            self.seen += 1
            self.progress.advance(self.items)

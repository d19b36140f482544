"""One model, many users: runs go one at a time through a queue, on one worker thread that owns the model.

Why a thread of our own and not the web framework's queue: a browser that disconnects cancels its request,
and a run tied to a request would die with it. Here a request only submits a :class:`Job` and watches it; the
run goes on, and its video lands in the output folder either way. The Stop button sets the job's
``StopFlag``, the same flag SIGTERM sets in the CLI, so a stopped run writes its playable partial video and
its resumable state exactly as ``fifo-gen generate`` does.
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..interrupts import StopFlag
from ..run.config import RunConfig
from ..run.resolve import resolve

QUEUED, RUNNING, DONE, STOPPED, FAILED, CANCELLED = "queued", "running", "done", "stopped", "failed", "cancelled"
FINISHED = (DONE, STOPPED, FAILED, CANCELLED)
_ids = itertools.count(1)


@dataclass
class Job:
    """One generation: its command, its live state (written by the worker, read by any watcher)."""

    argv: list[str]  # fifo-gen generate arguments; the run is exactly parse(argv)
    cfg: RunConfig
    output: Path
    label: str = ""
    shown_argv: list[str] | None = None  # the command that reproduces the video (a resume shows its original)
    id: int = field(default_factory=lambda: next(_ids))
    status: str = QUEUED
    stop: StopFlag = field(default_factory=StopFlag)
    frame: np.ndarray | None = None  # the latest finished frame, uint8 (H, W, 3)
    frame_index: int = -1
    task: str = ""
    done_steps: int = 0
    total_steps: int = 0
    s_per_frame: float | None = None
    eta_s: float | None = None
    result: Any = None  # pipeline.GenerationResult
    error: str | None = None
    lines: list[str] = field(default_factory=list)
    finished: threading.Event = field(default_factory=threading.Event)
    _t0: float | None = None
    _i0: int = 0

    def on_frame(self, frame: Any, k: int) -> None:
        """Called by the FIFO loop after each written frame: keep a small uint8 copy, nothing more (encoding
        it for the page is the watcher's work, on its own thread)."""
        from ..io.sinks import to_hwc_uint8

        self.frame, self.frame_index = to_hwc_uint8(frame), k

    def on_progress(self, task: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if task != self.task:
            self.task, self._t0, self._i0 = task, now, done
        self.done_steps, self.total_steps = done, total
        if task == "fifo" and self._t0 is not None and done > self._i0:
            per = (now - self._t0) / (done - self._i0)  # one output frame per iteration past the warm-up
            self.s_per_frame, self.eta_s = per, per * (total - done)

    def log(self, line: str) -> None:
        self.lines.append(line)


class Runner:
    """The run queue and its worker thread. ``generate`` is ``pipeline.generate`` (a stand-in in tests)."""

    def __init__(self, model: Any, generate: Callable[..., Any] | None = None,
                 log: Callable[[str], None] | None = None, load: Callable[[Any], Any] | None = None) -> None:
        if generate is None:
            from ..run.pipeline import generate
        self.model, self._generate, self._log = model, generate, log or (lambda m: None)
        self._load = load  # (loras) -> the server's model with these LoRAs: a run with other LoRAs reloads it
        self._waiting: deque[Job] = deque()
        self._cv = threading.Condition()
        self.current: Job | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="fifo-studio-runner", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        with self._cv:
            self._waiting.append(job)
            self._cv.notify()
        return job

    def place(self, job: Job) -> int:
        """0: running or finished; k >= 1: waiting, k-th in line counting the running job (k - 1 runs ahead)."""
        with self._cv:
            for i, j in enumerate(self._waiting):
                if j is job:
                    return i + 1 + (self.current is not None)
        return 0

    def jobs(self) -> list[Job]:
        """The running job and the waiting ones, in order."""
        with self._cv:
            return ([self.current] if self.current is not None else []) + list(self._waiting)

    def queue_length(self) -> int:
        with self._cv:
            return len(self._waiting) + (self.current is not None)

    def stop(self, job: Job) -> None:
        """A waiting job leaves the queue; the running one stops after its current iteration, as on SIGTERM."""
        with self._cv:
            if job in self._waiting:
                self._waiting.remove(job)
                job.status = CANCELLED
                job.finished.set()
                return
        job.stop.requested = True

    def shutdown(self, timeout: float = 60.0) -> None:
        """Server exit: the running job stops cleanly (partial video + state), waiting ones are dropped."""
        with self._cv:
            self._closing = True
            for j in self._waiting:
                j.status = CANCELLED
                j.finished.set()
            self._waiting.clear()
            if self.current is not None:
                self.current.stop.requested = True
            self._cv.notify()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiting and not self._closing:
                    self._cv.wait()
                if self._closing:
                    return
                job = self.current = self._waiting.popleft()
            try:
                self._run(job)
            finally:
                with self._cv:
                    self.current = None
                job.finished.set()

    def _reload_for(self, loras: Any, log: Callable[[str], None]) -> None:
        """The server's model with the run's LoRAs (the model is reloaded only when they change)."""
        from ..backends.lora import applied_loras, lora_key

        if self._load is not None and applied_loras(self.model) != lora_key(loras):
            log("other LoRAs than the loaded model's: loading the model again")
            self.model = None  # the old copy goes before the new one loads
            self.model = self._load(loras)

    def _run(self, job: Job) -> None:
        job.status = RUNNING
        self._log(f"studio: run {job.id} {job.label}: {job.output}")

        def log(line: str) -> None:
            job.log(line)
            self._log(f"studio: run {job.id}: {line}")

        try:
            job.cfg = resolve(job.cfg).config  # the page shows the run's resolved geometry while it runs
            self._reload_for(job.cfg.loras, log)
            job.result = self._generate(job.cfg, model=self.model, progress=job.on_progress, log=log,
                                        on_frame=job.on_frame, stop=job.stop)
        except KeyboardInterrupt:  # stopped before the FIFO loop had a frame: nothing kept but the state
            job.status, job.error = STOPPED, "stopped before the first frame"
        except Exception as e:  # noqa: BLE001 - the page shows it; the server goes on with the next run
            job.status, job.error = FAILED, str(e) or type(e).__name__
            self._log(f"studio: run {job.id} failed:\n{traceback.format_exc()}")
        else:
            job.status = STOPPED if job.result.partial else DONE
            self._log(f"studio: run {job.id} {job.status}: {job.result.frames} frames -> {job.result.output}")

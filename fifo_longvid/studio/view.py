"""What the studio page reads and shows: its inputs as ``Settings``, the progress line, the history table.

Plain functions of plain values (no Gradio), so the handlers stay thin and the tests need no browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .cli_command import Settings
from .history import COLUMNS, list_history
from .runner import DONE, FINISHED, QUEUED, STOPPED, Job

INT_FIELDS = {"num_frames", "seed", "partitions", "steps", "block", "cfg_cache", "deepcache"}
FLOAT_FIELDS = {"cfg", "qcache", "tgate"}


def settings_of(values: tuple[Any, ...]) -> Settings:
    """The inputs' values (in ``Settings.names()`` order) -> Settings. Optional numbers are text boxes, so
    "empty" (the default, or off) is not confused with 0 (a valid seed); a non-number is a ConfigError."""
    d = dict(zip(Settings.names(), values, strict=True))
    for k in INT_FIELDS | FLOAT_FIELDS:
        d[k] = _number(k, d[k], int if k in INT_FIELDS else float)
    d["attn_reuse"] = bool(d["attn_reuse"])
    return Settings(**d)


def _number(name: str, v: Any, kind: type) -> Any:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return kind(v) if kind is float or float(v).is_integer() else _bad(name, v, kind)
    try:
        return kind(str(v).strip())
    except ValueError:
        return _bad(name, v, kind)


def _bad(name: str, v: Any, kind: type) -> Any:
    what = "a whole number" if kind is int else "a number"
    raise ConfigError(f"{name.replace('_', ' ')}: {v!r} is not {what}")


def shown(name: str, v: Any) -> Any:
    """A setting as its input shows it (optional numbers are text; None is empty)."""
    if name in (INT_FIELDS | FLOAT_FIELDS) - {"num_frames"}:
        return "" if v is None else str(v)
    return v


def status_text(job: Job, place: int, prefix: str = "") -> str:
    """One line of progress: place in the queue, base clip, FIFO iterations with s/frame and ETA, or result."""
    if job.status == QUEUED:
        ahead = max(0, place - 1)
        return f"{prefix}queued: place {place} in the queue ({ahead} run{'s' if ahead != 1 else ''} ahead)"
    if job.status in FINISHED:
        r = job.result
        if job.status == DONE:
            return f"{prefix}done: {r.frames} frames -> {r.output.name} ({r.timings.get('total_s', 0):.1f} s)"
        if job.status == STOPPED:
            kept = f"{r.frames} frames kept in {r.output.name}" if r is not None and r.frames else "no frame yet"
            return f"{prefix}stopped: {kept}; the state is saved, Resume continues it"
        return f"{prefix}{job.status}: {job.error or ''}".rstrip(": ")
    if job.task != "fifo":
        step = f" step {job.done_steps}/{job.total_steps}" if job.total_steps else ""
        return f"{prefix}running: {job.task or 'loading'}{step}"
    fc = job.cfg.fifo
    geometry = (f" (window {fc.window} x {fc.partitions} / block {fc.block} = {job.cfg.sampling.steps} steps)"
                if fc.window and fc.block else "")  # resolved by the pipeline once the model is known
    text = (f"{prefix}running{geometry}: iteration {job.done_steps}/{job.total_steps}, frame "
            f"{job.frame_index + 1}/{fc.num_frames}")
    if job.s_per_frame is not None:
        text += f", {job.s_per_frame:.2f} s/frame, ETA {job.eta_s:.0f} s"
    return text + (" (stopping after this iteration)" if job.stop.requested else "")


def history_table(out_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """The History table's value and, row for row, the sidecar each row came from."""
    rows, paths = [], []
    for e in list_history(out_dir):
        try:
            rows.append(e.row())
        except OSError:  # deleted while listing
            continue
        paths.append(str(e.sidecar))
    return {"data": rows or [[""] * len(COLUMNS)], "headers": COLUMNS}, paths

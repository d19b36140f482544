"""The batch manifest: one append-only record file per shard, merged on read into ``manifest.jsonl``.

Each shard appends its records to its own ``manifest.shard-K-of-N.jsonl`` (one JSON line per event, one
``write`` + ``fsync``; only that shard writes it, guarded by a lock file). ``manifest.jsonl`` is a merged view
-- the latest record of every item, sorted by index -- rebuilt from all shard files under an ``fcntl`` lock
and published by an atomic rename, so readers never see half a file and no shard's update is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io.sidecar import write_text_atomic
from .sharding import Shard

try:  # POSIX; elsewhere shards must not share an output folder concurrently
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.jsonl"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@contextlib.contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path`` (created if missing); yields whether it was acquired."""
    if fcntl is None:  # pragma: no cover
        yield True
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class Manifest:
    """Per-shard append-only record files plus the merged, atomically rewritten ``manifest.jsonl``."""

    def __init__(self, out_dir: str | Path, shard: Shard):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shard = shard
        self.path = self.dir / f"manifest.shard-{shard.label}.jsonl"
        self.view = self.dir / MANIFEST
        self._lock_dir = self.dir / ".locks"
        self._lock_dir.mkdir(exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        """One record = one line, written with a single ``write`` and fsynced (a kill leaves at worst a torn last
        line, which readers skip and the next append starts after)."""
        line = json.dumps({**record, "updated": now_iso(), "shard": str(self.shard)}, default=str) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        line = "\n" + line
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> dict[str, dict[str, Any]]:
        """Latest record per item name, over every shard file in the folder (any shard count)."""
        latest: dict[str, dict[str, Any]] = {}
        for p in sorted(self.dir.glob("manifest.shard-*.jsonl")):
            try:
                text = p.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn line from a killed process
                if not isinstance(rec, dict) or "name" not in rec:
                    continue
                old = latest.get(rec["name"])
                if old is None or (rec.get("updated", ""), rec.get("status") == "done") >= (
                        old.get("updated", ""), old.get("status") == "done"):
                    latest[rec["name"]] = rec
        return latest

    def rewrite_view(self) -> list[dict[str, Any]]:
        """Rebuild ``manifest.jsonl`` from all shard files; the lock serialises concurrent shards so the newest
        rename always carries every record written before it."""
        with _flock(self._lock_dir / "manifest.lock"):
            recs = sorted(self.records().values(), key=lambda r: (r.get("index", 0), r["name"]))
            write_text_atomic(self.view, "".join(json.dumps(r, default=str) + "\n" for r in recs))
        return recs

    @contextlib.contextmanager
    def shard_lock(self) -> Iterator[None]:
        with _flock(self._lock_dir / f"shard-{self.shard.label}.lock", blocking=False) as ok:
            if not ok:
                raise ConfigError(f"shard {self.shard} is already running on {self.dir} in another process")
            yield

    @contextlib.contextmanager
    def item_lock(self, name: str) -> Iterator[bool]:
        with _flock(self._lock_dir / f"{name}.lock", blocking=False) as ok:
            yield ok

"""Past outputs in the studio's folder, read back from their sidecars (what the CLI writes next to a video).

Only sidecars are read, never videos: a listing stays fast however long the videos are. A sidecar that is
not ours (no ``config``) or not JSON is skipped, not fatal: the folder may be shared with other tools.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COLUMNS = ["video", "prompt", "seed", "frames", "status", "settings", "written"]


@dataclass
class Entry:
    """One past output."""

    sidecar: Path
    video: Path
    meta: dict[str, Any]

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete"))

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]

    def row(self) -> list[Any]:
        cfg = self.config
        prompts = cfg.get("prompts") or []
        status = "complete" if self.complete else "partial (resumable)" if self.resumable() else "partial"
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.sidecar.stat().st_mtime))
        return [self.video.name, " | ".join(prompts), self.meta.get("seed"), self.meta.get("frames_written"),
                status, technique_summary(cfg), when]

    def resumable(self) -> bool:
        """An interrupted run whose state is still there (``NAME.mp4.state.pt`` next to the partial)."""
        final = Path(self.config.get("output", {}).get("path") or "")
        return not self.complete and final.name != "" and (self.sidecar.parent / f"{final.name}.state.pt").exists()


def technique_summary(cfg: dict[str, Any]) -> str:
    """The settings a person compares runs by: guidance, partitions, init, tail and the techniques on."""
    s, f, t = cfg.get("sampling", {}), cfg.get("fifo", {}), cfg.get("techniques", {})
    parts = [f"cfg {s.get('cfg')}", f"n {f.get('partitions')}"]
    if f.get("block") not in (None, 1):
        parts.append(f"block {f['block']}, {s.get('steps')} steps")
    if f.get("init", "first") != "first":
        parts.append(f"init {f['init']}")
    tail = (f.get("tail") or {}).get("mode", "noise")
    if tail != "noise":
        parts.append(f"tail {tail}")
    for name, key in (("qcache", "v"), ("tgate", "gate"), ("cfg_cache", "every"), ("deepcache", "every")):
        tech = t.get(name) or {}
        if tech.get("enabled"):
            parts.append(f"{name} {tech.get(key)}")
    if (t.get("attn_reuse") or {}).get("enabled"):
        parts.append("attn_reuse")
    return ", ".join(parts)


def read_entry(sidecar: Path) -> Entry | None:
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        return None
    video = sidecar.parent / Path(str(meta.get("output") or "")).name
    if not video.name or not video.exists():
        return None
    return Entry(sidecar, video, meta)


def list_history(out_dir: Path, limit: int = 200) -> list[Entry]:
    """Outputs in ``out_dir`` (not its subfolders), newest first."""
    if not out_dir.is_dir():
        return []
    sidecars = sorted(out_dir.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    entries = [e for e in (read_entry(p) for p in sidecars[: limit * 2]) if e is not None]
    return entries[:limit]

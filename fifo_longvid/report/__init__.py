"""Drift report of finished videos (``fifo-gen report``): how colour, lightness, sharpness and motion change
over time, per segment, as a table, JSON and a chart. The studio and ``fifo-gen batch --report`` use it too."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .metrics import METRICS, auto_segment_frames, measure_video
from .reader import VideoError

__all__ = ["METRICS", "VideoError", "auto_segment_frames", "measure_video", "report_paths", "to_json",
           "write_chart", "write_report"]


def write_chart(reports: list[dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """See ``chart.write_chart`` (imported lazily: matplotlib is only needed for a chart)."""
    from .chart import write_chart as _write

    return _write(reports, path, title)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def to_json(report: dict[str, Any] | list[dict[str, Any]]) -> str:
    """Strict JSON (a NaN becomes null), without the reading time (it is not a property of the video)."""
    def strip(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k != "read_seconds"}

    obj = [strip(r) for r in report] if isinstance(report, list) else strip(report)
    return json.dumps(_clean(obj), indent=1, allow_nan=False)


def report_paths(video: str | Path) -> tuple[Path, Path]:
    """Where a video's report goes: ``fox.mp4`` -> ``fox.report.json`` and ``fox.report.png`` beside it
    (a PNG folder ``out/fox`` -> ``out/fox.report.*``)."""
    p = Path(video)
    stem = p.stem if p.suffix else p.name
    return p.with_name(stem + ".report.json"), p.with_name(stem + ".report.png")


def write_report(video: str | Path, label: str | None = None) -> tuple[Path, Path, dict[str, Any]]:
    """Measure ``video`` with the default segment and write its JSON and chart beside it (replacing older
    ones); returns (json, png, report). Raises VideoError for a video a report cannot be made of."""
    from ..io.sidecar import write_text_atomic

    rep = measure_video(video, label=label)
    json_path, png_path = report_paths(video)
    write_chart([rep], png_path, title=f"drift: {Path(video).name}")
    write_text_atomic(json_path, to_json(rep) + "\n")
    return json_path, png_path, rep

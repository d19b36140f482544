"""The studio's drift charts (``fifo-gen report``'s chart): under a finished video, and A and B as two lines.

Charts are PNGs beside the videos in the output folder (``NAME.report.png``; an A/B pair's is
``NAME_B.ab.report.png``), so the page serves them like the videos and they outlive the page. A video the
report cannot measure (a single frame) gets no chart, never an error on the page.
"""

from __future__ import annotations

import logging
from pathlib import Path

_logger = logging.getLogger(__name__)


def chart_path(video: Path) -> Path:
    from ..report import report_paths

    return report_paths(video)[1]


def video_chart(video: Path) -> Path | None:
    """Draw ``video``'s drift chart beside it; None if it cannot be measured."""
    from ..report import VideoError, measure_video, write_chart

    try:
        rep = measure_video(video, label=video.name)
        return write_chart([rep], chart_path(video), title=f"drift: {video.name}")
    except (VideoError, OSError) as e:
        _logger.warning("no drift chart for %s: %s", video, e)
        return None


def existing_chart(video: Path) -> Path | None:
    """The chart of a past output (History), if one was drawn."""
    path = chart_path(video)
    return path if path.is_file() else None


def ab_chart(a: Path, b: Path, labels: tuple[str, str]) -> Path | None:
    """A and B as two labelled lines on one chart, segmented alike (A's default segment)."""
    from ..report import VideoError, measure_video, write_chart

    try:
        rep_a = measure_video(a, label=labels[0])
        rep_b = measure_video(b, segment_frames=rep_a["segment_frames"], label=labels[1])
        out = b.with_name(b.stem + ".ab.report.png")
        return write_chart([rep_a, rep_b], out, title=f"drift: {a.name} vs {b.name}")
    except (VideoError, OSError) as e:
        _logger.warning("no A/B drift chart for %s and %s: %s", a, b, e)
        return None

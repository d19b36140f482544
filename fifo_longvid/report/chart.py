"""The drift chart: one panel per metric, segments on x, one labelled line per video (A/B runs overlay).

matplotlib's object API with the Agg canvas (no pyplot, no display, no global figure state), so the studio can
draw from its web threads. x is the segment's middle in seconds when every video has a frame rate, else in
frames. The PNG is written to a hidden temp file beside the target and renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..io.atomic import temp_path
from .metrics import METRICS

TITLES = {
    "lightness": "lightness L* (0-100)",
    "a": "a* (green - / red +)",
    "b": "b* (blue - / yellow +)",
    "saturation": "saturation (HSV S, 0-1)",
    "contrast": "contrast (std of L*)",
    "sharpness": "sharpness (var. of Laplacian)",
    "motion": "motion (mean |change| per frame, 0-255)",
    "hist_distance": "colour histogram distance to segment 0",
}
# The smallest y range a panel shows, so that noise (a* moving by 0.03) does not look like drift.
MIN_SPAN = {"lightness": 2.0, "a": 2.0, "b": 2.0, "saturation": 0.05, "contrast": 2.0, "sharpness": 10.0,
            "motion": 1.0, "hist_distance": 0.1}


def _x(report: dict[str, Any], in_seconds: bool) -> list[float]:
    mids = [(r["start"] + r["end"] - 1) / 2 for r in report["segments"]]
    return [m / report["fps"] for m in mids] if in_seconds else mids


def write_chart(reports: list[dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Draw ``reports`` (``measure_video`` results) into the PNG ``path``; returns it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    in_seconds = all(r.get("fps") for r in reports)
    fig = Figure(figsize=(14, 6.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 4).ravel()
    for ax, metric in zip(axes, METRICS, strict=True):
        for rep in reports:
            ax.plot(_x(rep, in_seconds), [r[metric] for r in rep["segments"]], marker="o", markersize=3,
                    linewidth=1.4, label=rep.get("label") or Path(rep["video"]).name)
        lo, hi = ax.get_ylim()
        if hi - lo < MIN_SPAN[metric]:
            lo = (hi + lo - MIN_SPAN[metric]) / 2
            if metric not in ("a", "b"):  # the others are never negative
                lo = max(lo, 0.0)
            ax.set_ylim(lo, lo + MIN_SPAN[metric])
        ax.set_title(TITLES[metric], fontsize=10)
        ax.set_xlabel("time (s)" if in_seconds else "frame", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    tmp = temp_path(path, ".png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path

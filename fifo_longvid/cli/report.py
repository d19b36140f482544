"""``fifo-gen report``: the drift report of finished videos (the maths is in ``report/``).

Imports nothing of the generation side (no torch: ``entry.py`` runs this command alone), so its own stderr
console and error exit stand here, made as ``cli_support``'s are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console


def _stderr_console() -> Console:
    """On a terminal: rich's defaults. Elsewhere (a job log): no wrapping at 80 columns."""
    if Console(stderr=True).is_terminal:
        return Console(stderr=True)
    return Console(stderr=True, soft_wrap=True, width=160)


err = _stderr_console()


def fail(msg: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(2)


def report_command(
    videos: Annotated[list[Path], typer.Argument(help="Videos: mp4, gif or a folder of PNG frames. Several are "
                                                 "drawn as overlaid lines (A/B runs, techniques).",
                                                 metavar="VIDEO", show_default=False)],
    segment_frames: Annotated[int | None, typer.Option("--segment-frames", metavar="N", help="Segment length in "
                                                       "frames (at least 2).")] = None,
    segment: Annotated[float | None, typer.Option("--segment", metavar="SECONDS", help="Segment length in "
                                                  "seconds of each video's frame rate. Default: 1 s (10 frames "
                                                  "for a PNG folder), halved down to 2 segments for a short "
                                                  "video.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout instead of the "
                                          "table (a list for several videos).")] = False,
    chart: Annotated[Path | None, typer.Option("--output", "-o", metavar="CHART.png", help="Also draw a PNG "
                                               "chart: one panel per metric, segments on x, a line per "
                                               "video.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", help="A name for each video's line and table "
                                                    "(repeat, in order; default: the file name).")] = None,
    rows: Annotated[int, typer.Option(help="Segments shown in the table; a longer video shows this many, "
                                      "evenly spaced, first and last included (0: all).")] = 20,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing chart.")] = False,
) -> None:
    """How a video's colour, lightness, sharpness and motion change over time (drift), per segment.

    Per segment: mean CIELAB L*, a*, b*; HSV saturation; contrast (std of L*); sharpness (variance of the
    Laplacian); motion (mean absolute change from the previous frame, 0-255); hist_dist (colour-histogram
    distance to the first segment, 0-1). Then per metric the drift (last segment minus first) and the largest
    excursion from the first segment. Videos are streamed: memory stays constant for any length.

    Bad input (not a video, empty, truncated, one frame, a segment longer than the video) exits 2 and writes
    nothing.
    """
    from ..report import VideoError, measure_video, to_json, write_chart
    from ..report.reader import open_video
    from ..report.table import format_report

    labels = list(label or [])
    if len(labels) > len(videos):
        fail(f"{len(labels)} --label values for {len(videos)} video(s); give at most one per video")
    if chart is not None:
        _check_chart_path(chart, overwrite)
    reports = []
    try:
        sources = [open_video(v) for v in videos]  # every header first: a bad file fails before any reading
        for i, src in enumerate(sources):
            reports.append(measure_video(src, segment_frames=segment_frames, segment_s=segment,
                                         label=labels[i] if i < len(labels) else None))
    except VideoError as e:
        fail(_sentence(str(e)))
    for rep in reports:
        err.print(f"read {rep['video']}: {rep['frames']} frames in {rep['read_seconds']:.1f} s "
                  f"({rep['frames'] / max(rep['read_seconds'], 1e-9):.0f} frames/s)", highlight=False, markup=False)
    _unique_labels(reports)
    if chart is not None:
        names = ", ".join(r["label"] for r in reports)
        write_chart(reports, chart, title=f"drift: {names}")
    if as_json:
        typer.echo(to_json(reports if len(reports) > 1 else reports[0]))
    else:
        typer.echo("\n\n".join(format_report(r, rows) for r in reports))
    if chart is not None:
        err.print(f"chart: {chart}", highlight=False, markup=False)


def _check_chart_path(chart: Path, overwrite: bool) -> None:
    if chart.suffix.lower() != ".png":
        fail(f"the chart is a PNG: -o must end in .png, got {chart}")
    if chart.is_dir():
        fail(f"-o {chart} is a folder; give a .png file name")
    if chart.exists() and not overwrite:
        fail(f"{chart} exists; add --overwrite to replace it")
    if not chart.parent.is_dir():
        fail(f"the folder of -o {chart} does not exist")


def _unique_labels(reports: list[dict]) -> None:
    """Two videos with the same file name (run_a/fox.mp4, run_b/fox.mp4) get their folder in the label."""
    from collections import Counter

    counts = Counter(r["label"] for r in reports)
    for r in reports:
        if counts[r["label"]] > 1 and r["label"] == Path(r["video"]).name:
            r["label"] = f"{Path(r['video']).parent.name}/{r['label']}"


def _sentence(msg: str) -> str:
    from rich.markup import escape

    return escape(msg.rstrip(".") + ".")

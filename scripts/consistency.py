"""Weight-free long-video consistency numbers, from video files.

For each video:

* **temporal flickering** (VBench's ``temporal_flickering``): the mean absolute difference of consecutive
  frames over all pixels and channels, on the 0-255 scale (``flicker_mae``), and VBench's score
  ``(255 - flicker_mae) / 255`` (1 = no change at all between frames; higher = less flicker).
* **low-frequency drift**: every frame is low-passed to its cell means on a grid of ``--grid`` cells
  along the short side (an exact area average: spatial frequencies above ``grid / 2`` cycles per image
  are gone). ``drift_first[k]`` is the mean absolute difference (0-255) of frame k's low-passed image
  from frame 0's; ``drift_lag[k]`` from the frame ``--lag`` (32) earlier. A video that keeps its layout
  has a flat, low ``drift_first``; ``drift_lag`` measures how fast the layout changes on a scale of seconds.

Frames are streamed (constant memory for mp4). Prints one table, the videos side by side; ``--csv PREFIX``
writes each video's per-frame curve to ``PREFIX<name>.csv``; ``--json`` prints the summaries as JSON.

    python scripts/consistency.py noise.mp4 coherent.mp4 rescheduled.mp4
    python scripts/consistency.py swim.mp4 --lag 16 --grid 8 --csv curves/
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def iter_frames(path: str | Path) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 frames of an mp4 (streamed), a gif, or a folder of PNG frames."""
    p = Path(path)
    if p.is_dir() or p.suffix.lower() == ".gif":
        from fifo_longvid.io.video import read_video

        yield from read_video(p)
        return
    if not p.is_file():
        raise FileNotFoundError(f"no such video: {p}")
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(p), pix_fmt="rgb24")
    try:
        width, height = next(reader)["size"]
        for buf in reader:
            yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
    finally:
        reader.close()


def cell_means(frame: np.ndarray, grid: int) -> np.ndarray:
    """Area-average ``frame`` (H, W, C) onto ``grid`` cells along its short side (aspect kept), float64."""
    h, w = frame.shape[:2]
    gh, gw = (grid, max(1, round(grid * w / h))) if h <= w else (max(1, round(grid * h / w)), grid)
    gh, gw = min(gh, h), min(gw, w)
    rows = np.linspace(0, h, gh + 1).round().astype(int)
    cols = np.linspace(0, w, gw + 1).round().astype(int)
    x = np.add.reduceat(np.add.reduceat(frame.astype(np.float64), rows[:-1], axis=0), cols[:-1], axis=1)
    return x / (np.diff(rows)[:, None, None] * np.diff(cols)[None, :, None])


def measure(frames: Iterator[np.ndarray], grid: int = 16, lag: int = 32) -> dict[str, np.ndarray]:
    """Per-frame curves: ``flicker`` (MAE to the previous frame; NaN for frame 0), ``drift_first``,
    ``drift_lag`` (NaN for the first ``lag`` frames)."""
    if grid < 1 or lag < 1:
        raise ValueError(f"--grid and --lag must be >= 1, got {grid} and {lag}")
    flicker, drift_first, drift_lag = [], [], []
    prev: np.ndarray | None = None
    first: np.ndarray | None = None
    recent: deque[np.ndarray] = deque(maxlen=lag)
    for frame in frames:
        f = frame.astype(np.float32)
        if prev is not None and f.shape != prev.shape:
            raise ValueError(f"frame {len(flicker)} has shape {f.shape}, the previous one {prev.shape}")
        low = cell_means(frame, grid)
        flicker.append(float(np.abs(f - prev).mean()) if prev is not None else np.nan)
        first = low if first is None else first
        drift_first.append(float(np.abs(low - first).mean()))
        drift_lag.append(float(np.abs(low - recent[0]).mean()) if len(recent) == lag else np.nan)
        recent.append(low)
        prev = f
    if not flicker:
        raise ValueError("no frames decoded")
    return {"flicker": np.array(flicker), "drift_first": np.array(drift_first), "drift_lag": np.array(drift_lag)}


def summarise(curves: dict[str, np.ndarray]) -> dict[str, float]:
    fl, d0, dl = curves["flicker"][1:], curves["drift_first"], curves["drift_lag"]
    dl = dl[~np.isnan(dl)]
    mae = float(fl.mean()) if fl.size else 0.0
    nan = float("nan")
    return {
        "frames": int(d0.size),
        "flicker_mae": mae,
        "vbench_temporal_flickering": (255.0 - mae) / 255.0,
        "drift_first_mean": float(d0.mean()),
        "drift_first_last": float(d0[-1]),
        "drift_first_max": float(d0.max()),
        "drift_lag_mean": float(dl.mean()) if dl.size else nan,
        "drift_lag_max": float(dl.max()) if dl.size else nan,
    }


def write_curve(path: Path, curves: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["frame,flicker,drift_first,drift_lag"]
    for k in range(curves["flicker"].size):
        vals = [curves[c][k] for c in ("flicker", "drift_first", "drift_lag")]
        lines.append(f"{k}," + ",".join("" if np.isnan(v) else f"{v:.4f}" for v in vals))
    path.write_text("\n".join(lines) + "\n")


def table(names: list[str], summaries: list[dict[str, float]], lag: int) -> str:
    labels = {"frames": "frames", "flicker_mae": "flicker: mean abs(frame - previous), 0-255",
              "vbench_temporal_flickering": "VBench temporal_flickering (255 - MAE) / 255",
              "drift_first_mean": "drift from frame 0, mean (0-255)", "drift_first_last": "drift from frame 0, last",
              "drift_first_max": "drift from frame 0, max", "drift_lag_mean": f"drift from {lag} frames earlier, mean",
              "drift_lag_max": f"drift from {lag} frames earlier, max"}
    out = ["| measure | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for key, label in labels.items():
        cells = [str(s[key]) if key == "frames" else f"{s[key]:.4f}" for s in summaries]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="+", help="mp4, gif, or folders of PNG frames")
    ap.add_argument("--grid", type=int, default=16, help="low-pass grid: cells along the short side (16)")
    ap.add_argument("--lag", type=int, default=32, help="frames back for drift_lag (32)")
    ap.add_argument("--csv", help="write per-frame curves to PREFIX<video name>.csv (PREFIX may be a folder/)")
    ap.add_argument("--json", action="store_true", help="print the summaries as JSON instead of a table")
    a = ap.parse_args(argv)
    names, summaries = [], []
    for v in a.videos:
        try:
            curves = measure(iter_frames(v), a.grid, a.lag)
        except (OSError, ValueError, RuntimeError) as e:
            print(f"error: {v}: {e}", file=sys.stderr)
            return 2
        names.append(Path(v).stem)
        summaries.append(summarise(curves))
        if a.csv:
            write_curve(Path(f"{a.csv}{Path(v).stem}.csv"), curves)
    if a.json:
        print(json.dumps(dict(zip(names, summaries, strict=True)), indent=2))
    else:
        print(table(names, summaries, a.lag))
    return 0


if __name__ == "__main__":
    sys.exit(main())

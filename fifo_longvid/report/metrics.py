"""The drift report's numbers: per-frame measures (OpenCV), averaged per segment, and each metric's drift.

Per frame, on the decoded 8-bit RGB frame:

* ``lightness``, ``a``, ``b``: mean CIELAB L* (0-100), a*, b* (sRGB, D65; OpenCV's ``COLOR_RGB2Lab`` on floats);
* ``saturation``: mean HSV saturation (0-1); ``contrast``: RMS contrast, the standard deviation of L*;
* ``sharpness``: variance of the 3x3 Laplacian of the 8-bit grey image (falls as the picture blurs);
* ``motion``: mean absolute change of the 8-bit pixel values from the previous frame (0-255; flicker counts);
* a colour histogram (8 x 8 x 8 RGB bins) summed over the segment; ``hist_distance`` is its Bhattacharyya
  (Hellinger) distance to the first segment's: 0 = the same colours, 1 = none in common.

A segment's value is the mean over its frames (``motion`` over the frames that have a previous one). Frames are
read one at a time and folded into running sums, so memory does not grow with the video's length.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .reader import VideoError, VideoSource, open_video

METRICS = ("lightness", "a", "b", "saturation", "contrast", "sharpness", "motion", "hist_distance")
_FRAME_METRICS = METRICS[:6]  # averaged over all frames of a segment
HIST_BINS = 8
DEFAULT_SEGMENT_S = 1.0
PNG_FPS_FALLBACK_FRAMES = 10  # a PNG folder has no frame rate: 10 frames (fifo-gen's default output fps)


@dataclass
class _Segment:
    """Running sums of one segment."""

    start: int
    n: int = 0
    sums: np.ndarray = field(default_factory=lambda: np.zeros(len(_FRAME_METRICS)))
    motion_sum: float = 0.0
    motion_n: int = 0
    hist: np.ndarray = field(default_factory=lambda: np.zeros((HIST_BINS,) * 3, np.float32))

    def add(self, values: np.ndarray, motion: float | None, hist: np.ndarray) -> None:
        self.n += 1
        self.sums += values
        if motion is not None:
            self.motion_sum += motion
            self.motion_n += 1
        self.hist += hist

    def merge(self, other: _Segment) -> None:
        self.n += other.n
        self.sums += other.sums
        self.motion_sum += other.motion_sum
        self.motion_n += other.motion_n
        self.hist += other.hist

    def row(self, first_hist: np.ndarray) -> dict[str, Any]:
        means = self.sums / self.n
        row: dict[str, Any] = {"start": self.start, "end": self.start + self.n}
        row.update({k: float(v) for k, v in zip(_FRAME_METRICS, means, strict=True)})
        row["motion"] = self.motion_sum / self.motion_n if self.motion_n else math.nan
        row["hist_distance"] = hist_distance(self.hist, first_hist)
        return row


def hist_distance(h: np.ndarray, ref: np.ndarray) -> float:
    """Bhattacharyya distance of two colour histograms (OpenCV normalises them): 0 same, 1 disjoint."""
    return max(0.0, float(cv2.compareHist(h, ref, cv2.HISTCMP_BHATTACHARYYA)))


def frame_measures(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lightness, a, b, saturation, contrast, sharpness) and the colour histogram of one uint8 RGB frame."""
    f = frame.astype(np.float32) * np.float32(1 / 255)
    lab = cv2.cvtColor(f, cv2.COLOR_RGB2Lab)
    lab_mean, lab_std = cv2.meanStdDev(lab)
    sat = cv2.cvtColor(f, cv2.COLOR_RGB2HSV)[..., 1].mean()
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_64F))
    values = np.array([lab_mean[0, 0], lab_mean[1, 0], lab_mean[2, 0], sat, lab_std[0, 0], lap_std[0, 0] ** 2])
    hist = cv2.calcHist([frame], [0, 1, 2], None, [HIST_BINS] * 3, [0, 256] * 3)
    return values, hist


def motion_of(frame: np.ndarray, prev: np.ndarray) -> float:
    """Mean absolute change of the 8-bit values from the previous frame, 0-255."""
    return float(cv2.absdiff(frame, prev).mean())


def auto_segment_frames(fps: float | None, frames: int | None) -> int:
    """The default segment: 1 s of the video (10 frames for a PNG folder), shortened for a short video so
    that it has at least 2 segments; never under 2 frames (motion compares a frame to the one before)."""
    seg = max(2, round(fps * DEFAULT_SEGMENT_S)) if fps else PNG_FPS_FALLBACK_FRAMES
    if frames is not None and frames < 2 * seg:
        seg = max(2, frames // 2)
    return seg


def resolve_segment(fps: float | None, expected: int | None, segment_frames: int | None,
                    segment_s: float | None, name: str) -> int:
    """``--segment-frames`` or ``--segment`` (seconds) or the default, as a frame count (>= 2)."""
    if segment_frames is not None and segment_s is not None:
        raise VideoError("give --segment-frames or --segment, not both")
    if segment_s is not None:
        if not segment_s > 0:
            raise VideoError(f"--segment must be a positive number of seconds, got {segment_s}")
        if not fps:
            raise VideoError(f"{name} is a PNG folder with no frame rate; give --segment-frames instead of --segment")
        segment_frames = round(segment_s * fps)
        if segment_frames < 2:
            raise VideoError(f"--segment {segment_s} s is {segment_frames} frame(s) at {fps:g} fps; "
                             "a segment needs at least 2 frames")
    elif segment_frames is None:
        return auto_segment_frames(fps, expected)
    if segment_frames < 2:
        raise VideoError(f"--segment-frames must be at least 2 (motion compares a frame to the one before), "
                         f"got {segment_frames}")
    return segment_frames


def measure_video(path: str | Path | VideoSource, segment_frames: int | None = None, segment_s: float | None = None,
                  label: str | None = None) -> dict[str, Any]:
    """Stream ``path`` (or an opened ``VideoSource``) once and return its report (the ``--json`` object).
    Raises VideoError for bad input."""
    t0 = time.perf_counter()
    src = path if isinstance(path, VideoSource) else open_video(path)
    seg = resolve_segment(src.fps, src.expected_frames, segment_frames, segment_s, str(src.path))
    rows: list[dict[str, Any]] = []
    first_hist: np.ndarray | None = None
    done: _Segment | None = None  # the last full segment: a short remainder may still join it
    cur = _Segment(0)
    prev: np.ndarray | None = None
    count = 0
    for frame in src.frames():
        if prev is not None and frame.shape != prev.shape:
            raise VideoError(f"{src.path}: frame {count} is {frame.shape[1]}x{frame.shape[0]}, "
                             f"the frames before it {prev.shape[1]}x{prev.shape[0]}")
        values, hist = frame_measures(frame)
        cur.add(values, motion_of(frame, prev) if prev is not None else None, hist)
        prev, count = frame, count + 1
        if cur.n == seg:
            if done is not None:
                first_hist = done.hist.copy() if first_hist is None else first_hist
                rows.append(done.row(first_hist))
            done, cur = cur, _Segment(count)
    _check_length(src, count, seg)
    if cur.n:
        if done is not None and cur.n < seg / 2:  # a short remainder joins the last segment
            done.merge(cur)
        else:
            if done is not None:
                first_hist = done.hist.copy() if first_hist is None else first_hist
                rows.append(done.row(first_hist))
            done = cur
    assert done is not None
    rows.append(done.row(first_hist if first_hist is not None else done.hist))
    seconds = time.perf_counter() - t0
    assert prev is not None
    return {"video": str(src.path), "label": label or src.path.name, "frames": count,
            "fps": src.fps, "width": int(prev.shape[1]), "height": int(prev.shape[0]), "segment_frames": seg,
            "segments": rows, "drift": drift_of(rows), "read_seconds": round(seconds, 3)}


def _check_length(src: VideoSource, count: int, seg: int) -> None:
    name = src.path
    if count == 0:
        raise VideoError(f"{name} has no frames")
    if count == 1:
        raise VideoError(f"{name} has only 1 frame; a drift report needs at least 2")
    if src.kind == "mp4" and src.expected_frames and count < 0.9 * src.expected_frames - 1:
        raise VideoError(f"{name} is truncated: its header promises {src.expected_frames} frames, "
                         f"only {count} decode")
    if seg > count:
        raise VideoError(f"the segment ({seg} frames) is longer than {name} ({count} frames); "
                         "give a shorter --segment-frames or --segment")


def drift_of(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric: the first and last segment's value, ``change`` (last minus first), and the largest
    excursion from the first segment (signed) with the index of its segment."""
    out: dict[str, dict[str, Any]] = {}
    for m in METRICS:
        vals = [r[m] for r in rows]
        first = vals[0]
        deltas = [v - first for v in vals]
        k = max(range(len(deltas)), key=lambda i: abs(deltas[i]) if not math.isnan(deltas[i]) else -1.0)
        out[m] = {"first": first, "last": vals[-1], "change": vals[-1] - first,
                  "max_excursion": deltas[k], "max_excursion_segment": k}
    return out

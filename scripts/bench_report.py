"""Speed and memory of ``fifo-gen report`` on a long video (issue: >= 500 frames/s, < 300 MB RSS at 10,000 frames).

    python scripts/bench_report.py                   # a 10,000-frame 64x64 mp4, 3 runs
    python scripts/bench_report.py --frames 500 --repeat 1 --chart

Builds a synthetic video in a temp folder (a square moving over a slowly changing background, so the encoder
and the metrics have work), then runs ``python -m fifo_longvid report VIDEO --json`` as a subprocess per run.
Per run: wall time (Python start-up and imports included), frames/s over that wall time, the command's own
reading rate (the frames/s it prints, without start-up), and the peak RSS: the sum over the process and its
children (ffmpeg) sampled every 5 ms with psutil, and ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a small wrapper
process that runs only the report (the largest single process: the report's Python or its ffmpeg).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = """
import sys
import numpy as np
from fifo_longvid.io.video import VideoWriter
frames, size, fps, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
y, x = np.mgrid[0:size, 0:size]
with VideoWriter(out, fps=fps) as w:
    for t in range(frames):
        bg = (40 + 60 * np.sin(t / 200.0 + np.array([0.0, 2.0, 4.0])) + 60).astype(np.uint8)
        f = np.empty((size, size, 3), np.uint8)
        f[:] = bg
        cx = int((t * 2) % size)
        f[(abs(x - cx) < size // 8) & (abs(y - size // 2) < size // 8)] = (230, 200, 40)
        w.append(f)
"""
# Runs the report as its only child and prints that child's peak RSS (KiB) last on stderr.
WRAP = """
import resource, subprocess, sys
rc = subprocess.run(sys.argv[1:]).returncode
print(f"maxrss_kib {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}", file=sys.stderr)
sys.exit(rc)
"""


def build_video(path: Path, frames: int, size: int, fps: float) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", BUILD, str(frames), str(size), str(fps), str(path)], check=True,
                   env=_env())
    return time.perf_counter() - t0


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _tree_rss(proc) -> int:  # noqa: ANN001 - a psutil.Process (the wrapper: not counted)
    import psutil

    total = 0
    for p in proc.children(recursive=True):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_once(video: Path, chart: Path | None) -> dict[str, float]:
    """One ``fifo-gen report`` subprocess: wall s, reading frames/s, peak tree RSS (MB, psutil or -1)."""
    cmd = [sys.executable, "-c", WRAP, sys.executable, "-m", "fifo_longvid", "report", str(video), "--json"]
    if chart is not None:
        cmd += ["-o", str(chart), "--overwrite"]
    peak = [0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        import psutil

        ps = psutil.Process(proc.pid)

        def sample() -> None:
            while proc.poll() is None:
                try:
                    peak[0] = max(peak[0], _tree_rss(ps))
                except psutil.Error:
                    break
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    except ImportError:
        sampler, peak[0] = None, -(1 << 20)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if sampler is not None:
        sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"fifo-gen report failed ({proc.returncode}):\n{err}")
    m = re.search(r"\(([\d.]+) frames/s\)", err)
    k = re.search(r"maxrss_kib (\d+)", err)
    return {"wall": wall, "read_fps": float(m.group(1)) if m else float("nan"), "tree_mb": peak[0] / 2**20,
            "max_rss_mb": int(k.group(1)) / 1024 if k else float("nan"), "out_chars": len(out)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=10_000)
    p.add_argument("--size", type=int, default=64, help="frame height and width")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--chart", action="store_true", help="also draw the chart (-o) in each run")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as td:
        video = Path(td) / "long.mp4"
        built = build_video(video, args.frames, args.size, args.fps)
        print(f"built {video.name}: {args.frames} frames {args.size}x{args.size} at {args.fps:g} fps, "
              f"{video.stat().st_size / 2**20:.1f} MB, in {built:.1f} s", flush=True)
        runs = []
        for i in range(args.repeat):
            r = run_once(video, Path(td) / "chart.png" if args.chart else None)
            runs.append(r)
            print(f"run {i + 1}: {r['wall']:.2f} s, {args.frames / r['wall']:.0f} frames/s (wall), "
                  f"{r['read_fps']:.0f} frames/s (reading), peak RSS {r['tree_mb']:.0f} MB "
                  f"(largest process {r['max_rss_mb']:.0f} MB)", flush=True)
    wall = statistics.median(r["wall"] for r in runs)
    read_fps = statistics.median(r["read_fps"] for r in runs)
    tree = max(r["tree_mb"] for r in runs)
    max_rss_mb = max(r["max_rss_mb"] for r in runs)
    rows = [("frames", f"{args.frames} ({args.size}x{args.size}, {args.fps:g} fps)"),
            ("wall s (median)", f"{wall:.2f}"),
            ("frames/s, wall incl. start-up (median)", f"{args.frames / wall:.0f}"),
            ("frames/s, reading (median)", f"{read_fps:.0f}"),
            ("peak RSS, process + ffmpeg (psutil, max)", f"{tree:.0f} MB" if tree >= 0 else "n/a (no psutil)"),
            ("max RSS of one process (getrusage)", f"{max_rss_mb:.0f} MB"),
            ("target", ">= 500 frames/s, < 300 MB")]
    print()
    print("| measure | value |")
    print("| --- | --- |")
    for k, v in rows:
        print(f"| {k} | {v} |")
    ok = args.frames / wall >= 500 and max(tree, max_rss_mb) < 300
    print(f"\n{'meets' if ok else 'misses'} the target; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""Quality of long toy videos with blocks (``--block K``) at equal steps, scored against ground truth, plus seams.

    python scripts/bench_block_quality.py                    # 8 seeded prompts x 256 frames, K in 1,2,4 x lookahead
    python scripts/bench_block_quality.py --prompts 2 --frames 48 --blocks 1,2

Every row runs the toy at the same step count S (``--steps``, default 16 = the toy's window 8 x 2 partitions), so
the rows cost the same per output frame and differ only in how the S levels are laid over the queue. Columns are
the toy's ground-truth metrics (``fifo_longvid.toy.metrics``: colour/shape/direction accuracy, speed, jerk,
flicker) as mean +- std over the prompts (seed i for prompt i), the drift report's changes from the first
``--report-segment`` frames to the last (``fifo-gen report``), and the seam ratio: the mean absolute frame-to-frame
change (8-bit pixels) across block boundaries over the same inside blocks. 1.0 = no seams; above 1 = a visible
jump each time a block leaves the queue. K = 1 has no inside, so its ratio is taken with the boundaries of K = 2
and 4 (a control: what 'no seam' measures on the same videos). ``--stagger on`` runs the seam remedy instead
(``fifo-gen --stagger``: the frames of a block on their own levels of a K-times finer grid); ``on,off`` both.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import prompts, run_one, summary_cells  # noqa: E402
from benchlib import load_note, print_table  # noqa: E402

from fifo_longvid.backends.videocrafter.load import load_model  # noqa: E402
from fifo_longvid.toy.metrics import score_video, summarize  # noqa: E402


def seam_ratio(video: torch.Tensor, block: int) -> float:
    """Mean |frame k - frame k-1| over k on a block boundary (k % block == 0) / over the other k. Output frame k
    leaves the queue in block k // K: the warm-up is whole blocks, so block boundaries are multiples of K."""
    v = video.numpy().astype(np.float32) if isinstance(video, torch.Tensor) else video.astype(np.float32)
    change = np.abs(np.diff(v, axis=0)).mean(axis=(1, 2, 3))  # change[k - 1] = |frame k - frame k-1|
    k = np.arange(1, v.shape[0])
    across, inside = change[k % block == 0], change[k % block != 0]
    return float(across.mean() / inside.mean()) if inside.size and across.size and inside.mean() > 0 else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--blocks", default="1,2,4")
    p.add_argument("--lookahead", default="on,off")
    p.add_argument("--stagger", default="off", help="off, on, or on,off: rows with --stagger (the seam remedy)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-segment", type=int, default=32, help="drift report segment (fifo-gen report), frames")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    blocks = [int(k) for k in a.blocks.split(",")]
    lookaheads = [s.strip() == "on" for s in a.lookahead.split(",")]
    staggers = [s.strip() == "on" for s in a.stagger.split(",")]
    t_start = time.perf_counter()
    print(load_note())
    model = load_model("toy", device="cpu")
    caps = prompts(a.prompts)
    print("prompts: " + "; ".join(f"{i}: {c}" for i, c in enumerate(caps)), flush=True)
    names, results = [], []
    with tempfile.TemporaryDirectory() as td:
        for la, k, stagger in [(la, k, st) for st in staggers for la in lookaheads for k in blocks
                               if not (st and k == 1)]:
            ov = {"fifo.block": k, "sampling.steps": a.steps, "fifo.lookahead": la, "fifo.stagger": stagger}
            t0 = time.perf_counter()
            runs = [run_one(model, c, i, a.frames, ov, Path(td), a.report_segment) for i, c in enumerate(caps)]
            videos = [v for v, _ in runs]
            scores = [score_video(v, c) for v, c in zip(videos, caps, strict=True)]
            row = {"frames": str(a.frames), **summary_cells(scores, [d for _, d in runs])}
            seam_k = [k] if k > 1 else [b for b in blocks if b > 1] or [2]
            for b in seam_k:
                mean, std = summarize([seam_ratio(v, b) for v in videos])
                row[f"seam (K={b} boundaries)" if k == 1 else "seam"] = f"{mean:.3f} ± {std:.3f}"
            wall = (time.perf_counter() - t0) / len(caps)
            row["s / frame"] = f"{wall / a.frames:.3f}"
            name = f"K={k}{' staggered' if stagger else ''}, lookahead {'on' if la else 'off'}"
            names.append(name)
            results.append(row)
            print(f"{name}: " + ", ".join(f"{key} {v}" for key, v in row.items()), flush=True)
    print()
    print_table(names, results)
    print(f"\ntotal wall time {time.perf_counter() - t_start:.1f} s; {load_note(at_start=False)}")


if __name__ == "__main__":
    main()

"""The toy model's grid: every colour x shape x motion caption as a FIFO video, scored against its ground truth.

    python scripts/toy_grid.py                          # 4 colours x 3 shapes x 5 motions, 48 frames, seed 0
    python scripts/toy_grid.py --weights runs/toy/toy.safetensors --every 7 sampling.cfg=5
    python scripts/toy_grid.py --threads 1 --shard 0/2 & python scripts/toy_grid.py --threads 1 --shard 1/2

Prints one row per caption (colour, shape and direction accuracy, and the product) and the means, which the
toy issue's thresholds are about (colour >= 0.9, shape >= 0.8, direction >= 0.8). ``--weights`` scores an
exported file that is not installed yet; ``key=value`` arguments override the run config of every video.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import run_one  # noqa: E402
from benchlib import load_note  # noqa: E402

from fifo_longvid.toy.data import MOTIONS, PALETTE, SHAPES, caption_of  # noqa: E402
from fifo_longvid.toy.metrics import score_video, summarize  # noqa: E402


def use_weights(path: Path) -> None:
    """Make ``load_model("toy")`` read ``path`` (an export of scripts/train_toy.py) in this process."""
    from fifo_longvid.backends.videocrafter import shipped

    entry = shipped.SHIPPED["toy"]
    shipped.SHIPPED["toy"] = shipped.ShippedWeights(path, shipped.file_digest(path), entry.text_seed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=1, help="score every k-th caption only (a quick look)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--shard", default="0/1", help="K/N: score captions K, K+N, ... (run N processes side by side, "
                   "one per core, and pool their rows)")
    p.add_argument("overrides", nargs="*", help="key=value run-config overrides, e.g. sampling.cfg=5")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.weights:
        use_weights(args.weights)
    from fifo_longvid.backends.videocrafter.load import load_model

    overrides = dict(kv.split("=", 1) for kv in args.overrides)
    t_start = time.perf_counter()
    print(f"{load_note()}; overrides {overrides or 'none'}; {args.frames} frames, seed {args.seed}", flush=True)
    model = load_model("toy", device="cpu")
    k, n = (int(v) for v in args.shard.split("/"))
    caps = [caption_of(c, s, m) for c, s, m in itertools.product(PALETTE, SHAPES, MOTIONS)][:: args.every][k::n]
    rows = []
    print("| caption | colour | shape | direction | score | speed px/frame |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as td:
        for cap in caps:
            s = score_video(run_one(model, cap, args.seed, args.frames, overrides, Path(td)), cap)
            rows.append(s)
            print(f"| {cap} | {s.colour_acc:.2f} | {s.shape_acc:.2f} | {s.direction_acc:.2f} | {s.score:.2f} | "
                  f"{s.speed:.2f} |", flush=True)
    means = {m: summarize([getattr(r, m) for r in rows]) for m in ("colour_acc", "shape_acc", "direction_acc")}
    means["score"] = summarize([r.score for r in rows])
    print("\n" + "; ".join(f"{k} {m:.3f} ± {sd:.3f}" for k, (m, sd) in means.items())
          + f" over {len(rows)} captions (thresholds: colour 0.9, shape 0.8, direction 0.8)")
    print(f"total wall time {time.perf_counter() - t_start:.1f} s; {load_note(at_start=False)}")


if __name__ == "__main__":
    main()

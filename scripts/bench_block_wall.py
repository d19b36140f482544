"""Wall time per output frame of tiny Wan on this CPU, K = 1 against K > 1 at equal steps, in one run.

    python scripts/bench_block_wall.py                 # S = 16, window 4, K in 1, 2; 64 frames; 5 alternating repeats
    python scripts/bench_block_wall.py --steps 8 --blocks 1,2 --no-lookahead

Each repeat runs every K once, in turn (ABAB...), through ``pipeline.generate`` on one preloaded ``tiny_wan`` model;
the time is the FIFO loop's own (``timings['s_per_frame']``: iterations, decode and write, no load or base clip).
At equal S a block of K frames costs the same network FLOPs per output frame as K = 1 (K times the windows per
iteration, K frames out), so a ratio away from 1 is what batching more windows per call does on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load_note  # noqa: E402

from fifo_longvid.backends import load_backend  # noqa: E402
from fifo_longvid.run.config import build_run_config  # noqa: E402
from fifo_longvid.run.pipeline import generate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--blocks", default="1,2")
    ap.add_argument("--frames", type=int, default=64, help="output frames per run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-lookahead", action="store_true")
    ap.add_argument("--cfg", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    blocks = [int(k) for k in a.blocks.split(",")]
    print(load_note())
    t_start = time.perf_counter()
    model = load_backend("tiny_wan", device="cpu", dtype="fp32")
    times: dict[int, list[float]] = {k: [] for k in blocks}
    geometry: dict[int, str] = {}
    with tempfile.TemporaryDirectory() as td:
        for r in range(a.repeats):
            for k in blocks:
                flags = {"model": "tiny_wan", "device": "cpu", "prompts": ["a red fish swims"], "sampling.seed": r,
                         "fifo.num_frames": a.frames, "fifo.window": a.window, "fifo.block": k,
                         "sampling.steps": a.steps, "fifo.lookahead": not a.no_lookahead, "sampling.cfg": a.cfg,
                         "fifo.max_batch": "all", "output.path": str(Path(td) / f"k{k}_{r}.mp4")}
                cfg = build_run_config(flags=flags)
                res = generate(cfg, model=model, log=lambda _m: None)
                times[k].append(res.timings["s_per_frame"])
                geometry[k] = f"window {cfg.fifo.window} x {cfg.fifo.partitions} / block {k} = {cfg.sampling.steps}"
    ref = statistics.median(times[blocks[0]])
    print(f"tiny_wan, 32x32, {a.frames} output frames, guidance {a.cfg:g}, lookahead "
          f"{'off' if a.no_lookahead else 'on'}, {a.threads} thread(s), {a.repeats} alternating repeats")
    print(f"| K | geometry | s per output frame (median [min-max]) | ratio to K={blocks[0]} |")
    print("| --- | --- | --- | --- |")
    for k in blocks:
        t = times[k]
        print(f"| {k} | {geometry[k]} | {statistics.median(t):.4f} [{min(t):.4f}-{max(t):.4f}] | "
              f"{statistics.median(t) / ref:.3f} |")
    print(f"\ntotal wall time {time.perf_counter() - t_start:.1f} s; {load_note(at_start=False)}")


if __name__ == "__main__":
    main()

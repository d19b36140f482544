"""Quality of long toy videos per technique, scored against ground truth (``fifo_longvid.toy.metrics``).

    python scripts/bench_quality.py                       # 8 seeded prompts x 256 frames, every configuration
    python scripts/bench_quality.py --frames 128 --extra "tail noise:fifo.tail=noise"

Each configuration is a set of run-config overrides (the keys of ``fifo-gen ... key=value``); add one with
``--extra "NAME:key=value,key=value"`` when a technique lands, or append it to CONFIGS. Every cell is
mean +- std over the prompts (seed i for prompt i). "base clip" is one plain clip of the model's window
length (the longest a base clip gets). Beside the toy's ground-truth scores, every row has the drift report's
(``fifo-gen report``, no ground truth needed): each metric's change from the first ``--report-segment`` frames to
the last ones (``report L*`` ... ``report motion``; ``report hist_dist`` is the last segment's colour-histogram
distance to the first). A drift curve over ``--drift-frames`` follows the table.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import load_note, print_table  # noqa: E402

from fifo_longvid.backends.videocrafter.load import load_model  # noqa: E402
from fifo_longvid.run.config import build_run_config  # noqa: E402
from fifo_longvid.run.pipeline import generate  # noqa: E402

try:  # the drift report needs OpenCV, which the GPU check's carried wheels leave out: its rows are then skipped
    from fifo_longvid.report import METRICS as REPORT_METRICS  # noqa: E402
    from fifo_longvid.report import measure_video  # noqa: E402
    from fifo_longvid.report.table import HEADS  # noqa: E402
except ImportError:
    REPORT_METRICS, HEADS, measure_video = (), {}, None  # type: ignore[assignment]
from fifo_longvid.toy.data import DIRECTIONS, caption_of, sample_shape  # noqa: E402
from fifo_longvid.toy.metrics import drift_curve, score_video, summarize  # noqa: E402

FAST = {"techniques.tgate.enabled": True, "techniques.cfg_cache.enabled": True, "techniques.cfg_cache.every": 3,
        "techniques.attn_reuse.enabled": True, "techniques.deepcache.enabled": True, "techniques.deepcache.every": 3}
# --latent-seed needs an image branch, which the toy (a text-to-video model) does not have: no row.
CONFIGS: list[tuple[str, dict[str, object]]] = [
    ("base clip", {"mode": "base"}),
    ("FIFO", {}),
    ("qcache 0.9", {"techniques.qcache.enabled": True, "techniques.qcache.v": 0.9}),
    ("init uniform", {"fifo.init": "uniform"}),
    ("tail coherent", {"fifo.tail.mode": "coherent"}),
    ("tail rescheduled", {"fifo.tail.mode": "rescheduled"}),
    ("tgate", {"techniques.tgate.enabled": True}),
    ("cfg-cache 3", {"techniques.cfg_cache.enabled": True, "techniques.cfg_cache.every": 3}),
    ("attn-reuse", {"techniques.attn_reuse.enabled": True}),
    ("deepcache 3", {"techniques.deepcache.enabled": True, "techniques.deepcache.every": 3}),
    ("fifo_fast", FAST),
    ("bf16", {"dtype": "bf16"}),
]
DEVICE = ["cpu"]
METRICS = ("score", "colour_acc", "shape_acc", "direction_acc", "speed", "jerk", "flicker", "area_cv")


def prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` seeded single-shape prompts with a straight-line motion (so direction is well defined)."""
    rng = random.Random(seed)
    return [caption_of(s.colour, s.shape, s.motion)
            for s in (sample_shape(rng, motion=rng.choice(list(DIRECTIONS))) for _ in range(n))]


def parse_extra(spec: str) -> tuple[str, dict[str, object]]:
    name, sep, body = spec.partition(":")
    if not sep or not name.strip():
        raise SystemExit(f"--extra {spec!r}: expected 'NAME:key=value,key=value'")
    pairs = [kv.split("=", 1) for kv in body.split(",") if kv.strip()]
    if any(len(p) != 2 for p in pairs):
        raise SystemExit(f"--extra {spec!r}: every override must be key=value")
    return name.strip(), {k.strip(): v.strip() for k, v in pairs}


def run_one(model, prompt: str, seed: int, frames: int, overrides: dict[str, object], tmp: Path,
            report_segment: int = 0) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]:
    """Generate one video through the real pipeline and read the written frames back (uint8 F, H, W, 3); with
    ``report_segment``, also the drift report's changes (last segment minus first) of the written file."""
    out = tmp / f"v{seed}.mp4"
    if overrides.get("dtype") not in (None, "fp32"):  # the preloaded model is fp32: this row loads its own
        model = None
    flags = {"model": "toy", "device": DEVICE[0], "prompts": [prompt], "fifo.num_frames": frames,
             "sampling.seed": seed, "output.path": str(out), "output.overwrite": True, **overrides}
    generate(build_run_config(flags=flags), model=model, log=lambda _m: None)
    video = torch.from_numpy(iio.imread(out))
    if not report_segment or measure_video is None:
        return video
    rep = measure_video(out, segment_frames=max(2, min(report_segment, len(video) // 2)))
    return video, {m: rep["drift"][m]["change"] for m in REPORT_METRICS}


def summary_cells(scores: list, reports: list[dict[str, float]]) -> dict[str, str]:
    """Mean +- std over the prompts of the toy's scores and of the drift report's changes (when measured)."""
    row = {}
    for m in METRICS:
        mean, std = summarize([getattr(s, m) if m != "score" else s.score for s in scores])
        row[m] = f"{mean:.3f} ± {std:.3f}"
    for m in REPORT_METRICS if all(reports) else ():
        mean, std = summarize([d[m] for d in reports])
        row[f"report {HEADS[m]}"] = f"{mean:+.3f} ± {std:.3f}"
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--drift-frames", type=int, default=512, help="length of the drift-curve run (0: skip)")
    p.add_argument("--segment", type=int, default=64, help="drift-curve segment length")
    p.add_argument("--report-segment", type=int, default=32,
                   help="drift report segment (frames; half the video for a shorter one)")
    p.add_argument("--extra", action="append", default=[], help="NAME:key=value,... another configuration")
    p.add_argument("--only", default=None, help="comma list of configuration names to run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    DEVICE[0] = args.device
    configs = CONFIGS + [parse_extra(e) for e in args.extra]
    if args.only:
        keep = {s.strip() for s in args.only.split(",")}
        configs = [c for c in configs if c[0] in keep]
    t_start = time.perf_counter()
    print(load_note())
    model = load_model("toy", device=args.device)
    caps = prompts(args.prompts)
    print("prompts: " + "; ".join(f"{i}: {c}" for i, c in enumerate(caps)), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for name, ov in configs:
            t0 = time.perf_counter()
            runs = [run_one(model, c, i, args.frames, ov, tmp, args.report_segment) for i, c in enumerate(caps)]
            runs = [r if isinstance(r, tuple) else (r, {}) for r in runs]  # no report (no OpenCV): scores only
            scores = [score_video(v, c) for (v, _), c in zip(runs, caps, strict=True)]
            row = {"frames": str(model.temporal_length if ov.get("mode") == "base" else args.frames)}
            row.update(summary_cells(scores, [d for _, d in runs]))
            wall = (time.perf_counter() - t0) / len(caps)
            row["wall s / video"] = f"{wall:.1f}"
            row["s / frame"] = f"{wall / int(row['frames']):.3f}"
            results.append(row)
            print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        print()
        print_table([c[0] for c in configs], results)
        if args.drift_frames:
            print(f"\ndrift curve: '{caps[0]}', seed 0, {args.drift_frames} frames, FIFO, score per "
                  f"{args.segment}-frame segment")
            curve = drift_curve(run_one(model, caps[0], 0, args.drift_frames, {}, tmp), caps[0], args.segment)
            print("| start frame | score | colour_acc | shape_acc | direction_acc | speed |")
            print("| --- | --- | --- | --- | --- | --- |")
            for seg in curve:
                print(f"| {seg['start']} | {seg['score']:.3f} | {seg['colour_acc']:.3f} | {seg['shape_acc']:.3f} | "
                      f"{seg['direction_acc']:.3f} | {seg['speed']:.2f} |")
    print(f"\ntotal wall time {time.perf_counter() - t_start:.1f} s; {load_note(at_start=False)}")


if __name__ == "__main__":
    main()

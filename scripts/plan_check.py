"""The GPU check's comparison of ``fifo-gen plan`` with what ``scripts/bench_gpu.py`` measured on the card.

    python scripts/plan_check.py OUT/bench.json [--gpu-memory GIB]     # writes OUT/plan_check.md and .json

For each benchmark mode: the plan's predicted peak memory against the measured one, and the measured seconds per
output frame against the plan's floor (FLOPs / the card's peak). The benchmark builds the U-Net and the VAE only
(random weights, no text encoder), so the prediction here leaves the encoders' fp32 weights out. Mode (e)'s stores
are predicted at their largest (every queued frame) but measured after a few iterations: an upper bound there.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from fifo_longvid.backends import costs_for
from fifo_longvid.plan import GIB, card_for, make_plan
from fifo_longvid.run.config import build_run_config

REPO = Path(__file__).resolve().parents[1]
MODE_SETTINGS = {"(a)": ("fp32", False), "(b)": ("fp16", False), "(c)": ("bf16", False), "(d)": ("bf16", False),
                 "(e)": ("bf16", True), "(f)": ("bf16", False)}


def card_gib(arg: float | None) -> float:
    if arg is not None:
        return arg
    import torch

    return torch.cuda.get_device_properties(0).total_memory / GIB if torch.cuda.is_available() else 80.0


def number(text: str) -> float:
    """The first number in a table cell ("15.2", "0.500 [0.4-0.6]"), NaN for "n/a (CPU)"."""
    m = re.match(r"\s*([0-9.]+)", text)
    return float(m.group(1)) if m else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=Path)
    ap.add_argument("--gpu-memory", type=float, default=None)
    args = ap.parse_args()
    out = args.bench.parent
    bench = json.loads(args.bench.read_text())
    rows = []
    if bench.get("config") != "videocrafter2":
        md = [f"plan check: the benchmark ran config {bench.get('config')!r}; plan covers the full-size models only"]
    else:
        gib = card_gib(args.gpu_memory)
        md = [f"card memory {gib:.1f} GiB; predicted = plan without the text encoder (the benchmark loads none)", "",
              "| mode | max-batch | predicted peak (GiB) | measured peak (GiB) | measured / predicted | "
              "s/frame measured | floor (s/frame) | measured / floor |", "| --- |" + " --- |" * 7]
        for name, r in zip(bench["columns"], bench["rows"], strict=True):
            key = name.split(" ")[0]
            if "error" in r or key not in MODE_SETTINGS:
                continue
            dtype, fast = MODE_SETTINGS[key]
            m = re.search(r"\((\d+) of \d+\)|\((\d+) \(", r.get("samples per iteration; per U-Net call", ""))
            batch = next((g for g in (m.groups() if m else ()) if g), "1")
            flags = {"model": "videocrafter2", "prompts": ["x"], "dtype": dtype, "fifo.max_batch": batch}
            cfg = build_run_config(REPO / "configs" / "fifo_fast.yaml" if fast else None, flags)
            p = make_plan(cfg, card_for(None, gib))
            predicted = p.peak_gib - costs_for("videocrafter2").params_fp32 * 4 / GIB
            measured = number(r.get("peak device memory (GiB)", ""))
            s = number(r.get("s per output frame, median [min-max]", ""))
            rows.append({"mode": name, "max_batch": int(batch), "predicted_gib": round(predicted, 2),
                         "measured_gib": measured, "s_per_frame": s, "floor_s_per_frame": p.floor_s_per_frame})
            md.append(f"| {name} | {batch} | {predicted:.1f} | {measured:.1f} | {measured / predicted:.2f} | {s:.3f} | "
                      f"{p.floor_s_per_frame:.3f} | {s / p.floor_s_per_frame:.1f}x |")
    (out / "plan_check.md").write_text("\n".join(md) + "\n")
    (out / "plan_check.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()

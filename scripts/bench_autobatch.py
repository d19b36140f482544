"""What ``--max-batch auto``'s fixed CPU rule costs against the fastest chunk size found by timing.

    python scripts/bench_autobatch.py [--cases toy,tiny,medium] [--repeats 5] [--threads N]

For each case, one FIFO iteration's U-Net work (every window, cond and uncond: ``rows`` samples) is run
at every candidate chunk size (2, 4, 8, ... and all), round-robin so that load changes hit every size
alike; the table gives the median seconds per iteration, the size the rule picks, the fastest size, and
the rule's cost relative to the fastest. The old timed ``auto`` picked whichever size won a one-shot
timing, i.e. at best the fastest column and at worst any size within the noise.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fifo import Case, build_case_model  # noqa: E402
from benchlib import load_note, report  # noqa: E402 (scripts/ is on sys.path)

import fifo_longvid  # noqa: E402
from fifo_longvid.fifo.autobatch import cpu_rule  # noqa: E402
from fifo_longvid.fifo.queue import FifoPlan  # noqa: E402

CASES = {  # bench_fifo's cases; ``iters`` unused here (--repeats)
    "toy": Case("toy", 8, 8, 2, 0),
    "tiny": Case("tiny", 16, 8, 2, 0),
    "medium": Case("medium", 16, 4, 2, 0),
}


def candidates(rows: int) -> list[int]:
    sizes, c = [], 2
    while c < rows:
        sizes.append(c)
        c *= 2
    return sizes + [rows]


def case_model(case: Case):
    if case.name == "toy":
        model = fifo_longvid.load_model("toy", device="cpu")
        return model, model.encode_text(["a red circle moving right"])
    model, cond, _, _ = build_case_model(case.name, case.latent_hw)
    return model, cond


def bench_case(case: Case, repeats: int) -> dict[str, str]:
    model, cond = case_model(case)
    plan = FifoPlan(case.window, case.partitions, lookahead=True)
    rows = 2 * len(plan.windows())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, model.cfg.channels, case.window, case.latent_hw, case.latent_hw, generator=g)
    t = torch.randint(0, 1000, (rows, case.window), generator=g)
    ctx = cond.expand(rows, -1, -1)
    sizes = candidates(rows)
    times: dict[int, list[float]] = {n: [] for n in sizes}
    with torch.no_grad():
        model.unet(x[:2], t[:2], ctx[:2])  # warm-up
        for _ in range(repeats):
            for n in sizes:
                t0 = time.perf_counter()
                for s in range(0, rows, n):
                    model.unet(x[s:s + n], t[s:s + n], ctx[s:s + n])
                times[n].append(time.perf_counter() - t0)
    med = {n: statistics.median(v) for n, v in times.items()}
    rule = cpu_rule(model.cfg.unet.model_channels, rows, case.window, (case.latent_hw, case.latent_hw))
    chosen = rule.value or rows
    fastest = min(med, key=med.get)
    row = {"samples per iteration": str(rows)}
    row.update({f"s/iteration at {n} per call": f"{med[n]:.3f}" for n in sizes})
    row.update({"rule picks": str(chosen), "fastest by timing": str(fastest),
                "rule / fastest": f"{med[chosen] / med[fastest]:.3f}",
                "spread of sizes (slowest / fastest)": f"{max(med.values()) / med[fastest]:.3f}"})
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="toy,tiny,medium")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {load_note()}")
    names = [c for c in args.cases.split(",") if c]
    results = [bench_case(CASES[n], args.repeats) for n in names]
    report(names, results, t_start)


if __name__ == "__main__":
    main()

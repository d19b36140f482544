"""scripts/bench_gpu.py counts FLOPs and samples per call over warm iterations, not the cold first one."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def bench_gpu():
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module("bench_gpu")
    finally:
        sys.path.remove(str(SCRIPTS))


def test_work_is_counted_over_warm_iterations():
    """A cached mode's first iteration computes every cache (mode e: 153 TFLOP and 12 rows per call cold against
    89.8 and about 5.5 warm); the count must be the steady state, or the achieved FLOP/s is 1.7x too high."""
    samples = {"n": 0, "calls": 0}
    done = {"k": 0}

    def iteration() -> None:  # cold: a 64x64x64 matmul and 12 rows; warm: 16x16x16 and 5 rows
        n, rows = (64, 12) if done["k"] == 0 else (16, 5)
        torch.ones(n, n) @ torch.ones(n, n)
        samples["n"] += rows
        samples["calls"] += 1
        done["k"] += 1

    flops, per_call = bench_gpu().measure_work(iteration, samples, warm=2, counted=3)
    assert flops == 2 * 16**3 and per_call == 5.0
    assert done["k"] == 5


def test_every_setup_counts_after_a_warm_up():
    mod = bench_gpu()
    for config in ("videocrafter2", "medium", "smoke"):
        s = mod.setups(config, quick=True)
        assert s.count_warm >= 1 and s.count_iters >= 1
    assert mod.setups("videocrafter2", quick=True).count_warm >= 10  # DeepCache/CFG-Cache every 3, queue filled

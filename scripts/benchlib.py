"""Helpers shared by the benchmark scripts (tables, timing formats, machine-load notes)."""

from __future__ import annotations

import os
import statistics
import time

import torch


def fmt_t(ts: list[float]) -> str:
    return f"{statistics.median(ts):.3f} [{min(ts):.3f}-{max(ts):.3f}]"


def print_table(columns: list[str], results: list[dict[str, str]]) -> None:
    metrics: list[str] = []
    for r in results:
        metrics += [m for m in r if m not in metrics]
    print("| metric | " + " | ".join(columns) + " |")
    print("| --- | " + " | ".join("---" for _ in columns) + " |")
    for m in metrics:
        print(f"| {m} | " + " | ".join(r.get(m, "-") for r in results) + " |")


def load_note(at_start: bool = True) -> str:
    """The 1-minute load average vs the cores: oversubscription makes multi-threaded timings meaningless
    (on a busy 2-core machine a 2-thread forward can be 50x slower than a 1-thread one)."""
    if not hasattr(os, "getloadavg"):
        return "load average: n/a"
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    note = f"load average (1 min) {load:.2f} on {cores} cores" + ("" if at_start else ", including this run")
    if at_start and load > cores - 0.5 and torch.get_num_threads() > 1:
        note += " -- WARNING: the machine is busy; multi-threaded timings will be inflated (try --threads 1)"
    return note


def report(columns: list[str], results: list[dict[str, str]], t_start: float) -> None:
    """The closing block of every benchmark: the table, then wall time and machine load."""
    print()
    print_table(columns, results)
    print()
    print(f"total wall time {time.perf_counter() - t_start:.1f} s; {load_note(at_start=False)}")

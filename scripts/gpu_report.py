"""Collect the GPU check's pieces in OUT into gpu_report.md and gpu_report.json, whatever failed.

    python scripts/gpu_report.py OUT
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def test_summary(xml: Path) -> dict:
    if not xml.exists():
        return {"ran": False}
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = []
    for case in suite.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = tag if tag != "failure" else "failed"
                detail = (node.get("message") or "").splitlines()[0][:300] if node.get("message") else ""
                break
        else:
            detail = ""
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "detail": detail})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    return {"ran": True, "counts": counts, "cases": cases}


def table(bench: dict | None, log: str) -> list[str]:
    """A benchmark's JSON (columns, one dict of metric -> value per column) as a markdown table."""
    if not bench:
        return [f"no table (see {log})"]
    cols = bench["columns"]
    metrics: list[str] = []
    for r in bench["rows"]:
        metrics += [m for m in r if m not in metrics]
    md = [f"{bench['card']}, torch {bench['torch']}, config {bench['config']}"]
    md += ["", "| metric | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    return md + [f"| {m} | " + " | ".join(r.get(m, "-") for r in bench["rows"]) + " |" for m in metrics]


def main() -> None:
    out = Path(sys.argv[1])
    steps = [line.split(" ", 1) for line in (out / "steps.txt").read_text().splitlines() if line.strip()] \
        if (out / "steps.txt").exists() else []
    env = (out / "env.log").read_text().strip() if (out / "env.log").exists() else ""
    tests = test_summary(out / "cuda_tests.xml")
    bench = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else None
    wan = json.loads((out / "wan_bench.json").read_text()) if (out / "wan_bench.json").exists() else None
    toy = (out / "toy_quality.md").read_text() if (out / "toy_quality.md").exists() else ""
    report = {"steps": dict(steps), "env": env, "tests": tests, "bench": bench, "wan_bench": wan,
              "toy_weights_exported": (out / "toy.safetensors").exists()}
    (out / "gpu_report.json").write_text(json.dumps(report, indent=1))
    md = ["# GPU check", "", "```", env, "```", "", "| step | result |", "| --- | --- |"]
    md += [f"| {k} | {v} |" for k, v in steps]
    md += ["", "## CUDA tests", ""]
    if tests["ran"]:
        md.append(", ".join(f"{v} {k}" for k, v in tests["counts"].items()))
        md += [f"- {c['outcome']}: `{c['test']}` {c['detail']}" for c in tests["cases"] if c["outcome"] != "passed"]
    else:
        md.append("did not run (see cuda_tests.log)")
    md += ["", "## Full-size speed (scripts/bench_gpu.py)", ""]
    md += table(bench, "bench.log")
    md += ["", "## Wan2.1-1.3B (scripts/bench_gpu.py --config wan)", ""]
    md += table(wan, "wan_bench.log")
    plan = (out / "plan_check.md").read_text() if (out / "plan_check.md").exists() else "(see plan_check.log)"
    md += ["", "## fifo-gen plan against the measurements (scripts/plan_check.py)", "", plan]
    md += ["", "## Toy", "", toy or ("weights exported: toy.safetensors" if report["toy_weights_exported"]
                                      else "(see toy.log)")]
    (out / "gpu_report.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()

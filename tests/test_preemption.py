"""SIGTERM as a scheduler sends it: the CLI runs in its own session (``setsid``), and the signal goes to its process
group and to every other process it started (SLURM signals all processes of a job, ffmpeg included)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fifo_longvid.io.video import read_video

# --max-batch pinned: runs in separate processes compare bitwise, and `auto` may calibrate differently in each
ARGS = ["--config", "tiny", "--height", "64", "--width", "64", "--seed", "3", "--device", "cpu", "--max-batch", "4",
        "fifo.window=4"]
CLEAN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "SLURM_NTASKS",
             "SLURM_STEP_ID", "SLURM_CPUS_PER_TASK")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env["OMP_NUM_THREADS"] = "1"  # the same thread count in every run, so the videos are comparable bit for bit
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def fifo_gen(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fifo_longvid", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=600)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def terminate_like_slurm(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the process group of a ``setsid`` child and to each of its descendants."""
    others = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGTERM)
    for pid in others:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def start_and_stop(args: list[str], cwd: Path, ready: Path) -> tuple[int, str]:
    """Start ``fifo-gen args`` in a new session, wait until ``ready`` exists, send SIGTERM; (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "fifo_longvid", *args], cwd=cwd, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while not ready.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    terminate_like_slurm(proc)
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def hidden(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob(".*") if ".locks" not in p.parts)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX process groups")
def test_generate_sigterm_leaves_a_playable_partial_and_resumes_bit_exact(tmp_path):
    gen = ["generate", "--prompt", "a cat 🐱 on a sofa", *ARGS, "--num-frames", "10", "--checkpoint-every", "2"]
    ref = fifo_gen(*gen, "-o", "ref/fox.mp4", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "run"
    code, err = start_and_stop([*gen, "-o", "run/fox.mp4"], tmp_path, ready=out / "fox.mp4.state.pt")
    assert code == 130, err
    part = read_video(out / "fox.partial.mp4")  # decodes: a playable partial
    assert 2 <= len(part) < 10
    side = json.loads((out / "fox.partial.json").read_text(encoding="utf-8"))
    assert side["complete"] is False and side["frames_written"] == len(part)
    assert (out / "fox.mp4.state.pt").exists() and hidden(out) == [] and not (out / "fox.mp4").exists()
    assert "--resume" in err and "Traceback" not in err

    resumed = fifo_gen(*gen, "-o", "run/fox.mp4", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert np.array_equal(read_video(out / "fox.mp4"), read_video(tmp_path / "ref" / "fox.mp4"))
    assert sorted(p.name for p in out.iterdir()) == ["fox.json", "fox.mp4"]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX process groups")
def test_batch_sigterm_records_interrupted_and_the_rerun_finishes_clean(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat 🐱 on a sofa\na blue car\n", encoding="utf-8")
    out = tmp_path / "out"
    batch = ["batch", str(prompts), "--out-dir", str(out), *ARGS, "--num-frames", "8", "--checkpoint-every", "2"]
    ready = out / "ready"

    # the first item's state file appears after its second frame
    def first_state() -> Path:
        return next(iter(sorted(out.glob("*.state.pt"))), ready)

    proc = subprocess.Popen([sys.executable, "-m", "fifo_longvid", *batch], cwd=tmp_path, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while not first_state().exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    terminate_like_slurm(proc)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    recs = [json.loads(x) for x in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert recs[0]["status"] == "interrupted", recs
    (partial,) = out.glob("*.partial.mp4")
    assert len(read_video(partial)) >= 2 and hidden(out) == []
    assert "Traceback" not in err and "--resume" not in err and "run the same command again" in err

    again = fifo_gen(*batch, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    recs = [json.loads(x) for x in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["status"] for r in recs] == ["done", "done"] and recs[0]["resumed"] is True
    left = sorted(p.name for p in out.iterdir() if p.name != ".locks" and not p.name.startswith("manifest"))
    assert len(left) == 4 and all(n.endswith((".mp4", ".json")) and ".partial" not in n for n in left), left

"""What a cluster job needs (issue 11): emoji prompts, SLURM sharding from the environment, sizes checked before
loading, readable job logs, a clear out-of-memory message, and folders without leftovers."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from fifo_longvid.batch.runner import BatchSummary, plan_batch
from fifo_longvid.batch.sharding import Shard, shard_from_env
from fifo_longvid.cli.main import app
from fifo_longvid.cli.progress import Bars, plural
from fifo_longvid.cli.support import threads_from_slurm
from fifo_longvid.io.atomic import HOST
from fifo_longvid.io.prompts import read_prompts
from fifo_longvid.io.video import read_video
from fifo_longvid.run import fifo_run, pipeline
from fifo_longvid.run.config import ConfigError, build_run_config
from fifo_longvid.run.validation import validate

TINY = ["--config", "tiny", "--height", "64", "--width", "64", "--seed", "3", "fifo.window=4"]
SMALL = ["fifo.window=4", "fifo.partitions=2", "sampling.height=64", "sampling.width=64", "sampling.seed=7"]
EMOJI = "a cat 🐱 on a sofa"


def run(tiny_model, out, extra=(), progress=None, log=lambda m: None):
    cfg = build_run_config(flags={"model": "tiny", "prompts": [EMOJI], "output.path": str(out)},
                           overrides=SMALL + list(extra))
    return pipeline.generate(cfg, model=tiny_model, progress=progress, log=log)


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# ------------------------------------------------------------------------------------------------ 1. emoji


def test_prompts_outside_the_bmp_survive_every_config_layer():
    cfg = build_run_config(flags={"prompts": [EMOJI, "costs ${HOME} \"quoted\" it's"]},
                           item={"conditioning.image": "pics/🐱.png"})
    assert cfg.prompts == [EMOJI, "costs ${HOME} \"quoted\" it's"] and cfg.conditioning.image == "pics/🐱.png"


def test_emoji_prompt_end_to_end_generate_and_batch(tmp_path):
    out = tmp_path / "cat.mp4"
    r = CliRunner().invoke(app, ["generate", "--prompt", EMOJI, *TINY, "--num-frames", "1", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))["prompt"] == EMOJI
    prompts = tmp_path / "p.txt"
    prompts.write_text(f"{EMOJI}\n", encoding="utf-8")
    r = CliRunner().invoke(app, ["batch", str(prompts), "--out-dir", str(tmp_path / "b"), "--num-frames", "1", *TINY])
    assert r.exit_code == 0, r.output
    (rec,) = [json.loads(x) for x in (tmp_path / "b" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rec["status"] == "done" and rec["prompt"] == EMOJI and read_video(rec["output"]).shape[0] == 1


# ------------------------------------------------------------------------------------------------ 3. sharding


def test_single_task_and_irregular_arrays_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"--shard 3/N"):
        shard_from_env({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "1", "SLURM_ARRAY_TASK_MIN": "3",
                        "SLURM_ARRAY_TASK_MAX": "3", "SLURM_ARRAY_TASK_STEP": "1"})
    with pytest.raises(ConfigError, match="not a range"):  # --array=1,5
        shard_from_env({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_MIN": "1",
                        "SLURM_ARRAY_TASK_MAX": "5", "SLURM_ARRAY_TASK_STEP": "1"})


def test_stepped_array_tasks_are_shards_0_to_n():
    env = {"SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "4",
           "SLURM_ARRAY_TASK_STEP": "2"}  # --array=0-4:2, as SLURM 22.05 sets it
    got = [shard_from_env({**env, "SLURM_ARRAY_TASK_ID": str(i)}) for i in (0, 2, 4)]
    assert [(s.index, s.count) for s in got] == [(0, 3), (1, 3), (2, 3)]


def test_task_ids_only_count_inside_an_srun_step():
    batch_step = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"}  # sbatch --ntasks=4, no srun
    assert shard_from_env(batch_step) == Shard(0, 1, "single")
    srun = {**batch_step, "SLURM_STEP_ID": "0", "SLURM_PROCID": "2", "SLURM_STEP_NUM_TASKS": "4"}
    assert (shard_from_env(srun).index, shard_from_env(srun).count) == (2, 4)


def test_torch_threads_follow_slurm_cpus_per_task():
    before = torch.get_num_threads()
    try:
        assert threads_from_slurm({"SLURM_CPUS_PER_TASK": "3"}) == 3 and torch.get_num_threads() == 3
        assert threads_from_slurm({"SLURM_CPUS_PER_TASK": "3", "OMP_NUM_THREADS": "1"}) is None  # torchrun's wins
        assert threads_from_slurm({}) is None
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ 4. messages


def test_long_prompt_limit_is_the_same_for_flags_and_files(tmp_path):
    long = "a" * 2001
    with pytest.raises(ConfigError, match="at most 2000"):
        validate(build_run_config(flags={"model": "tiny", "prompts": [long]}))
    f = tmp_path / "p.txt"
    f.write_text(long + "\n")
    with pytest.raises(Exception, match="at most 2000"):
        read_prompts(f)


def test_batch_interrupt_does_not_suggest_a_flag_batch_lacks(tiny_model, tmp_path):
    lines: list[str] = []

    def stop_early(task, done, total):
        if task == "fifo" and done == 5:
            os.kill(os.getpid(), 2)

    res = run(tiny_model, tmp_path / "v.mp4", ["fifo.num_frames=3"], progress=stop_early, log=lines.append)
    assert res.partial and not any("--resume" in m for m in lines)


# ------------------------------------------------------------------------------------------------ 5. leftovers


def test_finished_resume_leaves_only_video_and_sidecar(tiny_model, tmp_path):
    out = tmp_path / "v.mp4"

    def stop(task, done, total):
        if task == "fifo" and done == 5:
            os.kill(os.getpid(), 2)

    part = run(tiny_model, out, ["fifo.num_frames=3", "output.checkpoint_every=1"], progress=stop)
    assert part.partial and {"v.partial.mp4", "v.partial.json", "v.mp4.state.pt"} <= set(listing(tmp_path))
    run(tiny_model, out, ["fifo.num_frames=3", "output.resume=true"])
    assert listing(tmp_path) == ["v.json", "v.mp4"]


def test_new_run_removes_stale_temps_of_its_name_only(tiny_model, tmp_path):
    dead = 2**22 + 12345  # above any pid_max default: not a running process
    stale = [f".v.mp4.tmp-{HOST}-{dead}-0a1b2c3d.mp4", f".v.mp4.tmp-{dead}-0a1b2c3d.mp4",  # older naming too
             f".v.mp4.state.pt.tmp-{HOST}-{dead}-0a1b2c3d"]
    kept = [f".v.mp4.tmp-{HOST}-{os.getpid()}-0a1b2c3d.mp4",  # a live writer (this process)
            f".v.mp4.tmp-otherhost-{dead}-0a1b2c3d.mp4",  # another machine's: not ours to judge
            f".w.mp4.tmp-{HOST}-{dead}-0a1b2c3d.mp4", "notes.txt"]  # another output's, and a user's file
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    run(tiny_model, tmp_path / "v.mp4", ["fifo.num_frames=1"])
    assert listing(tmp_path) == sorted(kept + ["v.json", "v.mp4"])


def test_saved_state_is_not_silently_abandoned(tiny_model, tmp_path):
    out = tmp_path / "v.mp4"

    def stop(task, done, total):
        if task == "fifo" and done == 5:
            os.kill(os.getpid(), 2)

    run(tiny_model, out, ["fifo.num_frames=3"], progress=stop)
    with pytest.raises(ConfigError, match="--resume to continue it, or --overwrite"):
        run(tiny_model, out, ["fifo.num_frames=3"])
    run(tiny_model, out, ["fifo.num_frames=3", "output.overwrite=true"])
    assert listing(tmp_path) == ["v.json", "v.mp4"]


def test_png_output_reports_the_folder_it_writes(tmp_path):
    r = CliRunner().invoke(app, ["generate", "--prompt", "x", *TINY, "--mode", "base", "--steps", "2", "-o",
                                 str(tmp_path / "fox.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "fox").is_dir() and not (tmp_path / "fox.png").exists()
    meta = json.loads((tmp_path / "fox.json").read_text())
    assert meta["output"] == str(tmp_path / "fox") and f"-> {tmp_path / 'fox'} " in r.output.replace("\n", "")


# ------------------------------------------------------------------------------------------------ 7. sizes


@pytest.mark.parametrize("size, ok", [(80, False), (96, False), (48, False), (64, True), (128, True)])
def test_sizes_must_fit_every_unet_level_before_any_weights_load(size, ok, monkeypatch):
    from fifo_longvid.run.resolve import resolve

    cfg = build_run_config(flags={"model": "videocrafter2", "prompts": ["x"], "sampling.height": size})
    if ok:
        assert resolve(cfg).height == size
        return
    with pytest.raises(ConfigError, match="multiple of 64"):
        resolve(cfg)

    def no_load(*a, **k):
        raise AssertionError("weights loaded before the size check")

    monkeypatch.setattr("fifo_longvid.backends.videocrafter.load.load_model", no_load)
    r = CliRunner().invoke(app, ["generate", "--prompt", "x", "--height", str(size), "-o", "/nonexistent/x.mp4"])
    assert r.exit_code == 2 and "multiple of 64" in r.output and "Traceback" not in r.output


# ------------------------------------------------------------------------------------------------ 8. logs


def test_job_log_progress_lines_are_whole():
    buf = io.StringIO()
    bars = Bars(Console(file=buf, width=80), live=False)
    with bars:
        for i in range(1, 13):
            bars("fifo", i, 12)
    text = buf.getvalue()
    assert "FIFO iterations: 12/12 (100%)" in text and "…" not in text
    assert len(text.splitlines()) <= 11  # one line per tenth, not one per iteration


def test_plurals_and_the_interrupted_column(capsys):
    from fifo_longvid.cli.batch import _print_summary

    assert (plural(1, "item"), plural(2, "item"), plural(0, "frame")) == ("1 item", "2 items", "0 frames")
    _print_summary(BatchSummary(Shard(0, 1), total=1, done=0, interrupted=True))
    header = [ln for ln in capsys.readouterr().err.splitlines() if "done" in ln][0]
    assert "interrupted" in header


def test_start_line_names_device_dtype_plan_and_max_batch(tiny_model, tmp_path):
    lines: list[str] = []
    run(tiny_model, tmp_path / "v.mp4", ["fifo.num_frames=1", "fifo.max_batch=4"], log=lines.append)
    (start,) = [m for m in lines if "DDIM steps" in m]
    assert re.search(r"cpu \(\d+ threads?\) fp32; FIFO window 4 x 2 partitions / block 1 = 8 DDIM steps, lookahead on, "
                     r"init first; \d+ iterations for 1 frame; \d+ samples per iteration, max-batch 4 -> 4",
                     start), start


def test_cuda_out_of_memory_suggests_a_smaller_max_batch(tmp_path, monkeypatch):
    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(fifo_run.FifoStepper, "step", oom)
    r = CliRunner().invoke(app, ["generate", "--prompt", "x", *TINY, "--num-frames", "1", "--max-batch", "8",
                                 "-o", str(tmp_path / "v.mp4")])
    assert r.exit_code == 1 and "--max-batch 4" in r.output and "Traceback" not in r.output, r.output


# ------------------------------------------------------------------------------------------------ batch naming


def test_batch_plan_with_emoji_rows(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text(f"prompt,seed,sampling.cfg\n{EMOJI},4,7.5\n", encoding="utf-8")
    (p,) = plan_batch(read_prompts(f), tmp_path / "out", {"model": "tiny"}, SMALL)
    assert p.cfg.prompts == [EMOJI] and p.cfg.sampling.cfg == 7.5 and p.seed == 4


def test_interrupt_in_the_warm_up_says_so(tiny_model, tmp_path):
    lines: list[str] = []

    def stop(task, done, total):
        if task == "fifo" and done == 1:  # the first 4 iterations emit nothing
            os.kill(os.getpid(), 2)

    res = run(tiny_model, tmp_path / "v.mp4", ["fifo.num_frames=2"], progress=stop, log=lines.append)
    assert res.partial and res.frames == 0 and any("before the first output frame" in m for m in lines)
    assert not any("None" in m for m in lines) and not (tmp_path / "v.partial.mp4").exists()


def test_auto_resume_for_requeued_jobs_finds_state_and_seed(tiny_model, tmp_path):
    """A requeued job runs the same command again: --auto-resume continues from the state (with the seed the
    state recorded, when the command has no --seed), and exits 0 at once when the video is complete."""
    out = tmp_path / "v.mp4"
    cfg = build_run_config(flags={"model": "tiny", "prompts": ["a fox"], "output.path": str(out)},
                           overrides=[o for o in SMALL if "seed" not in o] + ["fifo.num_frames=3"])

    def stop(task, done, total):
        if task == "fifo" and done == 5:
            os.kill(os.getpid(), 2)

    first = pipeline.generate(cfg, model=tiny_model, progress=stop, log=lambda m: None)
    assert first.partial
    args = ["generate", "--prompt", "a fox", "--config", "tiny", "--num-frames", "3", *SMALL[:4], "-o", str(out),
            "--auto-resume"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "resuming at output frame" in r.output, r.output
    assert json.loads(out.with_suffix(".json").read_text())["seed"] == first.seed and listing(tmp_path) == [
        "v.json", "v.mp4"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0 and "already complete" in r.output

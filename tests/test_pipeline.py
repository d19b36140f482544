"""End-to-end FIFO runs on the tiny model: determinism, interrupt + resume bit for bit, multi-prompt."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fifo_longvid.fifo.state import StateMismatch, state_path
from fifo_longvid.io.video import read_video
from fifo_longvid.run import pipeline
from fifo_longvid.run.conditioning import prompt_schedule
from fifo_longvid.run.config import ConfigError, build_run_config

SMALL = ["fifo.window=4", "fifo.partitions=2", "sampling.height=64", "sampling.width=64", "sampling.seed=7"]


def run(tiny_model, out, extra=(), progress=None):
    cfg = build_run_config(flags={"model": "tiny", "prompts": ["a red fox running"], "output.path": str(out)},
                           overrides=SMALL + list(extra))
    return pipeline.generate(cfg, model=tiny_model, progress=progress, log=lambda m: None)


def test_same_seed_twice_is_identical(tiny_model, tmp_path):
    a = run(tiny_model, tmp_path / "a", ["fifo.num_frames=3", "output.save_latents=true"])
    b = run(tiny_model, tmp_path / "b", ["fifo.num_frames=3", "output.save_latents=true"])
    assert a.frames == b.frames == 3
    la = load_file(str((tmp_path / "a").with_suffix(".latents.safetensors")))["latents"]
    lb = load_file(str((tmp_path / "b").with_suffix(".latents.safetensors")))["latents"]
    assert la.shape == (1, 4, 3, 8, 8) and torch.equal(la, lb)
    assert np.array_equal(read_video(a.output), read_video(b.output))
    meta = json.loads(a.sidecar.read_text())
    assert meta["seed"] == 7 and meta["frames_written"] == 3 and meta["complete"]
    assert meta["config"]["fifo"]["window"] == 4 and "timings" in meta and "torch" in meta["versions"]


def test_interrupt_then_resume_equals_uninterrupted(tiny_model, tmp_path):
    extra = ["fifo.num_frames=6", "output.save_latents=true", "sampling.eta=1.0", "output.checkpoint_every=2"]
    full = run(tiny_model, tmp_path / "full", extra)

    def interrupt_at_4(task, done, total):
        if task == "fifo" and done == 8:  # warm-up is 4 iterations, so 4 frames are out
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "cut"
    part = run(tiny_model, out, extra, progress=interrupt_at_4)
    assert part.partial and part.frames == 4
    assert len(read_video(part.output)) == 4  # a playable partial with the frames done so far
    assert not out.exists() and state_path(out).exists()

    resumed = run(tiny_model, out, extra + ["output.resume=true"])
    assert not resumed.partial and resumed.frames == 6
    assert np.array_equal(read_video(resumed.output), read_video(full.output))
    lf = load_file(str((tmp_path / "full").with_suffix(".latents.safetensors")))["latents"]
    lr = load_file(str(out.with_suffix(".latents.safetensors")))["latents"]
    assert torch.equal(lf, lr)
    assert not state_path(out).exists()  # cleaned up after a complete run


def test_resume_refuses_state_from_other_settings(tiny_model, tmp_path):
    def stop(task, done, total):
        if task == "fifo" and done == 5:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "v"
    run(tiny_model, out, ["fifo.num_frames=4"], progress=stop)
    with pytest.raises(StateMismatch, match="different settings"):
        run(tiny_model, out, ["fifo.num_frames=4", "sampling.cfg=3.0", "output.resume=true"])


def test_multi_prompt_windows_follow_their_frames(tiny_model, tmp_path):
    cfg = build_run_config(flags={"model": "tiny", "prompts": ["a cat", "a dog"], "output.path": str(tmp_path / "m"),
                                  "fifo.frames_per_prompt": [2, 3]}, overrides=SMALL)
    from fifo_longvid.fifo.queue import FifoPlan

    plan = FifoPlan(4, 2, True)
    of = prompt_schedule(cfg, plan, warmup=4)
    first_out = plan.head + 4  # frame id of output frame 0
    ids = torch.arange(first_out - 3, first_out + 8)
    assert of(ids).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    res = pipeline.generate(cfg, model=tiny_model, log=lambda m: None)
    assert res.frames == 5


@pytest.mark.parametrize("override,match", [
    (["fifo.num_frames=0"], "num-frames must be >= 1"),
    (["fifo.partitions=0"], "partitions must be >= 1"),
    (["sampling.steps=7"], "--steps 7 does not fit window 4 x 2 partitions"),
    (["sampling.steps=10", "fifo.block=1", "fifo.partitions=2"], "contradicts window"),
    (["fifo.block=3"], "valid blocks"),
    (["fifo.window=5"], "even window"),
    (["sampling.height=60"], "multiple of 64"),
    (["fifo.init=zeros"], "--init must be one of"),
    (["fifo.max_batch=0"], "max-batch must be >= 1"),
])
def test_bad_fifo_settings(tiny_model, tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        run(tiny_model, tmp_path / "x.mp4", override)
    assert not (tmp_path / "x.mp4").exists()


def test_disk_full_keeps_state_for_resume(tiny_model, tmp_path, monkeypatch):
    import errno

    from fifo_longvid.io import video

    calls = {"n": 0}
    real = video.VideoWriter.append

    def flaky(self, frame):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, frame)

    monkeypatch.setattr(video.VideoWriter, "append", flaky)
    out = tmp_path / "d"
    with pytest.raises(OSError, match="No space"):
        run(tiny_model, out, ["fifo.num_frames=4"])
    assert state_path(out).exists() and not out.exists()
    monkeypatch.setattr(video.VideoWriter, "append", real)
    res = run(tiny_model, out, ["fifo.num_frames=4", "output.resume=true"])
    assert res.frames == 4 and len(read_video(res.output)) == 4


def test_resume_keeps_the_max_batch_auto_chose(tiny_model, tmp_path, monkeypatch):
    """Chunk sizes change float rounding, so a resumed run must reuse the saved choice, not apply the rule again."""
    from fifo_longvid.fifo import autobatch, sizing

    def pick(size):
        return lambda *a, **k: autobatch.BatchChoice(size, f"auto: test -> {size}")

    extra = ["fifo.num_frames=6", "output.checkpoint_every=2"]

    def interrupt_at_4(task, done, total):
        if task == "fifo" and done == 8:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(sizing, "cpu_rule", pick(2))
    out = tmp_path / "cut.mp4"
    assert run(tiny_model, out, extra, progress=interrupt_at_4).partial
    monkeypatch.setattr(sizing, "cpu_rule", pick(4))  # the rule's inputs changed (another machine, say)
    resumed = run(tiny_model, out, extra + ["output.resume=true"])
    rt = json.loads(resumed.sidecar.read_text())["runtime"]
    assert rt["max_batch"] == 2 and rt["max_batch_how"] == "auto: kept from the saved state"

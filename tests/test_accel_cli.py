"""Acceleration techniques end to end: CLI flags and YAML, sidecar, pipeline resume, refusals."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from fifo_longvid.cli.main import app
from fifo_longvid.run import pipeline
from fifo_longvid.run.config import build_run_config
from fifo_longvid.techniques import TechniquesConfig, check_distributed

SMALL = ["fifo.window=4", "fifo.partitions=2", "sampling.height=64", "sampling.width=64", "sampling.seed=7"]
PRESET = Path(__file__).resolve().parent.parent / "configs" / "fifo_fast.yaml"


def run(tiny_model, out, extra=(), progress=None, yaml=PRESET):
    cfg = build_run_config(yaml, flags={"model": "tiny", "prompts": ["a red fox running"], "output.path": str(out)},
                           overrides=SMALL + list(extra))
    return pipeline.generate(cfg, model=tiny_model, progress=progress, log=lambda m: None)


def latents(out: Path) -> torch.Tensor:
    return load_file(str(out.with_suffix(".latents.safetensors")))["latents"]


@pytest.mark.slow
def test_preset_resume_is_bitwise_and_differs_from_plain(tiny_model, tmp_path):
    extra = ["fifo.num_frames=8", "output.save_latents=true", "output.checkpoint_every=2"]
    full = run(tiny_model, tmp_path / "full", extra)

    def interrupt(task, done, total):
        if task == "fifo" and done == 9:  # 4 warm-up iterations: 5 frames out, caches well filled
            os.kill(os.getpid(), signal.SIGINT)

    cut = tmp_path / "cut"
    part = run(tiny_model, cut, extra, progress=interrupt)
    assert part.partial and part.frames == 5
    state = torch.load(cut.parent / f"{cut.name}.state.pt", weights_only=True)
    assert any(k.startswith("techniques/") for k in state["extras"])  # the caches travel in the state file
    resumed = run(tiny_model, cut, extra + ["output.resume=true"])
    assert resumed.frames == 8 and torch.equal(latents(cut), latents(tmp_path / "full"))
    plain = run(tiny_model, tmp_path / "plain", extra, yaml=None)
    assert not torch.equal(latents(tmp_path / "plain"), latents(tmp_path / "full"))
    meta = json.loads(full.sidecar.read_text())
    assert set(meta["techniques"]) == {"tgate", "cfg_cache", "attn_reuse", "deepcache"}
    assert meta["config"]["techniques"]["cfg_cache"]["every"] == 3
    assert json.loads(plain.sidecar.read_text())["techniques"] == {}


@pytest.mark.parametrize("args,expect", [
    (["--tgate"], {"tgate": {"enabled": True, "gate": 0.4}}),
    (["--tgate", "0.3", "--attn-reuse"], {"tgate": {"gate": 0.3}, "attn_reuse": {"enabled": True}}),
    (["--cfg-cache", "2", "--deepcache", "4", "--tgate"],
     {"cfg_cache": {"enabled": True, "every": 2}, "deepcache": {"enabled": True, "every": 4}, "tgate": {"gate": 0.4}}),
])
def test_cli_flags_reach_the_run_config_and_sidecar(tmp_path, args, expect):
    out = tmp_path / "v.mp4"
    r = CliRunner().invoke(app, ["generate", "--prompt", "a car slowing down to stop", "--config", "tiny", *args,
                                 "--num-frames", "2", "--height", "64", "--width", "64", "-o", str(out),
                                 "fifo.window=4"])
    assert r.exit_code == 0, r.output
    meta = json.loads(out.with_suffix(".json").read_text())
    for name, fields in expect.items():
        for k, v in fields.items():
            assert meta["config"]["techniques"][name][k] == v
        assert name in meta["techniques"]


@pytest.mark.parametrize("args,needle", [
    (["--tgate", "1.5"], "--tgate GATE must be in (0, 1]"),
    (["--cfg-cache", "0"], "--cfg-cache K must be >= 1"),
    (["--deepcache", "-1"], "--deepcache K must be >= 1"),
    (["--tgate", "--qcache", "0.9", "--qcache-targets", "spatial_attn2"], "drop one of them"),
])
def test_cli_bad_acceleration_input(tmp_path, args, needle):
    r = CliRunner().invoke(app, ["generate", "--prompt", "x", "--config", "tiny", *args, "-o", str(tmp_path / "o.mp4")])
    assert r.exit_code != 0 and needle in r.output.replace("\n", " ") and "Traceback" not in r.output


def test_multi_process_refusal_names_the_options():
    cfg = TechniquesConfig()
    check_distributed(cfg)  # nothing on: fine
    cfg.cfg_cache.enabled = True
    check_distributed(cfg)  # guidance-level only: runs on rank 0, fine
    cfg.tgate.enabled = cfg.deepcache.enabled = True
    with pytest.raises(ValueError, match="--tgate, --deepcache") as e:
        check_distributed(cfg)
    assert "one process" in str(e.value)

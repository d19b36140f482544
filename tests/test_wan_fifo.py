"""FIFO on Wan2.1 / SkyReels-V2 DF (issue: FIFO in the DiT era): flow matching in the samplers, the peer check
against diffusers' ``WanPipeline``, and the CLI on folders written by diffusers' own ``save_pretrained``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fifo_longvid.backends import load_backend
from fifo_longvid.diffusion.flow import FlowSchedule, flow_schedule_from_config, flow_scheduler
from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
from fifo_longvid.diffusion.sampling import sample_clip
from fifo_longvid.io.video import read_video
from fifo_longvid.run import pipeline
from fifo_longvid.run.config import ConfigError, build_run_config

TINY = ["fifo.window=4", "fifo.partitions=2", "sampling.height=32", "sampling.width=32"]


@pytest.fixture(scope="module")
def tiny_wan():
    return load_backend("tiny_wan", device="cpu", dtype="fp32")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# -- the schedule --------------------------------------------------------------------------------------------
def test_flow_schedule_is_diffusers_euler_reindexed():
    from diffusers import FlowMatchEulerDiscreteScheduler

    cfg = {"_class_name": "UniPCMultistepScheduler", "flow_shift": 3.0, "num_train_timesteps": 1000,
           "prediction_type": "flow_prediction", "use_flow_sigmas": True}
    s = flow_schedule_from_config(cfg, 8)
    ref = FlowMatchEulerDiscreteScheduler(shift=3.0)
    ref.set_timesteps(8)
    assert isinstance(s, FlowSchedule) and s.kind == "flow" and s.shift == 3.0
    assert torch.equal(s.sigmas, ref.sigmas[:-1].flip(0)) and torch.equal(s.timesteps, ref.timesteps.flip(0))
    assert torch.equal(s.sigmas_next[1:], s.sigmas[:-1]) and s.sigmas_next[0] == 0  # index i steps to i - 1
    x, v = torch.randn(1, 4, 2, 3, 3), torch.randn(1, 4, 2, 3, 3)
    for i in (7, 3, 0):  # one Euler step equals the scheduler's step at the same sigma
        ref._step_index = 7 - i
        want = ref.step(v, ref.timesteps[7 - i], x).prev_sample
        assert torch.equal(s.coeffs(i, x).update(x, v)[0], want)
    x0, eps = torch.randn(1, 4, 1, 3, 3), torch.randn(1, 4, 1, 3, 3)
    assert torch.allclose(s.add_noise(x0, 5, eps), (1 - s.sigmas[5]) * x0 + s.sigmas[5] * eps)
    keep, fresh = s.renoise()  # the interpolant's own jump from the level after the last step to the tail's
    s_t, s_src = float(s.sigmas[-1]), float(s.sigmas_next[-1])
    assert keep == pytest.approx((1 - s_t) / (1 - s_src)) and keep**2 * s_src**2 + fresh**2 == pytest.approx(s_t**2)


def test_flow_schedule_refuses_what_it_cannot_reproduce():
    with pytest.raises(ValueError, match="velocity"):
        flow_scheduler({"_class_name": "UniPCMultistepScheduler", "prediction_type": "epsilon"})
    with pytest.raises(ValueError, match="dynamic_shifting"):
        flow_scheduler({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True})
    s = flow_schedule_from_config({"flow_shift": 3.0}, 4)
    with pytest.raises(ValueError, match="no noise"):
        s.coeffs(0, torch.zeros(1, 1, 1, 1, 1)).update(torch.zeros(1), torch.zeros(1), torch.zeros(1))
    assert s.unscaled() is s  # nothing to leave out: fifo.scaled_step has nothing to keep


# -- the peer check ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["wan", "skyreels-df"])
def test_base_clip_equals_diffusers_wan_pipeline(wan_folders, kind):
    """Our flow-matching Euler + guidance from the same initial latents equals diffusers' WanPipeline with
    FlowMatchEulerDiscreteScheduler. The SkyReels folder's weights go through the same pipeline, loaded as Wan's
    transformer (the keys are shared; the tiny folder has no fps embedding), while ours run SkyReels' class."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    folder = wan_folders[kind]
    model = load_backend("wan", folder, "cpu", "fp32")
    steps, scale, frames = 6, 5.0, 13  # 13 output frames = 4 latent frames
    sched = model.schedule(steps)
    shift = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["flow_shift"]
    transformer = WanTransformer3DModel.from_pretrained(folder / "transformer") if kind != "wan" else None
    pipe = WanPipeline.from_pretrained(folder, **({"transformer": transformer} if transformer else {}))
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    pipe.set_progress_bar_config(disable=True)
    x_T = torch.randn(1, 16, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    prompt = "a red circle bouncing"
    want = pipe(prompt, negative_prompt="", height=32, width=32, num_frames=frames, num_inference_steps=steps,
                guidance_scale=scale, latents=x_T.clone(), output_type="latent",
                max_sequence_length=model.context_shape[0]).frames
    assert model.variant == kind  # SkyReels: its own class and (B, F) diffusion-forcing path, against Wan's
    den = cfg_denoiser(unet_network(model.unet, 8), model.encode_text([prompt]), model.encode_text([""]), scale)
    got = sample_clip(den, x_T, sched)
    assert rel(got, want) < 1e-5
    assert sched.num_steps == steps and torch.equal(sched.sigmas.flip(0), pipe.scheduler.sigmas[:-1])


# -- the CLI on folders written by diffusers -----------------------------------------------------------------
def fifo_gen(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fifo_longvid", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def cli_args(folder, out, *extra: str) -> list[str]:
    return ["--config", "wan", "--checkpoint", str(folder), "--prompt", "a red circle bouncing", "--partitions", "2",
            "--num-frames", "21", "--height", "32", "--width", "32", "--seed", "3", "-o", str(out), "fifo.window=4",
            *extra]


@pytest.mark.parametrize("kind", ["wan", "skyreels-df"])
def test_cli_makes_exactly_the_asked_frames_from_a_diffusers_folder(wan_folders, tmp_path, kind):
    r = fifo_gen(*cli_args(wan_folders[kind], tmp_path / "v.mp4"))
    assert r.returncode == 0, r.stderr
    assert "flow-matching steps" in r.stderr
    frames = read_video(tmp_path / "v.mp4")
    assert frames.shape == (21, 32, 32, 3)
    side = json.loads((tmp_path / "v.json").read_text())
    assert side["frames_written"] == 21 and side["model"]["variant"] == kind
    assert side["config"]["sampling"]["eta"] == 0.0 and side["config"]["sampling"]["cfg"] == 5.0


def _gen(folder, out, *extra: str, model=None):
    flags = {"model": "wan", "checkpoint": str(folder), "prompts": ["a red circle bouncing"],
             "output.path": str(out)}
    cfg = build_run_config(flags=flags, overrides=TINY + ["fifo.num_frames=21", "sampling.seed=3",
                                                           "output.save_latents=true", *extra])
    return pipeline.generate(cfg, model=model, log=lambda m: None)


@pytest.fixture(scope="module")
def wan_model(wan_folders):
    return load_backend("wan", wan_folders["wan"], "cpu", "fp32")


def latents_of(out) -> torch.Tensor:
    return load_file(str(out.with_suffix(".latents.safetensors")))["latents"]


def test_png_output_equals_diffusers_one_shot_decode_of_the_saved_latents(wan_folders, wan_model, tmp_path):
    from diffusers import AutoencoderKLWan

    res = _gen(wan_folders["wan"], tmp_path / "png", model=wan_model)
    pngs = read_video(res.output)
    z = latents_of(tmp_path / "png")
    assert pngs.shape[0] == 21 and z.shape == (1, 16, 6, 4, 4)  # 1 + 5 x 4 frames from 6 latent frames
    vae = AutoencoderKLWan.from_pretrained(wan_folders["wan"] / "vae")
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        video = vae.decode(z / std + mean, return_dict=False)[0]  # WanPipeline's own un-normalise + decode
    want = ((video[0].clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(1, 2, 3, 0).numpy()
    assert np.abs(pngs.astype(int) - want.astype(int)).max() <= 1  # streamed vs one-shot: float rounding only


def test_same_seed_same_latents_and_techniques_change_them(wan_folders, wan_model, tmp_path):
    base = [latents_of(_gen(wan_folders["wan"], tmp_path / n, model=wan_model).output.with_suffix("")) for n in "ab"]
    assert torch.equal(base[0], base[1])
    for name, extra in (("tgate", ["techniques.tgate.enabled=true"]),
                        ("cfgc", ["techniques.cfg_cache.enabled=true", "techniques.cfg_cache.every=2"]),
                        ("reuse", ["techniques.attn_reuse.enabled=true"])):
        res = _gen(wan_folders["wan"], tmp_path / name, *extra, model=wan_model)
        assert res.frames == 21 and not torch.equal(latents_of(tmp_path / name), base[0]), name


@pytest.mark.parametrize("flag,needs", [("--qcache 0.9", "mirror"), ("--deepcache 3", "resolution levels")])
def test_unet_techniques_are_refused_on_the_dit_and_nothing_is_written(wan_folders, tmp_path, flag, needs):
    r = fifo_gen(*cli_args(wan_folders["wan"], tmp_path / "q.mp4"), *flag.split())
    assert r.returncode == 2 and needs in r.stderr and "the wan family has none" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not list(tmp_path.iterdir())


def test_eta_is_refused_for_flow_matching(wan_folders, tmp_path):
    with pytest.raises(ConfigError, match="no eta"):
        _gen(wan_folders["wan"], tmp_path / "e", "sampling.eta=0.5")
    assert not list(tmp_path.iterdir())


# -- every init, tail and mode under flow matching; resume; the negative prompt -------------------------------
def _tiny(out, *extra: str, model=None, progress=None):
    cfg = build_run_config(flags={"model": "tiny_wan", "prompts": ["a blue square"], "output.path": str(out)},
                           overrides=["sampling.seed=5", "output.save_latents=true", *extra])
    return pipeline.generate(cfg, model=model, progress=progress, log=lambda m: None)


@pytest.mark.parametrize("extra", [["fifo.init=uniform"], ["fifo.init=noise"], ["fifo.tail.mode=coherent"],
                                   ["fifo.tail.mode=rescheduled"], ["fifo.lookahead=false", "fifo.window=3"],
                                   ["fifo.frames_per_prompt=[9,4]"]])
def test_every_init_and_tail_runs_under_flow_matching(tiny_wan, tmp_path, extra):
    if any(e.startswith("fifo.frames_per_prompt") for e in extra):
        cfg = build_run_config(flags={"model": "tiny_wan", "prompts": ["a blue square", "a red circle"],
                                      "output.path": str(tmp_path / "v.mp4")}, overrides=["sampling.seed=5", *extra])
        res = pipeline.generate(cfg, model=tiny_wan, log=lambda m: None)
        assert res.frames == 13
        return
    res = _tiny(tmp_path / "v.mp4", "fifo.num_frames=9", *extra, model=tiny_wan)
    assert res.frames == 9 and read_video(res.output).shape[0] == 9
    assert torch.isfinite(latents_of(tmp_path / "v")).all()


def test_base_mode_writes_one_clip_of_the_window(tiny_wan, tmp_path):
    res = _tiny(tmp_path / "b.mp4", "mode=base", "sampling.steps=4", model=tiny_wan)
    assert res.frames == 1 + 4 * (4 - 1) and read_video(res.output).shape[0] == 13


def test_resume_is_bitwise_under_flow_matching(tiny_wan, tmp_path):
    import os
    import signal

    from fifo_longvid.fifo.state import state_path

    _tiny(tmp_path / "full.mp4", "fifo.num_frames=17", model=tiny_wan)

    def stop(task, done, total):
        if task == "fifo" and done == 6:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "cut.mp4"
    part = _tiny(out, "fifo.num_frames=17", "fifo.tail.mode=coherent", model=tiny_wan, progress=stop)
    assert part.partial and state_path(out).exists()
    resumed = _tiny(out, "fifo.num_frames=17", "fifo.tail.mode=coherent", "output.resume=true", model=tiny_wan)
    uncut = _tiny(tmp_path / "uncut.mp4", "fifo.num_frames=17", "fifo.tail.mode=coherent", model=tiny_wan)
    assert not resumed.partial and resumed.frames == 17
    assert torch.equal(latents_of(out.with_suffix("")), latents_of(tmp_path / "uncut"))
    assert np.array_equal(read_video(resumed.output), read_video(uncut.output))
    assert not torch.equal(latents_of(tmp_path / "full"), latents_of(tmp_path / "uncut"))  # the tail mattered


def test_negative_prompt_changes_the_video_and_its_hash(tiny_wan, tmp_path):
    from fifo_longvid.run.config import numerics_hash

    plain = _tiny(tmp_path / "p.mp4", "fifo.num_frames=5", model=tiny_wan)
    neg = _tiny(tmp_path / "n.mp4", "fifo.num_frames=5", "sampling.negative_prompt=blurry", model=tiny_wan)
    assert not torch.equal(latents_of(tmp_path / "p"), latents_of(tmp_path / "n"))
    assert plain.frames == neg.frames == 5
    from fifo_longvid.run.resolve import resolve

    a, b, c = (resolve(build_run_config(flags={"model": "tiny", "prompts": ["x"], "sampling.seed": 1, **neg})).config
               for neg in ({}, {"sampling.negative_prompt": ""}, {"sampling.negative_prompt": "blurry"}))
    assert numerics_hash(a, "w") == numerics_hash(b, "w") != numerics_hash(c, "w")
    assert a.sampling.eta == 1.0  # DDIM families keep the reference's default


def test_batch_run_on_a_wan_folder(wan_folders, tmp_path):
    """``fifo-gen batch`` on a diffusers Wan folder: one video per prompt, each with its output frame count, and
    a batch refusing a technique the DiT cannot carry generates nothing."""
    from typer.testing import CliRunner

    from fifo_longvid.cli.main import app

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle bouncing\na blue square\n")
    out = tmp_path / "out"
    args = ["batch", str(prompts), "--config", "wan", "--checkpoint", str(wan_folders["wan"]), "--num-frames", "9",
            "--out-dir", str(out), "--seed", "5", *TINY]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [x["status"] for x in recs] == ["done", "done"] and all(x["frames"] == 9 for x in recs)
    assert all(read_video(x["output"]).shape[0] == 9 for x in recs)
    r = CliRunner().invoke(app, [*args[:-4], "--out-dir", str(tmp_path / "o2"), "--deepcache", "2", *TINY])
    assert r.exit_code == 2 and "the wan family has none" in r.output and not (tmp_path / "o2").exists()

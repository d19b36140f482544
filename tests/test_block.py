"""The rolling schedule (``--block``, ``--steps``): K frames per noise level, S = window x partitions / K.

Exactness on the tiny models with deterministic samplers (DDIM eta 0, flow Euler): K = 1 is today's FIFO bit for
bit, K = window without lookahead is a native clip pipelined, and every frame passes exactly the S levels of the
S-step schedule.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fifo_longvid.diffusion.context import current
from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
from fifo_longvid.diffusion.noise import NoiseSource
from fifo_longvid.diffusion.sampling import sample_clip
from fifo_longvid.fifo.geometry import GeometryError, fitting_steps, resolve_geometry, valid_blocks
from fifo_longvid.fifo.init import init_queue, iterations_for, warmup_iterations
from fifo_longvid.fifo.queue import FifoPlan
from fifo_longvid.fifo.sampler import FifoStepper
from fifo_longvid.fifo.tail import NoiseTail

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--config", "tiny", "--device", "cpu", "--max-batch", "4", "--eta", "0", "--height", "64", "--width", "64"]


def fifo_gen(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fifo_longvid", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# -- geometry ------------------------------------------------------------------------------------------------
def test_plan_with_blocks_gives_each_block_one_level():
    p = FifoPlan(8, 2, lookahead=True, block=2)
    assert (p.frames, p.steps, p.length, p.head) == (16, 8, 20, 4)
    assert p.slot_indices().tolist() == [0] * 4 + [i // 2 for i in range(16)]
    assert FifoPlan(8, 2, True).slot_indices().tolist() == [0] * 4 + list(range(16))  # block 1: as before
    q = FifoPlan(8, 3, lookahead=False, block=8)
    assert q.steps == 3 and [w.start for w in q.windows()] == [16, 8, 0]
    for bad in (dict(f=8, n=2, lookahead=True, block=8), dict(f=8, n=2, lookahead=False, block=3),
                dict(f=8, n=2, block=0)):
        with pytest.raises(ValueError, match="block"):
            FifoPlan(**bad)


def test_resolve_geometry_from_steps_block_and_partitions():
    assert valid_blocks(20, True) == [1, 2, 5, 10] and valid_blocks(20, False) == [1, 2, 4, 5, 10, 20]
    g = resolve_geometry(16, True)  # nothing given: the preset's partitions, block 1
    assert (g.partitions, g.block, g.steps) == (4, 1, 64)
    assert resolve_geometry(20, False, steps=50).block == 2 and resolve_geometry(20, False, steps=50).partitions == 5
    assert (resolve_geometry(20, False, steps=4).block, resolve_geometry(20, False, steps=4).partitions) == (5, 1)
    assert resolve_geometry(4, True, steps=8, block=2).partitions == 4  # with --block: n = S K / f
    assert resolve_geometry(16, True, steps=32, partitions=4).block == 2  # with --partitions: K = n f / S
    assert resolve_geometry(20, True, steps=50, default_block=5).block == 2  # the native block does not fit 50
    assert resolve_geometry(20, True, steps=40, default_block=5).block == 5  # ... and is preferred when it does
    assert resolve_geometry(20, True, default_block=5).block == 5  # a diffusion-forcing checkpoint's default
    assert resolve_geometry(20, True, default_block=3).block == 1  # a native block that cannot fit: FIFO's 1
    assert {6, 8} <= fitting_steps(4, True, block=2) and 7 not in fitting_steps(4, True, block=2)


@pytest.mark.parametrize("kwargs,message", [
    (dict(window=4, lookahead=True, steps=7, block=2), "nearest that fit: 6 or 8"),
    (dict(window=20, lookahead=True, steps=7), "nearest step counts that fit: 6 or 8"),
    (dict(window=16, lookahead=True, steps=10, partitions=4), "steps that fit: 8 or 16"),
    (dict(window=16, lookahead=True, block=3), "valid blocks: 1, 2, 4, 8"),
    (dict(window=16, lookahead=False, steps=16, block=2, partitions=4), "contradicts"),
])
def test_geometries_that_do_not_fit_name_what_does(kwargs, message):
    with pytest.raises(GeometryError, match=message):
        resolve_geometry(**kwargs)


def test_warmup_and_iterations_are_whole_blocks():
    for init in ("first", "uniform", "noise"):
        for la in (True, False):
            p = FifoPlan(8, 2, la, 2 if la else 4)
            assert warmup_iterations(p, init) % p.block == 0
    p = FifoPlan(8, 2, True, 2)
    assert iterations_for(p, 8, 9) == 9  # 17 frames in blocks of 2: the last block's second frame is dropped


# -- exactness -----------------------------------------------------------------------------------------------
class RecordingTail(NoiseTail):
    def __init__(self):
        self.blocks: list[torch.Tensor] = []

    def __call__(self, queue, noise, block=1):
        z = super().__call__(queue, noise, block)
        self.blocks.append(z.clone())
        return z


def _native_clip_check(model, cfg_scale: float) -> float:
    """K = window, no lookahead, noise init: after the flush every dequeued block is the base clip of the noise
    block that entered S iterations earlier (the same denoiser, the same S-step schedule)."""
    f, n = model.cfg.default_window or model.temporal_length, 3
    plan = FifoPlan(f, n, lookahead=False, block=f)
    sched = model.schedule(plan.steps, 0.0)
    h, w = model.cfg.latent_size
    cond, uncond = model.encode_text(["a red circle"]), model.encode_text([""])
    den = cfg_denoiser(unet_network(model.unet, 8), cond, uncond, cfg_scale)
    noise = NoiseSource(4)
    queue = init_queue(plan, sched, noise, "noise", shape=(1, model.cfg.channels, h, w))
    stepper = FifoStepper(plan, sched, 1, (h, w), model.cfg.channels, "cpu",
                          batch_windows=False)  # one window per call: the base clip's batch shape
    tail = RecordingTail()
    warm = warmup_iterations(plan, "noise") // plan.block
    worst = 0.0
    with torch.no_grad():
        for it in range(warm + 2):
            z, _ = stepper.step(lambda b: den(b.x, b.t), queue, noise, iteration=it, tail=tail)
            assert z.shape[2] == f
            if it >= warm:
                x_t = tail.blocks[it - n]  # entered at the end of iteration it - n, denoised in the next n
                ref = sample_clip(den, x_t, sched)
                worst = max(worst, float((z - ref).abs().max() / ref.abs().max()))
    return worst


@torch.no_grad()
def test_block_of_the_window_is_a_native_ddim_clip_pipelined(tiny_model):
    assert _native_clip_check(tiny_model, 7.5) < 1e-5  # both steps scaled, as the model's schedule is


@torch.no_grad()
def test_block_of_the_window_is_a_native_flow_clip_pipelined():
    from fifo_longvid.backends import load_backend

    wan = load_backend("tiny_wan", device="cpu", dtype="fp32")
    assert _native_clip_check(wan, 5.0) < 1e-5


@pytest.mark.parametrize("lookahead,block,stagger", [(True, 2, False), (False, 4, False), (True, 1, False),
                                                     (True, 2, True), (False, 4, True)])
@torch.no_grad()
def test_every_frame_passes_exactly_the_schedules_timesteps(tiny_model, lookahead, block, stagger):
    """Per frame id, the committed rows' timesteps over its life are the S-step schedule's, noisiest first.
    Staggered: every K-th level of the K-times finer grid, one of K interleaved sub-grids, and the frames of a
    block never share a level."""
    plan = FifoPlan(8, 2, lookahead, block, stagger)
    sched = tiny_model.schedule(plan.levels, 0.0).strided(plan.stride)
    seen: dict[int, list[int]] = {}

    def den(b):
        ctx = current()
        for row in range(b.t.shape[0]):
            for j in range(b.t.shape[1]):
                if ctx.commit[row, j]:
                    seen.setdefault(int(b.frame_ids[row, j]), []).append(int(b.t[row, j]))
        return torch.zeros_like(b.x)

    noise = NoiseSource(0)
    queue = init_queue(plan, sched, noise, "noise", shape=(1, 4, 2, 2))
    stepper = FifoStepper(plan, sched, 1, (2, 2), 4, "cpu")
    for it in range(3 * plan.steps):
        stepper.step(den, queue, noise, iteration=it)
    newcomers = [fid for fid in seen if fid >= plan.length]  # entered as tails, lived a whole life
    finished = [fid for fid in newcomers if fid < plan.length + (3 * plan.steps - plan.steps - 1) * block]
    assert len(finished) >= plan.steps and plan.steps == 16 // block
    fine = list(reversed(sched.timestep_list))  # noisiest first
    for fid in finished:
        if not stagger:
            assert len(fine) == plan.steps and seen[fid] == fine, (fid, seen[fid])
        else:  # entered at fine level L - K + j (j = its place in the block), then K levels per iteration
            j = (fid - plan.length) % block
            assert seen[fid] == fine[block - 1 - j :: block] and len(seen[fid]) == plan.steps, (fid, seen[fid])
    if stagger:  # the frames of a block never share a level
        for a, b in zip(finished, finished[1:], strict=False):
            assert not set(seen[a]) & set(seen[b])


# -- the CLI -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_block_1_equals_the_default_bitwise_and_sigkill_resume_of_blocks_is_bitwise(tmp_path):
    common = ["--prompt", "a red circle", *TINY, "--seed", "5", "--num-frames", "10", "--save-latents"]
    a = fifo_gen(*common, "-o", "a.mp4", cwd=tmp_path)
    b = fifo_gen(*common, "--block", "1", "-o", "b.mp4", cwd=tmp_path)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert torch.equal(load_file(tmp_path / "a.latents.safetensors")["latents"],
                       load_file(tmp_path / "b.latents.safetensors")["latents"])
    assert "FIFO window 8 x 2 partitions / block 1 = 16 DDIM steps" in a.stderr

    blocks = [*common, "--block", "2", "--steps", "8", "--num-frames", "12"]
    ref = fifo_gen(*blocks, "-o", "ref.mp4", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    assert "FIFO window 8 x 2 partitions / block 2 = 8 DDIM steps" in ref.stderr
    side = json.loads((tmp_path / "ref.json").read_text())
    assert (side["config"]["fifo"]["block"], side["config"]["fifo"]["partitions"],
            side["config"]["sampling"]["steps"], side["frames_written"]) == (2, 2, 8, 12)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = [sys.executable, "-m", "fifo_longvid", *blocks, "-o", "run.mp4", "--checkpoint-every", "2"]
    proc = subprocess.Popen(run, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    state, log = tmp_path / "run.mp4.state.pt", tmp_path / "run.mp4.latents.f32"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:  # a state, and frames logged past it
        if state.exists() and log.exists() and log.stat().st_size >= 7 * 4 * 4 * 8 * 8:  # 7 latents of 4x8x8
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()[1]
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to save anything: the last checkpoint is all there is
    proc.wait(timeout=60)
    assert state.exists() and not (tmp_path / "run.mp4").exists()
    resumed = fifo_gen(*blocks, "-o", "run.mp4", "--checkpoint-every", "2", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert torch.equal(load_file(tmp_path / "run.latents.safetensors")["latents"],
                       load_file(tmp_path / "ref.latents.safetensors")["latents"])


@pytest.mark.parametrize("extra", [
    ["--no-lookahead", "--block", "4", "--steps", "4"],
    ["--block", "2", "--steps", "8", "--init", "uniform", "--tail", "coherent"],
    ["--block", "2", "--steps", "8", "--init", "noise", "--tail", "rescheduled"],
    ["--block", "4", "--steps", "4", "--cfg", "1"],
    ["--block", "2", "--steps", "8", "--qcache", "0.9", "--tgate", "--cfg-cache", "2", "--attn-reuse",
     "--deepcache", "2"],
    ["--block", "2", "--steps", "8", "--prompt", "a blue square", "--frames-per-prompt", "5,4"],
    ["--block", "2", "--steps", "8", "--stagger", "--tail", "coherent"],
])
def test_blocks_run_with_every_mode_tail_init_and_technique(tiny_model, tmp_path, extra):
    from fifo_longvid.cli.args import parse_generate_argv
    from fifo_longvid.run import pipeline

    cfg = parse_generate_argv(["--prompt", "a red circle", "--config", "tiny", "--seed", "2", "--num-frames", "9",
                               "-o", str(tmp_path / "v.mp4"), "--save-latents", *extra])
    res = pipeline.generate(cfg, model=tiny_model, log=lambda m: None)
    z = load_file(tmp_path / "v.latents.safetensors")["latents"]
    assert res.frames == 9 and z.shape[2] == 9 and torch.isfinite(z).all()


def test_guidance_1_runs_the_conditional_branch_alone(tiny_model, tmp_path):
    """--cfg 1: every network call holds one row per window (no unconditional rows)."""
    from fifo_longvid.cli.args import parse_generate_argv
    from fifo_longvid.run import pipeline

    rows: list[int] = []
    hook = tiny_model.unet.register_forward_pre_hook(lambda m, args: rows.append(int(args[0].shape[0])))
    try:
        for scale in ("1", "7.5"):
            cfg = parse_generate_argv(["--prompt", "a red circle", "--config", "tiny", "--seed", "2", "--num-frames",
                                       "3", "--no-lookahead", "--block", "8", "--steps", "2", "--init", "noise",
                                       "--max-batch", "all", "--cfg", scale, "-o", str(tmp_path / f"{scale}.mp4")])
            rows.clear()
            pipeline.generate(cfg, model=tiny_model, log=lambda m: None)
            assert set(rows) == ({2} if scale == "1" else {4}), rows  # 2 windows, x2 with guidance
    finally:
        hook.remove()


def test_bad_steps_exit_2_and_write_nothing(tmp_path):
    r = fifo_gen("--prompt", "a red circle", *TINY, "--steps", "7", "--block", "2", "-o", "v.mp4", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "--steps 7 does not fit --block 2 with window 8" in r.stderr and "nearest that fit: 4 or 8" in r.stderr
    assert "Traceback" not in r.stderr and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_wan_folder_with_blocks_and_a_diffusion_forcing_native_block(tmp_path):
    """The issue's Done-when on folders written by diffusers' save_pretrained, plus a SkyReels-DF folder whose
    transformer was trained with num_frame_per_block 2: --block defaults to it."""
    from fifo_longvid.backends.wan.tiny import write_tiny_folder

    wan = write_tiny_folder(tmp_path / "wan", "wan")
    base = ["--config", "wan", "--checkpoint", str(wan), "--prompt", "a red fish", "--height", "32", "--width", "32",
            "fifo.window=4", "--seed", "3", "--num-frames", "21", "--save-latents", "--device", "cpu"]
    runs = [fifo_gen(*base, "--steps", "8", "--block", "2", "-o", f"{k}.mp4", cwd=tmp_path) for k in "ab"]
    for r in runs:
        assert r.returncode == 0, r.stderr
    from fifo_longvid.io.video import read_video

    assert read_video(tmp_path / "a.mp4").shape[0] == 21
    za, zb = (load_file(tmp_path / f"{k}.latents.safetensors")["latents"] for k in "ab")
    assert torch.equal(za, zb) and za.shape[2] == 6  # 21 output frames = 6 latent frames
    assert "/ block 2 = 8 flow-matching steps" in runs[0].stderr
    bad = fifo_gen(*base, "--steps", "7", "--block", "2", "-o", "bad.mp4", cwd=tmp_path)
    assert bad.returncode == 2 and "--steps 7" in bad.stderr
    assert not any(p.name.startswith("bad") for p in tmp_path.iterdir())

    sky = write_tiny_folder(tmp_path / "sky", "skyreels-df")
    cfg_file = sky / "transformer" / "config.json"
    c = json.loads(cfg_file.read_text())
    c["num_frame_per_block"] = 2
    cfg_file.write_text(json.dumps(c))
    r = fifo_gen("--config", "wan", "--checkpoint", str(sky), "--prompt", "a red fish", "--height", "32", "--width",
                 "32", "fifo.window=4", "--seed", "3", "--num-frames", "9", "-o", "s.mp4", "--device", "cpu",
                 cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    side = json.loads((tmp_path / "s.json").read_text())
    assert side["config"]["fifo"]["block"] == 2 and side["model"]["transformer"]["num_frame_per_block"] == 2


def test_plan_counts_blocks_guidance_and_meets_the_targets(tmp_path):
    """The issue's Done-when: Wan at 50 steps without lookahead costs at most WanPipeline's 352.8 TFLOP per output
    frame, at 4 steps and --cfg 1 at most 17.6 (5 %); plan shows the geometry it resolved."""
    got = {}
    for name, extra in (("50", ["--steps", "50", "--no-lookahead"]), ("4", ["--steps", "4", "--cfg", "1",
                                                                           "--no-lookahead"])):
        r = fifo_gen("plan", "--config", "wan", *extra, "--json", cwd=tmp_path, timeout=120)
        assert r.returncode == 0, r.stderr
        got[name] = json.loads(r.stdout)
    assert got["50"]["tflop_per_frame"] <= 352.8 and got["4"]["tflop_per_frame"] <= 17.6
    d50, d4 = got["50"]["details"], got["4"]["details"]
    assert (d50["block"], d50["partitions"], d50["steps"], d50["samples_per_iteration"]) == (2, 5, 50, 10)
    assert (d4["block"], d4["partitions"], d4["steps"], d4["samples_per_iteration"]) == (5, 1, 4, 1)  # cond only
    bad = fifo_gen("plan", "--config", "wan", "--steps", "7", cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "--steps 7 fits no block with window 20" in bad.stderr


def test_strided_schedules_step_k_levels_and_stagger_needs_a_block(tiny_model, tmp_path):
    from fifo_longvid.backends import load_backend

    d = tiny_model.schedule(8, 1.0)
    assert d.strided(1) is d
    s = d.strided(2)
    assert torch.equal(s.alphas_prev[2:], d.alphas[:-2]) and torch.equal(s.alphas_prev[:2], d.alphas_prev[:1].repeat(2))
    a, ap = d.alphas.double(), s.alphas_prev.double()
    assert torch.equal(s.alphas, d.alphas) and torch.allclose(s.sigmas.double(), torch.sqrt((1 - ap) / (1 - a) *
                                                                                           (1 - a / ap)), atol=1e-6)
    f = load_backend("tiny_wan", device="cpu", dtype="fp32").schedule(8)
    g = f.strided(4)
    assert torch.equal(g.sigmas_next[4:], f.sigmas[:-4]) and (g.sigmas_next[:4] == 0).all()
    r = fifo_gen("--prompt", "a red circle", *TINY, "--stagger", "-o", "v.mp4", cwd=tmp_path)
    assert r.returncode == 2 and "--stagger spreads the frames of a block" in r.stderr
    assert not (tmp_path / "v.mp4").exists()

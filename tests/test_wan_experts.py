"""Wan2.2-A14B's two experts under FIFO (issue #31): each frame is denoised by the expert its own timestep selects.

On a tiny two-expert folder written by diffusers' own ``save_pretrained`` (the experts have different weights):
the router against each expert's full call, host-side routing (no read-back of t), ``--mode base`` against
diffusers' ``WanPipeline`` with ``guidance_scale_2``, the CLI end to end, the straddling windows counted by
``plan`` and by the run, the refusals, and the placement of a streamed expert on fake CUDA.
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from fifo_longvid.backends import load_backend
from fifo_longvid.diffusion.context import StepContext, publish
from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
from fifo_longvid.diffusion.sampling import sample_clip
from fifo_longvid.fifo.costs import high_noise_levels, samples_per_iteration, window_calls
from fifo_longvid.fifo.init import iterations_for, warmup_iterations
from fifo_longvid.fifo.queue import FifoPlan
from fifo_longvid.io.video import read_video

PROMPT = "a red circle bouncing"
BOUNDARY = 875.0  # the tiny folder's boundary_ratio 0.875 x 1000 train timesteps
STEPS = 8  # shift 3: levels 5, 6, 7 (883, 948, 1000) are the high-noise expert's, 0..4 the low-noise one's


@pytest.fixture(scope="module")
def folders(wan_folders):
    return wan_folders  # the session's tiny folders (conftest), written once for every Wan test file


@pytest.fixture(scope="module")
def a14b(folders):
    return load_backend("wan", folders["wan2.2-a14b"], "cpu", "fp32")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def fifo_gen(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fifo_longvid", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def cli_args(folder, out, *extra: str) -> list[str]:
    return ["--config", "wan", "--checkpoint", str(folder), "--prompt", PROMPT, "--partitions", "2",
            "--num-frames", "21", "--height", "32", "--width", "32", "--seed", "3", "-o", str(out), "fifo.window=4",
            *extra]


def counts(net) -> tuple[dict[str, int], dict[str, int]]:
    return dict(net.calls), dict(net.samples)


# -- the router ------------------------------------------------------------------------------------------------
def test_a_straddling_window_gives_each_frame_its_own_experts_rows(a14b):
    net = a14b.unet
    torch.manual_seed(0)
    x = torch.randn(3, 16, 4, 4, 4)
    ctx = torch.randn(3, *a14b.context_shape)
    t = torch.tensor([[1000.0, 948.0, 875.0, 874.0],  # straddles (875 is high: t >= boundary, as diffusers)
                      [990.0, 960.0, 930.0, 900.0],  # all high
                      [800.0, 600.0, 400.0, 10.0]])  # all low
    with torch.no_grad():
        high, low = net.high(x, t, ctx), net.low(x, t, ctx)  # each expert over every row
        before = counts(net)
        got = net(x, t, ctx)
    after = counts(net)
    assert after[0]["high"] - before[0]["high"] == 1 and after[0]["low"] - before[0]["low"] == 1
    assert after[1]["high"] - before[1]["high"] == 2 and after[1]["low"] - before[1]["low"] == 2  # row 0 twice
    is_high = (t >= BOUNDARY).view(3, 1, 4, 1, 1)
    want = torch.where(is_high, high, low)
    for r in range(3):
        for j in range(4):
            assert rel(got[r, :, j], want[r, :, j]) < 1e-6, (r, j)
    assert rel(high[0, :, :3], low[0, :, :3]) > 1e-2  # the experts differ: the routing is not vacuous


@pytest.mark.parametrize("side", ["high", "low"])
def test_a_one_sided_table_calls_one_expert(a14b, side):
    net = a14b.unet
    x, ctx = torch.randn(2, 16, 4, 4, 4), torch.randn(2, *a14b.context_shape)
    t = torch.full((2, 4), 950.0 if side == "high" else 500.0)
    before = counts(net)
    with torch.no_grad():
        got = net(x, t, ctx)
        want = getattr(net, side)(x, t, ctx)
    after = counts(net)
    other = "low" if side == "high" else "high"
    assert after[0][side] - before[0][side] == 1 and after[0][other] == before[0][other]
    assert after[1][side] - before[1][side] == 2
    assert torch.equal(got, want)


def test_with_a_host_context_the_router_reads_no_timesteps_back(a14b):
    """The sampler's host mirror (schedule index per frame) decides: t is never read. Here t says "low noise"
    everywhere while the context says index 7 (t = 1000) for every frame: the high-noise expert runs."""
    net = a14b.unet
    sched = a14b.schedule(STEPS)  # binds the host timesteps
    assert high_noise_levels(sched.timestep_list, BOUNDARY) == [False] * 5 + [True] * 3
    x, ctx = torch.randn(1, 16, 4, 4, 4), torch.randn(1, *a14b.context_shape)
    t = torch.full((1, 4), 10.0)
    idx = torch.full((1, 4), 7, dtype=torch.long)
    host = StepContext(phase="fifo", iteration=0, step_idx=idx)
    routed = net.routed_on_host
    with torch.no_grad(), publish(StepContext(phase="fifo", iteration=0, step_idx=idx, host=host)):
        got = net(x, t, ctx)
    assert net.routed_on_host == routed + 1
    with torch.no_grad():
        assert torch.equal(got, net.high(x, t, ctx))


# -- --mode base against diffusers -----------------------------------------------------------------------------
def test_base_clip_equals_diffusers_with_two_experts(a14b, folders):
    """Every step has one t, so the per-frame rule is WanPipeline's per-step switch (with guidance_scale_2); the
    base sampler publishes a host mirror, so every call is routed on the host."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    folder = folders["wan2.2-a14b"]
    shift = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["flow_shift"]
    pipe = WanPipeline.from_pretrained(folder)
    assert pipe.config.boundary_ratio == 0.875 and pipe.transformer_2 is not None
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    pipe.set_progress_bar_config(disable=True)
    x_T = torch.randn(1, 16, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    want = pipe(PROMPT, negative_prompt="", height=32, width=32, num_frames=13, num_inference_steps=STEPS,
                guidance_scale=5.0, guidance_scale_2=3.0, latents=x_T.clone(), output_type="latent",
                max_sequence_length=a14b.context_shape[0]).frames
    net = a14b.unet
    sched = a14b.schedule(STEPS)
    den = cfg_denoiser(unet_network(net, 8), a14b.encode_text([PROMPT]), a14b.encode_text([""]),
                       a14b.guidance(5.0, 3.0))
    before, routed = counts(net), net.routed_on_host
    with torch.no_grad():
        got = sample_clip(den, x_T, sched)
    after = counts(net)
    assert rel(got, want) < 1e-5
    assert after[0]["high"] - before[0]["high"] == 3 and after[0]["low"] - before[0]["low"] == 5  # one call a step
    assert net.routed_on_host - routed == STEPS
    one_scale = cfg_denoiser(unet_network(net, 8), a14b.encode_text([PROMPT]), a14b.encode_text([""]),
                             a14b.guidance(5.0, 5.0))
    with torch.no_grad():
        assert rel(sample_clip(one_scale, x_T, sched), got) > 1e-4  # --cfg-2 changes the low-noise steps


# -- the run: CLI, counting, plan ------------------------------------------------------------------------------
def test_cli_fifo_and_the_expert_counts(a14b, folders, tmp_path):
    """The CLI: exactly the asked frames, the release's guidance (4 / 3), the straddling windows in the log. The
    same run in process (same seed) gives equal latents, and the samples each expert ran equal the base clip's
    (one expert a step) plus FifoRun's samples per iteration (straddlers twice) x iterations; plan says the same."""
    from safetensors.torch import load_file

    from fifo_longvid.run import pipeline
    from fifo_longvid.run.config import build_run_config

    folder = folders["wan2.2-a14b"]
    r = fifo_gen(*cli_args(folder, tmp_path / "cli.mp4", "--save-latents"))
    assert r.returncode == 0, r.stderr
    assert "expert calls: 4 windows + 2 straddling" in r.stderr  # lookahead: the boundary falls in two windows
    assert read_video(tmp_path / "cli.mp4").shape == (21, 32, 32, 3)
    side = json.loads((tmp_path / "cli.json").read_text())
    assert side["model"]["release"] == "wan2.2-a14b" and side["model"]["boundary_timestep"] == BOUNDARY
    assert side["config"]["sampling"]["cfg"] == 4.0 and side["config"]["sampling"]["cfg_2"] == 3.0

    flags = {"model": "wan", "checkpoint": str(folder), "prompts": [PROMPT], "output.path": str(tmp_path / "v.mp4")}
    over = ["fifo.window=4", "fifo.partitions=2", "sampling.height=32", "sampling.width=32", "fifo.num_frames=21",
            "sampling.seed=3", "output.save_latents=true"]
    logs: list[str] = []
    net = a14b.unet
    before = counts(net)
    res = pipeline.generate(build_run_config(flags=flags, overrides=over), model=a14b, log=logs.append)
    after = counts(net)
    assert res.frames == 21
    cli, mine = (load_file(tmp_path / f"{n}.latents.safetensors") for n in ("cli", "v"))
    assert cli.keys() == mine.keys() and all(torch.equal(cli[k], mine[k]) for k in cli)

    plan = FifoPlan(4, 2)
    iters = iterations_for(plan, warmup_iterations(plan, "first"), a14b.latent_frames(21))
    sched = a14b.schedule(plan.levels)
    per_iter = samples_per_iteration(plan, 2, sched.timestep_list, BOUNDARY)
    assert window_calls(plan, sched.timestep_list, BOUNDARY) == (4, 2) and per_iter == 12
    base_high, base_low = 2 * 3, 2 * 5  # the base clip: cond + uncond, 3 high-noise and 5 low-noise steps
    high = after[1]["high"] - before[1]["high"] - base_high
    low = after[1]["low"] - before[1]["low"] - base_low
    assert high == 2 * 2 * iters and low == 2 * 4 * iters  # high: the two straddlers; low: all four windows
    assert high + low == per_iter * iters
    assert any("12 samples per iteration (expert calls: 4 windows + 2 straddling" in m for m in logs), logs

    r = fifo_gen("plan", "--config", "wan", "--checkpoint", str(folder), "--height", "32", "--width", "32",
                 "--partitions", "2", "fifo.window=4", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)["details"]
    assert (d["samples_per_iteration"], d["windows"], d["straddling_windows"], d["experts"]) == (12, 4, 2, 2)


def test_straddling_windows_from_the_plan_geometry():
    """At most one window of n straddles without lookahead, at most two of 2n with it; a rolling schedule (one
    level per window) never straddles."""
    levels = [False] * 5 + [True] * 3
    assert FifoPlan(4, 2).straddling(levels) == [0, 1]
    assert FifoPlan(4, 2, lookahead=False).straddling(levels) == [0]  # levels 4..7
    assert FifoPlan(4, 2, lookahead=False).straddling([False] * 4 + [True] * 4) == []  # the boundary on a seam
    assert FifoPlan(4, 2, lookahead=False, block=4).straddling([False, True]) == []
    assert window_calls(FifoPlan(4, 2)) == (4, 0)  # one denoiser: no boundary


# -- refusals --------------------------------------------------------------------------------------------------
def test_cfg_2_on_one_expert_is_refused(folders, tmp_path):
    r = fifo_gen(*cli_args(folders["wan"], tmp_path / "v.mp4", "--cfg-2", "3"))
    assert r.returncode == 2
    msg = r.stderr.strip()
    assert "--cfg-2" in msg and "one denoiser" in msg and msg.count("\n") == 0, msg
    assert list(tmp_path.iterdir()) == []


def test_per_frame_techniques_on_two_experts_are_refused(folders, tmp_path):
    r = fifo_gen(*cli_args(folders["wan2.2-a14b"], tmp_path / "v.mp4", "--tgate"))
    assert r.returncode == 2
    assert "two experts" in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert list(tmp_path.iterdir()) == []


# -- placement: the idle expert in host memory -----------------------------------------------------------------
def test_experts_that_fit_the_card(a14b, monkeypatch):
    """Resident while an expert fits the card's free memory less the reserve, high-noise first."""
    from fifo_longvid.backends.wan import model as wan_model

    size = sum(p.numel() * p.element_size() for p in a14b.unet.high.parameters())
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    share = 1 - wan_model.EXPERT_RESERVE
    for total, n in ((2.5 * size / share, 2), (1.5 * size / share, 1), (0.5 * size / share, 0)):
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda device=None, total=total: SimpleNamespace(total_memory=int(total)))
        assert a14b._experts_that_fit(torch.device("cuda")) == n


@pytest.mark.fake_cuda
@pytest.mark.parametrize("resident", [1, 0])
def test_a_streamed_expert_stays_on_the_host_and_the_iterations_do_not_sync(folders, resident):
    """fake CUDA (no data): after place(), the streamed experts' weights are in pinned host memory; a FIFO iteration
    whose windows straddle the boundary runs both experts on the card with no host sync inside it."""
    from tests.fakecuda import SKIP_REASON

    if SKIP_REASON is not None:
        pytest.skip(SKIP_REASON)
    from tests.fakecuda import FakeCuda
    from tests.fakecuda.run import fifo_iterations

    model = load_backend("wan", folders["wan2.2-a14b"], "cpu", "fp32")
    with FakeCuda(total_gib=80) as fc:
        model.cast(torch.bfloat16).place("cuda", offload_text=True, resident_experts=resident)
        streamed = ["high", "low"][resident:]
        assert model.streamed_experts == streamed and model.device.type == "cuda"
        for name in ("high", "low"):
            where = {p.device.type for p in getattr(model.unet, name).parameters()}
            assert where == ({"cpu"} if name in streamed else {"cuda"}), (name, where)
        net = model.unet
        before = counts(net)
        fc.syncs.clear()
        report = fifo_iterations(fc, model, None, iterations=2, size=(32, 32), cfg_scale=model.guidance(4.0, 3.0))
        inside = [str(s) for it in report.inside for s in it]
        after = counts(net)
    assert not inside, f"host syncs inside FIFO iterations: {inside}"
    assert after[0]["high"] > before[0]["high"] and after[0]["low"] > before[0]["low"]  # a window straddled
    for name in streamed:
        assert all(p.device.type == "cpu" for p in getattr(model.unet, name).parameters())

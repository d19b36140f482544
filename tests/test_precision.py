"""Mixed precision (issue: half precision done right) and the sync-free FIFO hot path."""

from __future__ import annotations

import contextlib

import pytest
import torch
from safetensors.torch import load_file, save_file

from fifo_longvid import load_model
from fifo_longvid.backends import sdpa as attention  # the chunked SDPA every backend's attention uses
from fifo_longvid.backends.videocrafter.convert import convert_checkpoint
from fifo_longvid.diffusion.context import current
from fifo_longvid.diffusion.noise import NoiseSource
from fifo_longvid.diffusion.schedule import ddim_coeffs, make_ddim_schedule
from fifo_longvid.fifo.init import init_queue
from fifo_longvid.fifo.queue import FifoPlan
from fifo_longvid.fifo.sampler import FifoStepper
from fifo_longvid.run.config import build_run_config
from fifo_longvid.run.pipeline import generate


def _small_run(tmp_path, name: str, **flags) -> tuple[torch.Tensor, dict]:
    import json

    cfg = build_run_config(flags={
        "model": "tiny", "device": "cpu", "prompts": ["a red fox running"], "sampling.seed": 3, "fifo.num_frames": 3,
        "fifo.window": 4, "fifo.partitions": 1, "output.path": str(tmp_path / f"{name}.mp4"),
        "output.save_latents": True, "techniques.qcache.enabled": True, "techniques.qcache.v": 0.9, **flags})
    generate(cfg, log=lambda m: None)
    side = json.loads((tmp_path / f"{name}.json").read_text())
    return load_file(str(tmp_path / f"{name}.latents.safetensors"))["latents"], side


# Relative L2 of the output latents against fp32, measured on this config (tiny, 128x128, f=4, n=1, 3 frames,
# eta 1, lookahead, Q-cache 0.9) for seeds 3, 4, 5: bf16 0.119-0.122, fp16 0.015-0.017. Random weights and
# cfg 12 amplify rounding (one U-Net forward alone: bf16 0.035, fp16 0.0045). Bounds leave ~1.7x headroom.
REL_L2_BOUND = {"bf16": 0.2, "fp16": 0.03}


@pytest.mark.slow
def test_half_precision_fifo_on_cpu_stays_close_to_fp32(tmp_path):
    """The whole FIFO run in bf16 and fp16 on the CPU: finite, float32 latents, close to fp32.
    (fp16 arithmetic is emulated on CPUs without fp16 units: this is the slowest test, ~1-2 min.)"""
    ref, side = _small_run(tmp_path, "fp32", dtype="fp32", **{"fifo.max_batch": "all"})
    assert side["config"]["sampling"]["eta"] == 1.0 and side["config"]["fifo"]["lookahead"]
    for dtype, bound in REL_L2_BOUND.items():
        z, side = _small_run(tmp_path, dtype, dtype=dtype, **{"fifo.max_batch": "all"})
        assert side["runtime"]["dtype"] == dtype and z.dtype == torch.float32 and torch.isfinite(z).all()
        rel = float((z - ref).norm() / ref.norm())
        assert 0 < rel < bound, (dtype, rel)


def test_bf16_schedule_coefficients_stay_finite():
    """The old failure: in bf16, alpha_bar_prev at index 1 rounds to 1 and sqrt(1 - a_prev - sigma^2) is NaN."""
    m = load_model("tiny", None, device="cpu", dtype="bf16")
    s = m.ddim_schedule(16, eta=1.0)
    x = torch.zeros(1, 4, 16, 2, 2, dtype=torch.bfloat16)
    c = ddim_coeffs(s, torch.arange(16)[None], x)
    for name in ("sqrt_alpha", "sqrt_one_minus_alpha", "sqrt_alpha_prev", "dir_coef", "sigma"):
        v = getattr(c, name)
        assert v.dtype == torch.float32 and torch.isfinite(v).all(), name
    assert abs(float(c.sqrt_one_minus_alpha[0, 0, 0]) - 0.029155) < 1e-5  # fp16 gave 0.03125


def test_converted_half_checkpoint_samples_with_the_fp32_schedule(tmp_path):
    model = load_model("tiny", None, device="cpu")
    ckpt = tmp_path / "model.safetensors"
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}  # an old-style all-fp16 file
    save_file(sd, str(ckpt))
    half_conv = convert_checkpoint(ckpt, tmp_path / "half.safetensors", half=True)
    for path in (ckpt, half_conv):
        m = load_model("tiny", path, device="cpu", dtype="fp16")
        assert m.alphas_cumprod.dtype == torch.float32
        torch.testing.assert_close(m.alphas_cumprod, model.alphas_cumprod, rtol=0, atol=0)
        torch.testing.assert_close(m.scale_arr, model.scale_arr, rtol=0, atol=0)
        a, b = m.ddim_schedule(16, 1.0), model.ddim_schedule(16, 1.0)
        torch.testing.assert_close(a.sqrt_one_minus_alphas, b.sqrt_one_minus_alphas, rtol=0, atol=0)
        assert next(m.cond_stage_model.parameters()).dtype == torch.float32
        assert m.dtype == torch.float16
    with pytest.raises(ValueError, match="float32"):
        make_ddim_schedule(model.alphas_cumprod.half(), 16)


def test_noise_is_float32_whatever_the_model_dtype():
    z = NoiseSource(1).randn((2, 3))
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, torch.randn((2, 3), generator=torch.Generator().manual_seed(1)))


def test_attention_chunks_under_the_kernel_batch_limit(tiny_model, monkeypatch):
    x = torch.randn(2, 4, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([[10 * i + j for j in range(8)] for i in range(2)])
    ctx = torch.randn(2, 77, tiny_model.cfg.unet.context_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = tiny_model.unet(x, t, ctx)
        calls = []
        real = torch.nn.functional.scaled_dot_product_attention

        def spy(q, *a, **k):
            calls.append(q.shape[0])
            return real(q, *a, **k)

        monkeypatch.setattr(attention, "MAX_ATTENTION_BATCH", 7)
        monkeypatch.setattr(attention.F, "scaled_dot_product_attention", spy)
        out = tiny_model.unet(x, t, ctx)
    assert calls and max(calls) <= 7
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@contextlib.contextmanager
def _no_host_sync():
    """Make every tensor -> host read raise (what a CUDA sync would be), for the duration of the block."""
    names = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def trap(name):
        def f(self, *a, **k):
            raise AssertionError(f"host sync in the hot path: Tensor.{name}")
        return f

    for n in names:
        setattr(torch.Tensor, n, trap(n))
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.Tensor, n, fn)


def test_fifo_iteration_issues_no_host_sync(tiny_model):
    """Everything an iteration needs is precomputed per run; the U-Net, the guidance, the Q-cache hook and
    the DDIM update run without reading a tensor back to the host."""
    from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
    from fifo_longvid.techniques import TechniquesConfig, apply_techniques

    plan = FifoPlan(8, 2, True)
    sched = tiny_model.ddim_schedule(plan.steps, 1.0)
    noise = NoiseSource(0)
    queue = init_queue(plan, sched, noise, "noise", shape=(1, 4, 8, 8))
    cfg = TechniquesConfig()
    cfg.qcache.enabled, cfg.qcache.schedule = True, "linear:0.9:0.5"
    tech = apply_techniques(tiny_model.unet, cfg)
    tech.bind(sched)
    tech.set_phase("fifo")
    ctx = tiny_model.encode_text(["a", ""])
    net = cfg_denoiser(unet_network(tiny_model.unet, 8), ctx[:1], ctx[1:], 7.5, max_batch=3)
    seen = []

    def denoise(batch):
        seen.append(current())
        return net(batch.x, batch.t)

    stepper = FifoStepper(plan, sched, 1, (8, 8), 4, "cpu")
    try:
        with torch.no_grad(), _no_host_sync():
            for it in range(3):
                stepper.step(denoise, queue, noise, iteration=it)
    finally:
        tech.remove()
    ctx0 = seen[0]
    assert ctx0.phase == "fifo" and ctx0.rows == 2 * plan.n and ctx0.frame_ids.shape == (4, 8)
    assert int(seen[2].frame_ids.min()) == int(ctx0.frame_ids.min()) + 2  # ids move with the queue
    assert bool(ctx0.commit[:, 4:].all()) and not bool(ctx0.commit[:, :4].any())  # lookahead: back half kept


def test_ring_queue_equals_the_reference_shift():
    plan = FifoPlan(4, 2, True)
    sched = make_ddim_schedule(torch.linspace(0.99, 0.01, 1000), plan.steps)
    queue = init_queue(plan, sched, NoiseSource(0), "noise", shape=(1, 1, 1, 1))
    ref = queue.latents.clone()
    for k in range(13):
        tail = torch.full((1, 1, 1, 1, 1), 100.0 + k)
        out, fid = queue.pop_push(plan.head, tail)
        assert float(out) == float(ref[0, 0, plan.head]) and fid == k + plan.head
        ref = torch.cat([ref[:, :, 1:], tail], dim=2)
        assert torch.equal(queue.latents, ref)
        assert queue.frame_ids.tolist() == list(range(k + 1, k + 1 + plan.length))


@pytest.mark.slow
def test_compiled_unet_matches_eager(tmp_path, monkeypatch):
    """--compile traces the U-Net with the run's Q-cache processors, hooks and step context through dynamo.
    Dynamo's "eager" backend (the captured graphs, run without code generation) keeps this affordable on a
    CPU; inductor's C++ build of the same graphs takes many minutes here (scripts/bench_gpu.py mode d)."""
    from fifo_longvid.backends.videocrafter.load import compile_unet
    from fifo_longvid.run import pipeline

    torch._dynamo.reset()
    monkeypatch.setattr(pipeline, "compile_unet", lambda m: compile_unet(m, backend="eager"))
    eager, side_e = _small_run(tmp_path, "eager", **{"fifo.max_batch": "all"})
    compiled, side_c = _small_run(tmp_path, "compiled", compile=True, **{"fifo.max_batch": "all"})
    torch._dynamo.reset()
    assert side_c["runtime"]["compile"] is True and side_e["runtime"]["compile"] is False
    assert "compile_warmup_s" in side_c["timings"] and "compile_warmup_s" not in side_e["timings"]
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


def test_auto_max_batch_is_a_rule_on_cpu_and_records_the_choice(tmp_path):
    _, side = _small_run(tmp_path, "auto")
    rt = side["runtime"]
    assert rt["dtype"] == "fp32" and rt["device"] == "cpu" and rt["compile"] is False
    assert rt["max_batch_how"].startswith("auto: CPU rule") and rt["max_batch"] in (2, 4)  # 2 windows x CFG
    _, fixed = _small_run(tmp_path, "fixed", **{"fifo.max_batch": "2"})
    assert fixed["runtime"]["max_batch"] == 2 and fixed["runtime"]["max_batch_how"] == "--max-batch 2"

"""The CUDA path: goldens, half precision, no host sync, bitwise resume, chunked attention, compile, auto.

Marked ``cuda`` and skipped without a GPU (CI never has one). ``bash scripts/gpu_check.sh`` runs them on a
GPU box (``pytest -m cuda``).
"""

from __future__ import annotations

import json
import os
import signal
import warnings

import pytest
import torch
from safetensors.torch import load_file

from fifo_longvid.run.config import build_run_config
from fifo_longvid.run.pipeline import generate

from .conftest import golden

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def cuda_model():
    from fifo_longvid import load_model

    return load_model("tiny", device="cuda")


@pytest.fixture()
def exact_fp32():
    """The reference ran in fp32 without TF32; cuDNN convolutions default to TF32 on Ampere and later."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _cuda(g: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.cuda() for k, v in g.items()}


@torch.no_grad()
def test_unet_goldens_on_cuda(cuda_model, exact_fp32):
    g = _cuda(golden("golden_unet_base"))
    out = cuda_model.unet(g["x"], g["t"], g["context"], fps=g["fps"])
    torch.testing.assert_close(out, g["out"], atol=1e-4, rtol=1e-4)
    g = _cuda(golden("golden_unet_fifo"))
    out = cuda_model.unet(g["x"], g["ts"], g["context"], fps=g["fps"], per_frame=True)
    torch.testing.assert_close(out, g["out"], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_vae_golden_on_cuda(cuda_model, exact_fp32):
    from fifo_longvid.backends.videocrafter.vae import decode_video

    g = _cuda(golden("golden_vae_decode"))
    torch.testing.assert_close(decode_video(cuda_model.first_stage_model, g["z"]), g["out"], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_fifo_golden_on_cuda(cuda_model, exact_fp32):
    from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
    from fifo_longvid.diffusion.noise import ReplayNoise
    from fifo_longvid.fifo.init import init_queue
    from fifo_longvid.fifo.queue import FifoPlan
    from fifo_longvid.fifo.sampler import fifo_iteration

    g, base = golden("golden_fifo"), golden("golden_fifo")
    pn, sn = g["prepare_noise"], g["shift_noise"]
    noise = ReplayNoise([pn[:, :, [k]] for k in range(pn.shape[2])] + [sn[:, :, [i]] for i in range(sn.shape[2])],
                        device="cuda")
    plan = FifoPlan(8, 2, True)
    sched = cuda_model.ddim_schedule(16, 0.0).to("cuda")
    q = init_queue(plan, sched, noise, "first", base=base["base_latents"].cuda())
    den = cfg_denoiser(unet_network(cuda_model.unet, base["fps"]), base["cond"].cuda(), base["uncond"].cuda(), 12.0)
    outs = [fifo_iteration(lambda b: den(b.x, b.t), q, plan, sched, noise, iteration=i)[0] for i in range(20)]
    err = (torch.cat(outs, dim=2).cpu() - g["out_latents"]).abs().max().item()
    assert err < 1e-2, f"max abs error {err:.2e}"


def _run(tmp_path, name: str, **flags) -> tuple[torch.Tensor, dict]:
    cfg = build_run_config(flags={
        "model": "tiny", "device": "cuda", "prompts": ["a red fox running"], "sampling.seed": 3,
        "fifo.num_frames": 6, "fifo.window": 4, "fifo.partitions": 2, "output.path": str(tmp_path / f"{name}.mp4"),
        "output.save_latents": True, **flags})
    generate(cfg, log=lambda m: None)
    side = json.loads((tmp_path / f"{name}.json").read_text())
    return load_file(str(tmp_path / f"{name}.latents.safetensors"))["latents"], side


# Bounds as on the CPU (tests/test_precision.py): random weights and cfg 12 amplify rounding.
REL_L2_BOUND = {"bf16": 0.2, "fp16": 0.03}


def test_half_precision_on_cuda_stays_close_to_fp32(tmp_path):
    ref, _ = _run(tmp_path, "fp32", dtype="fp32")
    for dtype, bound in REL_L2_BOUND.items():
        z, side = _run(tmp_path, dtype, dtype=dtype)
        rel = float((z - ref).norm() / ref.norm())
        print(f"{dtype}: relative L2 vs fp32 on CUDA {rel:.4f}")
        assert side["runtime"]["dtype"] == dtype and torch.isfinite(z).all() and rel < bound


def _iterations_under_sync_debug(model, techniques_cfg, iterations: int = 4) -> list[str]:
    """Warnings that torch.cuda's sync debug mode raises during FIFO iterations (after one warm-up)."""
    from fifo_longvid.diffusion.guidance import unet_network
    from fifo_longvid.diffusion.noise import NoiseSource
    from fifo_longvid.fifo.init import init_queue
    from fifo_longvid.fifo.queue import FifoPlan
    from fifo_longvid.fifo.sampler import FifoStepper
    from fifo_longvid.techniques import apply_techniques

    plan = FifoPlan(4, 2, True)
    sched = model.ddim_schedule(plan.steps, 1.0).to("cuda")
    noise = NoiseSource(0, "cuda")
    queue = init_queue(plan, sched, noise, "noise", shape=(1, 4, 8, 8))
    tech = apply_techniques(model.unet, techniques_cfg)
    tech.bind(sched)
    tech.set_phase("fifo")
    ctx = model.encode_text(["a", ""]).cuda()
    den = tech.cfg_denoiser(tech.wrap_network(unet_network(model.unet, 8)), ctx[:1], ctx[1:], 7.5, None)
    stepper = FifoStepper(plan, sched, 1, (8, 8), 4, "cuda")
    caught: list[str] = []
    try:
        with torch.no_grad():
            for it in range(iterations + 1):
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn" if it else 0)
                    try:
                        stepper.step(lambda b: den(b.x, b.t), queue, noise, iteration=it)
                    finally:
                        torch.cuda.set_sync_debug_mode(0)
                    tech.end_iteration(int(queue.frame_ids[0]))
                if it:
                    caught += [str(x.message).splitlines()[0] for x in w if "synchroniz" in str(x.message)]
    finally:
        tech.remove()
    return caught


def test_no_host_sync_in_a_plain_iteration_on_cuda(cuda_model):
    from fifo_longvid.techniques import TechniquesConfig

    cfg = TechniquesConfig()
    cfg.qcache.enabled = True
    syncs = _iterations_under_sync_debug(cuda_model, cfg)
    assert syncs == [], syncs


def test_host_syncs_with_the_fast_preset_on_cuda(cuda_model):
    """TGATE, CFG-Cache, attention reuse and DeepCache decide per frame on the host from the step context's CPU
    mirror; their index tensors travel from pinned memory, so they add no sync either."""
    from fifo_longvid.techniques import TechniquesConfig

    cfg = TechniquesConfig()
    cfg.tgate.enabled = cfg.cfg_cache.enabled = cfg.attn_reuse.enabled = cfg.deepcache.enabled = True
    syncs = _iterations_under_sync_debug(cuda_model, cfg)
    print(f"host syncs in 4 preset iterations: {len(syncs)}")
    assert syncs == [], syncs[:5]


def test_resume_is_bitwise_on_cuda(tmp_path):
    extra = {"output.checkpoint_every": 2, "fifo.max_batch": "4"}
    whole, _ = _run(tmp_path, "whole", **extra)

    def interrupt(task, done, total):
        if task == "fifo" and done == 6:
            os.kill(os.getpid(), signal.SIGINT)

    cfg = build_run_config(flags={
        "model": "tiny", "device": "cuda", "prompts": ["a red fox running"], "sampling.seed": 3,
        "fifo.num_frames": 6, "fifo.window": 4, "fifo.partitions": 2, "output.path": str(tmp_path / "cut.mp4"),
        "output.save_latents": True, **extra})
    generate(cfg, log=lambda m: None, progress=interrupt)
    cut, _ = _run(tmp_path, "cut", **extra, **{"output.resume": True})
    assert torch.equal(cut, whole)


def test_chunked_attention_past_the_grid_limit_on_cuda():
    """70,000 rows (> 65,535, the grid limit of pytorch#142228) in fp16: equal to two half-size calls."""
    from fifo_longvid.backends.videocrafter.attention import MAX_ATTENTION_BATCH, sdpa

    torch.manual_seed(0)
    n = MAX_ATTENTION_BATCH + 4465
    q, k, v = (torch.randn(n, 2, 16, 8, device="cuda", dtype=torch.float16) for _ in range(3))
    out = sdpa(q, k, v)
    half = n // 2
    ref = torch.cat([torch.nn.functional.scaled_dot_product_attention(q[i:i + half], k[i:i + half], v[i:i + half])
                     for i in (0, half)])
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)


def test_compiled_equals_eager_on_cuda(tmp_path):
    torch._dynamo.reset()
    eager, _ = _run(tmp_path, "eager", **{"fifo.max_batch": "all"})
    compiled, side = _run(tmp_path, "compiled", compile=True, **{"fifo.max_batch": "all"})
    torch._dynamo.reset()
    assert side["runtime"]["compile"] is True
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-3)


def test_cuda_auto_choice_is_recorded_and_repeats(tmp_path):
    a, side_a = _run(tmp_path, "auto_a")
    b, side_b = _run(tmp_path, "auto_b")
    how = side_a["runtime"]["max_batch_how"]
    assert how.startswith("auto: CUDA rule") and how == side_b["runtime"]["max_batch_how"]
    assert torch.equal(a, b)


@torch.no_grad()
def test_wan_text_encoder_from_host_memory_equals_it_on_the_card():
    """tiny_wan loaded for CUDA keeps UMT5 in host memory (``Wan.place``) and computes on the card piece by piece:
    the context is bitwise the one the encoder gives when it sits on the card, and its weights never moved."""
    from fifo_longvid.backends import load_backend

    model = load_backend("tiny_wan", None, "cuda", "fp32")
    enc = model.text_encoder
    assert model.text_offload and all(p.device.type == "cpu" for p in enc.parameters())
    prompts = ["a red circle bouncing", "a blue square"]
    streamed = model.encode_text(prompts)
    model.place(torch.device("cuda"), offload_text=False)
    assert all(p.device.type == "cuda" for p in enc.parameters())
    resident = model.encode_text(prompts)
    assert streamed.device.type == "cuda" and torch.equal(streamed, resident)

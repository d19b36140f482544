"""Defects of the CUDA path that show on the CPU, with stand-in devices (issue: ready for the GPU in one call)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fifo_longvid.cli.main import app
from fifo_longvid.devices import index_tensor, resolve_device, same_device, to_device
from fifo_longvid.diffusion.noise import NoiseSource
from fifo_longvid.techniques import TechniquesConfig, check_compile
from fifo_longvid.techniques.cfg_cache import NS_W, CFGCache, CFGCacheConfig
from fifo_longvid.techniques.store import FrameStore

PACKAGE = Path(__file__).resolve().parents[1] / "fifo_longvid"


def test_an_unindexed_cuda_device_equals_the_one_tensors_report():
    """torch.device('cuda') != torch.device('cuda:0'): the queue (made through NoiseSource) reported cuda:0 and
    the stepper's check compared it with 'cuda', so bench_gpu.py's default run raised before timing anything."""
    assert torch.device("cuda") != torch.device("cuda:0")  # the trap itself
    assert resolve_device("cuda") == torch.device("cuda:0")  # no CUDA here: index 0, as on a one-GPU box
    assert same_device("cuda", torch.device("cuda:0")) and same_device("cpu", torch.device("cpu"))
    assert not same_device("cuda:1", "cuda:0")
    assert NoiseSource(0, "cuda").device == torch.device("cuda:0")


def test_fifo_stepper_resolves_its_device():
    import fifo_longvid
    from fifo_longvid.fifo.queue import FifoPlan
    from fifo_longvid.fifo.sampler import FifoStepper

    model = fifo_longvid.load_model("tiny", device="cpu")
    plan = FifoPlan(4, 1, lookahead=True)
    sched = model.ddim_schedule(plan.steps, 1.0)
    stepper = FifoStepper(plan, sched, 2, (4, 4), 4, "cpu")
    assert stepper.device == torch.device("cpu")


def test_cfg_cache_weights_stay_on_the_host_after_loading_onto_another_device():
    """CFG-Cache advances its per-frame weights on the host. Loading a state onto the run's device used to move
    them too, so the first new (CPU) entry met a device entry in gather's torch.stack after a resume. 'meta'
    stands in for the GPU."""
    store = FrameStore()
    CFGCache(CFGCacheConfig(enabled=True, every=3), store)  # registers its weights namespace as host-side
    store.put(NS_W, [5, 6], torch.ones(2, 2))
    store.put("cfg_cache/lf", [5, 6], torch.zeros(2, 4, 3, 3))
    store.end_iteration(0)
    loaded = FrameStore()
    CFGCache(CFGCacheConfig(enabled=True, every=3), loaded)
    loaded.load_state_dict(store.state_dict(), device="meta")
    assert loaded.get("cfg_cache/lf", 5).device.type == "meta"  # features follow the run's device
    assert loaded.get(NS_W, 5).device.type == "cpu"
    loaded.put(NS_W, [7], torch.ones(1, 2))  # a frame that entered after the resume
    loaded.end_iteration(0)
    assert loaded.gather(NS_W, [5, 6, 7]).shape == (3, 2)  # one device: no mixed-device stack


@pytest.mark.parametrize("flag", ["tgate", "attn_reuse", "deepcache"])
def test_compile_is_refused_with_techniques_that_decide_on_the_host(flag):
    cfg = TechniquesConfig()
    check_compile(cfg)
    cfg.cfg_cache.enabled = cfg.qcache.enabled = True
    check_compile(cfg)  # guidance-level and tensor-only techniques compile
    getattr(cfg, flag).enabled = True
    with pytest.raises(ValueError, match="--compile cannot be combined with"):
        check_compile(cfg)


def test_cli_compile_with_tgate_is_a_clear_error(tmp_path):
    r = CliRunner().invoke(app, ["generate", "--prompt", "x", "--config", "tiny", "--compile", "--tgate",
                                 "-o", str(tmp_path / "o.mp4")])
    assert r.exit_code != 0 and "--compile cannot be combined with --tgate" in r.output.replace("\n", " ")
    assert "Traceback" not in r.output and not (tmp_path / "o.mp4").exists()


HOT_PATH = [*sorted((PACKAGE / "techniques").glob("*.py")), PACKAGE / "diffusion" / "context.py",
            PACKAGE / "diffusion" / "guidance.py", PACKAGE / "run" / "conditioning.py"]


@pytest.mark.parametrize("path", HOT_PATH, ids=lambda p: p.name)
def test_hot_path_builds_no_device_tensor_from_python_data(path):
    """``torch.tensor(values, device=cuda)`` copies from pageable memory and blocks the host until the GPU drains
    (the CPU sync trap cannot see it). Index lists go through ``devices.index_tensor`` (pinned, non-blocking)."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "tensor" \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch" \
                and any(k.arg == "device" for k in node.keywords):
            bad.append(node.lineno)
    assert not bad, f"{path.name}: torch.tensor(..., device=...) at lines {bad}; use devices.index_tensor"


def test_index_tensor_and_to_device_on_cpu():
    t = index_tensor([3, 1, 2], "cpu")
    assert t.dtype == torch.long and t.tolist() == [3, 1, 2]
    x = torch.arange(4.0)
    assert to_device(x, "cpu") is x and to_device(x, "meta").device.type == "meta"


def test_prompt_schedule_copies_its_bounds_once_per_device():
    from fifo_longvid.fifo.queue import FifoPlan
    from fifo_longvid.run.conditioning import prompt_schedule
    from fifo_longvid.run.config import build_run_config

    cfg = build_run_config(flags={"model": "tiny", "prompts": ["a", "b"], "fifo.num_frames": 6,
                                  "fifo.frames_per_prompt": [2, 4]})
    of = prompt_schedule(cfg, FifoPlan(4, 1, lookahead=True), warmup=0)
    calls = {"n": 0}
    real = torch.Tensor.to

    def counting(self, *a, **k):
        calls["n"] += 1
        return real(self, *a, **k)

    ids = torch.arange(10)
    torch.Tensor.to = counting
    try:
        first = of(ids)
        for _ in range(5):
            assert torch.equal(of(ids), first)
    finally:
        torch.Tensor.to = real
    assert calls["n"] == 1


def test_base_clip_ddim_step_and_queue_init_index_without_a_host_sync():
    """The base clip's ``ddim_step`` and the queue init's ``q_sample`` take a Python int schedule index. It used to
    become a 0-dim device tensor (a pageable host->device copy) that the indexing then read back with ``.item()``:
    6 blocking syncs per base-clip step on CUDA. 'meta' stands in for the GPU: ``.item()`` raises there."""
    from fifo_longvid.backends.videocrafter.schedule import scaled_ddim_schedule
    from fifo_longvid.diffusion.schedule import ddim_step, q_sample, train_schedule

    ac = torch.tensor(train_schedule()["alphas_cumprod"], dtype=torch.float32)
    scale = torch.linspace(1.0, 0.7, 1400)
    sched = scaled_ddim_schedule(ac, scale, 16, 1.0).to("meta")
    x = torch.empty(1, 4, 16, 8, 8, device="meta")
    x_prev, _ = ddim_step(x, x, sched, 5, noise=x)
    assert x_prev.shape == x.shape and x_prev.device.type == "meta"
    assert q_sample(x[:, :, :1], sched, 15, x[:, :, :1]).shape == (1, 4, 1, 8, 8)

"""Weighted Q-cache: derived layer map, reference goldens, identities, composition with CFG and FIFO."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from fifo_longvid.backends.videocrafter.attention import SDPAProcessor
from fifo_longvid.backends.videocrafter.load import build_model
from fifo_longvid.backends.videocrafter.presets import videocrafter2
from fifo_longvid.backends.videocrafter.sites import find_attention_sites, mirror_pairs
from fifo_longvid.backends.videocrafter.unet import UNet3D, UNetConfig
from fifo_longvid.cli.main import app
from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
from fifo_longvid.fifo.init import init_queue
from fifo_longvid.fifo.queue import FifoPlan
from fifo_longvid.fifo.sampler import fifo_iteration
from fifo_longvid.techniques.qcache import QCacheConfig, VSchedule, apply

from .conftest import fifo_replay_noise, golden

FORK_OUT2IN = {3: 8, 4: 7, 5: 7, 6: 5, 7: 4, 8: 4, 9: 2, 10: 1, 11: 1}


def test_derived_map_equals_fork_table_for_videocrafter2(tiny_model):
    full = build_model(videocrafter2(), "meta").unet
    for unet in (full, tiny_model.unet):
        pairs = mirror_pairs(unet, "temporal_attn1")
        assert {d.block: e.block for d, e in pairs.items()} == FORK_OUT2IN
        assert all(d.level == e.level and d.heads == e.heads for d, e in pairs.items())
        assert not any(e.stage == "init" for e in pairs.values())  # init_attn has 8 heads: no match


@pytest.mark.parametrize("mult,nrb", [((1, 2), 2), ((1, 2, 4), 3), ((1, 1, 2, 2), 1)])
def test_map_works_for_other_layouts(mult, nrb):
    with torch.device("meta"):
        unet = UNet3D(UNetConfig(model_channels=32, channel_mult=mult, num_res_blocks=nrb, num_head_channels=16,
                                 context_dim=64, attention_resolutions=(1, 2, 4, 8)))
    for target in ("temporal_attn1", "spatial_attn2"):
        pairs = mirror_pairs(unet, target)
        decoders = [s for s, _ in find_attention_sites(unet) if s.stage == "output" and s.target == target]
        assert set(pairs) == set(decoders)  # every decoder site found a partner
        for d, e in pairs.items():
            assert e.stage == "input" and e.level == d.level and (e.heads, e.dim_head) == (d.heads, d.dim_head)


@torch.no_grad()
def test_unet_qcache_goldens_and_identities(tiny_model):
    g = golden("golden_unet_qcache")
    unet = tiny_model.unet
    run = lambda: unet(g["x"], g["ts"], g["context"], fps=g["fps"], per_frame=True)  # noqa: E731
    plain = run()
    for v, key in ((float(g["vt"]), "out_vt"), (1.0, "out_vt1")):
        q = apply(unet, QCacheConfig(enabled=True, v=v))
        out = run()
        q.remove()
        torch.testing.assert_close(out, g[key], atol=1e-4, rtol=1e-4)
        assert (out - plain).abs().max() > 0.05
    q = apply(unet, QCacheConfig(enabled=True, v=0.0))
    assert torch.equal(run(), plain)  # v = 0 is bitwise the plain U-Net
    q.remove()
    # apply -> remove restores every processor and the exact output
    assert all(isinstance(m.processor, SDPAProcessor) for _, m in find_attention_sites(unet))
    assert torch.equal(run(), plain)
    assert not unet._forward_pre_hooks and not unet._forward_hooks


@torch.no_grad()
def test_batched_cfg_blends_each_branch_separately(tiny_model):
    g = golden("golden_unet_qcache")
    net = unet_network(tiny_model.unet, g["fps"])
    cond, uncond = g["context"], -g["context"]
    t = g["ts"][None]
    q = apply(tiny_model.unet, QCacheConfig(enabled=True, v=0.9))
    try:
        batched = cfg_denoiser(net, cond, uncond, 12.0)(g["x"], t)
        e_c, e_u = net(g["x"], t, cond), net(g["x"], t, uncond)
    finally:
        q.remove()
    torch.testing.assert_close(batched, e_u + 12.0 * (e_c - e_u), atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_fifo_qcache_golden(tiny_model):
    g = golden("golden_fifo_qcache")
    base = golden("golden_fifo")
    plan = FifoPlan(8, 2, True)
    sched = tiny_model.ddim_schedule(16, 0.0)
    noise = fifo_replay_noise("golden_fifo_qcache")
    q = init_queue(plan, sched, noise, "first", base=base["base_latents"])
    den = cfg_denoiser(unet_network(tiny_model.unet, base["fps"]), base["cond"], base["uncond"], 12.0)
    tech = apply(tiny_model.unet, QCacheConfig(enabled=True, v=0.9))
    tech.bind(sched)
    try:
        outs = [fifo_iteration(lambda b: den(b.x, b.t), q, plan, sched, noise, iteration=i)[0] for i in range(20)]
    finally:
        tech.remove()
    err = (torch.cat(outs, 2) - g["out_latents"]).abs().max().item()
    print(f"golden_fifo_qcache max abs error {err:.2e}")
    assert err < 1e-2


def test_v_schedules():
    assert torch.allclose(VSchedule("linear:0.9:0.8").table(3), torch.tensor([0.8, 0.85, 0.9]))
    assert torch.equal(VSchedule("0.7").table(2), torch.tensor([0.7, 0.7]))
    assert torch.equal(VSchedule("list:0.3,0.2,0.1").table(3), torch.tensor([0.1, 0.2, 0.3]))
    for bad in ("linear:0.9", "list:", "cubic:1", "1.5", "abc"):
        with pytest.raises(ValueError, match="Grammar"):
            VSchedule(bad)
    with pytest.raises(ValueError, match="one per step"):
        VSchedule("list:0.1,0.2").table(3)


@torch.no_grad()
def test_per_frame_v_in_one_batch_equals_separate_calls(tiny_model):
    """Under FIFO each frame has its own schedule index, so v is per frame; batching windows keeps that."""
    sched = tiny_model.ddim_schedule(16, 0.0)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 4, 16, 16)
    t = sched.timesteps[torch.tensor([[0, 3, 6, 9], [4, 8, 12, 15]])]
    ctx = torch.randn(1, 77, 64).expand(2, -1, -1)
    tech = apply(tiny_model.unet, QCacheConfig(enabled=True, schedule="linear:1.0:0.0"))
    tech.bind(sched)
    try:
        batched = tiny_model.unet(x, t, ctx)
        single = torch.cat([tiny_model.unet(x[i : i + 1], t[i : i + 1], ctx[:1]) for i in range(2)])
    finally:
        tech.remove()
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    assert (batched - tiny_model.unet(x, t, ctx)).abs().max() > 1e-3


def test_cli_qcache_run_records_settings(tmp_path):
    out = tmp_path / "car.mp4"
    r = CliRunner().invoke(app, ["generate", "--prompt", "a car slowing down to stop", "--config", "tiny",
                                 "--qcache", "0.9", "--num-frames", "3", "--height", "64", "--width", "64",
                                 "-o", str(out), "fifo.window=4"])
    assert r.exit_code == 0, r.output
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["techniques"]["qcache"]["v"] == 0.9
    assert meta["config"]["techniques"]["qcache"]["targets"] == ["temporal_attn1"]


@pytest.mark.parametrize("args,needle", [
    (["--qcache", "1.5"], "must be in [0, 1]"),
    (["--qcache-schedule", "linear:2"], "Grammar"),
    (["--qcache", "0.5", "--qcache-targets", "temporal_attn3"], "unknown Q-cache target"),
])
def test_cli_qcache_bad_input(tmp_path, args, needle):
    r = CliRunner().invoke(app, ["generate", "--prompt", "x", "--config", "tiny", *args, "-o", str(tmp_path / "o.mp4")])
    assert r.exit_code != 0 and needle in r.output.replace("\n", " ") and "Traceback" not in r.output

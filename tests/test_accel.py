"""Acceleration techniques inside the FIFO loop (tiny model, small queue): identities, effects, caches, resume."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from fifo_longvid.backends.videocrafter.attention import SDPAProcessor
from fifo_longvid.backends.videocrafter.sites import find_attention_sites
from fifo_longvid.diffusion.guidance import unet_network
from fifo_longvid.diffusion.noise import NoiseSource
from fifo_longvid.fifo.init import init_queue
from fifo_longvid.fifo.queue import FifoPlan, FrameQueue
from fifo_longvid.fifo.sampler import fifo_iteration
from fifo_longvid.fifo.state import FifoState, load_state, save_state
from fifo_longvid.techniques import TechniquesConfig, apply_techniques

PLAN = FifoPlan(4, 2, lookahead=True)  # S = 8, 4 windows, 10 slots
HW = 8
SCALE = 12.0


def config(**on: dict) -> TechniquesConfig:
    cfg = TechniquesConfig()
    for name, kw in on.items():
        sub = getattr(cfg, name)
        sub.enabled = True
        for k, v in kw.items():
            setattr(sub, k, v)
    return cfg


ALL = {"tgate": {"gate": 0.4}, "cfg_cache": {"every": 2}, "attn_reuse": {}, "deepcache": {"every": 2}}


@dataclass
class Run:
    outs: torch.Tensor  # (iters, C, h, w) dequeued latents
    queue: FrameQueue
    samples: list[int]  # U-Net samples per iteration
    store_ids: set[int]
    namespaces: list[str]


class Counter:
    def __init__(self, net):
        self.net, self.samples = net, 0

    def __call__(self, x, t, ctx):
        self.samples += x.shape[0]
        return self.net(x, t, ctx)


def run(model, cfg: TechniquesConfig | None, iters: int, *, max_batch: int | None = None, batch_windows: bool = True,
        resume_at: int | None = None, tmp_path=None) -> Run:
    sched = model.ddim_schedule(PLAN.steps, 1.0)
    noise = NoiseSource(0)
    queue = init_queue(PLAN, sched, noise, "noise", shape=(1, model.cfg.channels, HW, HW))
    cond, uncond = model.encode_text(["a car slowing down"]), model.encode_text([""])
    outs, samples = [], []
    tech = apply_techniques(model.unet, cfg)
    try:
        tech.bind(sched)
        tech.set_phase("fifo")
        counter = Counter(unet_network(model.unet, 8))
        den = tech.cfg_denoiser(tech.wrap_network(counter), cond, uncond, SCALE, max_batch)
        for it in range(iters):
            if resume_at is not None and it == resume_at:  # save, tear everything down, load into a fresh set
                path = save_state(tmp_path / "s.pt", FifoState(queue, noise.get_state(), it, it, "h",
                                                               tech.state_dict()))
                tech.remove()
                state = load_state(path, "h", torch.device("cpu"))
                queue, noise = state.queue, NoiseSource(0)
                noise.set_state(state.rng_state)
                tech = apply_techniques(model.unet, cfg)
                tech.bind(sched)
                tech.set_phase("fifo")
                tech.load_state_dict(state.extras)
                den = tech.cfg_denoiser(tech.wrap_network(counter), cond, uncond, SCALE, max_batch)
            counter.samples = 0
            z, _ = fifo_iteration(lambda b, den=den: den(b.x, b.t), queue, PLAN, sched, noise,
                                  batch_windows=batch_windows, iteration=it)
            tech.end_iteration(int(queue.frame_ids[0]))
            outs.append(z[0, :, 0])
            samples.append(counter.samples)
        return Run(torch.stack(outs), queue, samples, tech.store.ids(), tech.store.namespaces())
    finally:
        tech.remove()


@pytest.fixture(scope="module")
def plain(tiny_model):
    with torch.no_grad():
        return run(tiny_model, None, 10)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@torch.no_grad()
def test_everything_off_is_bitwise_plain(tiny_model, plain):
    off = run(tiny_model, TechniquesConfig(), 10)
    assert torch.equal(off.outs, plain.outs) and not off.namespaces
    assert plain.samples == [2 * len(PLAN.windows())] * 10


@pytest.mark.parametrize("name,always", [("cfg_cache", {"every": 1}), ("deepcache", {"every": 1}),
                                         ("tgate", {"gate": 1.0})])
@torch.no_grad()
def test_always_compute_settings_are_bitwise_plain(tiny_model, plain, name, always):
    """Installed, recording its caches, but configured so that every step computes: bit-identical output."""
    r = run(tiny_model, config(**{name: always}), 10)
    assert torch.equal(r.outs, plain.outs)
    assert r.namespaces  # it did record


@torch.no_grad()
def test_processors_pass_through_outside_fifo(tiny_model):
    unet = tiny_model.unet
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 4, 4, HW, HW, generator=g), torch.randn(2, 77, 64, generator=g)
    t = torch.tensor([[10, 200, 500, 900]] * 2)
    ref = unet(x, t, ctx)
    tech = apply_techniques(unet, config(**ALL))
    try:
        tech.set_phase("fifo")
        assert torch.equal(unet(x, t, ctx), ref)  # no step context published: every technique stands aside
    finally:
        tech.remove()
    assert all(isinstance(m.processor, SDPAProcessor) for _, m in find_attention_sites(unet))
    assert "forward" not in unet.input_blocks[3].__dict__ and torch.equal(unet(x, t, ctx), ref)


@pytest.mark.parametrize("name", ["tgate", "cfg_cache", "attn_reuse", "deepcache", "all"])
@torch.no_grad()
def test_each_technique_changes_the_output_within_a_sane_bound(tiny_model, plain, name):
    on = ALL if name == "all" else {name: ALL[name]}
    r = run(tiny_model, config(**on), 10)
    assert torch.isfinite(r.outs).all()
    d = rel(r.outs, plain.outs)
    print(f"{name}: relative L2 vs plain {d:.3f}, samples/iteration {r.samples}")
    assert 0 < d < 1.0
    assert sum(r.samples[2:]) <= sum(plain.samples[2:])


@torch.no_grad()
def test_cache_entries_follow_frames_and_leave_with_them(tiny_model):
    r = run(tiny_model, config(**ALL), 10)
    in_queue = set(r.queue.frame_ids.tolist())
    assert r.store_ids and r.store_ids <= in_queue  # every entry belongs to a frame still in the queue
    assert min(in_queue) - 1 not in r.store_ids  # the frame that just left took its entries with it
    prefixes = {ns.split("/")[0] for ns in r.namespaces}
    assert prefixes == {"tgate", "cfg_cache", "attn_reuse", "deepcache"}


@torch.no_grad()
def test_staggered_cfg_cache_keeps_the_batch_constant(tiny_model):
    r = run(tiny_model, config(cfg_cache={"every": 2}), 10)
    # iteration 0: no deltas yet, every window computes both passes; then 2 windows may skip (t < 641), one
    # of them per iteration
    assert r.samples[0] == 8 and r.samples[1:] == [7] * 9
    # skipping allowed everywhere: the tail window still computes (its newest frame has no delta yet), the other
    # three take turns: 1 or 2 of them skip per iteration (about (windows - 1) / K)
    r3 = run(tiny_model, config(cfg_cache={"every": 2, "skip_range": [-1, 1000]}), 10)
    assert set(r3.samples[1:]) == {6, 7}


@pytest.mark.slow
@torch.no_grad()
def test_resume_with_caches_is_bitwise(tiny_model, tmp_path):
    cfg = config(**ALL)
    whole = run(tiny_model, cfg, 8)
    resumed = run(tiny_model, cfg, 8, resume_at=5, tmp_path=tmp_path)
    assert torch.equal(resumed.outs, whole.outs)
    assert torch.equal(resumed.queue.latents, whole.queue.latents)


@pytest.mark.slow
@torch.no_grad()
def test_composes_with_qcache_chunking_and_window_order(tiny_model):
    base = run(tiny_model, config(**ALL), 8)
    with_q = run(tiny_model, config(qcache={"v": 0.9}, **ALL), 8)
    assert torch.isfinite(with_q.outs).all() and rel(with_q.outs, base.outs) > 1e-4
    chunked = run(tiny_model, config(**ALL), 8, max_batch=3)
    assert torch.isfinite(chunked.outs).all() and chunked.samples == base.samples
    # One sample per U-Net call (so batch composition cannot change the rounding): whether the windows go
    # through as one batch or one at a time, every call reads the previous iteration's entries, bit for bit.
    one_batch = run(tiny_model, config(**ALL), 8, max_batch=1)
    one_by_one = run(tiny_model, config(**ALL), 8, max_batch=1, batch_windows=False)
    assert torch.equal(one_batch.outs, one_by_one.outs)


def test_bad_settings_and_clashes_are_refused(tiny_model):
    for cfg, needle in ((config(tgate={"gate": 0.0}), "--tgate GATE"), (config(cfg_cache={"every": 0}), "--cfg-cache"),
                        (config(deepcache={"every": 0}), "--deepcache"),
                        (config(qcache={"targets": ["spatial_attn2"]}, tgate={}), "--tgate")):
        with pytest.raises(ValueError, match=needle):
            apply_techniques(tiny_model.unet, cfg)
    assert all(isinstance(m.processor, SDPAProcessor) for _, m in find_attention_sites(tiny_model.unet))

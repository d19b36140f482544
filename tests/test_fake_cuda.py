"""The CUDA path at full size on fake CUDA tensors (issue 25): runs in CI on a CPU, touches no data.

For each model (VideoCrafter2 and VideoCrafter1 I2V at 320x512, AnimateDiff with SD-1.5 shapes at 512x512,
Wan2.1-T2V-1.3B at 480x832) in fp16 and bf16: where every module lands and in which dtype, zero host syncs
inside a FIFO iteration (plain, each technique, fifo_fast; on Wan the techniques it refuses are asserted refused
and its fastest combination is tgate + cfg_cache), every sync outside one on the allowlist, ``generate`` with an
interrupt and ``--resume``, and ``--max-batch auto`` on 12-80 GB cards against the plan's memory model. The
harness lives in ``tests/fakecuda`` and skips, saying why, when torch's private fake-tensor API moves.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from fifo_longvid.run.config import build_run_config
from fifo_longvid.techniques import TechniquesConfig
from tests.fakecuda import SKIP_REASON

if SKIP_REASON is not None:  # torch's private fake-tensor API moved: say why, run nothing
    pytest.skip(SKIP_REASON, allow_module_level=True)

from tests.fakecuda import FakeCuda  # noqa: E402
from tests.fakecuda.allowlist import unexplained  # noqa: E402
from tests.fakecuda.models import MODELS, FakeModel  # noqa: E402
from tests.fakecuda.run import activation_bytes_per_sample as measured_activation_bytes  # noqa: E402
from tests.fakecuda.run import fifo_iterations, run_schedule, window  # noqa: E402

pytestmark = pytest.mark.fake_cuda
REPO = Path(__file__).resolve().parents[1]
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
CARDS_GB = (12, 16, 24, 48, 80)


def techniques(name: str) -> TechniquesConfig | None:
    if name == "plain":
        return None
    if name == "fifo_fast":
        return build_run_config(REPO / "configs" / "fifo_fast.yaml").techniques
    cfg = TechniquesConfig()
    getattr(cfg, name).enabled = True
    return cfg


def unsupported(spec: FakeModel) -> list[str]:
    """The techniques the model's family refuses (their ``needs`` it does not provide): Wan's DiT has no
    encoder/decoder mirror (Q-cache), no resolution levels (DeepCache), no per-frame self-attention (reuse)."""
    from fifo_longvid.backends import family_for
    from fifo_longvid.techniques import REGISTRY

    provides = family_for(spec.name).provides
    return [t.name for t in REGISTRY if t.needs - provides]


def fastest(spec: FakeModel, *extra: str, **flags: object):
    """fifo_fast's run config, less the techniques the family refuses (Wan: tgate + cfg_cache + attn_reuse)."""
    off = [f"techniques.{t}.enabled=false" for t in unsupported(spec)]
    return build_run_config(REPO / "configs" / "fifo_fast.yaml", flags={"model": spec.name, "prompts": ["x"], **flags},
                            overrides=[*off, *extra])


def assert_refused(spec: FakeModel, overrides: list[str], config: Path | None = None) -> None:
    """``validate`` (run before anything loads) refuses the run, naming the family."""
    from fifo_longvid.run.config import ConfigError
    from fifo_longvid.run.validation import validate

    cfg = build_run_config(config, flags={"model": spec.name, "prompts": ["x"]}, overrides=overrides)
    with pytest.raises(ConfigError, match=f"the {spec.name} family has none"):
        validate(cfg)


@dataclass
class Loaded:
    fc: FakeCuda
    model: object
    dtype: torch.dtype
    spec: FakeModel


ALL = [f"{m}-{d}" for m in MODELS for d in DTYPES]
FP16 = [f"{m}-fp16" for m in MODELS]  # tests that bf16 would only repeat (same code path), to keep CI short
fp16_only = pytest.mark.parametrize("loaded", FP16, indirect=True)


@pytest.fixture(scope="module", params=ALL)
def loaded(request, tmp_path_factory) -> Loaded:
    """One full-size build per model and dtype on its own fake card, shared by the module's tests."""
    name, dt = request.param.rsplit("-", 1)
    fc = FakeCuda(total_gib=80)
    with fc:
        model = MODELS[name].build(fc, DTYPES[dt], tmp_path_factory.mktemp(name))
    fc.load_syncs = list(fc.syncs)
    fc.syncs.clear()
    return Loaded(fc, model, DTYPES[dt], MODELS[name])


def test_every_module_lands_on_the_device_in_its_dtype(loaded):
    fc, model, dtype = loaded.fc, loaded.model, loaded.dtype
    assert model.device == torch.device("cuda:0") and model.dtype == dtype
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    host = set()
    if getattr(model, "text_offload", False):  # Wan: UMT5 stays in host memory and computes on the card
        host = {n for n, t in tensors.items() if n.startswith("text_encoder.")}
        assert host and all(tensors[n].device.type == "cpu" for n in host)
    off = [n for n, t in tensors.items() if n not in host and t.device != torch.device("cuda:0")]
    assert not off, f"not on the card: {off[:5]}"
    unet = {id(p) for p in model.unet.parameters()}
    keep = set(getattr(getattr(model.unet, "transformer", None), "_keep_in_fp32_modules", None) or [])
    wrong = [n for n, p in model.unet.named_parameters()
             if p.dtype != (torch.float32 if keep.intersection(n.split(".")) else dtype)]
    assert not wrong, f"not in the run dtype (or not float32 where diffusers keeps it): {wrong[:5]}"
    if keep:  # Wan: the time embedder, modulation tables and norms stay float32, as diffusers keeps them
        assert any(p.dtype == torch.float32 for p in model.unet.parameters())
    others = Counter(str(t.dtype) for n, t in model.named_parameters() if id(t) not in unet)
    assert set(others) <= {str(dtype), "torch.float32"}, others  # VAE in the run dtype, encoders in fp32
    assert others["torch.float32"] > 0  # the text (and image) encoder stays fp32
    assert not unexplained(fc.load_syncs)


@pytest.mark.parametrize("tech", ["plain", "fifo_fast", "block"])
def test_no_host_sync_inside_an_iteration(loaded, tech):
    """fifo_fast on a family that refuses some of its techniques (Wan) is asserted refused; the iterations then run
    with what the family supports (Wan: tgate + cfg_cache, its fastest combination). ``block``: the rolling
    schedule (--block 2, two frames dequeued per iteration), plain."""
    fc, model, spec = loaded.fc, loaded.model, loaded.spec
    block = 2 if tech == "block" else 1
    chosen = techniques("plain" if tech == "block" else tech)
    if tech == "fifo_fast" and unsupported(spec):
        assert_refused(spec, [], REPO / "configs" / "fifo_fast.yaml")
        chosen = fastest(spec).techniques
    with fc:
        report = fifo_iterations(fc, model, chosen, iterations=2, size=(spec.height, spec.width), block=block)
    inside = [str(s) for it in report.inside for s in it]
    assert not inside, f"host syncs inside FIFO iterations: {inside}"
    assert not unexplained(fc.syncs)
    fc.syncs.clear()


@pytest.mark.slow
@pytest.mark.parametrize("tech", ["tgate", "cfg_cache", "attn_reuse", "deepcache", "qcache"])
@fp16_only
def test_no_host_sync_inside_an_iteration_with_each_technique(loaded, tech):
    """Also: the store's bytes per frame agree with the plan's cost table (``fifo/costs.py``), measured the same way
    (3 iterations, n=1: bytes over frames holding an entry). A technique the family refuses (Wan: qcache,
    deepcache) is asserted refused by validation instead, before anything would load."""
    from fifo_longvid.backends import costs_for

    fc, model, spec = loaded.fc, loaded.model, loaded.spec
    if tech in unsupported(spec):
        assert_refused(spec, [f"techniques.{tech}.enabled=true"])
        return
    with fc:
        report = fifo_iterations(fc, model, techniques(tech), iterations=3, size=(spec.height, spec.width))
    inside = [str(s) for it in report.inside for s in it]
    assert not inside, f"host syncs inside FIFO iterations with {tech}: {inside}"
    fc.syncs.clear()
    table = costs_for(loaded.spec.name).store_bytes_per_frame.get(tech, 0.0)
    measured = report.store_bytes / max(report.store_frames, 1)
    assert measured == pytest.approx(table, rel=0.05, abs=1e5), (measured, table)


@fp16_only
def test_base_clip_and_queue_init_have_no_host_sync(loaded):
    """The base clip's DDIM steps and the queue init indexed the schedule through a 0-dim device tensor: 6 syncs per
    step, about 384 per video, plus 72 at init. Now the only one is the finite check after the clip's last step
    (flow matching's Euler steps on Wan likewise)."""
    from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
    from fifo_longvid.diffusion.noise import NoiseSource
    from fifo_longvid.diffusion.sampling import sample_clip
    from fifo_longvid.fifo.init import init_queue
    from fifo_longvid.fifo.queue import FifoPlan

    fc, model, spec = loaded.fc, loaded.model, loaded.spec
    f = window(model)
    lat = (spec.height // model.latent_factor, spec.width // model.latent_factor)
    with fc, torch.no_grad():
        plan = FifoPlan(f, 1, lookahead=True)
        sched = run_schedule(model, plan.steps)
        ctx = torch.zeros(1, *model.context_shape, device=model.device)
        noise = NoiseSource(0, model.device)
        den = cfg_denoiser(unet_network(model.unet, 8), ctx, ctx, 12.0)
        fc.syncs.clear()
        short = run_schedule(model, 2)  # 2 steps of the clip: the per-step syncs show
        fc.syncs.clear()
        base = sample_clip(den, noise.randn((1, model.cfg.channels, f, *lat)), short, noise=noise)
        clip_syncs = [str(s) for s in fc.syncs]
        fc.syncs.clear()
        init_queue(plan, sched, noise, "first", base=base)
        init_syncs = [str(s) for s in fc.syncs]
    assert len(clip_syncs) == 1 and "check_finite" in clip_syncs[0], clip_syncs
    assert init_syncs == []
    fc.syncs.clear()


@fp16_only
def test_generate_with_an_interrupt_then_resume(loaded, tmp_path, monkeypatch):
    """``generate`` through the real pipeline on the fake card: SIGINT after the first frame keeps a partial and a
    state; ``--resume`` finishes. No sync inside an iteration; every other sync is on the allowlist."""
    from fifo_longvid.fifo.sampler import FifoStepper
    from fifo_longvid.fifo.state import state_path
    from fifo_longvid.run import pipeline

    fc, model, spec = loaded.fc, loaded.model, loaded.spec
    inside: list[str] = []
    real_step = FifoStepper.step

    def step(self, *a, **k):
        start = len(fc.syncs)
        out = real_step(self, *a, **k)
        inside.extend(str(s) for s in fc.syncs[start:])
        return out

    monkeypatch.setattr(FifoStepper, "step", step)
    flags = {"model": spec.name, "prompts": ["a fox"], "output.path": str(tmp_path / "v.mp4"), "device": "cuda",
             "dtype": {torch.float16: "fp16", torch.bfloat16: "bf16"}[loaded.dtype]}
    extra = ["fifo.partitions=1", "fifo.num_frames=2", "output.checkpoint_every=1", "sampling.seed=1",
             f"sampling.height={spec.height}", f"sampling.width={spec.width}"]
    if spec.prompt_image:
        from PIL import Image

        Image.new("RGB", (64, 40), (200, 30, 30)).save(tmp_path / "in.png")
        flags["conditioning.image"] = str(tmp_path / "in.png")

    def stop_after_first(task: str, done: int, total: int) -> None:
        if task == "fifo" and done == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with fc:
        part = pipeline.generate(build_run_config(flags=flags, overrides=extra), model=model,
                                 progress=stop_after_first, log=lambda m: None)
        assert part.partial and part.frames == 1 and state_path(tmp_path / "v.mp4").exists()
        done = pipeline.generate(build_run_config(flags=flags, overrides=extra + ["output.resume=true"]),
                                 model=model, log=lambda m: None)
    assert not done.partial and done.frames == 2 and (tmp_path / "v.mp4").exists()
    assert inside == [], f"host syncs inside FIFO iterations: {inside}"
    assert not unexplained(fc.syncs), sorted(set(unexplained(fc.syncs)))
    fc.syncs.clear()


def test_cost_model_matches_the_fake_tracker(loaded):
    """The plan's weights and per-sample activation bytes against torch's allocator count on the fake card."""
    from fifo_longvid.backends import costs_for
    from fifo_longvid.fifo.costs import activation_bytes_per_sample, weights_bytes

    fc, model, spec = loaded.fc, loaded.model, loaded.spec
    c = costs_for(spec.name)
    assert fc.memory.current == pytest.approx(weights_bytes(c, loaded.dtype), rel=0.02)
    lat = (spec.height // model.latent_factor, spec.width // model.latent_factor)
    f = window(model)
    per_sample = measured_activation_bytes(fc, model, lat, f)
    assert per_sample == pytest.approx(activation_bytes_per_sample(c, lat, f, loaded.dtype), rel=0.02)
    fc.syncs.clear()


@fp16_only
def test_auto_fits_every_card(loaded):
    """``--max-batch auto`` on 12-80 GB cards, with fifo_fast's stores reserved: weights + one call + the stores at
    their largest fit the card, and ``fifo-gen plan`` predicts the same choice. On Wan, fifo_fast less what it
    refuses is tgate + cfg_cache + attn_reuse: 62 GiB of stores at 80 latent frames, which fit an 80 GB card only
    because UMT5 (21 GiB) waits in host memory."""
    from fifo_longvid.backends import costs_for
    from fifo_longvid.fifo.autobatch import CUDA_MEMORY_SHARE
    from fifo_longvid.fifo.costs import activation_bytes_per_sample
    from fifo_longvid.fifo.queue import FifoPlan
    from fifo_longvid.fifo.sizing import choose_max_batch, store_reserve
    from fifo_longvid.plan import card_for, make_plan
    from fifo_longvid.techniques import enabled_acceleration

    fc, model, spec = loaded.fc, loaded.model, loaded.spec
    lat = (spec.height // model.latent_factor, spec.width // model.latent_factor)
    f = window(model)
    plan = FifoPlan(f, 4, lookahead=True)
    rows = 2 * len(plan.windows())
    cfg = fastest(spec)
    reserve = store_reserve(enabled_acceleration(cfg.techniques), costs_for(spec.name), lat, plan.length,
                            model.dtype)
    assert reserve > 2**30  # fifo_fast's stores at 72 frames (Wan: 80): several GiB at full size
    per_sample = activation_bytes_per_sample(costs_for(spec.name), lat, f, loaded.dtype)
    chosen = {}
    with fc:
        ctx = torch.zeros(1, *model.context_shape, device=model.device)
        for gb in CARDS_GB:
            fc.total_bytes = gb * 2**30
            choice = choose_max_batch("auto", model, lat, f, ctx, rows, reserve)
            batch = choice.value or rows
            peak = fc.memory.current + batch * per_sample + reserve
            predicted = make_plan(cfg, card_for(None, gb))
            if fc.memory.current + reserve + 2 * per_sample > gb * 2**30:  # not even one pair fits (I2V on 12 GB)
                assert not predicted.fits and predicted.advice, (gb, predicted)
                continue
            assert peak <= gb * 2**30, (gb, choice.how)
            if fc.memory.current + reserve + 2 * per_sample <= CUDA_MEMORY_SHARE * gb * 2**30:
                assert predicted.fits and predicted.max_batch == batch, (gb, predicted.max_batch, choice.how)
            chosen[gb] = batch
    assert chosen[80] >= max(chosen.values())
    fc.total_bytes = 80 * 2**30
    fc.syncs.clear()


@pytest.mark.parametrize("loaded", ["wan-fp16"], indirect=True)
def test_wan_text_encoder_computes_on_the_card_from_host_memory(loaded):
    """UMT5-XXL's encoder (21.2 GiB in float32) stays in host memory on a GPU run. Encoding computes on the card
    one submodule at a time: the card's peak rises by about one submodule (the 3.9 GiB token embedding) plus
    activations, which is the plan's ``encoding_bytes``; the host parameters stay the same objects (the tied
    embedding tied); only the context is left on the card; every sync is on the allowlist."""
    from fifo_longvid.backends import costs_for
    from fifo_longvid.fifo.costs import encoding_bytes, weights_bytes

    fc, model = loaded.fc, loaded.model
    enc = model.text_encoder
    before = [id(p) for p in enc.parameters()]
    fc.syncs.clear()
    with fc, torch.no_grad():
        held = fc.memory.current
        fc.memory.reset_peak()
        ctx = model.encode_text(["a red circle bouncing", ""])
        peak, after = fc.memory.peak, fc.memory.current
    assert ctx.device == model.device and ctx.dtype == loaded.dtype and tuple(ctx.shape) == (2, 512, 4096)
    assert [id(p) for p in enc.parameters()] == before
    assert all(p.device.type == "cpu" for p in enc.parameters())
    assert enc.shared.weight is enc.encoder.embed_tokens.weight
    assert after - held == ctx.numel() * ctx.element_size()
    visit = peak - held
    largest = max(sum(t.numel() * t.element_size() for t in m.parameters(recurse=False)) for m in enc.modules())
    assert largest <= visit < largest + 2**30, (visit, largest)
    c = costs_for("wan")
    assert held + visit == pytest.approx(encoding_bytes(c, loaded.dtype), rel=0.02)
    assert weights_bytes(c, loaded.dtype) + 20 * 2**30 < held + 21.2 * 2**30  # the 21 GiB stayed off the card
    assert not unexplained(fc.syncs), sorted(set(unexplained(fc.syncs)))
    fc.syncs.clear()

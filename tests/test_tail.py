"""Tail sampling (``--tail``): the filter, the statistics the schedule expects, rescheduling, resumability."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fifo_longvid.diffusion.noise import NoiseSource
from fifo_longvid.diffusion.schedule import make_ddim_schedule, train_schedule
from fifo_longvid.fifo.queue import FrameQueue
from fifo_longvid.fifo.tail import (
    CoherentTail,
    NoiseTail,
    RescheduledTail,
    TailConfig,
    check_tail_config,
    gaussian_low_pass,
    high_pass_weight,
    last_slot,
    make_tail_sampler,
    parse_cutoff,
    parse_window,
)


@pytest.fixture(scope="module")
def schedule():
    ac = torch.from_numpy(train_schedule()["alphas_cumprod"]).float()
    return make_ddim_schedule(ac, 16, eta=1.0)


def _queue(latents: torch.Tensor, offset: int = 0) -> FrameQueue:
    """A queue holding ``latents`` in slot order, its ring rotated by ``offset``."""
    q = latents.shape[2]
    return FrameQueue(torch.roll(latents, offset, dims=2).contiguous(), torch.arange(q), q, offset)


def _demo_filter(t: int, h: int, w: int, d_s: float, d_t: float) -> torch.Tensor:
    """The published mask, element by element on the fftshift-ed grid (as its demo code builds it)."""
    m = torch.zeros(t, h, w)
    for i in range(t):
        for j in range(h):
            for k in range(w):
                d2 = ((d_s / d_t) * (2 * i / t - 1)) ** 2 + (2 * j / h - 1) ** 2 + (2 * k / w - 1) ** 2
                m[i, j, k] = math.exp(-d2 / (2 * d_s**2))
    return m


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 5, 6), (4, 6, 7)])
def test_low_pass_matches_published_mask(shape):
    ours = torch.fft.fftshift(gaussian_low_pass(shape, 0.25, 1.0), dim=(-3, -2, -1))
    torch.testing.assert_close(ours, _demo_filter(*shape, 0.25, 1.0), rtol=1e-5, atol=1e-7)


def test_single_frame_filter_gain_is_set_by_d_t():
    """With one frame the temporal coordinate is -1, so D_T scales the whole low band: exp(-1/(2 D_T^2))."""
    for d_t in (0.5, 1.0, 2.0):
        lpf = gaussian_low_pass((1, 16, 16), 0.25, d_t)
        assert float(lpf[0, 0, 0]) == pytest.approx(math.exp(-0.5 / d_t**2), rel=1e-6)
        assert float(lpf.max()) == float(lpf[0, 0, 0])


def test_noise_tail_is_todays_draw():
    q = _queue(torch.randn(1, 4, 12, 8, 8))
    a, b = NoiseSource(3), NoiseSource(3)
    for _ in range(3):
        assert torch.equal(NoiseTail()(q, a), b.randn((1, 4, 1, 8, 8)))


def test_last_slot_follows_the_ring():
    lat = torch.randn(2, 4, 7, 3, 3)
    for offset in range(7):
        assert torch.equal(last_slot(_queue(lat, offset)), lat[:, :, -1:])


def _source_frames(schedule, n: int, h: int = 32, w: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Queues whose last slot holds a structured frame (unit variance) noised to its level after the step."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 4, 1, h // 8, w // 8, generator=g)
    x0 = torch.nn.functional.interpolate(coarse[:, :, 0], size=(h, w), mode="bicubic")[:, :, None]
    x0 = (x0 - x0.mean()) / x0.std()
    a = float(schedule.alphas_prev[-1])
    last = math.sqrt(a) * x0 + math.sqrt(1 - a) * torch.randn(x0.shape, generator=g)
    return _queue(torch.cat([torch.zeros(n, 4, 3, h, w), last], dim=2), offset=2), last


def _low(x: torch.Tensor, lpf: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifftn(torch.fft.fftn(x, dim=(-3, -2, -1)) * lpf, dim=(-3, -2, -1)).real


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_coherent_tail_statistics_at_the_noisiest_level(schedule):
    """Unit variance per element, a white high band, and a low band correlated with its source frame."""
    n = 64
    queue, src = _source_frames(schedule, n)
    tail = CoherentTail(schedule)(queue, NoiseSource(0))
    white = NoiseTail()(queue, NoiseSource(0))
    assert tail.shape == src.shape and tail.dtype == torch.float32
    # unit variance per element (pooled over 64 x 4096 elements; sampling error ~0.005)
    assert float(tail.mean()) == pytest.approx(0.0, abs=0.03)
    assert float(tail.var()) == pytest.approx(1.0, abs=0.03)
    per_position = tail.var(dim=0)  # variance of every element across draws
    assert float(per_position.mean()) == pytest.approx(1.0, abs=0.03)
    # white high band: where the low-pass is negligible, the power per bin is flat at 1 (orthonormal FFT)
    lpf = gaussian_low_pass((1, 32, 32), 0.25, 1.0)
    power = torch.fft.fftn(tail, dim=(-3, -2, -1), norm="ortho").abs().square().mean(dim=(0, 1))
    high = lpf < 0.01  # normalised radius > ~0.76: the outer 40 % of the bins
    assert int(high.sum()) > 300
    assert float(power[high].mean()) == pytest.approx(1.0, abs=0.03)
    assert float(power[high].std()) < 0.2  # 256 samples per bin: chi-square spread ~0.09
    # the high band carries no trace of the source
    src_hi = torch.fft.fftn(src, dim=(-3, -2, -1), norm="ortho")[..., high]
    tail_hi = torch.fft.fftn(tail, dim=(-3, -2, -1), norm="ortho")[..., high]
    assert abs(_corr(src_hi.real, tail_hi.real)) < 0.02
    # the low band follows its source frame; plain noise does not
    c_coherent = _corr(_low(tail, lpf), _low(src, lpf))
    c_noise = _corr(_low(white, lpf), _low(src, lpf))
    print(f"low-band correlation with the source frame: coherent {c_coherent:.3f}, noise {c_noise:.3f}")
    # expected: per bin T = LPF (k S + f eps) + HPF N, so <LPF T, LPF S> = sum LPF^3 k |S|^2 (noise terms vanish)
    t = CoherentTail(schedule)
    s2 = torch.fft.fftn(src - src.mean(), dim=(-3, -2, -1), norm="ortho").abs().square().mean(dim=(0, 1))
    hpf = high_pass_weight(lpf, "preserve")
    num = (lpf**3 * t.keep * s2).sum()
    den = ((lpf**2 * s2).sum() * (lpf**2 * (lpf**2 * (t.keep**2 * s2 + t.fresh**2) + hpf**2)).sum()).sqrt()
    assert c_coherent == pytest.approx(float(num / den), abs=0.03)
    assert c_coherent > 0.25
    assert abs(c_noise) < 0.05


def test_linear_mix_of_the_demo_code_loses_variance(schedule):
    """Why ``preserve`` is the default: LPF*X + (1-LPF)*N has variance mean(LPF^2 + (1-LPF)^2) < 1."""
    queue, _ = _source_frames(schedule, 64)
    tail = CoherentTail(schedule, mix="linear")(queue, NoiseSource(0))
    lpf = gaussian_low_pass((1, 32, 32), 0.25, 1.0)
    expected = float((lpf.square() + high_pass_weight(lpf, "linear").square()).mean())
    assert expected < 0.97
    assert float(tail.var()) == pytest.approx(expected, abs=0.03)


def test_coherent_forward_diffusion_reaches_the_tail_level(schedule):
    t = CoherentTail(schedule)
    a_tail, a_src = float(schedule.alphas[-1]), float(schedule.alphas_prev[-1])
    assert t.keep**2 * a_src == pytest.approx(a_tail, rel=1e-6)  # signal fraction of the tail's level
    assert t.keep**2 + t.fresh**2 == pytest.approx(1.0)
    assert float(schedule.timesteps[-1]) == 999 and a_src == pytest.approx(float(schedule.alphas[-2]))


def test_rescheduled_reuses_shuffled_blocks():
    w, s = 8, 4
    q = _queue(torch.zeros(1, 2, 5, 3, 3))
    r, fresh = RescheduledTail(w, s), NoiseSource(7)
    ref = NoiseSource(7)
    tails = [r(q, fresh) for _ in range(40)]
    for k in range(w):  # the first window is exactly what --tail noise enqueues
        assert torch.equal(tails[k], ref.randn((1, 2, 1, 3, 3)))
    for start in range(w, 40 - s + 1, s):  # every later block is a permutation of the block W frames earlier
        src = [tails[i] for i in range(start - w, start - w + s)]
        block = tails[start : start + s]
        matches = [[i for i, x in enumerate(src) if torch.equal(x, b)] for b in block]
        assert sorted(m[0] for m in matches) == list(range(s)), matches
    firsts = tails[:w]
    assert all(any(torch.equal(t, f) for f in firsts) for t in tails)
    orders = {tuple(next(i for i, f in enumerate(firsts) if torch.equal(t, f)) for t in tails[k : k + s])
              for k in range(w, 40 - s + 1, s)}
    assert len(orders) > 1  # the shuffles differ between blocks


@pytest.mark.parametrize("mode", ["noise", "coherent", "rescheduled"])
def test_state_round_trip_is_bitwise(schedule, mode):
    cfg = TailConfig(mode=mode, window=6, stride=4)
    lat = _queue(torch.randn(1, 4, 12, 8, 8), offset=5)
    whole, noise = make_tail_sampler(cfg, schedule, 8), NoiseSource(11)
    expected = [whole(lat, noise) for _ in range(20)]
    first, noise2 = make_tail_sampler(cfg, schedule, 8), NoiseSource(11)
    for _ in range(9):  # stop mid-block
        first(lat, noise2)
    saved = {k: v.clone() for k, v in first.state_dict().items()}
    rng = noise2.get_state()
    resumed, noise3 = make_tail_sampler(cfg, schedule, 8), NoiseSource(0)
    resumed.load_state_dict(saved)
    noise3.set_state(rng)
    for k in range(9, 20):
        assert torch.equal(resumed(lat, noise3), expected[k])


def test_same_seed_same_tails(schedule):
    lat = _queue(torch.randn(1, 4, 12, 8, 8))
    for mode in ("coherent", "rescheduled"):
        runs = []
        for _ in range(2):
            t, n = make_tail_sampler(TailConfig(mode=mode), schedule, 4), NoiseSource(5)
            runs.append(torch.cat([t(lat, n) for _ in range(12)]))
        assert torch.equal(runs[0], runs[1])


def test_config_checks_and_parsers():
    assert parse_cutoff("0.25") == (0.25, None)
    assert parse_cutoff("0.3:0.5") == (0.3, 0.5)
    assert parse_window("16") == (16, None)
    assert parse_window("16:4") == (16, 4)
    for bad in ("", "a", "0.1:0.2:0.3", "0.1:x"):
        with pytest.raises(ValueError, match="--tail-cutoff"):
            parse_cutoff(bad)
    for bad in ("", "1.5", "8:2:1"):
        with pytest.raises(ValueError, match="--tail-window"):
            parse_window(bad)
    bad_cfgs = [(TailConfig(mode="pink"), "--tail must be"), (TailConfig(cutoff_s=0), "D_S > 0"),
                (TailConfig(cutoff_t=-1), "D_T > 0"), (TailConfig(mix="sum"), "mix"),
                (TailConfig(window=0), "W must be"), (TailConfig(stride=0), "stride S"),
                (TailConfig(window=4, stride=5), "exceeds the window")]
    for cfg, msg in bad_cfgs:
        with pytest.raises(ValueError, match=msg):
            check_tail_config(cfg)
    with pytest.raises(ValueError, match="default: the FIFO window"):
        make_tail_sampler(TailConfig(mode="rescheduled", stride=8), make_ddim_schedule(torch.linspace(0.99, 0.01, 100),
                                                                                      4), 4)


def test_only_settings_that_change_the_video_enter_the_hashes():
    from fifo_longvid.batch.runner import settings_of
    from fifo_longvid.run.config import build_run_config, numerics_hash

    def hashes(*overrides):
        cfg = build_run_config(overrides=list(overrides))
        return numerics_hash(cfg, "x"), json.dumps(settings_of(cfg, "x"), sort_keys=True)

    default = hashes()
    assert "tail" not in default[1]  # hashes and batch names from before --tail stay valid
    assert hashes("fifo.tail.mode=noise", "fifo.tail.cutoff_s=0.5", "fifo.tail.stride=2") == default
    coherent = hashes("fifo.tail.mode=coherent")
    assert len({default, coherent, hashes("fifo.tail.mode=coherent", "fifo.tail.cutoff_t=0.5"),
                hashes("fifo.tail.mode=rescheduled"), hashes("fifo.tail.mode=rescheduled", "fifo.tail.stride=2")}) == 5
    assert hashes("fifo.tail.mode=coherent", "fifo.tail.stride=2") == coherent


# ---------------------------------------------------------------- in the sampler and the pipeline

SMALL = ["fifo.window=4", "fifo.partitions=2", "sampling.height=64", "sampling.width=64", "sampling.seed=7"]


def _generate(model, name, out, extra=(), progress=None):
    from fifo_longvid.run import pipeline
    from fifo_longvid.run.config import build_run_config

    cfg = build_run_config(flags={"model": name, "prompts": ["a red fox running"], "output.path": str(out)},
                           overrides=SMALL + list(extra))
    return pipeline.generate(cfg, model=model, progress=progress, log=lambda m: None)


def _latents(out):
    from safetensors.torch import load_file

    return load_file(str(out.with_suffix(".latents.safetensors")))["latents"]


def test_noise_tail_in_the_stepper_is_todays_iteration(schedule):
    from fifo_longvid.fifo.init import init_queue
    from fifo_longvid.fifo.queue import FifoPlan
    from fifo_longvid.fifo.sampler import FifoStepper

    plan = FifoPlan(4, 4, lookahead=True)
    stepper = FifoStepper(plan, schedule, 1, (6, 6), 4, "cpu")
    den = lambda b: 0.1 * b.x  # noqa: E731 - any deterministic denoiser
    outs = []
    for tail in (None, NoiseTail()):
        noise = NoiseSource(2)
        q = init_queue(plan, schedule, noise, "noise", shape=(1, 4, 6, 6))
        outs.append(torch.cat([stepper.step(den, q, noise, iteration=i, tail=tail)[0] for i in range(12)]
                              + [q.latents], dim=2))
    assert torch.equal(outs[0], outs[1])


def test_coherent_tail_in_the_stepper_reads_the_denoised_last_slot(schedule):
    """The hook runs after the step and before the pop: it sees the last slot at index S-2's level."""
    from fifo_longvid.fifo.init import init_queue
    from fifo_longvid.fifo.queue import FifoPlan
    from fifo_longvid.fifo.sampler import FifoStepper

    plan = FifoPlan(4, 4, lookahead=True)
    stepper = FifoStepper(plan, schedule, 1, (6, 6), 4, "cpu")
    seen = []
    coherent = CoherentTail(schedule)

    def spy(queue, noise):
        seen.append(last_slot(queue).clone())
        return coherent(queue, noise)

    noise = NoiseSource(4)
    q = init_queue(plan, schedule, noise, "noise", shape=(1, 4, 6, 6))
    before = q.latents[:, :, -1:].clone()
    stepper.step(lambda b: torch.zeros_like(b.x), q, noise, tail=spy)
    # eps = 0 and eta = 1: the last slot becomes sqrt(a_prev / a) x + sigma z, not the value it had
    assert not torch.equal(seen[0], before)
    a, a_prev = float(schedule.alphas[-1]), float(schedule.alphas_prev[-1])
    assert float((seen[0] - (a_prev / a) ** 0.5 * before).std()) == pytest.approx(float(schedule.sigmas[-1]),
                                                                                   rel=0.3)


@pytest.mark.parametrize("tail", [["fifo.tail.mode=coherent", "fifo.tail.cutoff_s=0.3"],
                                  ["fifo.tail.mode=rescheduled", "fifo.tail.window=3", "fifo.tail.stride=2"]])
def test_resume_is_bitwise_with_every_tail(tiny_model, tmp_path, tail):
    """Interrupted after 8 iterations (mid-block for 3:2 rescheduling: its history and permutation must be saved)."""
    import os
    import signal

    import numpy as np

    from fifo_longvid.fifo.state import state_path
    from fifo_longvid.io.video import read_video

    extra = ["fifo.num_frames=6", "output.save_latents=true", "output.checkpoint_every=2", *tail]
    full = _generate(tiny_model, "tiny", tmp_path / "full.mp4", extra)

    def interrupt(task, done, total):
        if task == "fifo" and done == 8:
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "cut.mp4"
    assert _generate(tiny_model, "tiny", out, extra, progress=interrupt).partial
    assert state_path(out).exists()
    resumed = _generate(tiny_model, "tiny", out, [*extra, "output.resume=true"])
    assert not resumed.partial and resumed.frames == 6
    assert torch.equal(_latents(tmp_path / "full.mp4"), _latents(out))
    assert np.array_equal(read_video(resumed.output), read_video(full.output))


def test_tails_compose_with_uniform_init_qcache_multiprompt_and_no_lookahead(tiny_model, tmp_path):
    import json

    from fifo_longvid.run import pipeline
    from fifo_longvid.run.config import build_run_config

    common = [*SMALL, "fifo.num_frames=5", "fifo.frames_per_prompt=[2,3]", "fifo.init=uniform",
              "techniques.qcache.enabled=true", "techniques.qcache.v=0.9", "output.save_latents=true"]
    runs = {}
    for mode, extra in (("noise", ["fifo.lookahead=false"]), ("coherent", ["fifo.lookahead=false"]),
                        ("rescheduled", ["fifo.tail.stride=2"])):
        out = tmp_path / f"{mode}.mp4"
        cfg = build_run_config(flags={"model": "tiny", "prompts": ["a fox", "a cat"], "output.path": str(out)},
                               overrides=[*common, *extra, f"fifo.tail.mode={mode}"])
        res = pipeline.generate(cfg, model=tiny_model, log=lambda m: None)
        assert res.frames == 5 and not res.partial
        meta = json.loads(res.sidecar.read_text())
        assert meta["config"]["fifo"]["tail"]["mode"] == mode and "qcache" in meta["techniques"]
        runs[mode] = _latents(out)
        assert torch.isfinite(runs[mode]).all()
    assert meta["config"]["fifo"]["tail"]["window"] == 4  # the default period, resolved to the FIFO window
    assert not torch.equal(runs["noise"], runs["coherent"])


def test_tail_composes_with_latent_seeding(tmp_path):
    from fifo_longvid import load_model

    model = load_model("tiny_i2v", device="cpu")
    extra = ["fifo.num_frames=3", "conditioning.latent_seed=true", "output.save_latents=true"]
    outs = [_latents(_generate(model, "tiny_i2v", tmp_path / f"{m}.mp4", [*extra, f"fifo.tail.mode={m}"]).output)
            for m in ("noise", "coherent")]
    assert all(torch.isfinite(o).all() for o in outs) and not torch.equal(*outs)


def test_cli_tail_options(tmp_path):
    import json

    from typer.testing import CliRunner

    from fifo_longvid.cli.main import app

    base = ["generate", "--prompt", "a person swimming in ocean", "--config", "tiny", "--height", "64", "--width",
            "64", "--seed", "3", "--num-frames", "2", "fifo.window=4"]
    out = tmp_path / "swim.mp4"
    r = CliRunner().invoke(app, [*base, "--tail-cutoff", "0.3:0.8", "-o", str(out)])
    assert r.exit_code == 0, r.output
    tail = json.loads(out.with_suffix(".json").read_text())["config"]["fifo"]["tail"]
    assert (tail["mode"], tail["cutoff_s"], tail["cutoff_t"]) == ("coherent", 0.3, 0.8)  # implied by --tail-cutoff
    for args, needle in ((["--tail", "pink"], "--tail must be one of"),
                         (["--tail", "noise", "--tail-cutoff", "0.2"], "belongs to --tail coherent"),
                         (["--tail-cutoff", "0.2", "--tail-window", "8"], "different --tail modes"),
                         (["--tail-cutoff", "wide"], "D_S or D_S:D_T"),
                         (["--tail-cutoff", "0:1"], "D_S > 0"),
                         (["--tail-window", "2:3"], "exceeds the window")):
        bad = tmp_path / "bad.mp4"
        r = CliRunner().invoke(app, [*base, *args, "-o", str(bad)])
        text = " ".join(r.output.split())
        assert r.exit_code == 2 and needle in text and "Traceback" not in text, (args, r.output)
        assert not bad.exists()

"""The schedules behind one protocol: DDIM, flow matching and VideoCrafter2's scaled DDIM (its family's own), and
FIFO's choice of step (quirk Q1: the reference leaves the scale out; ``fifo.scaled_step`` keeps it)."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest
import torch

from fifo_longvid.backends import load_backend
from fifo_longvid.backends.videocrafter.schedule import ScaledDDIMSchedule
from fifo_longvid.diffusion.flow import flow_schedule_from_config
from fifo_longvid.diffusion.schedule import DDIMSchedule, ddim_step
from fifo_longvid.diffusion.schedule_protocol import Schedule
from fifo_longvid.run import fifo_run, pipeline
from fifo_longvid.run.config import ConfigError, build_run_config

MEMBERS = [n for n in vars(Schedule) if not n.startswith("_")] + ["kind"]


@pytest.fixture(scope="module")
def tiny_wan():
    return load_backend("tiny_wan", device="cpu", dtype="fp32")


def test_every_schedule_has_the_protocol_s_members_and_no_family_flag(tiny_model, tiny_wan):
    for s in (tiny_model.schedule(8, 1.0), tiny_model.ddim_schedule(8, 1.0), tiny_wan.schedule(8)):
        assert all(hasattr(s, m) for m in MEMBERS), [m for m in MEMBERS if not hasattr(s, m)]
        assert list(inspect.signature(s.coeffs).parameters) == ["idx", "like"]
        assert s.num_steps == 8 and s.to("cpu").kind == s.kind and len(s.timestep_list) == 8
    assert {tiny_model.schedule(8).kind, tiny_wan.schedule(8).kind} == {"ddim", "flow"}


def test_videocrafter2_samples_scaled_and_unscaled_is_plain_ddim(tiny_model):
    s, plain = tiny_model.schedule(16, 1.0), tiny_model.ddim_schedule(16, 1.0)
    assert tiny_model.cfg.use_scale and isinstance(s, ScaledDDIMSchedule) and type(plain) is DDIMSchedule
    u = s.unscaled()
    assert type(u) is DDIMSchedule and u.unscaled() is u and plain.unscaled() is plain
    for f in fields(DDIMSchedule):
        a, b = getattr(u, f.name), getattr(plain, f.name)
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, f.name
    assert type(s.to("cpu")) is ScaledDDIMSchedule and type(s.strided(2)) is ScaledDDIMSchedule
    st = s.strided(2)  # the scale grid moves with the levels: index i steps to i - 2
    assert torch.equal(st.scale_arr_prev[2:], s.scale_arr[:-2]) and torch.equal(st.scale_arr_prev[:2],
                                                                                 s.scale_arr_prev[:1].repeat(2))
    assert torch.equal(st.unscaled().alphas_prev, plain.strided(2).alphas_prev)
    torch.manual_seed(0)
    x, eps, z = torch.randn(1, 4, 16, 2, 2), torch.randn(1, 4, 16, 2, 2), torch.randn(1, 4, 16, 2, 2)
    idx = torch.arange(16)[None]
    scaled, x0 = ddim_step(x, eps, s, idx, z)
    p, p0 = ddim_step(x, eps, u, idx, z)
    assert torch.equal(p, ddim_step(x, eps, plain, idx, z)[0])
    i = (s.scale_arr != 1).nonzero()[0, 0]  # below mid_step the ramp is 1: there the two steps agree
    assert torch.allclose(x0[:, :, i:], p0[:, :, i:] / s.scale_arr[i:].view(1, 1, -1, 1, 1))
    assert not torch.equal(scaled, p)


def test_flow_matching_has_no_scale_to_leave_out():
    s = flow_schedule_from_config({"flow_shift": 3.0}, 4)
    assert s.unscaled() is s and s.strided(2).unscaled().kind == "flow"


class _Stop(Exception):
    pass


@pytest.mark.parametrize("scaled_step,want", [(False, DDIMSchedule), (True, ScaledDDIMSchedule)])
def test_fifo_steps_unscaled_unless_scaled_step(tiny_model, tmp_path, monkeypatch, scaled_step, want):
    """The run's base clip samples VideoCrafter2's scaled DDIM; FIFO's step leaves the scale out (quirk Q1)."""
    seen = []

    def spy(plan, schedule, *a, **k):
        seen.append(schedule)
        raise _Stop

    monkeypatch.setattr(fifo_run, "FifoStepper", spy)
    cfg = build_run_config(flags={"model": "tiny", "prompts": ["a red circle"], "output.path": str(tmp_path / "v.mp4")},
                           overrides=["sampling.seed=1", "fifo.init=noise", "sampling.height=64", "sampling.width=64",
                                      f"fifo.scaled_step={str(scaled_step).lower()}"])
    with pytest.raises(_Stop):
        pipeline.generate(cfg, model=tiny_model, log=lambda m: None)
    assert type(seen[0]) is want


def test_scaled_step_is_refused_where_there_is_no_scale(tiny_wan, tmp_path):
    out = str(tmp_path / "v.mp4")
    cfg = build_run_config(flags={"model": "tiny_wan", "prompts": ["a blue square"], "output.path": out},
                           overrides=["fifo.window=4", "fifo.partitions=2", "sampling.height=32", "sampling.width=32",
                                      "fifo.scaled_step=true"])
    with pytest.raises(ConfigError, match="no latent scale to apply"):
        pipeline.generate(cfg, model=tiny_wan, log=lambda m: None)
    assert not list(tmp_path.iterdir())

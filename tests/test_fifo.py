"""FIFO queue invariants, and the FIFO sampler against the reference runs (recorded noise replayed)."""

from __future__ import annotations

import pytest
import torch

from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
from fifo_longvid.diffusion.noise import NoiseSource
from fifo_longvid.fifo.init import base_frame_for_slot, init_queue, warmup_iterations
from fifo_longvid.fifo.queue import FifoPlan, FrameQueue
from fifo_longvid.fifo.sampler import fifo_iteration

from .conftest import fifo_replay_noise, golden, golden_meta


def test_plan_geometry_matches_reference():
    p = FifoPlan(8, 2, lookahead=True)
    assert (p.steps, p.length, p.head) == (16, 20, 4)
    assert [w.start for w in p.windows()] == golden_meta("golden_fifo")["window_starts"] == [12, 8, 4, 0]
    assert [(w.commit_start, w.commit_end) for w in p.windows()] == [(16, 20), (12, 16), (8, 12), (4, 8)]
    g = golden("golden_fifo")
    assert torch.equal(p.slot_indices(), g["queue_indices"].long())
    q = FifoPlan(8, 2, lookahead=False)
    assert (q.length, q.head) == (16, 0)
    assert [(w.start, w.commit_start, w.commit_end) for w in q.windows()] == [(8, 8, 16), (0, 0, 8)]
    assert p.windows_independent() and q.windows_independent()


def test_bad_plans_raise():
    with pytest.raises(ValueError, match="even window"):
        FifoPlan(7, 2, lookahead=True)
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        FifoPlan(8, 0)
    FifoPlan(7, 2, lookahead=False)  # fine without lookahead


def test_pop_push_moves_latents_and_ids_together():
    plan = FifoPlan(4, 2, lookahead=True)
    lat = torch.arange(plan.length, dtype=torch.float32).reshape(1, 1, plan.length, 1, 1)
    q = FrameQueue.create(lat.clone(), plan)
    out, fid = q.pop_push(plan.head, torch.full((1, 1, 1, 1, 1), -1.0))
    assert out.item() == plan.head and fid == plan.head
    assert q.latents.flatten().tolist() == list(range(1, plan.length)) + [-1.0]
    assert q.frame_ids.tolist() == list(range(1, plan.length + 1))
    assert torch.equal(q.step_idx, plan.slot_indices())  # noise levels stay with the slots
    for _ in range(3):
        q.pop_push(plan.head, torch.zeros(1, 1, 1, 1, 1))
    # a frame id follows its latent: frame 7 started in slot 7 and is now in slot 3
    assert int(q.frame_ids[3]) == 7 and q.latents[0, 0, 3].item() == 7.0


def test_init_slot_to_frame_maps():
    p = FifoPlan(8, 2)
    assert [base_frame_for_slot(i, p, "first") for i in range(16)] == [0] * 9 + list(range(1, 8))
    assert [base_frame_for_slot(i, p, "uniform") for i in range(16)] == [i // 2 for i in range(16)]
    assert warmup_iterations(p, "first") == 8 and warmup_iterations(p, "noise") == 20


def _run_golden(model, name, lookahead, init, batch_windows=True, iters=20):
    g = golden(name)
    base = golden("golden_fifo")
    plan = FifoPlan(8, 2, lookahead)
    sched = model.ddim_schedule(16, 0.0)
    noise = fifo_replay_noise(name, lookahead)
    q = init_queue(plan, sched, noise, init, base=base["base_latents"])
    torch.testing.assert_close(q.latents, g["initial_queue"], atol=1e-5, rtol=1e-5)
    den = cfg_denoiser(unet_network(model.unet, base["fps"]), base["cond"], base["uncond"], 12.0)
    outs = [fifo_iteration(lambda b: den(b.x, b.t), q, plan, sched, noise, batch_windows=batch_windows,
                           iteration=i)[0] for i in range(iters)]
    return torch.cat(outs, dim=2), g


@pytest.mark.parametrize("name,lookahead,init", [
    ("golden_fifo", True, "first"),
    ("golden_fifo_nolookahead", False, "first"),
    ("golden_fifo_unilatent", True, "uniform"),
])
@torch.no_grad()
def test_fifo_goldens(tiny_model, name, lookahead, init):
    out, g = _run_golden(tiny_model, name, lookahead, init)
    err = (out - g["out_latents"]).abs().max().item()
    print(f"{name}: max abs error {err:.2e} (max |ref| {g['out_latents'].abs().max():.1f})")
    assert err < 1e-2
    if "video_uint8" in g:
        frames = tiny_model.decode_latents(out[:, :, -12:])
        video = ((frames.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)[0].permute(1, 2, 3, 0)
        assert (video.int() - g["video_uint8"].int()).abs().max() <= 1


@torch.no_grad()
def test_batched_windows_equal_sequential(tiny_model):
    batched, _ = _run_golden(tiny_model, "golden_fifo", True, "first", iters=3)
    sequential, _ = _run_golden(tiny_model, "golden_fifo", True, "first", batch_windows=False, iters=3)
    torch.testing.assert_close(batched, sequential, atol=1e-4, rtol=1e-4)


def test_noise_source_is_seeded_and_restorable():
    a, b = NoiseSource(5), NoiseSource(5)
    assert torch.equal(a.randn((3, 4)), b.randn((3, 4)))
    state = a.get_state()
    x = a.randn((2,))
    a.set_state(state)
    assert torch.equal(a.randn((2,)), x)

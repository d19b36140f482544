"""DDIM schedule, per-frame step, batched classifier-free guidance and base sampling."""

from __future__ import annotations

import torch

from fifo_longvid.backends.videocrafter.schedule import scaled_ddim_schedule
from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
from fifo_longvid.diffusion.sampling import sample_clip
from fifo_longvid.diffusion.schedule import ddim_step, make_ddim_schedule

from .conftest import golden


def test_ddim_schedule_matches_reference(tiny_model):
    g = golden("golden_ddim_schedule")
    for eta in (0, 1):
        s = tiny_model.schedule(16, eta)  # VideoCrafter2 samples with the scaled schedule
        assert torch.equal(s.timesteps, g[f"eta{eta}.ddim_timesteps"])  # no +1 (quirk Q2)
        pairs = {"alphas": "ddim_alphas", "alphas_prev": "ddim_alphas_prev", "sigmas": "ddim_sigmas",
                 "sqrt_one_minus_alphas": "ddim_sqrt_one_minus_alphas", "scale_arr": "ddim_scale_arr",
                 "scale_arr_prev": "ddim_scale_arr_prev"}
        for mine, ref in pairs.items():
            torch.testing.assert_close(getattr(s, mine).double(), g[f"eta{eta}.{ref}"].double(), atol=1e-6,
                                       rtol=0)


def test_per_frame_ddim_step_equals_loop():
    ac = torch.linspace(0.999, 0.01, 1000)
    scaled = scaled_ddim_schedule(ac, torch.linspace(1, 0.7, 1000), 16, eta=0.5)
    torch.manual_seed(0)
    x, eps, z = torch.randn(2, 4, 5, 3, 3), torch.randn(2, 4, 5, 3, 3), torch.randn(2, 4, 5, 3, 3)
    idx = torch.randint(0, 16, (2, 5))
    for s in (make_ddim_schedule(ac, 16, eta=0.5), scaled):
        out, x0 = ddim_step(x, eps, s, idx, noise=z)
        for b in range(2):
            for f in range(5):
                o, p = ddim_step(x[b : b + 1, :, f : f + 1], eps[b : b + 1, :, f : f + 1], s, int(idx[b, f]),
                                 noise=z[b : b + 1, :, f : f + 1])
                torch.testing.assert_close(out[b : b + 1, :, f : f + 1], o)
                torch.testing.assert_close(x0[b : b + 1, :, f : f + 1], p)


@torch.no_grad()
def test_batched_cfg_equals_two_passes(tiny_model):
    g = golden("golden_base_sampling")
    net = unet_network(tiny_model.unet, g["fps"])
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 16, 16)
    t = torch.randint(0, 1000, (2, 8))
    batched = cfg_denoiser(net, g["cond"], g["uncond"], 12.0)(x, t)
    e_c = net(x, t, g["cond"].expand(2, -1, -1))
    e_u = net(x, t, g["uncond"].expand(2, -1, -1))
    torch.testing.assert_close(batched, e_u + 12.0 * (e_c - e_u), atol=1e-4, rtol=1e-4)
    chunked = cfg_denoiser(net, g["cond"], g["uncond"], 12.0, max_batch=1)(x, t)
    torch.testing.assert_close(chunked, batched, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_base_sampling_golden(tiny_model):
    g = golden("golden_base_sampling")
    den = cfg_denoiser(unet_network(tiny_model.unet, g["fps"]), g["cond"], g["uncond"], 12.0)
    out = sample_clip(den, g["x_T"], tiny_model.schedule(16, 0.0))  # VideoCrafter2's scaled DDIM
    err = (out - g["samples"]).abs().max().item()
    print(f"golden_base_sampling max abs error {err:.2e} (max |ref| {g['samples'].abs().max():.1f})")
    assert err < 1e-2

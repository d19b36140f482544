"""U-Net numerics against the reference goldens, and the explicit timestep-shape contract."""

from __future__ import annotations

import pytest
import torch

from .conftest import golden


@torch.no_grad()
def test_unet_base_golden(tiny_model):
    g = golden("golden_unet_base")
    out = tiny_model.unet(g["x"], g["t"], g["context"], fps=g["fps"])
    torch.testing.assert_close(out, g["out"], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_unet_per_frame_golden(tiny_model):
    g = golden("golden_unet_fifo")
    out = tiny_model.unet(g["x"], g["ts"], g["context"], fps=g["fps"], per_frame=True)
    torch.testing.assert_close(out, g["out"], atol=1e-4, rtol=1e-4)
    # the same as an explicit (B, F) = (1, 8) tensor
    out2 = tiny_model.unet(g["x"], g["ts"][None], g["context"], fps=g["fps"])
    torch.testing.assert_close(out2, out, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_batched_per_frame_timesteps_equal_separate_calls(tiny_model):
    g = golden("golden_unet_fifo")
    torch.manual_seed(0)
    x = torch.randn(3, 4, 8, 16, 16)
    t = torch.randint(0, 1000, (3, 8))
    ctx = torch.cat([g["context"], -g["context"], g["context"] * 0.5])
    batched = tiny_model.unet(x, t, ctx, fps=8)
    for b in range(3):
        single = tiny_model.unet(x[b : b + 1], t[b], ctx[b : b + 1], fps=8, per_frame=True)
        torch.testing.assert_close(batched[b : b + 1], single, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_batch_equal_to_frames_is_not_guessed(tiny_model):
    """B == F: per-sample (B,) timesteps must not be mistaken for per-frame ones (reference quirk Q4)."""
    torch.manual_seed(1)
    x = torch.randn(2, 4, 2, 16, 16)
    ctx = torch.randn(2, 77, 64)
    t = torch.tensor([100, 900])
    per_sample = tiny_model.unet(x, t, ctx)
    explicit = tiny_model.unet(x, t[:, None].expand(2, 2), ctx)
    torch.testing.assert_close(per_sample, explicit)
    per_frame = tiny_model.unet(x, t, ctx, per_frame=True)
    assert (per_frame - per_sample).abs().max() > 1e-3


def test_bad_timestep_shapes_raise(tiny_model):
    x = torch.zeros(2, 4, 3, 16, 16)
    ctx = torch.zeros(2, 77, 64)
    with pytest.raises(ValueError, match="per-frame timesteps must be"):
        tiny_model.unet(x, torch.zeros(2, 4, dtype=torch.long), ctx)
    with pytest.raises(ValueError, match="per_frame=True"):
        tiny_model.unet(x, torch.zeros(3, dtype=torch.long), ctx)
    with pytest.raises(ValueError, match="per_frame=True needs 3"):
        tiny_model.unet(x, torch.zeros(2, dtype=torch.long), ctx, per_frame=True)

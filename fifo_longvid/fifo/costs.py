"""What a FIFO run costs on a GPU, per model family: a cheap model for ``fifo-gen plan`` and for ``auto``.

Every constant was measured at full size on fake CUDA tensors (``tests/fakecuda``: the package's own code on
``device="cuda"`` with torch's allocator count, flash-attention shapes, no data) and is checked there by
``tests/test_fake_cuda.py``. Off the reference size, activations, stores and FLOPs scale linearly with latent
pixels (and frames): exact at the reference size, an approximation elsewhere (attention grows faster).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..backends.costs import FamilyCosts
from .queue import FifoPlan

ALL_FOUR = ("tgate", "cfg_cache", "attn_reuse", "deepcache")


# FLOPs with a technique on, over plain, at full size (VideoCrafter2, README "Acceleration", scripts/bench_accel.py);
# assumed for the other families. Several techniques multiply, except all four together (measured: 0.446).
FLOP_RATIO = {"tgate": 0.739, "cfg_cache": 0.792, "attn_reuse": 0.964, "deepcache": 0.627, "qcache": 1.0}
FLOP_RATIO_ALL_FOUR = 0.446


def dtype_bytes(dtype: str | torch.dtype) -> int:
    return {"fp32": 4, "float32": 4, torch.float32: 4}.get(dtype, 2)  # type: ignore[call-overload]


def _pixels(c: FamilyCosts, latent_hw: tuple[int, int]) -> float:
    return latent_hw[0] * latent_hw[1] / (c.ref_latent[0] * c.ref_latent[1])


def weights_bytes(c: FamilyCosts, dtype: str | torch.dtype) -> float:
    """The weights on the card through the iterations (an offloaded encoder is not among them)."""
    return c.params_run_dtype * dtype_bytes(dtype) + (0 if c.text_visit_bytes else c.params_fp32 * 4)


def resident_experts(c: FamilyCosts, dtype: str | torch.dtype, card_bytes: float) -> int:
    """How many experts the backend keeps on a card of ``card_bytes`` (high-noise first): the same rule as its
    ``place``, from the weights that are on the card before the experts."""
    if c.experts < 2:
        return c.experts
    expert = c.expert_params * dtype_bytes(dtype)
    free = card_bytes * (1 - c.expert_reserve) - (weights_bytes(c, dtype) - c.experts * expert)
    return max(0, min(c.experts, int(free // expert))) if expert > 0 else c.experts


def weights_on_card(c: FamilyCosts, dtype: str | torch.dtype, card_bytes: float) -> float:
    """The weights on the card through the iterations with the experts placed as the backend places them: the
    resident ones, plus the largest piece of a streamed one while it visits."""
    streamed = c.experts - resident_experts(c, dtype, card_bytes) if c.experts > 1 else 0
    if not streamed:
        return weights_bytes(c, dtype)
    size = dtype_bytes(dtype)
    return weights_bytes(c, dtype) - streamed * c.expert_params * size + c.expert_visit_params * size


def encoding_bytes(c: FamilyCosts, dtype: str | torch.dtype) -> float:
    """The card's holding while the prompts are encoded: the weights, plus an offloaded encoder's largest piece
    and its activations (without offloading, the encoder's activations are small beside one U-Net call's)."""
    return weights_bytes(c, dtype) + c.text_visit_bytes


def activation_bytes_per_sample(c: FamilyCosts, latent_hw: tuple[int, int], frames: int,
                                dtype: str | torch.dtype) -> float:
    """fp32 is taken as twice fp16 (not measured: fake SDPA has no fp32 flash path)."""
    return c.act_bytes_per_sample * _pixels(c, latent_hw) * frames / c.ref_frames * dtype_bytes(dtype) / 2


def store_bytes_at_largest(c: FamilyCosts, techniques: list[str], latent_hw: tuple[int, int], queue_frames: int,
                           dtype: str | torch.dtype) -> float:
    """The techniques' per-frame stores once every queued frame holds an entry (an upper bound: the measured
    stores at 70 of 72 frames were 3.7 GiB for attention reuse and 3.9 GiB for fifo_fast at 320x512)."""
    per_frame = sum(c.store_bytes_per_frame.get(t, 0.0) for t in techniques)
    return per_frame * _pixels(c, latent_hw) * queue_frames * dtype_bytes(dtype) / 2


def unet_flop_per_sample(c: FamilyCosts, latent_hw: tuple[int, int], frames: int) -> float:
    return c.unet_flop_per_sample * _pixels(c, latent_hw) * frames / c.ref_frames


def vae_flop_per_frame(c: FamilyCosts, latent_hw: tuple[int, int]) -> float:
    """One latent frame decoded (``temporal_factor`` output frames in steady state)."""
    return c.vae_flop_per_frame * _pixels(c, latent_hw)


def flop_ratio(techniques: list[str], c: FamilyCosts | None = None) -> float:
    """FLOPs with ``techniques`` over plain: the family's own count where it has one, else VideoCrafter2's."""
    own = {} if c is None else c.flop_ratio
    if all(t in techniques for t in ALL_FOUR) and not own:
        return FLOP_RATIO_ALL_FOUR * FLOP_RATIO["qcache"]
    r = 1.0
    for t in techniques:
        r *= own.get(t, FLOP_RATIO.get(t, 1.0))
    return r


def high_noise_levels(timesteps: Sequence[float], boundary: float) -> list[bool]:
    """Which schedule indices the high-noise expert denoises: ``t >= boundary`` in float32, as on the device."""
    return (torch.tensor([float(t) for t in timesteps], dtype=torch.float32) >= boundary).tolist()


def window_calls(plan: FifoPlan, timesteps: Sequence[float] | None = None,
                 boundary: float | None = None) -> tuple[int, int]:
    """(windows, straddling) per iteration: every window is one network call per guidance branch, and with two
    experts split at ``boundary`` (the schedule's ``timesteps`` per index) a window whose frames lie on both sides
    runs through both, so it counts twice. Without lookahead at most one window straddles, with it at most two of
    2n (the overlapping halves): the extra work is at most 1/n."""
    windows = len(plan.windows())
    if boundary is None or timesteps is None:
        return windows, 0
    return windows, len(plan.straddling(high_noise_levels(timesteps, boundary)))


def samples_per_iteration(plan: FifoPlan, branches: int, timesteps: Sequence[float] | None = None,
                          boundary: float | None = None) -> int:
    """Network samples per FIFO iteration: ``branches`` (2 with guidance, 1 without) x the window calls."""
    windows, straddling = window_calls(plan, timesteps, boundary)
    return branches * (windows + straddling)

"""Initial queue contents (``--init``): from a base clip (reference), uniform spreading, or pure noise."""

from __future__ import annotations

from typing import Literal

import torch

from ..diffusion.noise import NoiseSource
from ..diffusion.schedule_protocol import Schedule
from .queue import FifoPlan, FrameQueue

InitMode = Literal["first", "uniform", "noise"]
INIT_MODES = ("first", "uniform", "noise")


def base_frame_for_slot(i: int, plan: FifoPlan, mode: InitMode) -> int:
    """Which base frame main slot ``i`` is noised from.

    ``first`` (FIFO-Diffusion): frame 0 for the first L-f+1 slots, then frames 1..f-1 (quirk Q10); L = f*n main
    slots (= S when every frame has its own level).
    ``uniform`` (FIFO-Diffusion+ ``unilatent``): frame i // n, each frame spread over n slots.
    """
    if mode == "uniform":
        return i // plan.n
    return max(0, i - (plan.frames - plan.f))


def warmup_iterations(plan: FifoPlan, mode: InitMode) -> int:
    """Dequeued frames to discard before the video starts (a multiple of the block: whole iterations).

    From a base clip the reference drops L-f frames (L = f*n main slots). From pure noise every initial slot is
    garbage until it has been flushed, so the whole queue (Q frames) is dropped.
    """
    return plan.length if mode == "noise" else plan.frames - plan.f


def iterations_for(plan: FifoPlan, warmup: int, latent_frames: int) -> int:
    """FIFO iterations that dequeue ``warmup`` discarded frames and then ``latent_frames`` kept ones (the last
    block may carry frames past the end, which are dropped)."""
    return -(-(warmup + latent_frames) // plan.block)


def init_queue(plan: FifoPlan, schedule: Schedule, noise: NoiseSource, mode: InitMode,
               base: torch.Tensor | None = None, shape: tuple[int, ...] | None = None) -> FrameQueue:
    """Fill the queue. ``base`` is the clean clip (B, C, >=f, h, w) for ``first``/``uniform``.

    Noise is drawn one slot at a time in slot order (the reference's ``prepare_latents`` order); each slot is
    forward-noised to its own (its block's) level: DDIM's ``q_sample``, or flow matching's
    ``(1 - sigma) x0 + sigma eps``.
    """
    if mode not in INIT_MODES:
        raise ValueError(f"unknown init mode {mode!r}; choose one of {', '.join(INIT_MODES)}")
    if mode == "noise":
        if shape is None:
            raise ValueError("init 'noise' needs the latent shape (B, C, h, w)")
        b, c, h, w = shape
        slots = [noise.randn((b, c, 1, h, w)) for _ in range(plan.length)]
        return FrameQueue.create(torch.cat(slots, dim=2), plan)
    if base is None:
        raise ValueError(f"init {mode!r} needs a base clip")
    if base.shape[2] < plan.f:
        raise ValueError(f"base clip has {base.shape[2]} frames, the window needs {plan.f}")
    slots = []
    for _ in range(plan.num_lookahead):
        slots.append(schedule.add_noise(base[:, :, :1], 0, noise.randn(base[:, :, :1].shape)))
    level = plan.slot_indices()[plan.num_lookahead :].tolist()  # each main slot's own (its block's) level
    for i in range(plan.frames):
        j = base_frame_for_slot(i, plan, mode)
        frame = base[:, :, j : j + 1]
        slots.append(schedule.add_noise(frame, level[i], noise.randn(frame.shape)))
    return FrameQueue.create(torch.cat(slots, dim=2), plan)

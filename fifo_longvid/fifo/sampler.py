"""The diagonal FIFO loop over a window denoiser (knows nothing about U-Nets or techniques).

Each iteration denoises every window by one step (DDIM, or flow matching's Euler: the schedule supplies the
coefficients and the update, so the loop never asks which) at per-frame timesteps, dequeues the clean
head block (one frame, or ``block`` frames that share a level) and enqueues fresh noise at the tail. When
the windows of an iteration are independent (always, for the reference layouts) they go through the
denoiser as ONE batch; the result equals the reference's sequential window loop.

Slot -> schedule index is fixed for a run, so ``FifoStepper`` builds everything an iteration needs
(gather/commit indices, per-row timesteps, DDIM coefficients, the step context) once, on the device.
An iteration then issues only device work: no ``.item()``, ``.cpu()`` or data-dependent branch. The one
host sync per iteration is the caller's, when it fetches the dequeued frame.

Anchors (``FifoStepper(anchors={frame_id: latent})``) are frames whose latent is given: while one is in the
queue, every window holding it sees its latent at timestep 0, and its slot is reset to the latent after each
update, so it leaves the queue bitwise equal to it. Whether it is in the queue is host arithmetic on
``queue.first_id``: no sync.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from ..devices import resolve_device, same_device
from ..diffusion.context import StepContext, publish
from ..diffusion.noise import NoiseSource
from ..diffusion.sampling import check_finite
from ..diffusion.schedule_protocol import Schedule, StepCoeffs
from .queue import FifoPlan, FrameQueue, Window
from .tail import NoiseTail

FULL_CHECK_EVERY = 16  # iterations between finite checks of the whole queue (the head is checked by the caller)


@dataclass
class WindowBatch:
    """What the denoiser sees: windows stacked on the batch axis, with per-frame metadata (device tensors)."""

    x: torch.Tensor  # (W*B, C, f, h, w) float32
    t: torch.Tensor  # (W*B, f) timesteps
    step_idx: torch.Tensor  # (W*B, f) schedule indices
    frame_ids: torch.Tensor  # (W*B, f) permanent frame ids


WindowDenoiser = Callable[[WindowBatch], torch.Tensor]


@dataclass
class _Group:
    """Windows that go through the denoiser together, with their precomputed tables."""

    windows: list[Window]
    slots: torch.Tensor  # (W*f,) logical slots read, window-major
    commit_local: torch.Tensor  # positions in the (W*f) frame axis whose results are kept
    commit_slots: torch.Tensor  # the logical slots they are written to
    t: torch.Tensor  # (W*B, f)
    step_idx: torch.Tensor  # (W*B, f)
    slot_offsets: torch.Tensor  # (W*B, f) logical slot of each frame (frame id = first_id + slot)
    slot_offsets_host: torch.Tensor  # the same on the CPU, for the context's host mirror
    coeffs: StepCoeffs  # the schedule's per-frame step factors
    context: StepContext  # everything but the frame ids, which move every iteration


class FifoStepper:
    """Per-run tables for ``FifoPlan`` x ``Schedule`` on one device; ``step`` runs one iteration.

    Each frame steps as ``schedule`` does: FIFO-Diffusion's own step (quirk Q1) is a scaled schedule's
    ``unscaled()``, which the caller chooses.
    """

    def __init__(self, plan: FifoPlan, schedule: Schedule, batch: int, latent_hw: tuple[int, int],
                 channels: int, device: torch.device | str, batch_windows: bool = True,
                 anchors: dict[int, torch.Tensor] | None = None):
        self.plan, self.schedule, self.batch = plan, schedule, batch
        self.device = resolve_device(device)
        self.anchors = {int(k): v.to(self.device, torch.float32) for k, v in (anchors or {}).items()}
        windows = plan.windows()
        groups = [windows] if batch_windows and plan.windows_independent() else [[w] for w in windows]
        slot_idx = plan.slot_indices()
        timesteps = schedule.timesteps.cpu()
        like = torch.empty(1, channels, plan.f, *latent_hw, device=self.device)
        self.groups: list[_Group] = []
        for g in groups:
            slots = torch.cat([torch.arange(w.start, w.stop) for w in g])
            local = torch.cat([k * plan.f + torch.arange(w.commit_start - w.start, w.commit_end - w.start)
                               for k, w in enumerate(g)])
            commit = torch.cat([torch.arange(w.commit_start, w.commit_end) for w in g])
            per_window = slots.view(len(g), plan.f).repeat_interleave(batch, dim=0)  # (W*B, f) logical slots
            idx = slot_idx[per_window]
            commit_mask = torch.zeros(len(g) * plan.f, dtype=torch.bool)
            commit_mask[local] = True
            dev = self.device
            coeffs = schedule.coeffs(idx.to(schedule.device), like)
            host = StepContext(
                phase="fifo", iteration=0, step_idx=idx,
                commit=commit_mask.view(len(g), plan.f).repeat_interleave(batch, dim=0),
                window=torch.tensor([windows.index(w) for w in g]).repeat_interleave(batch))
            ctx = replace(host, step_idx=idx.to(dev), commit=host.commit.to(dev), window=host.window.to(dev),
                          host=host)
            self.groups.append(_Group(g, slots.to(dev), local.to(dev), commit.to(dev), timesteps[idx].to(dev),
                                      idx.to(dev), per_window.to(dev), per_window, coeffs, ctx))

    def step(self, denoise: WindowDenoiser, queue: FrameQueue, noise: NoiseSource, iteration: int = 0,
             tail: Callable[[FrameQueue, NoiseSource], torch.Tensor] | None = None) -> tuple[torch.Tensor, int]:
        """One FIFO iteration in place on ``queue``; returns the dequeued block (B, C, K, h, w) (K = the plan's
        block, 1 for FIFO-Diffusion) and the id of its first frame.

        ``tail`` draws the block enqueued at the back (default: fresh white noise from ``noise``).
        """
        if not same_device(queue.buffer.device, self.device):
            raise ValueError(f"queue is on {queue.buffer.device}, the stepper's tables on {self.device}")
        held = self._pin(queue)
        for g in self.groups:
            x = queue.gather_slots(g.slots, len(g.windows))
            ids = g.slot_offsets + queue.first_id
            t = g.t
            for frame_id in held:  # an anchor is clean: timestep 0 wherever a window holds it
                t = t.masked_fill(ids == frame_id, 0)
            host = replace(g.context.host, iteration=iteration, frame_ids=g.slot_offsets_host + queue.first_id)
            with publish(replace(g.context, iteration=iteration, frame_ids=ids, host=host)):
                eps = denoise(WindowBatch(x, t, g.step_idx, ids))
            z = noise.randn(x.shape) if self.schedule.stochastic else None
            x_prev, _ = g.coeffs.update(x, eps, z)
            b, c, f, h, w = x_prev.shape
            frames = x_prev.view(len(g.windows), self.batch, c, f, h, w).permute(1, 2, 0, 3, 4, 5)
            frames = frames.reshape(self.batch, c, len(g.windows) * f, h, w)
            queue.scatter_slots(g.commit_slots, frames.index_select(2, g.commit_local))
            self._pin(queue)
        if iteration % FULL_CHECK_EVERY == FULL_CHECK_EVERY - 1:
            check_finite(queue.buffer, f"FIFO iteration {iteration}")
        k = self.plan.block
        tail = tail or NoiseTail()
        new = tail(queue, noise, k) if k > 1 else tail(queue, noise)  # a one-frame tail need not know blocks
        return queue.pop_push_block(self.plan.head, new)

    def _pin(self, queue: FrameQueue) -> list[int]:
        """Write each anchor in the queue into its slot; returns their frame ids (host arithmetic only)."""
        held = []
        for frame_id, latent in self.anchors.items():
            slot = frame_id - queue.first_id
            if 0 <= slot < queue.length:
                queue.buffer[:, :, (queue.offset + slot) % queue.length] = latent[:, :, 0]  # an int index: no copy
                held.append(frame_id)
        return held


def fifo_iteration(denoise: WindowDenoiser, queue: FrameQueue, plan: FifoPlan, schedule: Schedule,
                   noise: NoiseSource, batch_windows: bool = True, iteration: int = 0) -> tuple[torch.Tensor, int]:
    """One FIFO iteration in place on ``queue`` (builds the tables each call: for tests and one-offs;
    loops keep a ``FifoStepper``). The reference FIFO step (quirk Q1) takes ``schedule.unscaled()``.
    """
    b, c, _, h, w = queue.buffer.shape
    stepper = FifoStepper(plan, schedule, b, (h, w), c, queue.buffer.device, batch_windows)
    z, frame_id = stepper.step(denoise, queue, noise, iteration)
    check_finite(z, f"FIFO iteration {iteration}")
    return z, frame_id

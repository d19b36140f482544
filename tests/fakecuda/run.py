"""FIFO iterations and the ``auto`` rule on a fake-CUDA model, through the package's public pieces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from fifo_longvid.diffusion.guidance import unet_network
from fifo_longvid.diffusion.noise import NoiseSource
from fifo_longvid.fifo.init import init_queue
from fifo_longvid.fifo.queue import FifoPlan
from fifo_longvid.fifo.sampler import FifoStepper, WindowBatch
from fifo_longvid.techniques import TechniquesConfig, apply_techniques

from .cuda import FakeCuda
from .mode import Sync


@dataclass
class IterationReport:
    inside: list[list[Sync]] = field(default_factory=list)  # per iteration: syncs between its start and end
    store_bytes: int = 0  # the techniques' per-frame stores after the last iteration
    store_frames: int = 0  # frames with at least one entry
    peak: int = 0  # device bytes at the peak of the iterations


def store_bytes(tech: Any) -> tuple[int, int]:
    """(bytes, frames) the techniques' frame store holds now."""
    store = tech.store
    total = sum(v.numel() * v.element_size() for ns in store.namespaces() for v in store._data[ns].values())
    return total, len(store.ids())


def window(model: Any) -> int:
    """The preset's FIFO window in latent frames (Wan: 20 of its 21 training frames; the U-Nets: 16)."""
    return int(getattr(model.cfg, "default_window", None) or model.temporal_length)


def activation_bytes_per_sample(fc: Any, model: Any, latent_hw: tuple[int, int], frames: int) -> float:
    """One network call's activation peak per sample on the fake card: a batch of 2 windows of ``frames`` latent
    frames, minus what the card held before (the cost tables' ``act_bytes_per_sample``)."""
    with fc, torch.no_grad():
        x = torch.zeros(2, model.cfg.channels, frames, *latent_hw, device=model.device)
        t = torch.full((2, frames), 500, dtype=torch.long, device=model.device)
        ctx = torch.zeros(2, *model.context_shape, device=model.device)
        fc.memory.reset_peak()
        held = fc.memory.current
        model.unet(x, t, ctx)
        return (fc.memory.peak - held) / 2


def run_schedule(model: Any, steps: int) -> Any:
    """The run's schedule on the card: DDIM with eta 1 (the reference's default), or flow matching (eta 0)."""
    from fifo_longvid.backends import family_for

    eta = 0.0 if family_for(model.cfg.name).schedule == "flow" else 1.0
    return model.schedule(steps, eta).to(model.device)


def fifo_iterations(fc: FakeCuda, model: Any, techniques: TechniquesConfig | None, iterations: int,
                    size: tuple[int, int], partitions: int = 1, max_batch: int | None = None,
                    cfg_scale: float = 12.0, block: int = 1) -> IterationReport:
    """``iterations`` FIFO iterations at ``size`` (height, width) px (lookahead, queue from noise) with
    ``techniques`` installed; the syncs between each iteration's start and the end of its ``end_iteration`` are
    reported per iteration."""
    f = window(model)
    lat_hw = (size[0] // model.latent_factor, size[1] // model.latent_factor)
    plan = FifoPlan(f, partitions, lookahead=True, block=block)
    sched = run_schedule(model, plan.steps)
    ctx = torch.zeros(1, *model.context_shape, device=model.device)  # made on the card: no copy
    tech = apply_techniques(model.unet, techniques)
    report = IterationReport()
    try:
        tech.bind(sched)
        tech.set_phase("fifo")
        net = tech.wrap_network(unet_network(model.unet, 8))
        den = tech.cfg_denoiser(net, ctx, ctx, cfg_scale, max_batch)
        noise = NoiseSource(0, model.device)
        queue = init_queue(plan, sched, noise, "noise", shape=(1, model.cfg.channels, *lat_hw))
        stepper = FifoStepper(plan, sched.unscaled(), 1, lat_hw, model.cfg.channels, model.device)  # quirk Q1
        fc.memory.reset_peak()
        with torch.no_grad():
            for k in range(iterations):
                start = len(fc.syncs)
                z, _ = stepper.step(lambda b: den(b.x, b.t), queue, noise, iteration=k)
                tech.end_iteration(queue.first_id)
                report.inside.append(fc.syncs[start:])
                del z
        report.peak = fc.memory.peak
        report.store_bytes, report.store_frames = store_bytes(tech)
    finally:
        tech.remove()
    return report


__all__ = ["IterationReport", "WindowBatch", "fifo_iterations", "run_schedule", "store_bytes", "window"]

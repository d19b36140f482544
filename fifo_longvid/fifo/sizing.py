"""Run sizes resolved against a loaded model: FIFO defaults, frame size and samples per U-Net call.

Shared by ``generate`` and the worker ranks of a distributed run (``parallel.serve_run``), which must
size their U-Net calls exactly as rank 0 does.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from ..run.config import RunConfig
from .autobatch import BatchChoice, cpu_rule, cuda_rule
from .geometry import GeometryError, resolve_geometry


def fill_model_defaults(cfg: RunConfig, model: Any) -> None:
    """Unset FIFO sizes come from the model preset (so the tiny test model finishes in seconds); the FIFO geometry
    (partitions, block, steps) is resolved from what was given (``geometry.py``)."""
    fc, mc = cfg.fifo, model.cfg
    fc.window = fc.window or mc.default_window or model.temporal_length
    longest = getattr(model, "max_window", None)
    if longest is not None and fc.window > longest:
        raise ConfigError(f"fifo.window={fc.window} is longer than the {longest} frames of the motion modules' "
                          f"positional table; use a window of at most {longest} (the model was trained on "
                          f"{model.temporal_length})")
    if fc.num_frames is None:
        fc.num_frames = sum(fc.frames_per_prompt) if fc.frames_per_prompt else mc.default_num_frames
    if cfg.mode != "fifo":
        fc.partitions = fc.partitions or mc.default_partitions
        return
    if fc.lookahead and fc.window % 2:
        raise ConfigError(f"lookahead needs an even window length, got {fc.window}; use --no-lookahead")
    try:
        geo = resolve_geometry(fc.window, fc.lookahead, cfg.sampling.steps, fc.block, fc.partitions,
                               mc.default_partitions, getattr(model, "default_block", 1))
    except GeometryError as e:
        raise ConfigError(str(e)) from None
    fc.partitions, fc.block, cfg.sampling.steps = geo.partitions, geo.block, geo.steps
    if fc.stagger and geo.block == 1:
        raise ConfigError("--stagger spreads the frames of a block over their own levels: it needs a block of 2 or "
                          "more (--block K, or a --steps that resolves to one)")


def frame_size(cfg: RunConfig, model: Any) -> tuple[int, int]:
    """(height, width) in pixels: the run's, else the model's default latent size x its VAE factor."""
    f = getattr(model, "latent_factor", 8)
    h_px = cfg.sampling.height or model.cfg.latent_size[0] * f
    w_px = cfg.sampling.width or model.cfg.latent_size[1] * f
    return h_px, w_px


def factors(model: Any) -> tuple[int, int]:
    """(VAE, U-Net) downsampling factors of a loaded backend, or of a VideoCrafter ``ModelConfig``."""
    if hasattr(model, "latent_factor"):
        return model.latent_factor, model.unet_factor
    return 2 ** (len(model.vae.ch_mult) - 1), 2 ** (len(model.unet.channel_mult) - 1)


def size_multiple(model: Any) -> int:
    """Frame sides must divide by this many pixels: the VAE downsamples by 2^(its levels - 1) (8) and the U-Net
    by 2^(its levels - 1) more (8 for VideoCrafter2's 4 levels, so 64); otherwise a skip connection and its
    upsampled partner differ in size."""
    vae, unet = factors(model)
    return vae * unet


def check_frame_size(height: int | None, width: int | None, model: Any) -> None:
    """Raise a ConfigError naming the nearest valid sizes when a side does not fit the model (a loaded backend
    or a VideoCrafter ``ModelConfig``)."""
    m = size_multiple(model)
    vae, unet = factors(model)
    name_ = model.cfg.name if hasattr(model, "latent_factor") else model.name
    for name, v in (("height", height), ("width", width)):
        if v is not None and (v <= 0 or v % m):
            lo = max(m, v // m * m)
            sizes = f"{lo} or {lo + m}" if v > lo else f"{lo}"
            raise ConfigError(
                f"--{name} {v} is not a positive multiple of {m}: the {name_} model downsamples frames by "
                f"{vae} (VAE) x {unet} (U-Net levels); try {sizes}")


def parse_max_batch(spec: str | int | None) -> int | None | str:
    """``auto`` | ``all``/``none`` (None: no limit) | a positive integer."""
    if spec is None or str(spec) in ("all", "none"):
        return None
    if str(spec) == "auto":
        return "auto"
    try:
        n = int(spec)
    except ValueError:
        raise ConfigError(f"--max-batch must be 'auto', 'all' or a positive integer, got {spec!r}") from None
    if n < 1:
        raise ConfigError(f"--max-batch must be >= 1, got {n}")
    return n


def resolve_max_batch(spec: str | int | None, device: torch.device, model: Any,
                      latent_hw: tuple[int, int], frames: int) -> int | None:
    """Samples per U-Net call of one rank's slice in a multi-process run. ``auto``: everything on CPU; on CUDA
    the rule of ``autobatch.cuda_rule`` at the model's context length, the same on every rank (no free-memory
    reading)."""
    spec = parse_max_batch(spec)
    if spec != "auto":
        return spec  # type: ignore[return-value]
    if device.type != "cuda":
        return None
    ctx = torch.zeros(1, *model.context_shape, device=device)
    return cuda_rule(model.unet, model.cfg.channels, 1 << 30, frames, latent_hw, ctx).value


def choose_max_batch(spec: str | int | None, model: Any, latent_hw: tuple[int, int], frames: int,
                     context: torch.Tensor, rows: int, reserve_bytes: int = 0) -> BatchChoice:
    """``--max-batch`` for a single-process run: a fixed value, or ``auto``'s rule for this run's shapes,
    context length and installed techniques (``fifo/autobatch.py``): never a timing or free memory.
    ``reserve_bytes``: the techniques' stores at their largest (``store_reserve``), kept free on CUDA."""
    parsed = parse_max_batch(spec)
    if parsed != "auto":
        return BatchChoice(parsed, f"--max-batch {spec}")  # type: ignore[arg-type]
    if model.device.type == "cuda":
        return cuda_rule(model.unet, model.cfg.channels, rows, frames, latent_hw, context.to(model.device),
                         reserve_bytes)
    return cpu_rule(model.model_channels, rows, frames, latent_hw)


def store_reserve(cfg: RunConfig, model: Any, latent_hw: tuple[int, int], queue_frames: int) -> int:
    """Bytes the techniques' per-frame stores reach once every queued frame holds an entry (``fifo/costs.py``;
    0 for models without a cost table, e.g. the CPU test models, and with no technique on)."""
    from ..techniques import enabled_acceleration
    from .costs import costs_for, store_bytes_at_largest

    c = costs_for(getattr(model.cfg, "name", ""))
    techs = enabled_acceleration(cfg.techniques)
    if c is None or not techs:
        return 0
    return int(store_bytes_at_largest(c, techs, latent_hw, queue_frames, model.dtype))

"""One pass from the settings a user gave to the run that will happen: every default filled, every check made,
before any weights load; after it the run config is read-only.

The family is looked up here, once per run, and travels with the result (``ResolvedRun.family``): loading, the
FIFO geometry, the frame size, the cost table and the sidecar all read it from there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends import Family, family_for
from ..backends.family import Sizes
from ..backends.lora import MAIN, SECOND, applied_loras, lora_key
from ..errors import ConfigError, GeometryError
from ..fifo.geometry import resolve_geometry
from .config import RunConfig, freeze, thawed_copy
from .validation import validate


@dataclass(frozen=True)
class ResolvedRun:
    """A run config with every default filled (frozen), with the family it belongs to and its sizes."""

    config: RunConfig
    family: Family
    sizes: Sizes
    height: int  # pixels: --height, else the model's default frame
    width: int

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.height // self.sizes.latent_factor, self.width // self.sizes.latent_factor

    def costs(self) -> Any:
        """The family's measured cost table for this preset and the checkpoint's release (None: not measured, e.g.
        the CPU test models)."""
        return self.family.costs(self.config.model, self.sizes.release)


def apply_presets(cfg: RunConfig, family: Family, sizes: Sizes | None = None) -> None:
    """The preset's guidance scale, the schedule's eta and the default checkpoint, where the user gave none. Batch
    item names hash the settings at this point (so names from before this pass stay valid). ``sizes``: the
    checkpoint's own defaults (a release's guidance, a second expert's), which come before the preset's."""
    s = cfg.sampling
    if cfg.checkpoint is None:
        cfg.checkpoint = family.default_checkpoint(cfg.model)
    if sizes is None:
        try:
            sizes = family.sizes(cfg.model, cfg.checkpoint)
        except Exception:  # an unreadable model config: reported with its own message when resolving or loading
            sizes = None
    if sizes is not None and sizes.experts > 1 and s.cfg_2 is None:
        s.cfg_2 = s.cfg if s.cfg is not None else sizes.cfg_2  # diffusers: guidance_scale_2 defaults to the first
    if s.cfg is None:
        scale = sizes.cfg if sizes is not None and sizes.cfg is not None else family.preset_cfg(cfg.model)
        s.cfg = 12.0 if scale is None else scale  # None: an unreadable model config, reported when loading
    if s.cfg_2 is None and sizes is not None and sizes.experts > 1:
        s.cfg_2 = s.cfg
    if s.eta is None:
        s.eta = family.default_eta()
    if cfg.loras:  # --lora / --lora-2 -> the component names the family loads them into (the sidecar's record)
        targets = family.lora_targets(cfg.model, cfg.checkpoint)
        for lo in cfg.loras:
            alias = {MAIN: 0, SECOND: 1}.get(lo.target)
            if alias is not None and alias < len(targets):
                lo.target = targets[alias]


def resolve(given: RunConfig, family: Family | None = None) -> ResolvedRun:
    """Resolve ``given`` (left as it is) into a frozen copy. ``family``: when the caller has already looked it up
    (a batch plans every item first), else the registry is asked here."""
    cfg = thawed_copy(given)
    if family is None:
        family = family_for(cfg.model, cfg.checkpoint)
    if cfg.checkpoint is None:
        cfg.checkpoint = family.default_checkpoint(cfg.model)
    sizes = family.sizes(cfg.model, cfg.checkpoint)
    apply_presets(cfg, family, sizes)
    validate(cfg, family, sizes)
    _fill_fifo(cfg, sizes)
    sizes.check_frame(cfg.sampling.height, cfg.sampling.width, cfg.model)
    default_h, default_w = sizes.default_frame()
    if cfg.sampling.seed is None:
        cfg.sampling.seed = random.randrange(2**31)
    cfg.output.path = str(output_path(cfg))
    freeze(cfg)
    return ResolvedRun(cfg, family, sizes, cfg.sampling.height or default_h, cfg.sampling.width or default_w)


def output_path(cfg: RunConfig) -> Path:
    """``-o``, else ``outputs/<prompt slug>_<seed>.mp4``; ``out/fox.png`` means a folder of PNGs, ``out/fox/``."""
    if cfg.output.path:
        out = Path(cfg.output.path)
    else:
        slug = "".join(c if c.isalnum() else "_" for c in cfg.prompts[0].lower())[:48].strip("_") or "video"
        out = Path("outputs") / f"{slug}_{cfg.sampling.seed}.mp4"
    return out.with_suffix("") if out.suffix.lower() == ".png" else out


def _fill_fifo(cfg: RunConfig, sizes: Sizes) -> None:
    """Unset FIFO sizes from the preset (so the tiny test models finish in seconds), and the FIFO geometry
    (partitions, block, steps) from what was given (``fifo/geometry.py``)."""
    fc = cfg.fifo
    fc.window = fc.window or sizes.window
    if fc.num_frames is None:
        fc.num_frames = sum(fc.frames_per_prompt) if fc.frames_per_prompt else sizes.num_frames
    if cfg.mode != "fifo":
        fc.partitions = fc.partitions or sizes.partitions
        return
    if fc.lookahead and fc.window % 2:
        raise ConfigError(f"lookahead needs an even window length, got {fc.window}; use --no-lookahead")
    try:
        geo = resolve_geometry(fc.window, fc.lookahead, cfg.sampling.steps, fc.block, fc.partitions,
                               sizes.partitions, sizes.default_block)
    except GeometryError as e:
        raise ConfigError(str(e)) from None
    fc.partitions, fc.block, cfg.sampling.steps = geo.partitions, geo.block, geo.steps
    if fc.tail.mode == "rescheduled" and fc.tail.window is None:
        fc.tail.window = fc.window  # the default period of the shuffled noise, recorded in the sidecar
    if fc.stagger and geo.block == 1:
        raise ConfigError("--stagger spreads the frames of a block over their own levels: it needs a block of 2 or "
                          "more (--block K, or a --steps that resolves to one)")


def check_loaded(run: ResolvedRun, model: Any) -> None:
    """The loaded model against the sizes the run was resolved with: a motion module's positional table bounds
    the window (a fact of the weights), and a model passed in by the caller must be the one ``--config`` names."""
    fc = run.config.fifo
    if applied_loras(model) != lora_key(run.config.loras):
        raise ConfigError("the model passed in was loaded with other LoRAs than this run's --lora settings; load it "
                          "with the run's loras (backends.load_backend(..., loras=cfg.loras))")
    longest = getattr(model, "max_window", None)
    if longest is not None and fc.window > longest:
        raise ConfigError(f"fifo.window={fc.window} is longer than the {longest} frames of the motion modules' "
                          f"positional table; use a window of at most {longest} (the model was trained on "
                          f"{model.temporal_length})")
    if (model.latent_factor, model.size_multiple) != (run.sizes.latent_factor, run.sizes.size_multiple):
        raise ConfigError(f"the loaded model downsamples frames by {model.latent_factor} (size multiple "
                          f"{model.size_multiple}), but --config {run.config.model} says {run.sizes.latent_factor} "
                          f"({run.sizes.size_multiple}): pass the model that --config names")

"""load -> encode -> plan -> apply techniques -> sample -> decode/stream -> sidecar.

The only module that wires model, samplers, techniques and output together. Everything it calls
is usable on its own (see the tests): ``validation`` checks the settings, ``conditioning`` builds the
context, ``fifo_run.FifoRun`` makes a FIFO video, and ``base_clip`` below a plain one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..backends import compile_unet, load_backend
from ..backends.base import Backend
from ..diffusion.guidance import cfg_denoiser, unet_network
from ..diffusion.noise import NoiseSource
from ..diffusion.sampling import sample_clip
from ..errors import ConfigError
from ..fifo.sizing import check_frame_size, fill_model_defaults, frame_size
from ..interrupts import StopFlag
from ..io.sidecar import sidecar_path, versions, write_json_atomic
from ..io.video import VideoWriter, check_output_path
from ..techniques import apply_techniques
from .conditioning import CondState, conditioning_info, encode_conditioning
from .config import RunConfig, to_dict
from .fifo_run import FifoRun, FrameHook, Progress, checkpoint_id, dtype_name
from .outputs import OutputFiles, remove_resumable, remove_stale
from .validation import validate

__all__ = ["GenerationResult", "default_output", "generate", "validate"]


@dataclass
class GenerationResult:
    output: Path
    frames: int
    seed: int
    sidecar: Path
    timings: dict[str, float] = field(default_factory=dict)
    partial: bool = False


def default_output(cfg: RunConfig) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in cfg.prompts[0].lower())[:48].strip("_") or "video"
    return Path("outputs") / f"{slug}_{cfg.sampling.seed}.mp4"


def generate(cfg: RunConfig, model: Backend | None = None, progress: Progress | None = None,
             log: Callable[[str], None] = print, executor: Any = None, on_frame: FrameHook | None = None,
             stop: StopFlag | None = None) -> GenerationResult:
    """Run one generation described by ``cfg`` and write the video plus its JSON sidecar.

    ``executor``: optional window executor for the FIFO iterations (``fifo.parallel``); default: this process.
    ``on_frame``: called with each FIFO frame right after it is written (a live preview; it must be cheap).
    ``stop``: a flag that, once set, stops a FIFO run as SIGTERM does (partial video + resumable state).
    """
    validate(cfg)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    out_path = _prepare_output(cfg, log)
    log(f"seed {cfg.sampling.seed} -> {out_path}")

    t0 = time.perf_counter()
    if model is None:
        model = load_backend(cfg.model, cfg.checkpoint, cfg.device, cfg.dtype, cfg.motion_adapter)
    timings["load_s"] = time.perf_counter() - t0
    fill_model_defaults(cfg, model)
    h_px, w_px = frame_size(cfg, model)
    check_frame_size(h_px, w_px, model)
    lat_hw = (h_px // model.latent_factor, w_px // model.latent_factor)
    noise = NoiseSource(cfg.sampling.seed, model.device)  # float32 on any model dtype

    t0 = time.perf_counter()
    cond_state, uncond = encode_conditioning(cfg, model, (h_px, w_px))
    timings["encode_s"] = time.perf_counter() - t0

    techniques = apply_techniques(model.unet, cfg.techniques)
    technique_info = techniques.describe()
    runtime: dict[str, Any] = {"device": str(model.device), "dtype": dtype_name(model.dtype),
                               "compile": cfg.compile}
    if cfg.compile:
        compile_unet(model)
    try:
        if cfg.mode == "base":
            written, partial = base_clip(cfg, model, cond_state, uncond, lat_hw, noise, techniques, out_path,
                                         timings, progress, log)
        else:
            run = FifoRun(cfg, model, cond_state, uncond, lat_hw, noise, techniques, out_path, timings, progress,
                          log, executor, on_frame=on_frame, stop=stop)
            written, partial = run.run()
            runtime.update(run.runtime)
    finally:
        techniques.remove()
    timings["total_s"] = time.perf_counter() - t_start
    final = out_path
    if partial:
        final = out_path.with_name(OutputFiles.of(out_path).partial.name)
    else:  # a finished video leaves only itself, its sidecar and the --save-* outputs
        remove_resumable(out_path)
    side = _write_sidecar(cfg, final, written, partial, technique_info, timings, runtime, model.describe())
    return GenerationResult(final, written, cfg.sampling.seed, side, timings, partial)  # type: ignore[arg-type]


def _prepare_output(cfg: RunConfig, log: Callable[[str], None]) -> Path:
    """Pick the seed and output path (recorded in ``cfg``), refuse an existing output or a forgotten saved
    state early, and delete stale temp files of this output name (``outputs.py`` has the rule)."""
    if cfg.sampling.seed is None:
        cfg.sampling.seed = random.randrange(2**31)
    out_path = Path(cfg.output.path) if cfg.output.path else default_output(cfg)
    if out_path.suffix.lower() == ".png":  # a folder of PNGs: out/fox.png is written as out/fox/
        out_path = out_path.with_suffix("")
    cfg.output.path = str(out_path)
    files = OutputFiles.of(out_path)
    if not cfg.output.resume:
        check_output_path(out_path, cfg.output.overwrite)
        if files.state.exists():
            if not cfg.output.overwrite:
                raise ConfigError(f"{out_path} has the saved state of an interrupted run ({files.state.name}): add "
                                  "--resume to continue it, or --overwrite to start over")
            remove_resumable(out_path)
    remove_stale(out_path, log)
    return out_path


def base_clip(cfg: RunConfig, model: Backend, cond_state: CondState, uncond: torch.Tensor,
              lat_hw: tuple[int, int], noise: NoiseSource, techniques: Any, out_path: Path,
              timings: dict[str, float], progress: Progress | None,
              log: Callable[[str], None] = print) -> tuple[int, bool]:
    """``--mode base``: one plain clip of ``window`` (latent) frames."""
    f = cfg.fifo.window
    steps = cfg.sampling.steps or 50
    sched = model.schedule(steps, cfg.sampling.eta).to(model.device)
    kind = "DDIM" if sched.kind == "ddim" else "flow-matching"
    log(f"{model.device} {dtype_name(model.dtype)}; base clip of {f} latent frames, {steps} {kind} steps")
    techniques.bind(sched)
    techniques.set_phase("clip")
    x_T = noise.randn((1, model.cfg.channels, f, *lat_hw))
    den = cfg_denoiser(unet_network(model.unet, cfg.sampling.fps), cond_state.conds(), uncond, cfg.sampling.cfg)
    t0 = time.perf_counter()
    z = sample_clip(den, x_T, sched,
                    noise=noise, callback=(lambda d, n: progress("base clip", d, n)) if progress else None)
    timings["sample_s"] = time.perf_counter() - t0
    with VideoWriter(out_path, cfg.output.output_fps, cfg.output.overwrite) as writer:
        frames = model.decode_latents(z)
        for i in range(frames.shape[2]):
            writer.append(frames[0, :, i])
    return frames.shape[2], False


def _write_sidecar(cfg: RunConfig, final: Path, written: int, partial: bool, technique_info: Any,
                   timings: dict[str, float], runtime: dict[str, Any], model_info: dict[str, Any]) -> Path:
    """The JSON next to the video: prompt, seed, resolved config, weights id, versions, timings."""
    meta: dict[str, Any] = {
        "prompt": cfg.prompts[0] if len(cfg.prompts) == 1 else cfg.prompts,
        "seed": cfg.sampling.seed,
        "mode": cfg.mode,
        "frames_written": written,
        "complete": not partial,
        "output": str(final),
        "checkpoint": cfg.checkpoint,
        "checkpoint_id": checkpoint_id(cfg),
        "model": model_info,
        "config": to_dict(cfg),
        "techniques": technique_info,
        "conditioning": conditioning_info(cfg),
        "device": runtime["device"],
        "runtime": runtime,  # how it computed: dtype, compile, the max-batch chosen (and how)
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "versions": versions(),
    }
    return write_json_atomic(sidecar_path(final), meta)

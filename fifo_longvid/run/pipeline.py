"""load -> encode -> plan -> apply techniques -> sample -> decode/stream -> sidecar.

The only module that wires model, samplers, techniques and output together. Everything it calls
is usable on its own (see the tests): ``validation`` checks the settings, ``conditioning`` builds the
context, ``fifo_run.FifoRun`` makes a FIFO video, and ``base_clip`` below a plain one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..backends import compile_unet
from ..backends.base import Backend
from ..diffusion.guidance import cfg_denoiser, unet_network
from ..diffusion.noise import NoiseSource
from ..diffusion.sampling import sample_clip
from ..errors import ConfigError
from ..interrupts import StopFlag
from ..io.sidecar import sidecar_path, versions, write_json_atomic
from ..io.video import VideoWriter, check_output_path
from ..techniques import apply_techniques
from .conditioning import CondState, base_anchors, conditioning_info, encode_conditioning, guidance_of
from .config import RunConfig, to_dict
from .fifo_run import FifoRun, FrameHook, Progress, base_clip_progress, checkpoint_id, dtype_name, write_frame
from .outputs import OutputFiles, remove_resumable, remove_stale, save_latents
from .resolve import ResolvedRun, check_loaded, output_path, resolve
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
    config: RunConfig | None = None  # the resolved (read-only) config the run used


def default_output(cfg: RunConfig) -> Path:
    """Where a run writes when ``-o`` is not given (``outputs/<prompt slug>_<seed>.mp4``)."""
    return output_path(cfg)


def generate(cfg: RunConfig | ResolvedRun, model: Backend | None = None, progress: Progress | None = None,
             log: Callable[[str], None] = print, executor: Any = None, on_frame: FrameHook | None = None,
             stop: StopFlag | None = None) -> GenerationResult:
    """Run one generation described by ``cfg`` and write the video plus its JSON sidecar.

    ``cfg``: the settings (resolved here, once: ``run/resolve.py``; the object passed in is left as it is) or a
    run already resolved. ``model``: a loaded model of the family ``cfg.model`` names (default: loaded here).
    ``executor``: optional window executor for the FIFO iterations (``fifo.parallel``); default: this process.
    ``on_frame``: called with each FIFO frame right after it is written (a live preview; it must be cheap).
    ``stop``: a flag that, once set, stops a FIFO run as SIGTERM does (partial video + resumable state).
    """
    run = cfg if isinstance(cfg, ResolvedRun) else resolve(cfg)
    cfg = run.config
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    out_path = _prepare_output(cfg, log)
    log(f"seed {cfg.sampling.seed} -> {out_path}")

    t0 = time.perf_counter()
    if model is None:
        model = run.family.load(cfg.model, cfg.checkpoint, cfg.device, cfg.dtype, cfg.motion_adapter,
                                loras=cfg.loras)
    timings["load_s"] = time.perf_counter() - t0
    check_loaded(run, model)
    h_px, w_px = run.height, run.width
    lat_hw = run.latent_hw
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
            fifo = FifoRun(cfg, model, cond_state, uncond, lat_hw, noise, techniques, out_path, timings, progress,
                           log, executor, on_frame=on_frame, stop=stop, costs=run.costs())
            written, partial = fifo.run()
            runtime.update(fifo.runtime)
    finally:
        techniques.remove()
    timings["total_s"] = time.perf_counter() - t_start
    final = out_path
    if partial:
        final = out_path.with_name(OutputFiles.of(out_path).partial.name)
    else:  # a finished video leaves only itself, its sidecar and the --save-* outputs
        remove_resumable(out_path)
    side = _write_sidecar(cfg, final, written, partial, technique_info, timings, runtime, model.describe())
    return GenerationResult(final, written, cfg.sampling.seed, side, timings, partial,  # type: ignore[arg-type]
                            config=cfg)


def _prepare_output(cfg: RunConfig, log: Callable[[str], None]) -> Path:
    """Refuse an existing output or a forgotten saved state early, and delete stale temp files of this output
    name (``outputs.py`` has the rule). The seed and the path were resolved with the config."""
    out_path = Path(cfg.output.path)  # type: ignore[arg-type]
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
    """``--mode base``: one plain clip of ``window`` (latent) frames; ``--save-frames`` and ``--save-latents``
    write the same files as in FIFO mode (``outputs.OutputFiles`` names them)."""
    f = cfg.fifo.window
    steps = cfg.sampling.steps or 50
    sched = model.schedule(steps, cfg.sampling.eta).to(model.device)
    log(f"{model.device} {dtype_name(model.dtype)}; base clip of {f} latent frames, {steps} {sched.label} steps")
    techniques.bind(sched)
    techniques.set_phase("clip")
    x_T = noise.randn((1, model.cfg.channels, f, *lat_hw))
    den = cfg_denoiser(unet_network(model.unet, cfg.sampling.fps), cond_state.conds(), uncond,
                       guidance_of(model, cfg))
    t0 = time.perf_counter()
    z = sample_clip(den, x_T, sched, noise=noise, callback=base_clip_progress(progress, sched),
                    anchors=base_anchors(cond_state))  # --image as the first frame: pinned
    timings["sample_s"] = time.perf_counter() - t0
    files = OutputFiles.of(out_path)
    frames_dir = files.frames_dir if cfg.output.save_frames else None
    with VideoWriter(out_path, cfg.output.output_fps, cfg.output.overwrite) as writer:
        frames = model.decode_latents(z)
        for i in range(frames.shape[2]):
            write_frame(writer, frames[0, :, i], i, frames_dir)
    if cfg.output.save_latents:  # as FIFO mode saves them: (1, C, F, h, w) float32
        save_latents(files.latents, z)
    return frames.shape[2], False


def lora_records(cfg: RunConfig) -> list[dict[str, Any]]:
    """Each LoRA as the sidecar records it: the file, its sha256, the scale and the component it went into."""
    from ..io.sidecar import file_sha256

    return [{"path": lo.path, "sha256": file_sha256(lo.path), "scale": lo.scale, "target": lo.target}
            for lo in cfg.loras]


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
        **({"loras": lora_records(cfg)} if cfg.loras else {}),
        "conditioning": conditioning_info(cfg),
        "device": runtime["device"],
        "runtime": runtime,  # how it computed: dtype, compile, the max-batch chosen (and how)
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "versions": versions(),
    }
    return write_json_atomic(sidecar_path(final), meta)

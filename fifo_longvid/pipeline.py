"""load -> encode -> plan -> apply techniques -> sample -> decode/stream -> reset.

The only module that wires model, samplers, techniques and output together. Everything it calls
is usable on its own (see the tests).
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, RunConfig, numerics_hash, to_dict
from .diffusion.guidance import cfg_denoiser, unet_network
from .diffusion.noise import NoiseSource
from .diffusion.sampling import check_finite, sample_ddim
from .fifo.init import INIT_MODES, init_queue, warmup_iterations
from .fifo.queue import FifoPlan
from .fifo.sampler import FifoStepper, WindowBatch, WindowDenoiser
from .fifo.state import FifoState, LatentLog, load_state, save_state, state_path
from .io.images import load_image
from .io.sidecar import file_sha256, sidecar_path, versions, write_json_atomic
from .io.video import VideoWriter, check_output_path
from .models.load import load_model
from .models.videocrafter import VideoCrafter
from .techniques import apply_techniques
from .techniques.seeding import frame_image_tokens, i2v_uncond, seed_image_tokens

Progress = Callable[[str, int, int], None]  # (task, done, total)


@dataclass
class GenerationResult:
    output: Path
    frames: int
    seed: int
    sidecar: Path
    timings: dict[str, float] = field(default_factory=dict)
    partial: bool = False


def validate(cfg: RunConfig) -> None:
    """Reject bad settings before any work is done, with what to do instead."""
    if cfg.mode not in ("fifo", "base"):
        raise ConfigError(f"mode must be 'fifo' or 'base', got {cfg.mode!r}")
    if not cfg.prompts or any(not p.strip() for p in cfg.prompts):
        raise ConfigError("empty prompt: pass --prompt \"a description of the video\"")
    s = cfg.sampling
    for name in ("height", "width"):
        v = getattr(s, name)
        if v is not None and (v <= 0 or v % 16):
            raise ConfigError(f"--{name} {v} is not a positive multiple of 16 (the VAE downsamples by 8 and "
                              "the U-Net by 2 more); try " + str(max(16, round(v / 16) * 16)))
    if s.cfg < 0:
        raise ConfigError(f"--cfg must be >= 0, got {s.cfg}")
    if not 0.0 <= s.eta <= 1.0:
        raise ConfigError(f"--eta must be in [0, 1], got {s.eta}")
    if cfg.mode == "fifo":
        f = cfg.fifo
        if f.num_frames is not None and f.num_frames < 1:
            raise ConfigError(f"--num-frames must be >= 1, got {f.num_frames}")
        if f.partitions is not None and f.partitions < 1:
            raise ConfigError(f"--partitions must be >= 1, got {f.partitions}")
        if f.init not in INIT_MODES:
            raise ConfigError(f"--init must be one of {', '.join(INIT_MODES)}, got {f.init!r}")
        if f.window is not None and f.window < 1:
            raise ConfigError(f"fifo.window must be >= 1, got {f.window}")
        if f.lookahead and f.window is not None and f.window % 2:
            raise ConfigError(f"lookahead needs an even window length, got {f.window}; use --no-lookahead")
        if f.frames_per_prompt:
            if len(f.frames_per_prompt) != len(cfg.prompts):
                raise ConfigError(f"--frames-per-prompt has {len(f.frames_per_prompt)} entries for "
                                  f"{len(cfg.prompts)} prompts; give one count per --prompt")
            if any(n < 1 for n in f.frames_per_prompt):
                raise ConfigError("--frames-per-prompt counts must be >= 1")
            if f.num_frames is not None and f.num_frames != sum(f.frames_per_prompt):
                raise ConfigError(f"--num-frames {f.num_frames} != sum of --frames-per-prompt "
                                  f"({sum(f.frames_per_prompt)}); give one or make them agree")
        elif len(cfg.prompts) > 1:
            raise ConfigError("several prompts need --frames-per-prompt N1,N2,... (frames for each prompt)")
    elif len(cfg.prompts) > 1:
        raise ConfigError("--mode base takes one prompt")
    parse_max_batch(cfg.fifo.max_batch)
    c = cfg.conditioning
    if c.image or c.latent_seed:
        from .models.presets import load_model_config

        try:
            has_image = load_model_config(cfg.model).image is not None
        except ValueError:
            has_image = True  # the model config error is reported when loading
        what = "--image" if c.image else "--latent-seed"
        if not has_image:
            raise ConfigError(
                f"{what} needs a model with an image encoder (VideoCrafter1 I2V); {cfg.model!r} has none. Get it "
                "with `fifo-gen download --model videocrafter1_i2v` and add --config videocrafter1_i2v "
                "(or --config tiny_i2v to try it without weights)")
        if c.latent_seed and c.image:
            raise ConfigError("--image and --latent-seed both set the image tokens; use one of them")
        if c.latent_seed and cfg.mode != "fifo":
            raise ConfigError("--latent-seed seeds the FIFO queue; it needs --mode fifo")
        if c.latent_seed and cfg.fifo.init == "noise":
            raise ConfigError("--latent-seed decodes the head of a queue built from a base clip; use --init first "
                              "or uniform")
    if c.image and not Path(c.image).is_file():
        raise ConfigError(f"--image {c.image}: no such file")
    if c.latent_seed_every < 0:
        raise ConfigError(f"--latent-seed-every must be >= 0, got {c.latent_seed_every}")
    if c.latent_seed_every and not c.latent_seed:
        raise ConfigError("--latent-seed-every K needs --latent-seed")
    if cfg.techniques.qcache.enabled:
        from .techniques.qcache import check_config

        try:
            check_config(cfg.techniques.qcache)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def parse_max_batch(spec: str | int | None) -> int | None | str:
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


def resolve_max_batch(spec: str | int | None, device: torch.device, model: VideoCrafter,
                      latent_hw: tuple[int, int], frames: int) -> int | None:
    """Samples per U-Net call. ``auto``: everything on CPU; on CUDA, as many as free memory allows,
    measured from one probe forward of a (cond, uncond) pair (the reference's peak)."""
    spec = parse_max_batch(spec)
    if spec != "auto":
        return spec  # type: ignore[return-value]
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    h, w = latent_hw
    x = torch.zeros(2, model.cfg.channels, frames, h, w, device=device, dtype=model.dtype)
    ctx = torch.zeros(2, 77, model.cfg.unet.context_dim, device=device, dtype=model.dtype)
    with torch.no_grad():
        model.unet(x, torch.zeros(2, frames, dtype=torch.long, device=device), ctx)
    per_sample = max(1, (torch.cuda.max_memory_allocated(device) - base) // 2)
    free, _ = torch.cuda.mem_get_info(device)
    return max(2, int(free * 0.8) // per_sample)


def prompt_schedule(cfg: RunConfig, plan: FifoPlan, warmup: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Frame id -> prompt index. Output frame k has id head + warmup + k; each window is conditioned on
    the prompt of its centre frame, so a frame is denoised under its own prompt for most of its life."""
    counts = cfg.fifo.frames_per_prompt or [cfg.fifo.num_frames]
    bounds = torch.tensor(counts).cumsum(0)
    offset = plan.head + warmup

    def of(ids: torch.Tensor) -> torch.Tensor:  # on the ids' device: no host sync in the loop
        k = ids - offset
        return torch.bucketize(k, bounds.to(ids.device), right=True).clamp(max=len(counts) - 1)

    return of


class CondState:
    """The cross-attention context of the run: text tokens per prompt, plus optional image tokens
    (``--image``, or latent seeding, which may refresh them during the run)."""

    def __init__(self, text: torch.Tensor, image: torch.Tensor | None = None):
        self.text, self.image = text, image

    def conds(self) -> torch.Tensor:
        if self.image is None:
            return self.text
        return torch.cat([self.text, self.image.expand(self.text.shape[0], -1, -1)], dim=1)


def fifo_denoiser(model: VideoCrafter, cond_state: CondState, uncond: torch.Tensor, scale: float, fps: int,
                  max_batch: int | None, prompt_of: Callable[[torch.Tensor], torch.Tensor],
                  executor: Any = None) -> WindowDenoiser:
    """``executor`` (fifo/parallel.py) runs the U-Net calls, e.g. split across torch.distributed ranks."""
    net = unet_network(model.unet, fps)
    if executor is not None:
        net, max_batch = executor.wrap(net, max_batch), None

    def denoise(batch: WindowBatch) -> torch.Tensor:
        conds = cond_state.conds()
        if conds.shape[0] > 1:  # multi-prompt: each window takes the prompt of its centre frame
            centre = batch.frame_ids[:, batch.frame_ids.shape[1] // 2]
            conds = conds[prompt_of(centre).to(conds.device)]
        return cfg_denoiser(net, conds, uncond, scale, max_batch)(batch.x, batch.t)

    return denoise


def fill_model_defaults(cfg: RunConfig, model: VideoCrafter) -> None:
    """Unset FIFO sizes come from the model preset (so the tiny test model finishes in seconds)."""
    fc, mc = cfg.fifo, model.cfg
    fc.window = fc.window or mc.default_window or model.temporal_length
    fc.partitions = fc.partitions or mc.default_partitions
    if fc.num_frames is None:
        fc.num_frames = sum(fc.frames_per_prompt) if fc.frames_per_prompt else mc.default_num_frames
    if cfg.mode == "fifo" and fc.lookahead and fc.window % 2:
        raise ConfigError(f"lookahead needs an even window length, got {fc.window}; use --no-lookahead")


def _conditioning_info(cfg: RunConfig) -> dict[str, Any]:
    c = cfg.conditioning
    info: dict[str, Any] = {"latent_seed": c.latent_seed, "latent_seed_every": c.latent_seed_every}
    if c.image:
        info["image"] = {"path": str(c.image), "sha256": file_sha256(c.image, cache=False)}
    return info


def _checkpoint_id(cfg: RunConfig) -> str:
    if cfg.checkpoint is None:
        return f"recipe:{cfg.model}"
    return "sha256:" + file_sha256(cfg.checkpoint)


def default_output(cfg: RunConfig) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in cfg.prompts[0].lower())[:48].strip("_") or "video"
    return Path("outputs") / f"{slug}_{cfg.sampling.seed}.mp4"


def generate(cfg: RunConfig, model: VideoCrafter | None = None, progress: Progress | None = None,
             log: Callable[[str], None] = print, executor: Any = None) -> GenerationResult:
    """Run one generation described by ``cfg`` and write the video plus its JSON sidecar.

    ``executor``: optional window executor for the FIFO iterations (``fifo.parallel``); default: this process.
    """
    validate(cfg)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    if cfg.sampling.seed is None:
        cfg.sampling.seed = random.randrange(2**31)
    out_path = Path(cfg.output.path) if cfg.output.path else default_output(cfg)
    cfg.output.path = str(out_path)
    resume_file = state_path(out_path)
    if not cfg.output.resume:
        check_output_path(out_path, cfg.output.overwrite)
    log(f"seed {cfg.sampling.seed} -> {out_path}")

    t0 = time.perf_counter()
    if model is None:
        model = load_model(cfg.model, cfg.checkpoint, cfg.device, cfg.dtype)
    timings["load_s"] = time.perf_counter() - t0
    dev = model.device
    fill_model_defaults(cfg, model)
    f = cfg.fifo.window
    h_px = cfg.sampling.height or model.cfg.latent_size[0] * 8
    w_px = cfg.sampling.width or model.cfg.latent_size[1] * 8
    lat_hw = (h_px // 8, w_px // 8)
    noise = NoiseSource(cfg.sampling.seed, dev)  # float32 on any model dtype

    t0 = time.perf_counter()
    cond_state = CondState(model.encode_text(cfg.prompts))
    uncond = i2v_uncond(model, model.encode_text([""]))
    if cfg.conditioning.image:
        cond_state.image = model.encode_image(load_image(cfg.conditioning.image, h_px, w_px).to(dev))
    timings["encode_s"] = time.perf_counter() - t0
    fps = cfg.sampling.fps
    scale = cfg.sampling.cfg

    techniques = apply_techniques(model.unet, cfg.techniques)
    technique_info = techniques.describe()
    try:
        if cfg.mode == "base":
            steps = cfg.sampling.steps or 50
            sched = model.ddim_schedule(steps, cfg.sampling.eta).to(dev)
            techniques.bind(sched)
            techniques.set_phase("clip")
            x_T = noise.randn((1, model.cfg.channels, f, *lat_hw))
            den = cfg_denoiser(unet_network(model.unet, fps), cond_state.conds(), uncond, scale)
            t0 = time.perf_counter()
            z = sample_ddim(den, x_T, sched, use_scale=model.cfg.use_scale,
                            noise=noise, callback=(lambda d, n: progress("base clip", d, n)) if progress else None)
            timings["sample_s"] = time.perf_counter() - t0
            with VideoWriter(out_path, cfg.output.output_fps, cfg.output.overwrite) as writer:
                frames = model.decode_latents(z)
                for i in range(frames.shape[2]):
                    writer.append(frames[0, :, i])
            written, partial = f, False
        else:
            written, partial = _run_fifo(cfg, model, cond_state, uncond, f, lat_hw, noise, techniques, out_path,
                                         resume_file, timings, progress, log, executor)
    finally:
        techniques.remove()
    timings["total_s"] = time.perf_counter() - t_start
    final = out_path if not partial else out_path.with_name(f"{out_path.stem}.partial{out_path.suffix}")
    meta: dict[str, Any] = {
        "prompt": cfg.prompts[0] if len(cfg.prompts) == 1 else cfg.prompts,
        "seed": cfg.sampling.seed,
        "mode": cfg.mode,
        "frames_written": written,
        "complete": not partial,
        "output": str(final),
        "checkpoint": cfg.checkpoint,
        "checkpoint_id": _checkpoint_id(cfg),
        "config": to_dict(cfg),
        "techniques": technique_info,
        "conditioning": _conditioning_info(cfg),
        "device": str(dev),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "versions": versions(),
    }
    side = write_json_atomic(sidecar_path(final), meta)
    return GenerationResult(final, written, cfg.sampling.seed, side, timings, partial)


def _run_fifo(cfg: RunConfig, model: VideoCrafter, cond_state: CondState, uncond: torch.Tensor, f: int,
              lat_hw: tuple[int, int], noise: NoiseSource, techniques: Any, out_path: Path, resume_file: Path,
              timings: dict[str, float], progress: Progress | None, log: Callable[[str], None],
              executor: Any = None) -> tuple[int, bool]:
    fc = cfg.fifo
    plan = FifoPlan(f, fc.partitions, fc.lookahead)
    if cfg.sampling.steps is not None and cfg.sampling.steps != plan.steps:
        raise ConfigError(
            f"--steps {cfg.sampling.steps} contradicts FIFO's rule steps = window x partitions = "
            f"{f} x {fc.partitions} = {plan.steps}: every queue slot sits at its own DDIM step. Drop --steps "
            "or change --partitions."
        )
    dev = model.device
    sched = model.ddim_schedule(plan.steps, cfg.sampling.eta).to(dev)
    techniques.bind(sched)
    warmup = warmup_iterations(plan, fc.init)  # type: ignore[arg-type]
    total_iters = warmup + fc.num_frames
    chash = numerics_hash(cfg, _checkpoint_id(cfg))
    max_batch = resolve_max_batch(fc.max_batch, dev, model, lat_hw, f)
    latent_shape = (1, model.cfg.channels, 1, *lat_hw)
    log_path = out_path.parent / f"{out_path.name}.latents.f32"
    latents_log = LatentLog(log_path, latent_shape)

    if cfg.output.resume:
        state = load_state(resume_file, chash, dev)
        queue, start_iter, emitted = state.queue, state.iteration, state.emitted
        noise.set_state(state.rng_state)
        if "image_tokens" in state.extras:
            cond_state.image = state.extras["image_tokens"]
        if not log_path.exists():
            raise ConfigError(f"--resume: the latent log {log_path} is missing; cannot rebuild the video")
        log(f"resuming at output frame {emitted} (iteration {start_iter})")
    else:
        t0 = time.perf_counter()
        base = None
        techniques.set_phase("base")
        if fc.init != "noise":
            den = cfg_denoiser(unet_network(model.unet, cfg.sampling.fps), cond_state.conds()[:1], uncond,
                               cfg.sampling.cfg)
            x_T = noise.randn((1, model.cfg.channels, f, *lat_hw))
            base = sample_ddim(den, x_T, sched, use_scale=model.cfg.use_scale,
                               noise=noise,
                               callback=(lambda d, n: progress("base clip", d, n)) if progress else None)
        queue = init_queue(plan, sched, noise, fc.init, base=base,  # type: ignore[arg-type]
                           shape=(1, model.cfg.channels, *lat_hw))
        if cfg.conditioning.latent_seed:
            cond_state.image = seed_image_tokens(model, queue.latents)
        timings["base_s"] = time.perf_counter() - t0
        start_iter, emitted = 0, 0

    prompt_of = prompt_schedule(cfg, plan, warmup)
    denoise = fifo_denoiser(model, cond_state, uncond, cfg.sampling.cfg, cfg.sampling.fps, max_batch, prompt_of,
                            executor)
    techniques.set_phase("fifo")
    stepper = FifoStepper(plan, sched, 1, lat_hw, model.cfg.channels, dev, use_scale=fc.scaled_step)
    frames_dir = out_path.parent / f"{out_path.stem}_frames" if cfg.output.save_frames else None

    def snapshot(it: int, n: int) -> FifoState:
        extras = {"image_tokens": cond_state.image} if cond_state.image is not None else {}
        return FifoState(queue, noise.get_state(), it, n, chash, extras)

    writer = VideoWriter(out_path, cfg.output.output_fps, overwrite=cfg.output.overwrite or cfg.output.resume)
    latents_log.open(keep=emitted)
    if emitted:  # rebuild the video written before the interruption
        for k in range(emitted):
            frame = model.decode_latents(latents_log.read(k, k + 1)[0].to(dev))[0, :, 0]
            _write_frame(writer, frame, k, frames_dir)
    reseed_every = cfg.conditioning.latent_seed_every
    it = start_iter
    consistent = True  # queue, RNG and latent log agree (safe to save for --resume)
    t0 = time.perf_counter()
    try:
        with graceful_interrupt() as stop:
            while it < total_iters:
                if stop.requested:
                    raise KeyboardInterrupt
                consistent = False
                z, _ = stepper.step(denoise, queue, noise, iteration=it)
                check_finite(z, f"FIFO iteration {it}")
                it += 1
                if it > warmup:
                    latents_log.append(z)
                    emitted += 1
                    frame = model.decode_latents(z)[0, :, 0]
                    if reseed_every and emitted % reseed_every == 0:  # fresh tokens, same context length
                        cond_state.image = frame_image_tokens(model, frame)
                consistent = True
                if it > warmup:
                    _write_frame(writer, frame, emitted - 1, frames_dir)
                    if cfg.output.checkpoint_every and emitted % cfg.output.checkpoint_every == 0:
                        save_state(resume_file, snapshot(it, emitted))
                if progress:
                    progress("fifo", it, total_iters)
    except (KeyboardInterrupt, OSError) as e:
        latents_log.close()
        if consistent:
            try:
                save_state(resume_file, snapshot(it, emitted))
                log(f"state saved to {resume_file}; continue with the same command plus --resume")
            except OSError as e2:
                log(f"could not save the resume state ({e2})")
        elif resume_file.exists():
            log(f"stopped mid-iteration; {resume_file} holds the last checkpoint for --resume")
        if isinstance(e, KeyboardInterrupt):
            part = writer.close_partial()
            log(f"interrupted: {emitted} frames kept in {part}")
            timings["fifo_s"] = time.perf_counter() - t0
            return emitted, True
        writer.abort()
        raise
    except BaseException:
        latents_log.close()
        writer.abort()
        raise
    timings["fifo_s"] = time.perf_counter() - t0
    timings["s_per_frame"] = timings["fifo_s"] / max(1, emitted)
    latents_log.close()
    writer.close()
    if cfg.output.save_latents:
        from safetensors.torch import save_file

        z_all = latents_log.read(0, emitted)[:, :, :, 0].permute(1, 2, 0, 3, 4).contiguous()
        save_file({"latents": z_all}, str(out_path.with_suffix(".latents.safetensors")))
    log_path.unlink(missing_ok=True)
    resume_file.unlink(missing_ok=True)
    return emitted, False


class _StopFlag:
    requested = False


@contextlib.contextmanager
def graceful_interrupt() -> Iterator[_StopFlag]:
    """First Ctrl-C: finish the current iteration, then stop cleanly (resumable state).
    A second Ctrl-C interrupts at once."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if flag.requested:
            raise KeyboardInterrupt
        flag.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _write_frame(writer: VideoWriter, frame: torch.Tensor, k: int, frames_dir: Path | None) -> None:
    writer.append(frame)
    if frames_dir is not None:
        from PIL import Image

        frames_dir.mkdir(parents=True, exist_ok=True)
        arr = ((frame.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        Image.fromarray(arr).save(frames_dir / f"{k:05d}.png")

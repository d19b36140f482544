"""One FIFO video, from an empty (or saved) queue to a finished file.

``FifoRun.run()`` reads as the list of stages: start (base clip + queue) or resume (saved state), open the
writer and replay what was written before an interruption, iterate (one frame out per iteration past the
warm-up), then finish (publish the video) or stop (playable partial + resumable state).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..backends.base import Backend
from ..diffusion.guidance import cfg_denoiser, unet_network
from ..diffusion.noise import NoiseSource
from ..diffusion.sampling import check_finite, sample_clip
from ..diffusion.schedule_protocol import Schedule
from ..errors import ConfigError, OutOfMemory
from ..fifo.costs import samples_per_iteration, window_calls
from ..fifo.init import base_frame_for_slot, init_queue, iterations_for, warmup_iterations
from ..fifo.queue import FifoPlan, FrameQueue
from ..fifo.sampler import FifoStepper, WindowDenoiser
from ..fifo.sizing import choose_max_batch, parse_max_batch, resolve_max_batch, store_reserve
from ..fifo.state import FifoState, LatentLog, load_state, save_state, state_path
from ..fifo.tail import make_tail_sampler
from ..interrupts import StopFlag, graceful_interrupt
from ..io.video import VideoWriter
from ..techniques import enabled_acceleration
from ..techniques.seeding import frame_image_tokens, seed_image_tokens
from .conditioning import CondState, base_anchors, fifo_denoiser, guidance_of, prompt_schedule
from .config import RunConfig, numerics_hash
from .outputs import OutputFiles, save_frame_png, save_latents

Progress = Callable[[str, int, int], None]  # (task, done, total)
FrameHook = Callable[[torch.Tensor, int], None]  # (decoded frame (3, H, W) in [-1, 1], output index): a live view
_CUDA_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def checkpoint_id(cfg: RunConfig) -> str:
    """The weights' identity for hashes and sidecars: the file's sha256, or the recipe of random weights."""
    from ..backends import weights_id

    return weights_id(cfg.checkpoint, cfg.motion_adapter, cfg.model)


class FifoRun:
    """The state of one FIFO generation; each method is one stage of :meth:`run`."""

    def __init__(self, cfg: RunConfig, model: Backend, cond_state: CondState, uncond: torch.Tensor,
                 lat_hw: tuple[int, int], noise: NoiseSource, techniques: Any, out_path: Path,
                 timings: dict[str, float], progress: Progress | None = None,
                 log: Callable[[str], None] = print, executor: Any = None, on_frame: FrameHook | None = None,
                 stop: StopFlag | None = None, costs: Any = None):
        self.on_frame, self.stop_flag, self.costs = on_frame, stop, costs  # costs: the family's measured table
        self.cfg, self.model, self.cond_state, self.uncond = cfg, model, cond_state, uncond
        self.lat_hw, self.noise, self.techniques, self.out_path = lat_hw, noise, techniques, out_path
        self.timings, self.progress, self.log, self.executor = timings, progress, log, executor
        fc = cfg.fifo
        self.window: int = fc.window  # type: ignore[assignment]
        self.plan = FifoPlan(self.window, fc.partitions, fc.lookahead, fc.block or 1,  # type: ignore[arg-type]
                             fc.stagger)
        if cfg.sampling.steps is not None and cfg.sampling.steps != self.plan.steps:  # run/resolve.py resolved it
            raise ConfigError(f"--steps {cfg.sampling.steps} != window {self.window} x {fc.partitions} partitions / "
                              f"block {self.plan.block} = {self.plan.steps}")
        # the levels the queue spans (the base clip samples them all); FIFO steps them ``stride`` at a time
        self.sched: Schedule = model.schedule(self.plan.levels, cfg.sampling.eta).to(model.device)
        # FIFO-Diffusion's step leaves out the model's latent scale (quirk Q1); fifo.scaled_step keeps it
        step = self.sched if fc.scaled_step else self.sched.unscaled()
        if fc.scaled_step and step.unscaled() is step:
            raise ConfigError("fifo.scaled_step=true: this model's schedule has no latent scale to apply "
                              "(only VideoCrafter2's scaled DDIM has one)")
        self.step_sched = step.strided(self.plan.stride)
        techniques.bind(self.step_sched)
        try:
            self.tail = make_tail_sampler(fc.tail, self.step_sched, self.window)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.warmup = warmup_iterations(self.plan, fc.init)  # type: ignore[arg-type]  # frames, whole blocks
        self.latent_count = model.latent_frames(fc.num_frames)  # type: ignore[arg-type]
        self.total_iters = iterations_for(self.plan, self.warmup, self.latent_count)
        self.decoder = model.frame_decoder()  # streams: a causal VAE keeps its cache from frame to frame
        self.chash = numerics_hash(cfg, checkpoint_id(cfg))
        self.max_batch: int | None = None  # chosen in run(): a resumed run keeps the value it saved
        self.runtime: dict[str, Any] = {}  # how this run computes (device, dtype, compile, max-batch): the sidecar
        self.resume_file = state_path(out_path)
        self.log_path = out_path.parent / f"{out_path.name}.latents.f32"
        self.latents_log = LatentLog(self.log_path, (1, model.cfg.channels, 1, *lat_hw))
        self.files = OutputFiles.of(out_path)
        self.frames_dir = self.files.frames_dir if cfg.output.save_frames else None
        self.queue: FrameQueue | None = None
        self.iteration = 0
        self.emitted = 0  # latent frames out of the queue (= output frames unless the VAE compresses time)
        self.written = 0  # output frames written
        self.consistent = True  # queue, RNG and latent log agree (safe to save for --resume)
        self.phase = "setup"

    # -- the stages ---------------------------------------------------------------------------------

    def describe(self) -> str:
        """One log line: where and how this run computes (device, dtype, FIFO plan, U-Net batch)."""
        fc, p = self.cfg.fifo, self.plan
        mb = "all" if self.max_batch is None else str(self.max_batch)
        n = torch.get_num_threads()
        threads = f" ({n} thread{'s' if n != 1 else ''})" if self.model.device.type == "cpu" else ""
        return (f"{self.model.device}{threads} {dtype_name(self.model.dtype)}; FIFO window {p.f} x {p.n} "
                f"partition{'s' if p.n != 1 else ''} / block {p.block} = {p.steps} {self.sched.label} steps"
                f"{f' (staggered over {p.levels} levels)' if p.stagger else ''}, lookahead "
                f"{'on' if p.lookahead else 'off'}, init {fc.init}; {self.total_iters} iterations for "
                f"{fc.num_frames} frame{'s' if fc.num_frames != 1 else ''}; {self.samples_per_iteration} samples "
                f"per iteration{self._expert_note()}, max-batch {fc.max_batch} -> {mb}")

    def _expert_note(self) -> str:
        """' (expert calls: W windows + S straddling)' for a model with two experts, else ''."""
        boundary = getattr(self.model, "expert_boundary", None)
        if boundary is None:
            return ""
        windows, straddling = window_calls(self.plan, self.sched.timestep_list, boundary)
        return f" (expert calls: {windows} windows + {straddling} straddling the experts' boundary)"

    @property
    def samples_per_iteration(self) -> int:
        """Network samples per iteration: windows x guidance branches, a window that straddles two experts' boundary
        counted twice (it runs through both)."""
        s = self.cfg.sampling
        one = s.cfg == 1.0 and s.cfg_2 in (None, 1.0)
        branches = 1 if one else 2  # guidance 1: the conditional branch alone
        boundary = getattr(self.model, "expert_boundary", None)
        if boundary is None:
            return samples_per_iteration(self.plan, branches)
        return samples_per_iteration(self.plan, branches, self.sched.timestep_list, boundary)

    def run(self) -> tuple[int, bool]:
        """Returns (frames written, partial)."""
        try:
            return self._run()
        except _CUDA_OOM:
            raise OutOfMemory(self._oom_advice()) from None

    def _oom_advice(self) -> str:
        if self.phase == "base clip":
            return ("CUDA out of memory in the base clip (one U-Net call on 2 samples of "
                    f"{self.window} frames): lower --height/--width or use --dtype fp16")
        per_call = self.max_batch or self.samples_per_iteration
        hint = f"run again with --max-batch {max(1, per_call // 2)} (fewer samples per U-Net call: less memory, slower)"
        if self.resume_file.exists():
            hint += f", plus --resume to continue from {self.resume_file.name}"
        return f"CUDA out of memory with {per_call} samples per U-Net call: {hint}"

    def _run(self) -> tuple[int, bool]:
        saved_max_batch = self.resume() if self.cfg.output.resume else self.start()
        self.choose_max_batch(saved_max_batch)
        self.log(self.describe())
        for frame_id in self.anchors() or {}:
            self.log(f"--image: its latent is the first frame (id {frame_id}), pinned at timestep 0 in every window "
                     f"that holds it while it is in the queue (up to iteration {frame_id // self.plan.block + 1} of "
                     f"{self.total_iters}); after that FIFO goes on from its own frames")
        denoise = self.denoiser()
        self.techniques.set_phase("fifo")
        writer = self.open_writer()
        self.phase = "fifo"
        t0 = time.perf_counter()
        try:
            with graceful_interrupt(self.stop_flag) as stop:
                self.iterate(denoise, writer, stop)
        except (KeyboardInterrupt, OSError) as e:
            return self.stop(e, writer, t0)
        except BaseException:
            self.latents_log.close()
            writer.abort()
            raise
        return self.finish(writer, t0)

    def resume(self) -> int | None:
        """Continue from the saved state: queue, noise generator, emitted count and image tokens."""
        state = load_state(self.resume_file, self.chash, self.model.device)
        self.queue, self.iteration, self.emitted = state.queue, state.iteration, state.emitted
        self.noise.set_state(state.rng_state)
        self.tail.load_state_dict({k[5:]: v for k, v in state.extras.items() if k.startswith("tail.")})
        if "image_tokens" in state.extras:
            self.cond_state.image = state.extras["image_tokens"]
        saved = state.extras.get("max_batch")
        self.check_threads(state.extras.get("threads"))
        self.techniques.load_state_dict(state.extras, self.model.device)  # the per-frame caches
        if not self.log_path.exists():
            raise ConfigError(f"--resume: the latent log {self.log_path} is missing; cannot rebuild the video")
        self.log(f"resuming at output frame {self.emitted} (iteration {self.iteration})")
        return None if saved is None else int(saved.reshape(-1)[0])

    def check_threads(self, saved: torch.Tensor | None) -> None:
        """CPU kernels split their sums by thread, so a resume on another thread count continues with other
        rounding: say so (the run still continues; OMP_NUM_THREADS restores the saved count)."""
        now = torch.get_num_threads()
        if saved is not None and self.model.device.type == "cpu" and int(saved.reshape(-1)[0]) != now:
            was = int(saved.reshape(-1)[0])
            self.log(f"warning: the state was saved with {was} CPU threads and this run has {now}: the rest of the "
                     f"video will differ in its last bits from an uninterrupted run (set OMP_NUM_THREADS={was} to "
                     "continue bit for bit)")

    def start(self) -> None:  # returns None: no saved max-batch
        """Build the initial queue (from a base clip unless ``--init noise``), then seed its image tokens."""
        t0 = time.perf_counter()
        self.techniques.set_phase("base")
        self.phase = "base clip"
        base = self.base_clip() if self.cfg.fifo.init != "noise" else None
        self.queue = init_queue(self.plan, self.sched, self.noise, self.cfg.fifo.init,  # type: ignore[arg-type]
                                base=base, shape=(1, self.model.cfg.channels, *self.lat_hw))
        if self.cfg.conditioning.latent_seed:
            self.cond_state.image = seed_image_tokens(self.model, self.queue.latents)
        self.timings["base_s"] = time.perf_counter() - t0
        self.iteration, self.emitted = 0, 0

    def base_clip(self) -> torch.Tensor:
        """One plain clip of ``window`` frames under the first prompt: the queue's starting point."""
        cfg, model = self.cfg, self.model
        den = cfg_denoiser(unet_network(model.unet, cfg.sampling.fps), self.cond_state.conds()[:1], self.uncond,
                           guidance_of(model, cfg))
        x_T = self.noise.randn((1, model.cfg.channels, self.window, *self.lat_hw))
        progress = self.progress
        first_kept = base_frame_for_slot(self.plan.frames - self.plan.f, self.plan, self.cfg.fifo.init)  # type: ignore
        return sample_clip(den, x_T, self.sched, noise=self.noise, callback=base_clip_progress(progress, self.sched),
                           anchors=base_anchors(self.cond_state, first_kept))

    def anchors(self) -> dict[int, torch.Tensor] | None:
        """The queue's anchor: a given first frame is the first kept frame (the id after the warm-up), pinned while
        it is in the queue; afterwards FIFO goes on from its own frames."""
        anchor = self.cond_state.anchor
        return None if anchor is None else {self.plan.head + self.warmup: anchor}

    def choose_max_batch(self, saved: int | None) -> None:
        """Samples per U-Net call: kept from the saved state on resume (chunking changes float rounding, so a
        resumed video stays bitwise equal), else ``--max-batch`` (``auto`` measures; see fifo/autobatch.py).
        A multi-process run keeps the per-rank rule of ``fifo/parallel.py``."""
        fc = self.cfg.fifo
        if saved is not None and parse_max_batch(fc.max_batch) == "auto":
            self.max_batch, how = (saved or None), "auto: kept from the saved state"
        elif self.executor is not None:
            self.max_batch = resolve_max_batch(fc.max_batch, self.model.device, self.model, self.lat_hw, self.window)
            how = "per rank (multi-process)"
        else:
            reserve = store_reserve(enabled_acceleration(self.cfg.techniques), self.costs, self.lat_hw,
                                    self.plan.length, self.model.dtype)
            choice = choose_max_batch(fc.max_batch, self.model, self.lat_hw, self.window, self.uncond,
                                      self.samples_per_iteration, reserve)
            self.max_batch, how = choice.value, choice.how
        self.runtime.update(device=str(self.model.device), dtype=dtype_name(self.model.dtype),
                            max_batch=self.max_batch or self.samples_per_iteration, max_batch_how=how,
                            threads=torch.get_num_threads())

    def denoiser(self) -> WindowDenoiser:
        prompt_of = prompt_schedule(self.cfg, self.plan, self.warmup, self.model.latent_frames)
        s = self.cfg.sampling
        if self.executor is not None:
            from ..techniques import check_distributed

            try:
                check_distributed(self.cfg.techniques)
            except ValueError as e:
                raise ConfigError(str(e)) from None
        return fifo_denoiser(self.model, self.cond_state, self.uncond, guidance_of(self.model, self.cfg), s.fps,
                             self.max_batch, prompt_of, self.executor, self.techniques)

    def open_writer(self) -> VideoWriter:
        """The streaming writer, with the frames of an interrupted run re-decoded from the latent log (which also
        rebuilds a causal VAE's cache)."""
        out = self.cfg.output
        writer = VideoWriter(self.out_path, out.output_fps, overwrite=out.overwrite or out.resume)
        self.latents_log.open(keep=self.emitted)
        self.decoder.reset()
        self.written = 0
        for k in range(self.emitted):  # rebuild the video written before the interruption
            z = self.latents_log.read(k, k + 1)[0].to(self.model.device)
            self.write_frames(writer, self.decoder.decode(z))
        return writer

    def write_frames(self, writer: VideoWriter, frames: torch.Tensor, notify: bool = False) -> None:
        """Append the output frames one latent frame decoded to (B, 3, k, H, W), up to ``--num-frames``;
        ``notify``: hand each to ``on_frame`` (a live viewer) after it is written."""
        for i in range(frames.shape[2]):
            if self.written >= self.cfg.fifo.num_frames:  # type: ignore[operator]
                return
            write_frame(writer, frames[0, :, i], self.written, self.frames_dir)
            if notify and self.on_frame is not None:  # after the write: a viewer never sees a frame the file lacks
                self.on_frame(frames[0, :, i], self.written)
            self.written += 1

    def iterate(self, denoise: WindowDenoiser, writer: VideoWriter, stop: StopFlag) -> None:
        """The diagonal loop: each iteration past the warm-up logs, decodes and writes one frame per block frame."""
        cfg = self.cfg
        reseed_every = cfg.conditioning.latent_seed_every
        stepper = FifoStepper(self.plan, self.step_sched, 1, self.lat_hw, self.model.cfg.channels, self.model.device,
                              anchors=self.anchors())
        k = self.plan.block
        while self.iteration < self.total_iters:
            if stop.requested:
                raise KeyboardInterrupt
            self.consistent = False
            t_iter = time.perf_counter()
            z, _ = stepper.step(denoise, self.queue, self.noise, iteration=self.iteration,  # type: ignore[arg-type]
                                tail=self.tail)
            self.techniques.end_iteration(self.queue.first_id)  # publish this iteration's cache writes
            check_finite(z, f"FIFO iteration {self.iteration}")
            if cfg.compile and "compile_warmup_s" not in self.timings:  # excluded from fifo_s: see finish()
                self.timings["compile_warmup_s"] = time.perf_counter() - t_iter
            before = self.emitted
            popped = self.iteration * k  # frames dequeued before this iteration's block
            self.iteration += 1
            decoded = []
            for j in range(k):  # the block's frames in order; warm-up frames and frames past the end are dropped
                if popped + j < self.warmup or self.emitted >= self.latent_count:
                    continue
                zj = z[:, :, j : j + 1]
                self.latents_log.append(zj)
                self.emitted += 1
                frames = self.decoder.decode(zj)
                decoded.append(frames)
                if reseed_every and self.emitted % reseed_every == 0:  # fresh tokens, same context length
                    self.cond_state.image = frame_image_tokens(self.model, frames[0, :, -1])
            self.consistent = True
            for frames in decoded:
                self.write_frames(writer, frames, notify=True)
            every = cfg.output.checkpoint_every
            if every and self.emitted // every > before // every:  # crossed a multiple of K this iteration
                save_state(self.resume_file, self.snapshot())
            if self.progress:
                self.progress("fifo", self.iteration, self.total_iters)

    def snapshot(self) -> FifoState:
        extras = {"image_tokens": self.cond_state.image} if self.cond_state.image is not None else {}
        extras["max_batch"] = torch.tensor([self.max_batch or 0])  # 0: one call per iteration
        extras["threads"] = torch.tensor([torch.get_num_threads()])  # CPU rounding depends on it
        extras.update({f"tail.{k}": v for k, v in self.tail.state_dict().items()})  # rescheduling history
        extras.update(self.techniques.state_dict())  # the per-frame caches: a resumed run continues bit for bit
        return FifoState(self.queue, self.noise.get_state(), self.iteration, self.emitted,  # type: ignore[arg-type]
                         self.chash, extras, self.cfg.sampling.seed)

    def stop(self, e: BaseException, writer: VideoWriter, t0: float) -> tuple[int, bool]:
        """Interrupted (or the disk is full): save the state if consistent; keep a playable partial on an
        interrupt, re-raise an OSError."""
        self.latents_log.close()
        if self.consistent:
            try:
                save_state(self.resume_file, self.snapshot())
                self.log(f"state saved to {self.resume_file}")
            except OSError as e2:
                self.log(f"could not save the resume state ({e2})")
        elif self.resume_file.exists():
            self.log(f"stopped mid-iteration; {self.resume_file} holds the last checkpoint")
        if isinstance(e, KeyboardInterrupt):
            part = writer.close_partial()
            n = self.written
            if part is None:
                self.log(f"interrupted during the warm-up, before the first output frame (iteration {self.iteration})")
            else:
                self.log(f"interrupted: {n} frame{'' if n == 1 else 's'} kept in {part}")
            self.timings["fifo_s"] = time.perf_counter() - t0
            return self.written, True
        writer.abort()
        raise e

    def finish(self, writer: VideoWriter, t0: float) -> tuple[int, bool]:
        """Publish the video, save ``--save-latents``, and delete the resume state and the latent log."""
        self.timings["fifo_s"] = time.perf_counter() - t0 - self.timings.get("compile_warmup_s", 0.0)
        self.timings["s_per_frame"] = self.timings["fifo_s"] / max(1, self.written)
        self.latents_log.close()
        writer.close()
        if self.cfg.output.save_latents:  # the log's (N, 1, C, 1, h, w) records as (1, C, N, h, w)
            save_latents(self.files.latents, self.latents_log.read(0, self.emitted)[:, :, :, 0].permute(1, 2, 0, 3, 4))
        self.log_path.unlink(missing_ok=True)
        self.resume_file.unlink(missing_ok=True)
        return self.written, False


def base_clip_progress(progress: Progress | None, sched: Any) -> Callable[[int, int], None] | None:
    """The base clip's step callback: a progress task named by its sampler, e.g. "base clip (DDIM steps)"."""
    if progress is None:
        return None
    task = f"base clip ({sched.label} steps)"
    return lambda done, total: progress(task, done, total)


def write_frame(writer: VideoWriter, frame: torch.Tensor, k: int, frames_dir: Path | None) -> None:
    """Append one frame to the video (and to ``--save-frames``' PNG folder)."""
    writer.append(frame)
    if frames_dir is not None:
        save_frame_png(frames_dir, frame, k)

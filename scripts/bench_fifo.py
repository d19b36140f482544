"""Benchmark the FIFO-Diffusion loop: reference-style vs batched iterations, U-Net calls, peak memory.

Prints ONE markdown table, ``tiny`` (recipe weights) and ``medium`` (random init, compute-bound
U-Net) side by side:

* seconds per output frame (= per FIFO iteration) of
  (a) reference-style: windows one at a time, cond and uncond as two separate U-Net passes, and
  (b) ours: all windows of an iteration and both CFG branches in ONE U-Net call;
  and their ratio. Only FIFO iterations are timed: the queue starts from pure noise
  (``init_queue(..., "noise")``), so no base clip is sampled; 1 warm-up iteration per mode, then K
  iterations, (a) and (b) interleaved, median reported.
* U-Net calls per output frame for (a) and (b), counted by a wrapper around the network.
* peak RSS of the FULL pipeline (``pipeline.generate``: base clip, FIFO, VAE decode, streaming mp4)
  on ``tiny`` after a short and a long video, each in a fresh subprocess (``--rss-child N``), and
  their ratio (~1.0: memory does not grow with the video length).

    python scripts/bench_fifo.py            # default sizes (estimated ~5 min on 2 idle CPU cores)
    python scripts/bench_fifo.py --quick    # smoke test (< 60 s on an idle machine)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import fifo_longvid
from fifo_longvid.backends.videocrafter.load import build_model
from fifo_longvid.backends.videocrafter.presets import tiny
from fifo_longvid.backends.videocrafter.unet import UNetConfig
from fifo_longvid.diffusion.guidance import NetworkFn, cfg_denoiser, unet_network
from fifo_longvid.diffusion.noise import NoiseSource
from fifo_longvid.fifo.init import init_queue
from fifo_longvid.fifo.queue import FifoPlan
from fifo_longvid.fifo.sampler import FifoStepper, WindowBatch
from fifo_longvid.run.config import build_run_config
from fifo_longvid.run.pipeline import generate

PROMPT = "a red fox running"
CFG_SCALE = 12.0  # the CLI default
ETA = 1.0  # the CLI default (stochastic DDIM: per-step noise is drawn too)
FPS = 8
# Same compute-bound U-Net as scripts/bench_unet.py (VideoCrafter2's layout at 0.4x width).
MEDIUM_UNET = UNetConfig(model_channels=128, channel_mult=(1, 2, 2, 2), num_head_channels=64, context_dim=256)
# Full-pipeline RSS runs (tiny, recipe weights): small enough that 512 frames are affordable on a CPU.
RSS_OVERRIDES = ["fifo.window=4", "fifo.partitions=2", "sampling.height=64", "sampling.width=64"]


from benchlib import fmt_t, load_note, report  # noqa: E402 (scripts/ is on sys.path)


@dataclasses.dataclass
class Case:
    name: str
    latent_hw: int
    window: int
    partitions: int
    iters: int  # timed iterations per mode (after 1 warm-up iteration)


class CountingNet:
    """Wraps the raw network ``(x, t, ctx) -> eps`` and counts calls and samples."""

    def __init__(self, net: NetworkFn) -> None:
        self.net = net
        self.calls = 0
        self.samples = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.samples += x.shape[0]
        return self.net(x, t, ctx)

    def reset(self) -> None:
        self.calls = self.samples = 0


def build_case_model(name: str, latent_hw: int):
    """tiny: the preset with its seeded recipe weights; medium: tiny's ModelConfig with the medium U-Net."""
    if name == "tiny":
        model = fifo_longvid.load_model("tiny", device="cpu")
        cond, uncond = model.encode_text([PROMPT]), model.encode_text([""])
        return model, cond, uncond, "recipe weights, real tiny text encoder"
    cfg = dataclasses.replace(tiny(), name="medium", unet=MEDIUM_UNET, latent_size=(latent_hw, latent_hw),
                              default_window=8)
    torch.manual_seed(0)
    model = build_model(cfg, "cpu").eval().requires_grad_(False)
    # the tiny text encoder emits 64-d tokens; the medium U-Net wants 256-d: use seeded random contexts
    g = torch.Generator().manual_seed(1)
    cond = torch.randn(1, 77, MEDIUM_UNET.context_dim, generator=g)
    uncond = torch.randn(1, 77, MEDIUM_UNET.context_dim, generator=g)
    return model, cond, uncond, "random init (seed 0), seeded random text contexts"


def bench_fifo_case(case: Case) -> dict[str, str]:
    model, cond, uncond, weights = build_case_model(case.name, case.latent_hw)
    plan = FifoPlan(case.window, case.partitions, lookahead=True)
    sched = model.ddim_schedule(plan.steps, ETA)
    shape = (1, model.cfg.channels, case.latent_hw, case.latent_hw)

    modes = {"a": (False, 1), "b": (True, None)}  # name -> (batch_windows, max_batch)
    state: dict[str, tuple[Callable[[], object], CountingNet]] = {}
    for key, (batch_windows, max_batch) in modes.items():
        queue = init_queue(plan, sched, NoiseSource(0), "noise", shape=shape)
        step_noise = NoiseSource(1)
        counter = CountingNet(unet_network(model.unet, FPS))
        den = cfg_denoiser(counter, cond, uncond, CFG_SCALE, max_batch=max_batch)

        def denoise(batch: WindowBatch, den=den) -> torch.Tensor:
            return den(batch.x, batch.t)

        stepper = FifoStepper(plan, sched, 1, (case.latent_hw, case.latent_hw), model.cfg.channels, "cpu",
                              batch_windows=batch_windows)

        def one_iteration(denoise=denoise, queue=queue, noise=step_noise, stepper=stepper) -> None:
            stepper.step(denoise, queue, noise)

        state[key] = (one_iteration, counter)

    for run, counter in state.values():  # warm-up: 1 iteration per mode
        run()
        counter.reset()
    times: dict[str, list[float]] = {k: [] for k in state}
    for _ in range(case.iters):  # interleaved so machine noise hits both modes alike
        for key, (run, _) in state.items():
            t0 = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - t0)
    calls = {k: c.calls / case.iters for k, (_, c) in state.items()}
    samples = {k: c.samples / case.iters for k, (_, c) in state.items()}
    a, b = statistics.median(times["a"]), statistics.median(times["b"])
    u = model.cfg.unet
    return {
        "weights / conditioning": weights,
        "U-Net": f"mc={u.model_channels} mult={u.channel_mult} head_ch={u.num_head_channels} "
                 f"ctx={u.context_dim} ({sum(p.numel() for p in model.unet.parameters()) / 1e6:.1f} M params)",
        "FIFO plan": f"latent {case.latent_hw}x{case.latent_hw}, f={plan.f}, n={plan.n}, lookahead, "
                     f"S={plan.steps}, queue {plan.length}, {len(plan.windows())} windows/iter, "
                     f"cfg {CFG_SCALE:g}, eta {ETA:g}",
        "timed iterations per mode": f"1 warm-up + {case.iters}",
        "(a) reference-style s/frame, median [min-max]": fmt_t(times["a"]),
        "(b) batched s/frame, median [min-max]": fmt_t(times["b"]),
        "(a) / (b) time ratio": f"{a / b:.2f}x",
        "U-Net calls per output frame (a) / (b)": f"{calls['a']:g} / {calls['b']:g}",
        "U-Net samples per output frame (a) / (b)": f"{samples['a']:g} / {samples['b']:g}",
    }




def maxrss_mib(who: int) -> float:
    r = resource.getrusage(who).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def vm_hwm_mib() -> float | None:
    """Linux VmHWM (peak RSS of this address space, reset by exec): a cross-check of ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_child(num_frames: int) -> None:
    """Run the full pipeline once and print its peak RSS as one JSON line (used via --rss-child N)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_run_config(
            flags={"model": "tiny", "device": "cpu", "prompts": [PROMPT], "fifo.num_frames": num_frames,
                   "sampling.seed": 0, "output.path": str(Path(tmp) / "bench.mp4")},
            overrides=RSS_OVERRIDES,
        )
        t0 = time.perf_counter()
        res = generate(cfg, log=lambda _msg: None)
        wall = time.perf_counter() - t0
        out = {"frames": res.frames, "wall_s": wall, "fifo_s": res.timings.get("fifo_s"),
               # RUSAGE_SELF only: the ffmpeg encoder is a separate process
               "peak_rss_mib": maxrss_mib(resource.RUSAGE_SELF), "vm_hwm_mib": vm_hwm_mib(),
               "bytes": res.output.stat().st_size}
    print(json.dumps(out))


def run_rss_child(num_frames: int, threads: int | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", str(num_frames)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"--rss-child {num_frames} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rss_rows(lengths: tuple[int, int], threads: int | None) -> dict[str, str]:
    """Run the two full-pipeline children. Call this BEFORE loading any model in this process: Linux
    keeps ru_maxrss across fork+exec, so a child's figure is max(this process's peak so far, its own)."""
    parent = maxrss_mib(resource.RUSAGE_SELF)
    short, long = (run_rss_child(n, threads) for n in lengths)
    n1, n2 = lengths
    hwm = (f"{short['vm_hwm_mib']:.0f} / {long['vm_hwm_mib']:.0f}" if short["vm_hwm_mib"] is not None
           else "n/a")
    polluted = parent >= min(short["peak_rss_mib"], long["peak_rss_mib"]) - 1
    return {
        "RSS run settings (full pipeline)": "tiny recipe, " + " ".join(RSS_OVERRIDES)
        + f", init first, cfg {CFG_SCALE:g}, eta {ETA:g}, seed 0, VAE decode + streaming H.264 mp4",
        f"peak RSS after {n1} frames (MiB, ru_maxrss, fresh subprocess)": f"{short['peak_rss_mib']:.0f}",
        f"peak RSS after {n2} frames (MiB, ru_maxrss, fresh subprocess)": f"{long['peak_rss_mib']:.0f}",
        f"peak RSS ratio {n2} / {n1} frames": f"{long['peak_rss_mib'] / short['peak_rss_mib']:.3f}",
        f"cross-check: VmHWM {n1} / {n2} frames (MiB); launcher's ru_maxrss":
            f"{hwm}; {parent:.0f}" + (" (NOT below the children: figures are the launcher's)" if polluted else ""),
        f"full pipeline wall s, {n1} / {n2} frames (FIFO loop s/frame)":
            f"{short['wall_s']:.1f} ({short['fifo_s'] / n1:.3f}) / {long['wall_s']:.1f} "
            f"({long['fifo_s'] / n2:.3f})",
    }






def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test: fewer iterations, smaller sizes")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--rss-child", type=int, metavar="N", default=None,
                    help="internal: run the full tiny pipeline for N frames and print its peak RSS as JSON")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child is not None:
        rss_child(args.rss_child)
        return

    if args.quick:
        cases = [Case("tiny", 16, 8, 2, iters=2), Case("medium", 16, 4, 2, iters=2)]
        lengths = (8, 32)
    else:
        cases = [Case("tiny", 16, 8, 2, iters=5), Case("medium", 32, 8, 2, iters=3)]
        lengths = (32, 512)

    t_start = time.perf_counter()
    print(f"torch {torch.__version__} | threads {torch.get_num_threads()} | device cpu ({platform.machine()}) "
          f"| python {platform.python_version()}")
    print(load_note())
    print(f"mode: {'quick' if args.quick else 'default'}; torch.no_grad, seeded noise (NoiseSource 0/1), "
          "(a) batch_windows=False + cfg max_batch=1, (b) batch_windows=True + max_batch=None")
    rss = rss_rows(lengths, args.threads)  # first, while this process is still small (see rss_rows)
    with torch.no_grad():
        results = [bench_fifo_case(c) for c in cases]
    results[0].update(rss)  # tiny column only
    report([c.name for c in cases], results, t_start)


if __name__ == "__main__":
    main()

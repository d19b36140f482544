"""Full-size GPU benchmark of the FIFO loop: reference style vs ours in fp16, bf16 and compiled.

Builds the full VideoCrafter2 U-Net and VAE with random weights materialised directly on the device (no
checkpoint needed) and times FIFO iterations (one iteration = one output frame: every window through the
U-Net at its per-frame timesteps, the DDIM update, then the head frame decoded by the VAE). Prints ONE
markdown table, one column per mode:

  (a) reference style: fp32, windows one by one, cond and uncond as separate U-Net calls;
  (b) ours, fp16: all windows and both CFG branches batched (``--max-batch auto``), fp32 queue;
  (c) ours, bf16;
  (d) ours, fp16 + ``torch.compile`` of the U-Net (compile warm-up excluded).

Rows: s per output frame (median of the timed iterations after warm-up), peak device memory, FLOPs per
output frame (``torch.utils.flop_counter`` on the meta device: U-Net calls x their FLOPs, plus one VAE
decode), achieved FLOP/s, and that over a plain matmul of the same dtype measured in the same run.

    python scripts/bench_gpu.py                                  # 320x512, f=16, n=4, lookahead, cfg 12 (CUDA)
    python scripts/bench_gpu.py --device cpu --config medium     # smoke mode: runs anywhere, small sizes
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from collections.abc import Callable

import torch
from benchlib import load_note, report  # noqa: E402 (scripts/ is on sys.path)
from torch.utils.flop_counter import FlopCounterMode

from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
from fifo_longvid.diffusion.noise import NoiseSource
from fifo_longvid.diffusion.schedule import make_ddim_schedule, train_schedule
from fifo_longvid.fifo.autobatch import cpu_rule, cuda_rule
from fifo_longvid.fifo.init import init_queue
from fifo_longvid.fifo.queue import FifoPlan
from fifo_longvid.fifo.sampler import FifoStepper, WindowBatch
from fifo_longvid.models.unet import UNet3D, UNetConfig
from fifo_longvid.models.vae import AutoencoderKL, VAEConfig, decode_video

CFG_SCALE, ETA, FPS, SCALE_FACTOR = 12.0, 1.0, 8, 0.18215
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclasses.dataclass
class Setup:
    unet: UNetConfig
    vae: VAEConfig
    latent_hw: tuple[int, int]
    f: int
    n: int
    warmup: int
    iters: int


def setups(config: str, quick: bool) -> Setup:
    if config == "videocrafter2":
        return Setup(UNetConfig(), VAEConfig(), (40, 64), 16, 4, warmup=2, iters=3 if quick else 6)
    # medium: VideoCrafter2's layout at 0.4x width (as scripts/bench_unet.py), a small VAE, CPU-sized runs
    unet = UNetConfig(model_channels=128, channel_mult=(1, 2, 2, 2), num_head_channels=64, context_dim=256)
    vae = VAEConfig(ch=32, ch_mult=(1, 2, 4, 4))
    return Setup(unet, vae, (8, 8), 4, 1, warmup=1, iters=1 if quick else 2)


def materialise(module_cls: type, cfg: object, device: torch.device, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    """Build on the meta device, allocate on ``device`` and initialise there (no host copy of the weights)."""
    with torch.device("meta"):
        m = module_cls(cfg)
    m = m.to_empty(device=device)
    torch.manual_seed(seed)
    for mod in m.modules():
        if hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    return m.to(dtype).eval().requires_grad_(False)


def count_flops(setup: Setup) -> tuple[float, float]:
    """(U-Net FLOPs of one sample-window forward, VAE FLOPs of one decoded frame), on the meta device."""
    with torch.device("meta"):
        unet, vae = UNet3D(setup.unet), AutoencoderKL(setup.vae)
        x = torch.empty(1, 4, setup.f, *setup.latent_hw)
        with FlopCounterMode(display=False) as fc:
            unet(x, torch.zeros(1, setup.f, dtype=torch.long), torch.empty(1, 77, setup.unet.context_dim))
        with FlopCounterMode(display=False) as fv:
            decode_video(vae, torch.empty(1, 4, 1, *setup.latent_hw), SCALE_FACTOR, 1)
    return float(fc.get_total_flops()), float(fv.get_total_flops())


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype) -> float:
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_mode(setup: Setup, device: torch.device, dtype: torch.dtype, reference: bool, compile_unet: bool,
             flops: tuple[float, float]) -> dict[str, str]:
    unet = materialise(UNet3D, setup.unet, device, dtype, seed=0)
    vae = materialise(AutoencoderKL, setup.vae, device, dtype, seed=1)
    if compile_unet:
        unet.compile()
    plan = FifoPlan(setup.f, setup.n, lookahead=True)
    ac = torch.tensor(train_schedule()["alphas_cumprod"], dtype=torch.float32)
    sched = make_ddim_schedule(ac, plan.steps, ETA).to(device)
    g = torch.Generator().manual_seed(2)
    cond = torch.randn(1, 77, setup.unet.context_dim, generator=g).to(device)
    uncond = torch.randn(1, 77, setup.unet.context_dim, generator=g).to(device)
    rows = 2 * len(plan.windows())
    if reference:
        max_batch, how = 1, "1 (cond and uncond separate)"
    else:
        if device.type == "cuda":
            choice = cuda_rule(unet, 4, rows, setup.f, setup.latent_hw, uncond)
        else:
            choice = cpu_rule(setup.unet.model_channels, rows, setup.f, setup.latent_hw)
        max_batch, how = choice.value, choice.how.split(" -> ")[-1]
    den = cfg_denoiser(unet_network(unet, FPS), cond, uncond, CFG_SCALE, max_batch)

    def denoise(batch: WindowBatch) -> torch.Tensor:
        return den(batch.x, batch.t)

    noise = NoiseSource(0, device)
    queue = init_queue(plan, sched, noise, "noise", shape=(1, 4, *setup.latent_hw))
    stepper = FifoStepper(plan, sched, 1, setup.latent_hw, 4, device, batch_windows=not reference)

    def iteration() -> None:
        z, _ = stepper.step(denoise, queue, noise)
        decode_video(vae, z.to(dtype), SCALE_FACTOR, 1).float().cpu()  # the frame leaves the device

    times = timed(iteration, setup.warmup, setup.iters, device)  # the models are freed when this returns
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    s = statistics.median(times)
    unet_f, vae_f = flops
    per_frame = unet_f * rows + vae_f
    achieved = per_frame / s
    return {
        "s per output frame, median [min-max]": f"{s:.3f} [{min(times):.3f}-{max(times):.3f}]",
        "samples per iteration; per U-Net call": f"{rows}; {how}",
        "peak device memory (GiB)": "n/a (CPU)" if device.type != "cuda" else f"{peak:.1f}",
        "FLOPs per output frame (TFLOP)": f"{per_frame / 1e12:.3g}",
        "achieved TFLOP/s": f"{achieved / 1e12:.3g}",
        "achieved / matmul of the same dtype": f"{achieved / MATMUL[dtype]:.0%}",
    }


def timed(fn: Callable[[], None], warmup: int, iters: int, device: torch.device) -> list[float]:
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        out = []
        for _ in range(iters):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            out.append(time.perf_counter() - t0)
    return out


MATMUL: dict[torch.dtype, float] = {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--config", choices=("videocrafter2", "medium"), default="videocrafter2")
    ap.add_argument("--quick", action="store_true", help="fewer timed iterations")
    ap.add_argument("--modes", default="a,b,c,d", help="subset of a,b,c,d")
    ap.add_argument("--half-dtype", choices=("fp16", "bf16"), default="fp16",
                    help="dtype of modes (b) and (d); bf16 on CPUs, where fp16 arithmetic is emulated")
    args = ap.parse_args()
    device = torch.device(args.device)
    setup = setups(args.config, args.quick)
    t_start = time.perf_counter()
    print(f"torch {torch.__version__} | device {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.machine()}) | "
          f"threads {torch.get_num_threads()} | {load_note()}")
    plan = FifoPlan(setup.f, setup.n, True)
    print(f"{args.config}: latent {setup.latent_hw}, f={setup.f}, n={setup.n}, lookahead, {len(plan.windows())} "
          f"windows x 2 CFG branches per iteration, cfg {CFG_SCALE:g}, eta {ETA:g}; random weights; "
          f"{setup.warmup} warm-up + {setup.iters} timed iterations per mode")
    flops = count_flops(setup)
    h = args.half_dtype
    modes = {"a": ("(a) reference, fp32", "fp32", True, False), "b": (f"(b) ours, {h}", h, False, False),
             "c": ("(c) ours, bf16", "bf16", False, False), "d": (f"(d) ours, {h} + compile", h, False, True)}
    chosen = [modes[k] for k in args.modes.split(",")]
    for _, dt, _, _ in chosen:
        MATMUL.setdefault(DTYPES[dt], matmul_flops_per_s(device, DTYPES[dt]))
    results = [run_mode(setup, device, DTYPES[dt], ref, comp, flops) for _, dt, ref, comp in chosen]
    for (_, dt, _, _), r in zip(chosen, results, strict=True):
        r["matmul TFLOP/s (same dtype, this run)"] = f"{MATMUL[DTYPES[dt]] / 1e12:.3g}"
    report([name for name, *_ in chosen], results, t_start)


if __name__ == "__main__":
    main()

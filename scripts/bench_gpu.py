"""Full-size GPU benchmark of the FIFO loop: the reference's way against ours, in fp16, bf16, compiled, cached.

Builds the full VideoCrafter2 U-Net and VAE with random weights materialised directly on the device (no
checkpoint needed) and times FIFO iterations (one iteration = one output frame: every window through the
U-Net at its per-frame timesteps, the DDIM update, then the head frame decoded by the VAE). Prints ONE
markdown table, one column per mode:

  (a) the reference's way: fp32, windows one by one, cond and uncond as separate U-Net calls;
  (b) ours, fp16: all windows and both CFG branches batched (``--max-batch auto``), fp32 queue;
  (c) ours, bf16;
  (d) bf16 + ``torch.compile`` of the U-Net (compile warm-up excluded);
  (e) bf16 + ``configs/fifo_fast.yaml`` (TGATE, CFG-Cache, attention reuse, DeepCache);
  (f) bf16 + compile + the preset's techniques that compile (CFG-Cache; the others are refused with --compile).

Rows: s per output frame (median of the timed iterations after warm-up), FLOPs per output frame (counted with
``torch.utils.flop_counter`` over real eager iterations once the techniques' caches are warm: every U-Net call the
techniques let through, plus the VAE decode; the first, cold iteration computes every cache and overstated a
cached mode's work and achieved FLOP/s by about 1.7x), achieved FLOP/s over a bf16 matmul measured in the same
run, peak device memory, samples per U-Net call, host syncs per iteration (``torch.cuda.set_sync_debug_mode``),
and for compiled modes the warm-up time and the number of graphs dynamo compiled (1 is a whole U-Net; more means
graph breaks or recompiles).

    python scripts/bench_gpu.py                                  # 320x512, f=16, n=4, lookahead, cfg 12 (CUDA)
    python scripts/bench_gpu.py --device cpu --config smoke      # runs anywhere in seconds: checks the script
    python scripts/bench_gpu.py --config wan --quick             # Wan2.1-1.3B (scripts/benchwan.py); tiny on a CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from benchlib import load_note, report  # noqa: E402 (scripts/ is on sys.path)
from torch.utils.flop_counter import FlopCounterMode

from fifo_longvid.backends.videocrafter.unet import UNet3D, UNetConfig
from fifo_longvid.backends.videocrafter.vae import AutoencoderKL, VAEConfig, decode_video
from fifo_longvid.diffusion.guidance import unet_network
from fifo_longvid.diffusion.noise import NoiseSource
from fifo_longvid.diffusion.schedule import make_ddim_schedule, train_schedule
from fifo_longvid.fifo.autobatch import cpu_rule, cuda_rule
from fifo_longvid.fifo.init import init_queue
from fifo_longvid.fifo.queue import FifoPlan
from fifo_longvid.fifo.sampler import FifoStepper, WindowBatch
from fifo_longvid.run.config import build_run_config
from fifo_longvid.techniques import TechniquesConfig, apply_techniques

REPO = Path(__file__).resolve().parents[1]

CFG_SCALE, ETA, FPS, SCALE_FACTOR = 12.0, 1.0, 8, 0.18215
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclasses.dataclass
class Mode:
    name: str
    dtype: str
    reference: bool = False
    compile: bool = False
    fast: bool = False


MODES = {
    "a": Mode("(a) reference, fp32", "fp32", reference=True),
    "b": Mode("(b) ours, fp16", "fp16"),
    "c": Mode("(c) ours, bf16", "bf16"),
    "d": Mode("(d) bf16 + compile", "bf16", compile=True),
    "e": Mode("(e) bf16 + fifo_fast", "bf16", fast=True),
    "f": Mode("(f) bf16 + compile + fifo_fast's CFG-Cache", "bf16", compile=True, fast=True),
}


@dataclasses.dataclass
class Setup:
    unet: UNetConfig
    vae: VAEConfig
    latent_hw: tuple[int, int]
    f: int
    n: int
    warmup: int
    iters: int
    count_warm: int = 10  # eager iterations before FLOPs and samples are counted (the caches fill)
    count_iters: int = 6  # iterations they are counted over


def setups(config: str, quick: bool) -> Setup:
    if config == "videocrafter2":
        return Setup(UNetConfig(), VAEConfig(), (40, 64), 16, 4, warmup=2, iters=3 if quick else 6)
    if config == "smoke":  # the tiny preset's widths at an 8x8 latent: seconds on a CPU
        unet = UNetConfig(model_channels=32, channel_mult=(1, 2, 2, 2), num_head_channels=16, context_dim=64)
        return Setup(unet, VAEConfig(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1), (8, 8), 4, 1, warmup=1,
                     iters=1, count_warm=3, count_iters=2)
    # medium: VideoCrafter2's layout at 0.4x width (as scripts/bench_unet.py), a small VAE, CPU-sized runs
    unet = UNetConfig(model_channels=128, channel_mult=(1, 2, 2, 2), num_head_channels=64, context_dim=256)
    vae = VAEConfig(ch=32, ch_mult=(1, 2, 4, 4))
    return Setup(unet, vae, (8, 8), 4, 1, warmup=1, iters=1 if quick else 2, count_warm=3, count_iters=2)


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


def fast_preset(compile_unet: bool) -> TechniquesConfig:
    """configs/fifo_fast.yaml's techniques; with --compile only the ones that compile (CFG-Cache acts outside the
    U-Net; TGATE, attention reuse and DeepCache decide on the host and are refused with --compile)."""
    cfg = build_run_config(REPO / "configs" / "fifo_fast.yaml").techniques
    if compile_unet:
        cfg.tgate.enabled = cfg.attn_reuse.enabled = cfg.deepcache.enabled = False
    return cfg


def run_mode(setup: Setup, device: torch.device, mode: Mode) -> dict[str, str]:
    dtype = DTYPES[mode.dtype]
    unet = materialise(UNet3D, setup.unet, device, dtype, seed=0)
    vae = materialise(AutoencoderKL, setup.vae, device, dtype, seed=1)
    plan = FifoPlan(setup.f, setup.n, lookahead=True)
    ac = torch.tensor(train_schedule()["alphas_cumprod"], dtype=torch.float32)
    sched = make_ddim_schedule(ac, plan.steps, ETA).to(device)
    g = torch.Generator().manual_seed(2)
    cond = torch.randn(1, 77, setup.unet.context_dim, generator=g).to(device)
    uncond = torch.randn(1, 77, setup.unet.context_dim, generator=g).to(device)
    rows = 2 * len(plan.windows())
    tech = apply_techniques(unet, fast_preset(mode.compile) if mode.fast else None)
    tech.bind(sched)
    tech.set_phase("fifo")
    if mode.reference:
        max_batch, how = 1, "1 (cond and uncond separate)"
    else:
        if device.type == "cuda":
            choice = cuda_rule(unet, 4, rows, setup.f, setup.latent_hw, uncond)
        else:
            choice = cpu_rule(setup.unet.model_channels, rows, setup.f, setup.latent_hw)
        max_batch, how = choice.value, choice.how.split(" -> ")[-1]
    net = tech.wrap_network(unet_network(unet, FPS))
    den = tech.cfg_denoiser(net, cond, uncond, CFG_SCALE, max_batch)
    samples = {"n": 0, "calls": 0}

    def denoise(batch: WindowBatch) -> torch.Tensor:
        return den(batch.x, batch.t)

    noise = NoiseSource(0, device)
    queue = init_queue(plan, sched, noise, "noise", shape=(1, 4, *setup.latent_hw))
    stepper = FifoStepper(plan, sched, 1, setup.latent_hw, 4, device, batch_windows=not mode.reference)
    it = {"k": 0}

    def iteration() -> None:
        z, _ = stepper.step(denoise, queue, noise, iteration=it["k"])
        tech.end_iteration(int(queue.frame_ids[0]))
        it["k"] += 1
        decode_video(vae, z.to(dtype), SCALE_FACTOR, 1).float().cpu()  # the frame leaves the device

    counting = count_samples(unet, samples)
    try:
        flops, per_call = measure_work(iteration, samples, setup.count_warm, setup.count_iters)
        if mode.compile:
            torch._dynamo.reset()
            torch._dynamo.utils.counters.clear()
            unet.compile()
        t_compile = time.perf_counter()
        times = timed(iteration, setup.warmup, setup.iters, device)  # the models are freed when this returns
        t_compile = time.perf_counter() - t_compile - sum(times)
        syncs = count_syncs(iteration, device)
    finally:
        counting.remove()
        tech.remove()
    graphs = torch._dynamo.utils.counters["stats"].get("unique_graphs", 0) if mode.compile else 0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    s = statistics.median(times)
    achieved = flops / s
    row = {
        "s per output frame, median [min-max]": f"{s:.3f} [{min(times):.3f}-{max(times):.3f}]",
        "TFLOP per output frame (counted)": f"{flops / 1e12:.3g}",
        "achieved TFLOP/s": f"{achieved / 1e12:.3g}",
        "achieved / bf16 matmul (this run)": f"{achieved / MATMUL[torch.bfloat16]:.0%}",
        "peak device memory (GiB)": "n/a (CPU)" if device.type != "cuda" else f"{peak:.1f}",
        "samples per iteration; per U-Net call": f"{rows}; {per_call:.1f} ({how})",
        "host syncs per iteration (sync debug mode)": "n/a (CPU)" if syncs is None else str(syncs),
    }
    if mode.compile:
        row["compile warm-up (s); graphs compiled"] = f"{t_compile:.0f}; {graphs}"
    return row


def measure_work(iteration: Callable[[], None], samples: dict[str, int], warm: int,
                 counted: int) -> tuple[float, float]:
    """(FLOPs per iteration, samples per U-Net call), over ``counted`` eager iterations after ``warm`` uncounted
    ones: the steady state of a cached mode, not its cold first iteration (which computes every cache)."""
    with torch.no_grad():
        for _ in range(warm):
            iteration()
        samples["n"] = samples["calls"] = 0
        with FlopCounterMode(display=False) as fc:
            for _ in range(counted):
                iteration()
    return fc.get_total_flops() / counted, samples["n"] / max(samples["calls"], 1)


def count_samples(unet: torch.nn.Module, into: dict[str, int]):
    def hook(module, args):
        into["n"] += int(args[0].shape[0])
        into["calls"] += 1

    return unet.register_forward_pre_hook(hook)


def count_syncs(fn: Callable[[], None], device: torch.device) -> int | None:
    """Host synchronisations in one iteration, less the one that fetches the finished frame (and its decode)."""
    if device.type != "cuda":
        return None
    with torch.no_grad(), warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(x.message) for x in w)


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
    ap.add_argument("--config", choices=("videocrafter2", "medium", "smoke", "wan"), default="videocrafter2",
                    help="wan: Wan2.1-1.3B at full size on a GPU, the tiny Wan config elsewhere (scripts/benchwan.py)")
    ap.add_argument("--quick", action="store_true", help="fewer timed iterations")
    ap.add_argument("--modes", default="a,b,c,d,e,f", help="subset of a,b,c,d,e,f (VideoCrafter configs)")
    ap.add_argument("--block", type=int, default=None, help="K of the Wan block columns (latent frames per noise "
                    "level; default: what --steps resolves, as fifo-gen does)")
    ap.add_argument("--wan-size", choices=("auto", "full", "tiny"), default="auto",
                    help="auto: full size on a GPU, tiny elsewhere")
    ap.add_argument("--json", type=Path, default=None, help="also write the table as JSON here (after every column)")
    args = ap.parse_args()
    device = torch.device(args.device)
    t_start = time.perf_counter()
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(f"torch {torch.__version__} | device {device} ({card}) | threads {torch.get_num_threads()} | {load_note()}")
    if args.config == "wan":
        from benchwan import run_wan

        size = None if args.wan_size == "auto" else args.wan_size == "full"
        names, rows = run_wan(device, args.quick, args.block, size, args.json, card, lambda m: print(m, flush=True))
        report(names, rows, t_start)
        return
    setup = setups(args.config, args.quick)
    plan = FifoPlan(setup.f, setup.n, True)
    print(f"{args.config}: latent {setup.latent_hw}, f={setup.f}, n={setup.n}, lookahead, {len(plan.windows())} "
          f"windows x 2 CFG branches per iteration, cfg {CFG_SCALE:g}, eta {ETA:g}; random weights; "
          f"{setup.count_warm} warm + {setup.count_iters} counted, then {setup.warmup} warm-up + {setup.iters} timed "
          "iterations per mode", flush=True)
    chosen = [MODES[k] for k in args.modes.split(",") if k]
    MATMUL[torch.bfloat16] = matmul_flops_per_s(device, torch.bfloat16)
    matmul = f"{MATMUL[torch.bfloat16] / 1e12:.3g}"
    results: list[dict[str, str]] = [{"error": "not reached (time limit)"} for _ in chosen]
    for i, m in enumerate(chosen):
        try:
            results[i] = run_mode(setup, device, m)
        except Exception as e:  # noqa: BLE001 - one failing mode must not lose the others' rows
            results[i] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        results[i]["bf16 matmul TFLOP/s (this run)"] = matmul
        print(f"{m.name}: {results[i]}", flush=True)
        if args.json:  # after every mode: a time limit loses only the modes not reached
            args.json.write_text(json.dumps({"device": str(device), "card": card, "torch": torch.__version__,
                                             "config": args.config, "columns": [m.name for m in chosen],
                                             "rows": results}, indent=1))
    report([m.name for m in chosen], results, t_start)

if __name__ == "__main__":
    main()

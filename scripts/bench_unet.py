"""Benchmark one VideoCrafter 3D U-Net forward: batch size, attention kernel, achieved FLOP/s.

Prints ONE markdown table with a ``tiny`` and a compute-bound ``medium`` U-Net side by side (random
init, seeded inputs, no_grad, warm-up, median of N interleaved timings):

* forward time at batch 1 and batch 2 (per sample) and their ratio;
* torch SDPA vs a naive attention processor (q @ k^T * scale, softmax, @ v) installed on every
  ``Attention`` module; the two are checked to agree (max abs diff < 1e-3) before timing;
* FLOPs of one forward (``FlopCounterMode``) divided by the measured time, next to a plain fp32
  matmul's GFLOP/s measured in the same run.

    python scripts/bench_unet.py            # default sizes (a few minutes on 2 CPU cores)
    python scripts/bench_unet.py --quick    # smoke test (< 60 s): fewer repeats, smaller medium latent
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange
from torch.utils.flop_counter import FlopCounterMode

from fifo_longvid.backends.videocrafter.attention import Attention
from fifo_longvid.backends.videocrafter.presets import tiny
from fifo_longvid.backends.videocrafter.unet import UNet3D, UNetConfig

# The compute-bound stand-in for VideoCrafter2 (model_channels 320, ctx 1024): same layout, 0.4x width.
MEDIUM_UNET = UNetConfig(model_channels=128, channel_mult=(1, 2, 2, 2), num_head_channels=64, context_dim=256)


from benchlib import fmt_t, load_note, report  # noqa: E402 (scripts/ is on sys.path)


class NaiveAttnProcessor:
    """Textbook attention: softmax(q @ k^T * scale) @ v, materialising the full score matrix."""

    def __call__(self, attn: Attention, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        if attn.image_tokens and context is not None and context.shape[1] > attn.text_context_len:
            raise NotImplementedError("the naive processor does not implement the image-token branch")
        ctx = x if context is None else context
        q = attn.split_heads(attn.to_q(x))
        k = attn.split_heads(attn.to_k(ctx))
        v = attn.split_heads(attn.to_v(ctx))
        scores = torch.einsum("nhld,nhmd->nhlm", q, k) * attn.scale
        if attn.causal and context is None:
            lq, lk = scores.shape[-2:]
            mask = torch.ones(lq, lk, dtype=torch.bool, device=scores.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        out = torch.einsum("nhlm,nhmd->nhld", scores.softmax(dim=-1), v)
        return attn.to_out(rearrange(out, "n h l d -> n l (h d)"))


def attention_modules(unet: torch.nn.Module) -> list[Attention]:
    return [m for m in unet.modules() if isinstance(m, Attention)]


def install_processor(unet: torch.nn.Module, make: Callable[[], object]) -> dict[Attention, object]:
    """Set a fresh processor on every Attention module; return the previous ones (for restore)."""
    saved = {}
    for m in attention_modules(unet):
        saved[m] = m.processor
        m.set_processor(make())  # type: ignore[arg-type]
    return saved


def restore_processors(saved: dict[Attention, object]) -> None:
    for m, proc in saved.items():
        m.set_processor(proc)  # type: ignore[arg-type]


@dataclass
class Case:
    name: str
    cfg: UNetConfig
    frames: int
    hw: int


def make_inputs(cfg: UNetConfig, batch: int, frames: int, hw: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, frames, hw, hw, generator=g)
    t = torch.randint(0, 1000, (batch, frames), generator=g)  # per-frame timesteps, as FIFO uses them
    ctx = torch.randn(batch, 77, cfg.context_dim, generator=g)
    return x, t, ctx


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_interleaved(variants: dict[str, Callable[[], object]], warmup: int | dict[str, int],
                     repeats: int) -> dict[str, list[float]]:
    """Warm each variant up, then time them round-robin so machine noise hits all of them alike."""
    for k, fn in variants.items():
        for _ in range(warmup if isinstance(warmup, int) else warmup[k]):
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for k, fn in variants.items():
            times[k].append(timed(fn))
    return times


def matmul_gflops(n: int, warmup: int, repeats: int) -> float:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    ts = time_interleaved({"mm": lambda: a @ b}, warmup, repeats)["mm"]
    return 2 * n**3 / statistics.median(ts) / 1e9


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()




def extra_rows(unet: UNet3D, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> list[tuple[str, ...]]:
    """Q-cache overhead per forward: plain vs Q-cache (temporal attn1, v=0.9), timed alternately.

    Install/remove happen outside the timed region, so the row measures the per-forward cost only
    (recording encoder queries, blending, the timestep hook).
    """
    from fifo_longvid.techniques.qcache import QCacheConfig
    from fifo_longvid.techniques.qcache import apply as apply_qcache

    cfg = QCacheConfig(enabled=True, v=0.9)
    plain_t, q_t = [], []
    unet(x, t, ctx)
    for _ in range(EXTRA_REPEATS):
        plain_t.append(timed(lambda: unet(x, t, ctx)))
        q = apply_qcache(unet, cfg)
        try:
            unet(x, t, ctx) if not q_t else None  # warm the new processors once
            q_t.append(timed(lambda: unet(x, t, ctx)))
        finally:
            q.remove()
    ratio = statistics.median(q_t) / statistics.median(plain_t)
    return [("forward batch 1, Q-cache v=0.9 (s)", fmt_t(q_t)),
            ("Q-cache overhead per forward (Q-cache / plain)", f"{ratio:.3f} ({(ratio - 1) * 100:+.1f}%)")]


EXTRA_REPEATS = 5


def bench_case(case: Case, warmup: int, repeats: int, mm_gflops: float) -> dict[str, str]:
    torch.manual_seed(0)
    unet = UNet3D(case.cfg).eval().requires_grad_(False)
    x1, t1, c1 = make_inputs(case.cfg, 1, case.frames, case.hw)
    x2, t2, c2 = make_inputs(case.cfg, 2, case.frames, case.hw)
    out: dict[str, torch.Tensor] = {}

    def fwd_sdpa_b1() -> None:
        out["sdpa"] = unet(x1, t1, c1)

    def fwd_sdpa_b2() -> None:
        unet(x2, t2, c2)

    def fwd_naive_b1() -> None:
        saved = install_processor(unet, NaiveAttnProcessor)
        try:
            out["naive"] = unet(x1, t1, c1)
        finally:
            restore_processors(saved)

    # correctness first: the naive processor must compute the same function as SDPA
    fwd_sdpa_b1()
    fwd_naive_b1()
    diff = (out["sdpa"] - out["naive"]).abs().max().item()
    assert diff < 1e-3, f"{case.name}: naive attention differs from SDPA by {diff:.3g}"
    n_attn = len(attention_modules(unet))

    # FLOPs: torch's CPU SDPA kernel is not in FlopCounterMode's registry, so count with the naive
    # processor installed (its einsums are bmm ops, which are counted): same maths, all FLOPs seen.
    saved = install_processor(unet, NaiveAttnProcessor)
    try:
        flops = count_flops(lambda: unet(x1, t1, c1))
    finally:
        restore_processors(saved)
    flops_sdpa_visible = count_flops(lambda: unet(x1, t1, c1))

    # the correctness check above already ran b1 and naive once: it counts as their first warm-up
    warm = {"b1": max(0, warmup - 1), "b2": warmup, "naive": max(0, warmup - 1)}
    times = time_interleaved({"b1": fwd_sdpa_b1, "b2": fwd_sdpa_b2, "naive": fwd_naive_b1}, warm, repeats)
    b1, b2, nv = (statistics.median(times[k]) for k in ("b1", "b2", "naive"))
    achieved = flops / b1 / 1e9
    c = case.cfg
    params = sum(p.numel() for p in unet.parameters())
    rows = {
        "U-Net config": f"mc={c.model_channels} mult={c.channel_mult} head_ch={c.num_head_channels} "
                        f"ctx={c.context_dim}",
        "latent (C x F x H x W)": f"{c.in_channels}x{case.frames}x{case.hw}x{case.hw}",
        "parameters": f"{params / 1e6:.1f} M",
        "attention modules": str(n_attn),
        "GFLOP / forward, batch 1": f"{flops / 1e9:.1f} (SDPA-visible part: {flops_sdpa_visible / 1e9:.1f})",
        "forward batch 1, SDPA (s) median [min-max]": fmt_t(times["b1"]),
        "forward batch 2, SDPA, per sample (s)": fmt_t([v / 2 for v in times["b2"]]),
        "batch-2 per-sample / batch-1 time": f"{b2 / 2 / b1:.3f}",
        "forward batch 1, naive attention (s)": fmt_t(times["naive"]),
        "naive / SDPA time": f"{nv / b1:.3f}",
        "max abs diff naive vs SDPA (asserted < 1e-3)": f"{diff:.2e}",
        "achieved GFLOP/s (batch 1, SDPA)": f"{achieved:.1f}",
        "achieved GFLOP/s (batch 2, SDPA)": f"{2 * flops / b2 / 1e9:.1f}",
        "fp32 matmul GFLOP/s (same run)": f"{mm_gflops:.1f}",
        "achieved / matmul (batch 1)": f"{achieved / mm_gflops:.1%}",
    }
    # --- extra rows hook (see extra_rows above) -------------------------------------------------
    for metric, *value in extra_rows(unet, x1, t1, c1):
        rows[metric] = " ".join(value)
    return rows






def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke test: fewer repeats, smaller medium latent")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--matmul-n", type=int, default=2048, help="size of the reference square matmul")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    tiny_unet = tiny().unet
    if args.quick:
        cases = [Case("tiny", tiny_unet, 16, 16), Case("medium", MEDIUM_UNET, 8, 16)]
        reps = {"tiny": (1, 3), "medium": (1, 2)}  # (warm-up calls incl. the correctness check, timed repeats)
        mm_reps = (2, 5)
    else:
        cases = [Case("tiny", tiny_unet, 16, 16), Case("medium", MEDIUM_UNET, 16, 32)]
        reps = {"tiny": (2, 10), "medium": (1, 5)}
        mm_reps = (3, 10)

    t_start = time.perf_counter()
    print(f"torch {torch.__version__} | threads {torch.get_num_threads()} | device cpu ({platform.machine()}) "
          f"| python {platform.python_version()}")
    print(load_note())
    print(f"mode: {'quick' if args.quick else 'default'}; random-init U-Nets, seeded inputs, torch.no_grad, "
          "timings interleaved, median of N after warm-up")
    with torch.no_grad():
        mm = matmul_gflops(args.matmul_n, *mm_reps)
        results = [bench_case(c, *reps[c.name], mm_gflops=mm) for c in cases]
    for c, r in zip(cases, results, strict=True):
        r["warm-up calls (incl. check) + timed repeats"] = f"{reps[c.name][0]} + {reps[c.name][1]}"
    print(f"fp32 matmul: {args.matmul_n}x{args.matmul_n} @ {args.matmul_n}x{args.matmul_n}")
    report([c.name for c in cases], results, t_start)


if __name__ == "__main__":
    main()

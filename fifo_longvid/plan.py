"""``fifo-gen plan``: will this run fit my card, and how long can it take at best? No weights, no GPU.

The prediction is the cost model of ``fifo/costs.py`` (constants measured at full size on fake CUDA) applied to
the run's resolved settings: weights + queue + one U-Net call of ``--max-batch`` samples + the techniques'
stores at their largest. ``auto`` is the CUDA rule of ``fifo/autobatch.py`` with the measured per-sample bytes in
place of its probe. The time is a floor: FLOPs over the card's dense tensor peak (no kernel reaches it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError
from .fifo import costs as C
from .fifo.autobatch import CUDA_MEMORY_SHARE, cuda_fit
from .fifo.init import iterations_for, warmup_iterations
from .fifo.queue import FifoPlan
from .fifo.sizing import parse_max_batch
from .run.config import RunConfig

GIB = 2**30


@dataclass(frozen=True)
class Card:
    name: str
    gib: float
    tflops_half: float  # dense fp16/bf16 tensor peak, fp32 accumulate
    tflops_fp32: float


CARDS = {
    "3060": Card("RTX 3060 12 GB", 12, 25.6, 12.7),
    "4090": Card("RTX 4090", 24, 165.2, 82.6),
    "a100-40": Card("A100 40 GB", 40, 312, 19.5),
    "a100-80": Card("A100 80 GB", 80, 312, 19.5),
    "h100": Card("H100 SXM 80 GB", 80, 989, 67),
    "h200": Card("H200 141 GB", 141, 989, 67),
}
DEFAULT_CARD = "h100"


@dataclass
class Plan:
    model: str
    height: int
    width: int
    num_frames: int
    iterations: int
    calls_per_frame: int
    tflop_per_frame: float
    max_batch: int
    peak_gib: float
    gpu_gib: float
    fits: bool
    floor_s_per_frame: float
    details: dict[str, Any] = field(default_factory=dict)
    advice: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def card_for(gpu: str | None, gpu_memory: float | None) -> Card:
    """``--gpu NAME`` from the table, ``--gpu-memory GiB`` for any card (its FLOP/s: the named card's, else H100's)."""
    if gpu is not None:
        key = gpu.lower().replace(" ", "").replace("_", "-")
        if key not in CARDS:
            raise ConfigError(f"--gpu {gpu!r} is not in the table; choose one of {', '.join(CARDS)} or give "
                              "--gpu-memory GiB")
        card = CARDS[key]
    else:
        card = CARDS[DEFAULT_CARD]
    if gpu_memory is not None:
        if not gpu_memory > 0:
            raise ConfigError(f"--gpu-memory must be a positive number of GiB, got {gpu_memory}")
        card = Card(f"{gpu_memory:g} GiB card" if gpu is None else card.name, gpu_memory, card.tflops_half,
                    card.tflops_fp32)
    return card


def _dtype(cfg: RunConfig) -> str:
    return "fp16" if cfg.dtype in (None, "auto") else str(cfg.dtype)


def make_plan(cfg: RunConfig, card: Card) -> Plan:
    """The plan of a run config on ``card``: resolved as ``generate`` resolves it (``run/resolve.py``), with the
    family's measured costs."""
    from .backends import FAMILIES
    from .run.resolve import resolve
    from .techniques import enabled, enabled_acceleration

    if cfg.mode != "fifo":
        raise ConfigError("plan covers FIFO runs (--mode fifo)")
    run = resolve(cfg)  # the one registry look-up; refuses what generate refuses (techniques the family lacks)
    c = run.costs()
    if c is None:
        measured = [p for f in FAMILIES for p in f.presets if f.costs(p) is not None]
        raise ConfigError(f"plan knows the costs of {', '.join(measured)}; --config {cfg.model} has no cost table "
                          "(the CPU test models need no plan)")
    cfg = run.config
    fc, s, sz = cfg.fifo, cfg.sampling, run.sizes
    lat_f, mult, tf = sz.latent_factor, sz.size_multiple, sz.temporal_factor
    window, parts, num_frames = fc.window, fc.partitions, fc.num_frames
    latent_frames = 1 + math.ceil((num_frames - 1) / tf)  # output frames -> dequeued latent frames
    height, width = run.height, run.width
    lat = (height // lat_f, width // lat_f)
    plan = FifoPlan(window, parts, fc.lookahead, fc.block, fc.stagger)  # staggering costs nothing more
    branches = 1 if s.cfg == 1.0 and s.cfg_2 in (None, 1.0) else 2  # guidance 1 runs the conditional branch alone
    timesteps = sz.level_timesteps(plan.levels) if sz.level_timesteps and sz.expert_boundary is not None else None
    windows, straddling = C.window_calls(plan, timesteps, sz.expert_boundary)
    rows = branches * (windows + straddling)  # a window straddling two experts runs through both
    iterations = iterations_for(plan, warmup_iterations(plan, fc.init), latent_frames)  # type: ignore[arg-type]
    dtype = _dtype(cfg)
    techs = enabled_acceleration(cfg.techniques)
    all_techs = [t.name for t in enabled(cfg.techniques)]

    total = card.gib * GIB
    weights = C.weights_on_card(c, dtype, total)  # a streamed expert leaves only its largest piece on the card
    queue = 4 * c.channels * plan.length * lat[0] * lat[1] * 3  # fp32 queue, plus a gathered copy and the update's
    per_sample = C.activation_bytes_per_sample(c, lat, window, dtype)
    stores = C.store_bytes_at_largest(c, techs, lat, plan.length, dtype)
    spec = parse_max_batch(fc.max_batch if fc.max_batch is not None else "auto")
    if spec == "auto":
        batch = min(rows, cuda_fit(int(per_sample), int(weights + queue), int(total), int(stores)))
        how = "auto"
    else:
        batch = min(rows, spec or rows)  # type: ignore[type-var]
        how = "fixed"
    iterating = weights + queue + batch * per_sample + stores
    encoding = weights + c.text_visit_bytes  # an offloaded encoder's visit, before the iterations
    peak = max(iterating, encoding)
    # per OUTPUT frame: one iteration dequeues one block of K latent frames = K * ``tf`` output frames (steady state)
    vae = C.vae_flop_per_frame(c, lat) / tf
    flop = C.unet_flop_per_sample(c, lat, window) * rows * C.flop_ratio(all_techs, c) / (tf * plan.block) + vae
    peak_tflops = card.tflops_fp32 if dtype == "fp32" else card.tflops_half
    p = Plan(cfg.model, height, width, num_frames, iterations, math.ceil(rows / batch), round(flop / 1e12, 2),
             batch, round(peak / GIB, 2), card.gib, peak <= total, round(flop / (peak_tflops * 1e12), 3))
    p.details = {"card": card.name, "dtype": dtype, "window": window, "partitions": parts, "block": plan.block,
                 "steps": plan.steps, "lookahead": plan.lookahead, "guidance": s.cfg, "guidance_2": s.cfg_2,
                 "samples_per_iteration": rows, "experts": sz.experts, "windows": windows,
                 "straddling_windows": straddling, "host_gib": round(c.host_bytes / GIB, 2),
                 "resident_experts": C.resident_experts(c, dtype, total),
                 "latent_frames": latent_frames, "frames_per_iteration": tf,
                 "max_batch_how": how, "weights_gib": round(weights / GIB, 2),
                 "text_encoder_gib": round(c.params_fp32 * 4 / GIB, 2) if c.text_visit_bytes else 0.0,
                 "encoding_gib": round(encoding / GIB, 2), "iterating_gib": round(iterating / GIB, 2),
                 "activations_gib": round(batch * per_sample / GIB, 2), "stores_gib": round(stores / GIB, 2),
                 "techniques": all_techs, "unet_tflop_per_frame": round((flop - vae) / 1e12, 2),
                 "vae_tflop_per_frame": round(vae / 1e12, 2),
                 "floor_s_total": round(flop * tf * plan.block * iterations / (peak_tflops * 1e12), 1)}
    if not p.fits and encoding > total:
        need = encoding / GIB
        p.advice = [f"a card of at least {math.ceil(need)} GiB: encoding the prompts holds the weights and the text "
                    f"encoder's largest piece ({need:.1f} GiB){_bigger(need)}"]
    elif not p.fits:
        p.advice = _advice(weights + queue, per_sample, stores, total, rows, lat, mult // lat_f, cfg, c, dtype)
    return p


def _advice(held: float, per_sample: float, stores: float, total: float, rows: int, lat: tuple[int, int],
            step: int, cfg: RunConfig, c: C.FamilyCosts, dtype: str) -> list[str]:
    """What would fit: a smaller --max-batch, fewer techniques, a lower resolution, or a bigger card."""
    out = []
    for b in (8, 4, 2, 1):
        if b < rows and held + b * per_sample + stores <= total:
            out.append(f"--max-batch {b} (peak {(held + b * per_sample + stores) / GIB:.1f} GiB)")
            break
    if stores and held + min(2, rows) * per_sample <= total:
        out.append(f"fewer techniques: their stores take {stores / GIB:.1f} GiB at their largest")
    if not out:
        h, w = lat
        while h > step and w > step:
            h, w = h - step, max(step, round(w * (h - step) / h / step) * step)
            scale = h * w / (lat[0] * lat[1])
            if held + min(2, rows) * per_sample * scale + stores * scale <= total:
                out.append(f"a lower resolution: --height {h * 8} --width {w * 8} with --max-batch 2")
                break
    if not out:
        need = (C.weights_bytes(c, dtype) + 2 * per_sample) / CUDA_MEMORY_SHARE / GIB
        out.append(f"a bigger card: the weights alone take {held / GIB:.1f} GiB; at least {math.ceil(need)} GiB"
                   + _bigger(need))
    return out


def _bigger(need_gib: float) -> str:
    """' (e.g. --gpu NAME or larger)': the smallest card of the table with ``need_gib``."""
    big = min((k for k, card in CARDS.items() if card.gib >= need_gib), key=lambda k: CARDS[k].gib, default=None)
    return f" (e.g. --gpu {big} or larger)" if big else ""


def _memory_line(p: Plan) -> str:
    """Where the peak is: the iterations, or (Wan on a small card) the encoder's visit before them."""
    d = p.details
    parts = (f"weights {d['weights_gib']:.1f} + one U-Net call {d['activations_gib']:.1f} + technique stores "
             f"{d['stores_gib']:.1f} (+ queue)")
    if not d["text_encoder_gib"]:
        return f"predicted peak GPU memory: {p.peak_gib:.1f} GiB = {parts}"
    visit = (f"the text encoder ({d['text_encoder_gib']:.1f} GiB) stays in host memory and computes on the card "
             f"piece by piece ({d['encoding_gib']:.1f} GiB while encoding)")
    if d["iterating_gib"] >= d["encoding_gib"]:
        return f"predicted peak GPU memory: {p.peak_gib:.1f} GiB = {parts}; {visit}"
    return (f"predicted peak GPU memory: {p.peak_gib:.1f} GiB while the prompts are encoded; the iterations hold "
            f"{d['iterating_gib']:.1f} = {parts}; {visit}")


def _expert_calls(d: dict[str, Any]) -> str:
    """' (expert calls: 9 windows + 1 straddling)': two experts run a window whose frames lie on both sides of
    their boundary through both."""
    if d.get("experts", 1) < 2:
        return ""
    return f" (expert calls: {d['windows']} windows + {d['straddling_windows']} straddling the experts' boundary)"


def _guidance(d: dict[str, Any]) -> str:
    """``5`` for one denoiser; ``4 (high noise) / 3 (low noise)`` for two experts."""
    if d.get("experts", 1) > 1 and d.get("guidance_2") is not None:
        return f"{d['guidance']:g} (high-noise expert) / {d['guidance_2']:g} (low-noise expert)"
    return f"{d['guidance']:g}"


def format_plan(p: Plan) -> str:
    d = p.details
    lines = [
        f"model {p.model} ({d['dtype']}), {p.height}x{p.width}, window {d['window']} x {d['partitions']} partitions "
        f"/ block {d['block']} = {d['steps']} steps, lookahead {'on' if d['lookahead'] else 'off'}, guidance "
        f"{_guidance(d)}; {p.num_frames} frames in {p.iterations} FIFO iterations"
        + (f" ({d['latent_frames']} latent frames of {d['frames_per_iteration']} output frames each, the first 1)"
           if d["frames_per_iteration"] > 1 else ""),
        f"per iteration ({d['block']} latent frame{'s' if d['block'] != 1 else ''} out): "
        f"{d['samples_per_iteration']} U-Net samples in {p.calls_per_frame} call(s) of "
        f"{p.max_batch}{_expert_calls(d)}; per output frame {p.tflop_per_frame:.1f} TFLOP "
        f"({d['unet_tflop_per_frame']:.1f} U-Net + "
        f"{d['vae_tflop_per_frame']:.2f} VAE)" + (f", techniques {', '.join(d['techniques'])} (FLOPs from measured "
                                                  "ratios)" if d["techniques"] else ""),
        f"card: {d['card']}, {p.gpu_gib:g} GiB; --max-batch {d['max_batch_how']} -> {p.max_batch}",
        _memory_line(p),
        f"fits: {'yes' if p.fits else 'NO'}",
        f"time floor (FLOPs / the card's peak; a floor, not an estimate): {p.floor_s_per_frame:.2f} s per frame, "
        f"{d['floor_s_total']:.0f} s for the video",
    ]
    if d.get("host_gib"):
        lines.append(f"host memory for the weights: {d['host_gib']:.1f} GiB ({d['experts']} experts in {d['dtype']} "
                     "+ the text encoder in fp32)")
    if d.get("experts", 1) > 1:
        on = d["resident_experts"]
        lines.append(f"experts on the card: {on} of {d['experts']}" + (
            "" if on == d["experts"] else f"; {d['experts'] - on} stream{'s' if d['experts'] - on == 1 else ''} "
            "from host memory, one submodule at a time (the weights above count its largest piece)"))
    if p.advice:
        lines.append("would fit: " + "; or ".join(p.advice))
    return "\n".join(lines)

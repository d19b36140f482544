"""``bench_gpu.py --config wan``: Wan2.1-1.3B on the card, every open question of the DiT path in one run.

Builds Wan2.1-T2V-1.3B's published transformer and VAE configs (``backends/wan/full.py``) with seeded random
weights directly on the device, at 480x832, and runs FIFO through ``generate`` (the path a user runs, the run
config deciding the schedule) with ``--init noise``, stopped after the warm and timed iterations (every iteration
costs the same from the first one on; no base clip is computed). One column per setting:

  (w1) plain FIFO, bf16: window 20 x 4 partitions, lookahead, cfg 5 (16 window-samples per iteration)
  (w2) plain FIFO, fp16
  (w3) ``--steps 50``, bf16, no lookahead (the block ``--steps`` resolves: K = 2, n = 5 at full size; or ``--block``)
  (w4) ``--steps 4 --cfg 1``, bf16, no lookahead (K = 5, n = 1)
  (u)  the UMT5-XXL visit: the encoder's 5.7B fp32 parameters in host memory, computing on the card piece by piece

The block columns pass ``sampling.steps`` (and ``fifo.block`` when the bench's ``--block`` is given) through the
run config; with a config schema that has no ``fifo.block`` field (before the rolling schedule) they are printed as
skipped. Rows: s per output frame (the
median iteration plus the streamed decode of the latent frames it dequeues, over the 4 output frames each latent
frame gives), ``fifo-gen plan``'s floor for the same settings (its counted FLOPs / the card's dense peak) and the
ratio, peak device memory against plan's prediction, samples per DiT call, host syncs inside one FIFO step
(``torch.cuda.set_sync_debug_mode``; 0 expected), and for (u) the encode time, its peak and the bytes that
visit the card. The text encoder of the FIFO columns is a 1-layer UMT5 of the real width (4096) in host memory:
the FIFO columns measure the DiT and the VAE; (u) measures the real encoder once.

UMT5-XXL cannot be downloaded here, so (u) builds its published config (``FULL_TEXT``) on the meta device and
materialises it in host memory one tensor at a time, each filled on the card from a seeded generator and copied
back (21.2 GiB: seconds, where a CPU initialisation takes minutes). Without a GPU the same steps run on the tiny
Wan config (``tiny_wan``), and every value that needs a GPU reads "no GPU"; plan's numbers are then those of the
full-size run on an H100 for the same settings.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fifo_longvid.plan import GIB, card_for, make_plan
from fifo_longvid.run.config import FifoConfig, build_run_config

NO_GPU = "no GPU"
PROMPT = "a red car runs on the beach at night"
BLOCK_MISSING = "skipped: needs --block (issue #30)"


@dataclasses.dataclass
class WanMode:
    key: str
    name: str
    dtype: str
    flags: dict[str, Any] = dataclasses.field(default_factory=dict)
    visit: bool = False  # the UMT5 column


def wan_modes(block: int | None = None) -> list[WanMode]:
    """``block``: K of the block columns; None lets ``--steps`` resolve it, as ``fifo-gen --steps S`` does."""
    # partitions follow from the steps (and the block), as they do for ``fifo-gen --steps S``
    no_look: dict[str, Any] = {"fifo.lookahead": False, "fifo.partitions": None,
                               **({"fifo.block": block} if block else {})}
    k = f" --block {block}" if block else ""
    return [
        WanMode("w1", "(w1) plain FIFO, bf16", "bf16"),
        WanMode("w2", "(w2) plain FIFO, fp16", "fp16"),
        WanMode("w3", f"(w3) --steps 50{k}, no lookahead, bf16", "bf16", {**no_look, "sampling.steps": 50}),
        WanMode("w4", f"(w4) --steps 4{k} --cfg 1, no lookahead, bf16", "bf16",
                {**no_look, "sampling.steps": 4, "sampling.cfg": 1.0}),
        WanMode("u", "(u) UMT5-XXL visit, fp32, offloaded", "bf16", visit=True),
    ]


# the order they run in: the most informative first, so a time limit costs the least (the table keeps the order above)
RUN_ORDER = ("w1", "w4", "w3", "u", "w2")


def has_block() -> bool:
    return "block" in {f.name for f in dataclasses.fields(FifoConfig)}


@dataclasses.dataclass
class WanSetup:
    full: bool
    flags: dict[str, Any]  # the run config's settings shared by every FIFO column
    warm: int
    timed: int
    decode_frames: int

    @property
    def label(self) -> str:
        return "wan (Wan2.1-T2V-1.3B, full size)" if self.full else "wan, tiny config (tiny_wan: no GPU)"


def wan_setup(full: bool, quick: bool) -> WanSetup:
    base = {"fifo.init": "noise", "sampling.seed": 0, "prompts": [PROMPT], "fifo.max_batch": "auto"}
    if full:
        flags = {**base, "model": "wan", "sampling.height": 480, "sampling.width": 832, "fifo.window": 20,
                 "fifo.partitions": 4, "fifo.num_frames": 81}
        return WanSetup(True, flags, warm=1, timed=2 if quick else 4, decode_frames=3)
    flags = {**base, "model": "tiny_wan", "sampling.height": 32, "sampling.width": 32, "fifo.window": 4,
             "fifo.partitions": 2, "fifo.num_frames": 9}
    return WanSetup(False, flags, warm=1, timed=2, decode_frames=2)


# -- the model -------------------------------------------------------------------------------------------------
def standin_text_encoder(width: int) -> torch.nn.Module:
    """A 1-layer UMT5 of the real width: the FIFO columns need the context's shape, not UMT5-XXL's cost."""
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(vocab_size=64, d_model=width, d_kv=8, d_ff=16, num_layers=1, num_heads=2,
                     relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                     dropout_rate=0.0)
    torch.manual_seed(2)
    return UMT5EncoderModel(cfg).eval()


def build_wan(full: bool, device: torch.device, dtype: str) -> Any:
    """The backend object a user's run gets, with seeded random weights built on ``device`` (full size) or the
    ``tiny_wan`` preset."""
    from fifo_longvid.backends import load_backend

    if not full:
        return load_backend("tiny_wan", None, str(device), dtype)
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from fifo_longvid.backends.placement import resolve_dtype
    from fifo_longvid.backends.wan.full import FULL_MAX_LENGTH, FULL_SCHEDULER, FULL_TRANSFORMER, FULL_VAE
    from fifo_longvid.backends.wan.model import Wan, WanConfig
    from fifo_longvid.backends.wan.tiny import tiny_tokenizer

    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: no host copy of the DiT
        transformer = WanTransformer3DModel(**FULL_TRANSFORMER)
        vae = AutoencoderKLWan(**FULL_VAE)
    model = Wan(WanConfig(), transformer.eval(), vae.eval(), standin_text_encoder(FULL_TRANSFORMER["text_dim"]),
                tiny_tokenizer(FULL_MAX_LENGTH), FULL_SCHEDULER, {"weights": "seeded random (bench)"})
    model.cast(resolve_dtype(dtype, device))
    return model.place(device, offload_text=device.type == "cuda").eval().requires_grad_(False)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- plan's prediction -----------------------------------------------------------------------------------------
def predicted(setup: WanSetup, mode: WanMode, batch: str, gib: float) -> Any:
    """``fifo-gen plan`` for the full-size run of the same settings (the tiny config has no cost table)."""
    flags = {**setup.flags, **mode.flags, "model": "wan", "dtype": mode.dtype, "fifo.max_batch": batch}
    if not setup.full:  # plan speaks of the full-size run (its own max-batch); the smoke checks that it answers
        flags.update({"sampling.height": 480, "sampling.width": 832, "fifo.window": 20, "fifo.max_batch": "auto",
                      "fifo.partitions": mode.flags.get("fifo.partitions", 4)})  # None: what --steps resolves
    return make_plan(build_run_config(flags=flags), card_for(None, gib))


# -- one FIFO column -------------------------------------------------------------------------------------------
class IterationClock:
    """``generate``'s progress callback: times the iterations, asks the run to stop after ``warm + timed``, and
    counts host syncs inside the FIFO step of the last timed iteration (a wrapper around ``FifoStepper.step``)."""

    def __init__(self, warm: int, timed: int, device: torch.device, stop: Any):
        self.warm, self.timed, self.device, self.stop = warm, timed, device, stop
        self.marks: list[float] = []
        self.syncs: int | None = None
        self._count = False

    def progress(self, task: str, done: int, total: int) -> None:
        if task != "fifo":
            return
        sync(self.device)
        self.marks.append(time.perf_counter())
        if len(self.marks) == self.warm + self.timed - 1:
            self._count = self.device.type == "cuda"
        if len(self.marks) >= self.warm + self.timed:
            self.stop.requested = True

    def times(self) -> list[float]:
        m = self.marks[self.warm - 1:]
        return [b - a for a, b in zip(m, m[1:], strict=False)]

    def wrap_step(self, step: Callable[..., Any]) -> Callable[..., Any]:
        clock = self

        def counted(stepper: Any, *args: Any, **kwargs: Any) -> Any:
            if not clock._count:
                return step(stepper, *args, **kwargs)
            clock._count = False
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    return step(stepper, *args, **kwargs)
                finally:
                    torch.cuda.set_sync_debug_mode(0)
                    clock.syncs = sum("synchroniz" in str(x.message) for x in w)

        return counted


def run_fifo(model: Any, setup: WanSetup, mode: WanMode, device: torch.device,
             decode: tuple[float, float | None], gib: float) -> dict[str, str]:
    """One FIFO column; ``decode``: the streamed decode's (s per latent frame, peak GiB) in this dtype."""
    from fifo_longvid.fifo.sampler import FifoStepper
    from fifo_longvid.interrupts import StopFlag
    from fifo_longvid.run.pipeline import generate

    if "sampling.steps" in mode.flags and not has_block():
        return {"s per output frame, median [min-max]": BLOCK_MISSING}
    decode_s, decode_peak = decode
    stop = StopFlag()
    clock = IterationClock(setup.warm, setup.timed, device, stop)
    step = FifoStepper.step
    with tempfile.TemporaryDirectory() as td:
        cfg = build_run_config(flags={**setup.flags, **mode.flags, "device": str(device), "dtype": mode.dtype,
                                      "output.path": str(Path(td) / "bench.mp4")})
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        FifoStepper.step = clock.wrap_step(step)  # type: ignore[method-assign]
        try:
            res = generate(cfg, model=model, progress=clock.progress, log=lambda m: None, stop=stop)
        finally:
            FifoStepper.step = step  # type: ignore[method-assign]
        runtime = json.loads(Path(res.sidecar).read_text()).get("runtime", {})
    peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
    ts = clock.times()
    if not ts:
        raise RuntimeError(f"the run stopped after {len(clock.marks)} iterations; {setup.warm + setup.timed} needed")
    per_iter = statistics.median(ts)
    latents_per_iter = int(getattr(cfg.fifo, "block", None) or 1)  # resolved by the run: K latent frames out
    tf = model.temporal_factor
    def per_frame(t: float) -> float:
        return (t + latents_per_iter * decode_s) / (latents_per_iter * tf)

    s = per_frame(per_iter)
    batch = runtime.get("max_batch")
    p = predicted(setup, mode, str(batch or "auto"), gib)
    gpu = device.type == "cuda" and setup.full
    peak_tflops = card_for(None, gib).tflops_half * 1e12
    dit_floor = p.details["unet_tflop_per_frame"] * 1e12 * tf / peak_tflops  # one latent frame = tf output frames
    vae_floor = p.details["vae_tflop_per_frame"] * 1e12 * tf / peak_tflops
    row = {
        "s per output frame, median [min-max]": f"{s:.3f} [{per_frame(min(ts)):.3f}-{per_frame(max(ts)):.3f}]",
        "s per FIFO iteration (DiT step, no decode), median; floor": f"{per_iter:.3f}; "
                                                                     f"{dit_floor * latents_per_iter:.3f}",
        "floor: plan's FLOPs / the card's dense peak (s per output frame)": f"{p.floor_s_per_frame:.3f} "
                                                                           f"({p.tflop_per_frame:.0f} TFLOP)",
        "measured / floor": f"{s / p.floor_s_per_frame:.1f}x" if gpu else NO_GPU,
        "peak device memory (GiB)": f"{peak:.2f}" if peak is not None else NO_GPU,
        "plan: predicted peak (GiB)": f"{p.details['iterating_gib']:.2f} (iterating; {p.peak_gib:.2f} overall)",
        "measured / predicted peak": f"{peak / p.details['iterating_gib']:.2f}" if gpu and peak else NO_GPU,
        "samples per DiT call (how chosen); plan's samples per iteration": f"{batch} ({runtime.get('max_batch_how')}"
                                                                           f"); {p.details['samples_per_iteration']}",
        "host syncs in one FIFO step (sync debug mode)": NO_GPU if device.type != "cuda" else (
            "n/a (the FIFO stepper was not seen)" if clock.syncs is None else str(clock.syncs)),
        "streamed decode: s per latent frame (4 output frames); floor; peak GiB": f"{decode_s:.3f}; {vae_floor:.4f}; "
        + (f"{decode_peak:.2f}" if decode_peak is not None else NO_GPU),
    }
    return row


def decode_time(model: Any, setup: WanSetup, device: torch.device) -> tuple[float, float | None]:
    """(s per latent frame in steady state, peak GiB) of the streamed causal decode at the run's latent size."""
    h = int(setup.flags["sampling.height"]) // model.latent_factor
    w = int(setup.flags["sampling.width"]) // model.latent_factor
    dec = model.frame_decoder()
    g = torch.Generator().manual_seed(4)
    z = [torch.randn(1, model.cfg.channels, 1, h, w, generator=g).to(device) for _ in range(setup.decode_frames + 2)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        dec.decode(z[0])  # the first latent gives 1 frame; the cache fills
        dec.decode(z[1])
        ts = []
        for zi in z[2:]:
            sync(device)
            t0 = time.perf_counter()
            dec.decode(zi).float().cpu()  # the frames leave the device, as the writer takes them
            ts.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
    return statistics.median(ts), peak


# -- the UMT5 visit --------------------------------------------------------------------------------------------
def full_umt5(device: torch.device) -> torch.nn.Module:
    """UMT5-XXL's encoder (``FULL_TEXT``) with seeded random weights in host memory: built on meta, each tensor
    allocated on the host and filled on ``device`` (weights ~ N(0, 1/fan_in), embeddings N(0, 1), norms 1)."""
    from transformers import UMT5Config, UMT5EncoderModel

    from fifo_longvid.backends.wan.full import FULL_TEXT

    with torch.device("meta"):
        enc = UMT5EncoderModel(UMT5Config(**FULL_TEXT))
    enc = enc.to_empty(device="cpu")
    enc.tie_weights()  # to_empty unties the token embedding from ``shared`` (a second 3.9 GiB); as loaded, one
    g = torch.Generator(device=device).manual_seed(3)
    with torch.no_grad():
        for name, p in enc.named_parameters():
            if p.ndim == 1:  # layer norms' scales
                p.fill_(1.0)
                continue
            table = "embed" in name or "shared" in name or "relative_attention_bias" in name
            std = 1.0 if table else p.shape[1] ** -0.5
            for rows in torch.arange(p.shape[0]).split(max(1, 2**28 // p.shape[1])):  # 1 GiB at a time on the card
                chunk = torch.randn(len(rows), p.shape[1], device=device, generator=g) * std
                p[rows[0]:rows[-1] + 1].copy_(chunk)
        for b in enc.buffers():
            b.zero_()
    return enc.eval().requires_grad_(False)


def run_visit(model: Any, setup: WanSetup, device: torch.device, gib: float) -> dict[str, str]:
    """Encode one prompt with the real-size encoder offloaded (on a GPU; the tiny one elsewhere)."""
    from fifo_longvid.backends.offload import stream_from_host

    stand_in = model.text_encoder
    t_build = time.perf_counter()
    enc = full_umt5(device) if setup.full and device.type == "cuda" else stand_in
    t_build = time.perf_counter() - t_build
    try:
        if enc is not stand_in:
            model.text_encoder = enc
            stream_from_host(enc, device)
        ts = []
        free(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(2):  # the first visit also pays the cuBLAS handles and the host pages' first touch
            sync(device)
            t0 = time.perf_counter()
            ctx = model.encode_text([PROMPT])
            sync(device)
            ts.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None
    finally:
        model.text_encoder = stand_in
    nbytes = sum(p.numel() * p.element_size() for p in enc.parameters())
    p = predicted(setup, WanMode("u", "", "bf16"), "auto", gib)
    gpu = device.type == "cuda" and setup.full
    del enc
    free(device)
    return {
        "UMT5: encoder built (s); parameters (GiB, fp32, host)": f"{t_build:.1f}; {nbytes / GIB:.3g}",
        "UMT5: s per encode call (first; second)": f"{ts[0]:.3f}; {ts[1]:.3f}",
        "UMT5: bytes visiting the card per call (GB); GB/s": f"{nbytes / 1e9:.1f}; {nbytes / 1e9 / ts[1]:.1f}"
        if device.type == "cuda" else NO_GPU,
        "peak device memory (GiB)": f"{peak:.2f} (encoding, DiT + VAE resident)" if peak is not None else NO_GPU,
        "plan: predicted peak (GiB)": f"{p.details['encoding_gib']:.2f} (encoding)",
        "measured / predicted peak": f"{peak / p.details['encoding_gib']:.2f}" if gpu and peak else NO_GPU,
        "context": f"{tuple(ctx.shape)} {str(ctx.dtype)[6:]}, finite {bool(torch.isfinite(ctx).all())}",
    }


# -- the table -------------------------------------------------------------------------------------------------
def run_wan(device: torch.device, quick: bool, block: int, full: bool | None, json_path: Path | None,
            card: str, header: Callable[[str], None]) -> tuple[list[str], list[dict[str, str]]]:
    full = device.type == "cuda" if full is None else full
    setup = wan_setup(full, quick)
    gib = torch.cuda.get_device_properties(device).total_memory / GIB if device.type == "cuda" else 80.0
    modes = wan_modes(block)
    header(f"{setup.label}: {setup.flags['sampling.height']}x{setup.flags['sampling.width']}, window "
           f"{setup.flags['fifo.window']} x {setup.flags['fifo.partitions']} partitions, init noise, "
           f"{setup.warm} warm + {setup.timed} timed iterations per column through generate(); seeded random weights; "
           f"plan for a {gib:.0f} GiB card at {card_for(None, gib).tflops_half:g} dense TFLOP/s; --block columns "
           + ("run" if has_block() else "skipped (no fifo.block in the run config yet)"))
    rows: dict[str, dict[str, str]] = {m.key: {"error": "not reached (time limit)"} for m in modes}
    names = [m.name for m in modes]

    def save() -> None:
        if json_path:
            json_path.write_text(json.dumps({"device": str(device), "card": card, "torch": torch.__version__,
                                             "config": "wan" if full else "wan-tiny", "columns": names,
                                             "rows": [rows[m.key] for m in modes]}, indent=1))

    save()
    models: dict[str, Any] = {}
    decode: dict[str, tuple[float, float | None]] = {}
    by_key = {m.key: m for m in modes}
    for key in RUN_ORDER:
        mode = by_key[key]
        try:
            if mode.dtype not in models:
                models.clear()
                free(device)
                models[mode.dtype] = build_wan(full, device, mode.dtype)
                decode[mode.dtype] = decode_time(models[mode.dtype], setup, device)
            model = models[mode.dtype]
            rows[key] = run_visit(model, setup, device, gib) if mode.visit else \
                run_fifo(model, setup, mode, device, decode[mode.dtype], gib)
        except Exception as e:  # noqa: BLE001 - one failing column must not lose the others
            rows[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
        print(f"{mode.name}: {rows[key]}", flush=True)
        save()
    return names, [rows[m.key] for m in modes]

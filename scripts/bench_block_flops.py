"""FLOPs per output frame of FIFO with blocks (``--block``/``--steps``) against a native clip, at full size.

    python scripts/bench_block_flops.py            # Wan2.1-1.3B at 480x832 and VideoCrafter2 at 320x512 (tables)

Wan is counted as ``scripts/bench_wan_flops.py`` counts it: diffusers' real modules built on the ``meta`` device with
Wan2.1-1.3B's published configs, run through our network under torch's ``FlopCounterMode`` (one window call of 20
latent frames, one WanPipeline clip call of 21, the streamed VAE decode of one latent frame). VideoCrafter2 uses the
counts of ``fifo/costs.py`` (its FIFO window is its native clip length, 16 frames, so one window sample IS one
native clip sample). For each step count S, guidance on/off and lookahead on/off the geometry is the one
``fifo-gen --steps S`` resolves (``fifo/geometry.py``), and a FIFO iteration costs (CFG branches x windows) window
calls and emits one block of K latent frames.

The reference is the native pipeline at its defaults: WanPipeline 50 steps, guidance 5, 81 frames; VideoCrafter2 one
16-frame clip, 50 DDIM steps, guidance 12. ``native, same S`` is the native pipeline at the row's steps and guidance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_wan_flops import MetaWan  # noqa: E402

from fifo_longvid.fifo.geometry import resolve_geometry  # noqa: E402
from fifo_longvid.fifo.queue import FifoPlan  # noqa: E402

STEPS = (4, 8, 50)


def wan_counts(height: int, width: int, window: int, clip_frames: int) -> dict[str, float]:
    """Counted FLOPs of one window call, one clip call (one sample each) and the streamed decode, on ``meta``."""
    m = MetaWan(height, width)
    clip_latents = (clip_frames - 1) // 4 + 1
    first, steady = m.decode()
    return {"window": m.dit(window), "clip": m.dit(clip_latents), "first": first, "steady": steady,
            "clip_latents": clip_latents}


def fifo_per_frame(window_flop: float, vae_flop: float, window: int, steps: int, guidance: bool, lookahead: bool,
                   temporal: int) -> tuple[float, str]:
    """FIFO FLOPs per output frame at the geometry ``--steps`` resolves, and that geometry as text."""
    g = resolve_geometry(window, lookahead, steps)
    plan = FifoPlan(window, g.partitions, lookahead, g.block)
    rows = (2 if guidance else 1) * len(plan.windows())
    per_latent = rows * window_flop / plan.block
    return (per_latent + vae_flop) / temporal, f"K={g.block} n={g.partitions}"


def table(name: str, reference: float, rows: list[tuple[int, bool, bool, float, float, str]]) -> None:
    print(f"\n{name}: TFLOP per output frame; reference = {reference / 1e12:.2f} TFLOP")
    print("| S | guidance | lookahead | geometry | FIFO TFLOP/frame | / reference | native, same S and guidance |"
          " FIFO / native same S |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for s, guided, la, fifo, native, geo in rows:
        print(f"| {s} | {'on' if guided else 'off'} | {'on' if la else 'off'} | {geo} | {fifo / 1e12:.2f} | "
              f"{fifo / reference:.3f} | {native / 1e12:.2f} | {fifo / native:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-wan", action="store_true", help="only VideoCrafter2 (no meta-device count)")
    a = ap.parse_args()
    if not a.skip_wan:
        c = wan_counts(480, 832, 20, 81)
        clip_vae = (c["first"] + (c["clip_latents"] - 1) * c["steady"]) / 81

        def wan_native(steps: int, guided: bool) -> float:
            return steps * (2 if guided else 1) * c["clip"] / 81 + clip_vae

        rows = []
        for s in STEPS:
            for guided in (True, False):
                for la in (True, False):
                    fifo, geo = fifo_per_frame(c["window"], c["steady"], 20, s, guided, la, 4)
                    rows.append((s, guided, la, fifo, wan_native(s, guided), geo))
        print(f"Wan2.1-T2V-1.3B, 480x832, window 20 (one call {c['window'] / 1e12:.2f} TFLOP), WanPipeline clip of "
              f"81 frames ({c['clip_latents']} latent, one call {c['clip'] / 1e12:.2f} TFLOP); guidance on = 5")
        table("Wan2.1-1.3B vs WanPipeline (50 steps, guidance 5, 81 frames)", wan_native(50, True), rows)

    from fifo_longvid.backends import costs_for
    from fifo_longvid.fifo.costs import unet_flop_per_sample, vae_flop_per_frame

    vc = costs_for("videocrafter2")
    sample = unet_flop_per_sample(vc, vc.ref_latent, 16)
    vae = vae_flop_per_frame(vc, vc.ref_latent)

    def vc_native(steps: int, guided: bool) -> float:
        return steps * (2 if guided else 1) * sample / 16 + vae

    rows = []
    for s in STEPS:
        for guided in (True, False):
            for la in (True, False):
                fifo, geo = fifo_per_frame(sample, vae, 16, s, guided, la, 1)
                rows.append((s, guided, la, fifo, vc_native(s, guided), geo))
    print(f"\nVideoCrafter2, 320x512, window 16 = its native clip (one sample {sample / 1e12:.2f} TFLOP, "
          "fifo/costs.py); guidance on = 12")
    table("VideoCrafter2 vs a native 16-frame clip (50 DDIM steps, guidance 12)", vc_native(50, True), rows)


if __name__ == "__main__":
    main()

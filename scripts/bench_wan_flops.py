"""FLOPs per output frame of FIFO on Wan2.1-T2V-1.3B at full size, against diffusers' WanPipeline, on the meta device.

    python scripts/bench_wan_flops.py            # 480x832, window 20, n = 4, lookahead, CFG (a table)

No weights and no data: the real diffusers modules are built on ``meta`` with Wan2.1-1.3B's published configs
and run through our network (``backends/wan``) under torch's ``FlopCounterMode``. It counts:

* one DiT call on one sample of a window (20 latent frames, FIFO) and of a whole clip (21 latent frames,
  WanPipeline's 81 frames);
* the streamed VAE decode of one latent frame in steady state (4 output frames) and of the first (1 frame);
* FIFO per output frame = samples per iteration (2 x 2n windows, CFG) x one window call / 4 output frames, plus
  the VAE; WanPipeline per frame = steps x 2 (CFG) x one clip call / 81, plus its decode.

With ``--attn-reuse``'s schedule it also counts a window call whose every other frame reuses its self-attention
(the computed frames' queries still attend to all frames: ``select_rows``), and the share of FIFO steps below
the reuse threshold (t < 681 on the folder's flow schedule), giving the FLOP ratio ``fifo/costs.py`` records.

It also reports the (B, L, 6, D) modulation tensor diffusers' per-token timestep path would materialise, which
our per-frame forward (``backends/wan/blocks.py``) avoids.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from fifo_longvid.backends.wan.full import FULL_TRANSFORMER as TRANSFORMER
from fifo_longvid.backends.wan.full import FULL_VAE as VAE


def count(fn) -> float:
    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def half_rows_reused(net, call) -> float:
    """FLOPs of ``call`` while every attn1 computes only the even frame rows (attention reuse's half)."""
    from fifo_longvid.backends.wan.attention import PlainProcessor
    from fifo_longvid.techniques.hooks import ProcessorSwap

    def half(attn, x, context):
        rows = list(range(0, x.shape[0], 2))
        idx = torch.tensor(rows, device=x.device)
        y = PlainProcessor()(attn, attn.select_rows(x, rows, idx), context)
        out = x.new_zeros(x.shape[0], y.shape[1], y.shape[2])
        out[idx] = y
        return out

    swap = ProcessorSwap()
    swap.wrap(net, "spatial_attn1", lambda site, inner: half)
    try:
        return call()
    finally:
        swap.restore()


def reuse_eligible(steps: int, max_timestep: int = 681) -> float:
    """Share of the FIFO steps (each frame passes all of them) where attention reuse may apply."""
    from fifo_longvid.backends.wan.full import FULL_SCHEDULER
    from fifo_longvid.diffusion.flow import flow_schedule_from_config

    t = flow_schedule_from_config(FULL_SCHEDULER, steps).timesteps
    return float((t < max_timestep).double().mean())


class MetaWan:
    """Wan2.1-1.3B's published DiT and VAE on the ``meta`` device at ``height`` x ``width``, for counting FLOPs."""

    def __init__(self, height: int, width: int):
        from diffusers import AutoencoderKLWan, WanTransformer3DModel

        from fifo_longvid.backends.wan.model import cast_transformer
        from fifo_longvid.backends.wan.network import WanNetwork

        with torch.device("meta"):
            self.net = WanNetwork(cast_transformer(WanTransformer3DModel(**TRANSFORMER), torch.bfloat16))
            self.vae = torch.nn.Module.to(AutoencoderKLWan(**VAE), torch.bfloat16)
        self.h, self.w = height // 8, width // 8
        self.ctx = torch.empty(1, 512, 4096, device="meta", dtype=torch.bfloat16)

    def dit(self, frames: int) -> float:
        """FLOPs of one DiT call on one sample of ``frames`` latent frames."""
        x = torch.empty(1, 16, frames, self.h, self.w, device="meta")
        t = torch.empty(1, frames, device="meta")
        with torch.no_grad():
            return count(lambda: self.net(x, t, self.ctx))

    def decode(self) -> tuple[float, float]:
        """FLOPs of the streamed decode of the first latent frame and of one in steady state."""
        from fifo_longvid.backends.wan.vae import StreamDecoder

        dec = StreamDecoder(self.vae)
        z = torch.empty(1, 16, 1, self.h, self.w, device="meta")
        with torch.no_grad():
            return count(lambda: dec.decode(z)), count(lambda: dec.decode(z))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--steps", type=int, default=50, help="WanPipeline's steps (its default)")
    ap.add_argument("--clip-frames", type=int, default=81)
    a = ap.parse_args()
    m = MetaWan(a.height, a.width)
    h, w = m.h, m.w
    clip_latents = (a.clip_frames - 1) // 4 + 1
    window, clip = m.dit(a.window), m.dit(clip_latents)
    reused = half_rows_reused(m.net, lambda: m.dit(a.window))
    eligible = reuse_eligible(a.window * a.partitions)
    reuse_ratio = 1 - eligible * (1 - reused / window)
    first, steady = m.decode()
    rows = 2 * 2 * a.partitions  # lookahead: 2n windows, each with both CFG branches
    fifo_dit = rows * window / 4
    fifo_vae = steady / 4
    pipe_dit = a.steps * 2 * clip / a.clip_frames
    pipe_vae = (first + (clip_latents - 1) * steady) / a.clip_frames
    tokens = a.window * (h // 2) * (w // 2)
    modulation = tokens * 6 * TRANSFORMER["num_attention_heads"] * TRANSFORMER["attention_head_dim"]
    print(f"Wan2.1-T2V-1.3B at {a.height}x{a.width}: FIFO window {a.window} x {a.partitions} partitions, lookahead, "
          f"CFG ({rows} samples per iteration, 1 latent frame = 4 output frames out)")
    print("| quantity | FIFO | WanPipeline (one clip) |")
    print("| --- | --- | --- |")
    print(f"| DiT call, one sample | {window / 1e12:.2f} TFLOP ({a.window} latent frames) | {clip / 1e12:.2f} TFLOP "
          f"({clip_latents} latent frames) |")
    print(f"| DiT TFLOP per output frame | {fifo_dit / 1e12:.2f} | {pipe_dit / 1e12:.2f} ({a.steps} steps x 2, "
          f"/ {a.clip_frames}) |")
    print(f"| VAE TFLOP per output frame | {fifo_vae / 1e12:.3f} | {pipe_vae / 1e12:.3f} |")
    total_fifo, total_pipe = fifo_dit + fifo_vae, pipe_dit + pipe_vae
    print(f"| total TFLOP per output frame | {total_fifo / 1e12:.2f} | {total_pipe / 1e12:.2f} |")
    print(f"| ratio FIFO / WanPipeline | {total_fifo / total_pipe:.2f}x | 1 |")
    print(f"| length limit | any (constant memory) | {a.clip_frames} frames |")
    print(f"| attention reuse: DiT call, every other frame reused | {reused / 1e12:.2f} TFLOP "
          f"({reused / window:.3f} of plain) | - |")
    print(f"| attention reuse: FIFO steps below t=681 | {eligible:.1%} | - |")
    print(f"| attention reuse: DiT FLOP ratio (fifo/costs.py) | {reuse_ratio:.3f} | - |")
    print(f"\ndiffusers' per-token timestep path: a (B, L, 6, D) modulation of {tokens} tokens x 6 x 1536 = "
          f"{modulation * 2 / 2**20:.0f} MiB per sample in bf16, plus a float32 copy of "
          f"{modulation * 4 / 2**20:.0f} MiB in every block; ours keeps it per frame "
          f"({a.window * 6 * 1536 * 4 / 2**20:.2f} MiB per sample).")


if __name__ == "__main__":
    main()

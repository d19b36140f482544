"""Measure the cost table (``backends/costs.FamilyCosts``) of a full-size Wan release on fake CUDA, as Wan2.1's was.

    PYTHONPATH=. python scripts/measure_wan22_costs.py --release wan2.2-ti2v     # 704x1280, window 30
    PYTHONPATH=. python scripts/measure_wan22_costs.py --release wan2.2-a14b     # 480x832, window 20

No weights, no GPU, no data: the release's published configs (``backends/wan/full.py``) are built on meta and
loaded by ``load_backend`` onto a fake card (``tests/fakecuda``), which counts device bytes as the caching
allocator would. It reports: parameters in the run dtype (on the card) and in float32 (UMT5, in host memory);
the peak activation bytes of one sample of a window call (bf16, flash attention); the techniques' store bytes per
frame (3 FIFO iterations, n = 1); the DiT FLOPs of one window sample and the streamed VAE's FLOPs per latent frame
(torch's FlopCounterMode on meta, as ``scripts/bench_wan_flops.py``); for two experts, per-expert parameters.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {"wan2.1": (480, 832), "wan2.2-ti2v": (704, 1280), "wan2.2-a14b": (480, 832)}


def flops(release: str, lat: tuple[int, int], frames: int) -> tuple[float, float]:
    """(one DiT window call on one sample, one steady-state latent frame through the streamed VAE)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from fifo_longvid.backends.wan.full import FULL_RELEASES
    from fifo_longvid.backends.wan.model import cast_transformer
    from fifo_longvid.backends.wan.network import WanNetwork
    from fifo_longvid.backends.wan.vae import StreamDecoder

    dit, vae_cfg, _ = FULL_RELEASES[release]
    with torch.device("meta"):
        net = WanNetwork(cast_transformer(WanTransformer3DModel(**dit), torch.bfloat16))
        vae = torch.nn.Module.to(AutoencoderKLWan(**vae_cfg), torch.bfloat16)
    c = int(dit["out_channels"])
    x = torch.empty(1, c, frames, *lat, device="meta")
    t = torch.empty(1, frames, device="meta")
    ctx = torch.empty(1, 512, 4096, device="meta", dtype=torch.bfloat16)
    dec = StreamDecoder(vae)
    z = torch.empty(1, c, 1, *lat, device="meta")
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            net(x, t, ctx)
        unet = float(fc.get_total_flops())
        dec.decode(z)  # the first latent frame (1 output frame)
        with FlopCounterMode(display=False) as fc:
            dec.decode(z)
        vae_flop = float(fc.get_total_flops())
    return unet, vae_flop


def memory(release: str, size: tuple[int, int], techniques: list[str]) -> dict[str, float]:
    from fifo_longvid.techniques import TechniquesConfig
    from tests.fakecuda import FakeCuda
    from tests.fakecuda.models import WAN22_MODELS
    from tests.fakecuda.run import activation_bytes_per_sample, fifo_iterations, window

    fc = FakeCuda(total_gib=400)
    out: dict[str, float] = {}
    with fc:
        model = WAN22_MODELS[release].build(fc, torch.bfloat16, Path(tempfile.mkdtemp()))
    params = dict(model.named_parameters())
    unet = {id(p) for p in model.unet.parameters()}
    run = [p for p in params.values() if p.dtype == torch.bfloat16]
    out["params_run_dtype"] = sum(p.numel() for p in run)
    out["params_fp32"] = sum(p.numel() for p in params.values() if p.dtype == torch.float32)
    out["params_fp32_dit"] = sum(p.numel() for p in params.values() if p.dtype == torch.float32 and id(p) in unet)
    out["weights_on_card"] = fc.memory.current
    for i, net in enumerate(model._networks()):
        out[f"expert_{i}_params"] = sum(p.numel() for p in net.parameters())
    lat = (size[0] // model.latent_factor, size[1] // model.latent_factor)
    f = window(model)
    out["act_bytes_per_sample"] = activation_bytes_per_sample(fc, model, lat, f)
    for tech in techniques:
        cfg = TechniquesConfig()
        getattr(cfg, tech).enabled = True
        with fc:
            rep = fifo_iterations(fc, model, cfg, iterations=3, size=size)
        out[f"store_{tech}"] = rep.store_bytes / max(rep.store_frames, 1)
    out["latent_hw"] = lat  # type: ignore[assignment]
    out["window"] = f
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--release", default="wan2.2-ti2v", choices=list(SIZES))
    ap.add_argument("--techniques", default="tgate,cfg_cache,attn_reuse", help="comma list ('' for none)")
    ap.add_argument("--no-memory", action="store_true", help="FLOPs only")
    a = ap.parse_args()
    size = SIZES[a.release]
    if not a.no_memory:
        for k, v in memory(a.release, size, [t for t in a.techniques.split(",") if t]).items():
            print(f"{k}: {v!r} ({v:.6g})" if isinstance(v, float | int) else f"{k}: {v}", flush=True)
    from fifo_longvid.backends.wan.full import FULL_RELEASES

    factor = int(FULL_RELEASES[a.release][1].get("scale_factor_spatial") or 8)
    window = {"wan2.2-ti2v": 30}.get(a.release, 20)
    unet, vae = flops(a.release, (size[0] // factor, size[1] // factor), window)
    print(f"unet_flop_per_sample: {unet:.6g}\nvae_flop_per_frame: {vae:.6g}")


if __name__ == "__main__":
    main()

"""Wan's DiT path on the card: the per-frame forward against diffusers' per-token forward, and short FIFO runs.

Marked ``cuda`` and skipped without a GPU; ``bash scripts/gpu_check.sh`` runs them (with ``tests/test_cuda.py``,
whose ``test_wan_text_encoder_from_host_memory_equals_it_on_the_card`` checks the offloaded UMT5 bitwise).

Tolerances (relative L2 of the per-frame forward against diffusers' own, same weights, same inputs): fp32 (TF32
off) 1e-5, fp16 2e-3, bf16 1e-2. Both paths run the same modules on the same values (on the CPU they agree
bitwise, ``tests/test_wan_backend.py``); on a GPU the only admitted difference is a kernel choice that depends on
a tensor's layout (the per-frame modulation is a broadcast view, diffusers' a materialised table), i.e. rounding
of the run dtype: a few units of its last place, far inside these bounds.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from fifo_longvid.run.config import build_run_config
from fifo_longvid.run.pipeline import generate

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

PARITY_BOUND = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
LATENT = (60, 104)  # 480x832, Wan2.1's size: the kernels the real runs take
FRAMES = 5
LAYERS = 2  # Wan2.1-1.3B's block at full width (1536, 12 heads of 128, FFN 8960, text 4096); two of its 30


def forward_parity(device: str, latent: tuple[int, int] = LATENT, frames: int = FRAMES,
                   layers: int = LAYERS) -> dict[torch.dtype, tuple[float, bool]]:
    """(relative L2, bitwise equal) of WanNetwork.forward against forward_diffusers, per dtype."""
    from diffusers import WanTransformer3DModel

    from fifo_longvid.backends.wan.full import FULL_TRANSFORMER
    from fifo_longvid.backends.wan.model import cast_transformer
    from fifo_longvid.backends.wan.network import WanNetwork

    torch.manual_seed(0)
    with torch.device(device):
        master = WanTransformer3DModel(**{**FULL_TRANSFORMER, "num_layers": layers}).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, frames, *latent, generator=g).to(device)
    t = (torch.rand(2, frames, generator=g).sort(dim=1).values * 1000).to(device)  # FIFO: rising along the window
    ctx = torch.randn(2, 512, FULL_TRANSFORMER["text_dim"], generator=g).to(device)
    out = {}
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for dtype in PARITY_BOUND:
            net = WanNetwork(cast_transformer(copy.deepcopy(master), dtype))
            with torch.no_grad():
                ours = net(x, t, ctx).float()
                ref = net.forward_diffusers(x, t, ctx).float()
            rel = float((ours - ref).norm() / ref.norm())
            out[dtype] = (rel, torch.equal(ours, ref))
            del net
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    return out


def test_wan_per_frame_forward_equals_diffusers_per_token_forward_on_cuda():
    """Full-width blocks at 480x832, two samples with their own rising per-frame timesteps."""
    for dtype, (rel, bitwise) in forward_parity("cuda").items():
        print(f"{dtype}: relative L2 {rel:.2e}, bitwise {bitwise}")
        assert rel < PARITY_BOUND[dtype], (dtype, rel)


def fifo_run(tmp_path, device: str, dtype: str, **flags) -> tuple[torch.Tensor, dict]:
    """A short tiny_wan FIFO run through generate: 9 output frames = 3 latent frames."""
    out = tmp_path / f"wan_{dtype}.mp4"
    cfg = build_run_config(flags={
        "model": "tiny_wan", "device": device, "dtype": dtype, "prompts": ["a red car runs on the beach"],
        "sampling.seed": 5, "sampling.height": 32, "sampling.width": 32, "fifo.window": 4, "fifo.partitions": 2,
        "fifo.num_frames": 9, "output.path": str(out), "output.save_latents": True, **flags})
    res = generate(cfg, log=lambda m: None)
    return load_file(str(out.with_suffix(".latents.safetensors")))["latents"], json.loads(res.sidecar.read_text())


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_wan_fifo_latents_stay_finite_on_cuda(tmp_path, dtype):
    """The base clip, the FIFO iterations with the flow-matching step, the offloaded encoder and the streamed
    decode, on the card in half precision: every latent finite, every frame written."""
    z, side = fifo_run(tmp_path, "cuda", dtype)
    assert z.shape[2] == 3 and torch.isfinite(z).all()
    assert side["runtime"]["dtype"] == dtype and side["runtime"]["device"].startswith("cuda")
    assert side["frames_written"] == 9 and side["complete"]

"""Full-size models on fake CUDA, built through the package's own loaders (no weights, no real memory).

One entry of ``MODELS`` per model the tests cover; Wan2.1-1.3B at 480x832 is the
DiT entry; adding a backend is one more entry
with a ``build(fc, dtype, tmp)`` that returns a loaded backend on ``cuda``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .cuda import FakeCuda


@dataclass(frozen=True)
class FakeModel:
    name: str  # the --config value
    height: int
    width: int
    build: Callable[[FakeCuda, torch.dtype, Path], Any]
    prompt_image: bool = False  # I2V: the run needs --image


def _videocrafter(config: str) -> Callable[[FakeCuda, torch.dtype, Path], Any]:
    def build(fc: FakeCuda, dtype: torch.dtype, tmp: Path) -> Any:
        from fifo_longvid.backends import load_backend
        from fifo_longvid.backends.videocrafter.load import build_model  # the checkpoint's keys and shapes
        from fifo_longvid.backends.videocrafter.presets import load_model_config

        meta = build_model(load_model_config(config), "meta")
        ckpt = tmp / f"{config}.ckpt"
        ckpt.touch()  # released checkpoints hold fp32 tensors; torch.load of this path returns fake ones
        fc.checkpoint(ckpt, {k: fc.fake_cpu(v, torch.float32) for k, v in meta.state_dict().items()})
        return load_backend(config, ckpt, "cuda", dtype)

    return build


def _animatediff(fc: FakeCuda, dtype: torch.dtype, tmp: Path) -> Any:
    """SD-1.5 shapes (diffusers' UNet2DConditionModel defaults with a 768-dim context, the SD VAE, CLIP ViT-L/14's
    text tower) plus a v2-style motion adapter, built on meta; ``load_backend`` then loads it onto the device as
    it loads a downloaded folder (only the file reading is replaced)."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNetMotionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    import fifo_longvid.backends.animatediff.load as ad_load
    from fifo_longvid.backends import load_backend
    from fifo_longvid.backends.animatediff.model import AnimateDiff
    from fifo_longvid.backends.animatediff.tiny import TINY_SCHEDULER, byte_tokenizer

    def read(config: str, checkpoint: Any = None, motion_adapter: Any = None) -> AnimateDiff:
        with torch.device("meta"):
            unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
            adapter = MotionAdapter(motion_max_seq_length=32, use_motion_mid_block=False)
            motion = UNetMotionModel.from_unet2d(unet, adapter)
            vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                                layers_per_block=2, latent_channels=4, sample_size=512)
            text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                                num_hidden_layers=12, projection_dim=768))
        cfg = ad_load.preset_config(config)
        cfg.latent_size = (64, 64)
        return AnimateDiff(cfg, motion, vae, text, byte_tokenizer(), dict(TINY_SCHEDULER), {"layout": "fake SD-1.5"})

    real = ad_load.load_animatediff
    ad_load.load_animatediff = read
    try:
        return load_backend("animatediff", None, "cuda", dtype)
    finally:
        ad_load.load_animatediff = real


def _wan_release(release: str) -> Callable[[FakeCuda, torch.dtype, Path], Any]:
    """A full-size Wan release (``backends/wan/full.py FULL_RELEASES``: Wan2.1-1.3B, Wan2.2-TI2V-5B, Wan2.2-T2V-A14B
    with both experts) built on meta and loaded through ``load_backend`` with the release's own run defaults."""
    def build(fc: FakeCuda, dtype: torch.dtype, tmp: Path) -> Any:
        return _wan(fc, dtype, tmp, release)

    return build


def _wan(fc: FakeCuda, dtype: torch.dtype, tmp: Path, release: str = "wan2.1") -> Any:
    """Wan2.1-T2V-1.3B's published configs (``backends/wan/full.py``: the DiT, the causal VAE, UMT5-XXL's encoder)
    built on meta with the tiny word-level tokenizer at the real context length (512); ``load_backend`` then casts
    and moves it as it does a downloaded folder (only the folder reading is replaced)."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    import fifo_longvid.backends.wan.load as wan_load
    from fifo_longvid.backends import load_backend
    from fifo_longvid.backends.wan.full import FULL_A14B_BOUNDARY_RATIO, FULL_MAX_LENGTH, FULL_RELEASES, FULL_TEXT
    from fifo_longvid.backends.wan.model import Wan
    from fifo_longvid.backends.wan.tiny import tiny_tokenizer
    from fifo_longvid.backends.wan.variants import RELEASE_DEFAULTS, WanVariant

    dit, vae_cfg, sched = FULL_RELEASES[release]
    experts = 2 if release == "wan2.2-a14b" else 1
    variant = WanVariant(release, "wan", "WanPipeline", experts=experts,
                         boundary_ratio=FULL_A14B_BOUNDARY_RATIO if experts == 2 else None,
                         expand_timesteps=release == "wan2.2-ti2v")

    def read(name: str = "wan", checkpoint: Any = None) -> Wan:
        with torch.device("meta"):
            transformers = [WanTransformer3DModel(**dit) for _ in range(experts)]
            vae = AutoencoderKLWan(**vae_cfg)
            text = UMT5EncoderModel(UMT5Config(**FULL_TEXT))
        with fc.host.passthrough():  # fake host tensors: a GPU load keeps UMT5 in host memory (Wan.place)
            text.to_empty(device="cpu")
            if experts == 2:  # loaded into host memory as from a folder: place() keeps what fits, streams the rest
                for tr in transformers:
                    tr.to_empty(device="cpu")
        cfg = wan_load.preset_config(name)
        for key, value in RELEASE_DEFAULTS.get(release, {}).items():
            setattr(cfg, key, value)
        return Wan(cfg, transformers[0], vae, text, tiny_tokenizer(FULL_MAX_LENGTH), dict(sched),
                   {"layout": f"fake {release}"}, variant=variant,
                   transformer_2=transformers[1] if experts == 2 else None).eval().requires_grad_(False)

    real = wan_load.load_wan
    wan_load.load_wan = read
    try:
        return load_backend("wan", None, "cuda", dtype)
    finally:
        wan_load.load_wan = real


MODELS = {
    "videocrafter2": FakeModel("videocrafter2", 320, 512, _videocrafter("videocrafter2")),
    "videocrafter1_i2v": FakeModel("videocrafter1_i2v", 320, 512, _videocrafter("videocrafter1_i2v"),
                                   prompt_image=True),
    "animatediff": FakeModel("animatediff", 512, 512, _animatediff),
    "wan": FakeModel("wan", 480, 832, _wan),
}
# Wan2.2 releases (issue #31), kept apart from MODELS: their cost tables are keyed by release, not by --config
WAN22_MODELS = {
    "wan2.1": FakeModel("wan", 480, 832, _wan),
    "wan2.2-ti2v": FakeModel("wan", 704, 1280, _wan_release("wan2.2-ti2v")),
    "wan2.2-a14b": FakeModel("wan", 480, 832, _wan_release("wan2.2-a14b")),
}

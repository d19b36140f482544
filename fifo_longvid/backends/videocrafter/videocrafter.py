"""The VideoCrafter latent video diffusion model: U-Net + VAE + text encoder + schedule buffers.

The module tree mirrors the reference ``LatentDiffusion`` so a real ``model.ckpt`` state dict loads
with ``strict=True``: ``model.diffusion_model`` (U-Net), ``first_stage_model`` (VAE),
``cond_stage_model`` (OpenCLIP text tower) and 13 top-level schedule buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ...diffusion.schedule import DDIMSchedule, make_ddim_schedule, train_schedule
from ..base import FrameByFrame
from .image import ImageConfig, OpenCLIPImageEmbedder, Resampler
from .schedule import scale_array, scaled_ddim_schedule
from .text import OpenCLIPTextEncoder, TextEncoderConfig
from .unet import UNet3D, UNetConfig
from .vae import AutoencoderKL, VAEConfig, decode_video, encode_video


@dataclass
class ModelConfig:
    """Everything needed to build the network; the YAML/preset schema for ``--config``."""

    name: str = "videocrafter2"
    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image: ImageConfig | None = None  # VideoCrafter1 I2V: image embedder + Resampler (image tokens)
    timesteps: int = 1000
    linear_start: float = 0.00085
    linear_end: float = 0.012
    scale_factor: float = 0.18215
    use_scale: bool = True
    scale_a: float = 1.0
    scale_b: float = 0.7
    mid_step: int = 400
    fix_scale_bug: bool = False
    channels: int = 4
    latent_size: tuple[int, int] = (40, 64)  # default latent (h, w): 320x512 video
    uncond_type: str = "empty_seq"
    # FIFO defaults for runs with this model (a tiny test model gets run sizes that finish in seconds)
    default_window: int | None = None  # None: the U-Net's temporal_length
    default_partitions: int = 4
    default_cfg: float = 12.0  # guidance scale when --cfg is not given
    default_num_frames: int = 100


class DiffusionWrapper(nn.Module):
    """Holds the U-Net under the checkpoint's ``model.diffusion_model`` name."""

    def __init__(self, unet: UNet3D) -> None:
        super().__init__()
        self.diffusion_model = unet


class VideoCrafter(nn.Module):
    """The whole text-to-video model. Techniques attach to ``.unet`` from outside."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        for name, arr in self._schedule_arrays().items():
            self.register_buffer(name, torch.tensor(arr, dtype=torch.float32))
        self.model = DiffusionWrapper(UNet3D(cfg.unet))
        self.first_stage_model = AutoencoderKL(cfg.vae)
        here = torch.empty(0).device  # honours a surrounding `with torch.device(...)` (e.g. meta)
        self.cond_stage_model = OpenCLIPTextEncoder(cfg.text, device=here)
        if cfg.image is not None:
            self.embedder = OpenCLIPImageEmbedder(cfg.image, device=here)
            self.image_proj_model = Resampler(cfg.image)

    def _schedule_arrays(self) -> dict[str, np.ndarray]:
        cfg = self.cfg
        arrays = train_schedule(cfg.timesteps, cfg.linear_start, cfg.linear_end)
        if cfg.use_scale:
            arrays["scale_arr"] = scale_array(cfg.timesteps, cfg.scale_a, cfg.scale_b, cfg.mid_step, cfg.fix_scale_bug)
        return arrays

    def reset_schedule_buffers(self) -> None:
        """Recompute the schedule buffers in float32 from the config (after loading any checkpoint)."""
        for name, arr in self._schedule_arrays().items():
            buf = getattr(self, name)
            setattr(self, name, torch.tensor(arr, dtype=torch.float32, device=buf.device))

    @property
    def has_image_encoder(self) -> bool:
        return hasattr(self, "embedder")

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 16, D) image tokens appended to the text context (I2V models)."""
        if not self.has_image_encoder:
            raise ValueError(f"model {self.cfg.name!r} has no image encoder; image conditioning needs an I2V model "
                             "(--config videocrafter1_i2v)")
        tokens = self.embedder(images.to(self.device))
        return self.image_proj_model(tokens.to(self.image_proj_model.latents.dtype)).to(self.dtype)

    @property
    def unet(self) -> UNet3D:
        return self.model.diffusion_model

    @property
    def device(self) -> torch.device:
        return self.betas.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.time_embed[0].weight.dtype

    @property
    def temporal_length(self) -> int:
        return self.cfg.unet.temporal_length

    # -- the backend seam (backends/base.py): sizes FIFO reads without knowing the family ----------------
    family = "videocrafter"

    @property
    def max_window(self) -> int | None:
        return None  # temporal attention has no positional table: any window runs

    @property
    def latent_factor(self) -> int:
        return 2 ** (len(self.cfg.vae.ch_mult) - 1)

    @property
    def unet_factor(self) -> int:
        return 2 ** (len(self.cfg.unet.channel_mult) - 1)

    @property
    def size_multiple(self) -> int:
        return self.latent_factor * self.unet_factor

    @property
    def context_shape(self) -> tuple[int, int]:
        return 77, self.cfg.unet.context_dim  # OpenCLIP's 77 text tokens

    @property
    def model_channels(self) -> int:
        return self.cfg.unet.model_channels

    def describe(self) -> dict:
        """The sidecar's record of the model family and its derived sizes."""
        return {"family": self.family, "name": self.cfg.name, "latent_factor": self.latent_factor,
                "size_multiple": self.size_multiple, "context": list(self.context_shape)}

    def ddim_schedule(self, num_steps: int, eta: float = 0.0) -> DDIMSchedule:
        """The plain DDIM sub-schedule: the one FIFO-Diffusion's reference steps (quirk Q1)."""
        return make_ddim_schedule(self.alphas_cumprod, num_steps, eta)

    def schedule(self, num_steps: int, eta: float = 0.0) -> DDIMSchedule:
        """The schedule of this model's own sampler: VideoCrafter2's scaled DDIM when the config says ``use_scale``
        (its base clip; FIFO steps its ``unscaled()`` unless ``fifo.scaled_step``), else plain DDIM."""
        if self.cfg.use_scale:
            return scaled_ddim_schedule(self.alphas_cumprod, self.scale_arr, num_steps, eta)
        return self.ddim_schedule(num_steps, eta)
    temporal_factor = 1  # one output frame per latent frame

    def latent_frames(self, num_frames: int) -> int:
        return num_frames

    def frame_decoder(self) -> FrameByFrame:
        return FrameByFrame(self.decode_latents)

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """(N, 77, D) cross-attention tokens, in the U-Net's dtype."""
        return self.cond_stage_model(list(prompts)).to(self.dtype)

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor, chunk: int = 1) -> torch.Tensor:
        """(B, 4, F, h, w) latents -> (B, 3, F, H, W) frames in about [-1, 1] (no clamp), frame by frame."""
        vae_dtype = self.first_stage_model.post_quant_conv.weight.dtype
        return decode_video(self.first_stage_model, z.to(vae_dtype), self.cfg.scale_factor, chunk).float()

    @torch.no_grad()
    def encode_frames(self, x: torch.Tensor, chunk: int = 1) -> torch.Tensor:
        """(B, 3, F, H, W) frames in [-1, 1] -> scaled latents (B, 4, F, h, w) (posterior mean)."""
        vae_dtype = self.first_stage_model.post_quant_conv.weight.dtype
        return encode_video(self.first_stage_model, x.to(vae_dtype), self.cfg.scale_factor, chunk)

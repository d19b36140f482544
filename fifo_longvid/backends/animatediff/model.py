"""The AnimateDiff backend: text -> context, the motion U-Net, VAE decode/encode, and the folder's DDIM schedule.

Sizes and schedule come from the loaded configs, never from constants: the latent factor from the VAE's block
count, the context length from the tokenizer, the DDIM timesteps, betas, offset and final alpha from the
scheduler config (computed by diffusers' own ``DDIMScheduler``), the longest window from the motion modules'
positional table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...diffusion.schedule import DDIMSchedule
from ..base import FrameByFrame
from .network import MotionUNet

FAMILY = "animatediff"


@dataclass
class AnimateDiffConfig:
    """Run defaults of an AnimateDiff model (the fields FIFO and the pipeline read from any backend)."""

    name: str = "animatediff"
    channels: int = 4
    latent_size: tuple[int, int] = (64, 64)  # 512x512 px with SD-1.5's VAE
    default_window: int | None = 16  # the length AnimateDiff's motion modules were trained on
    default_partitions: int = 4
    default_cfg: float = 7.5  # diffusers' AnimateDiffPipeline default
    default_num_frames: int = 100
    use_scale: bool = False  # no VideoCrafter2-style scale_arr
    scale_factor: float = 0.18215


def check_scheduler_config(config: dict[str, Any]) -> None:
    """Refuse scheduler settings our DDIM step does not reproduce (a ValueError naming the key)."""
    pred = config.get("prediction_type", "epsilon")
    if pred != "epsilon":
        raise ValueError(f"scheduler prediction_type {pred!r}: the FIFO samplers take epsilon-prediction models only")
    for key in ("thresholding", "clip_sample"):
        if config.get(key, False):
            raise ValueError(f"scheduler {key}=true is not reproduced by the FIFO DDIM step; set \"{key}\": false in "
                             "the folder's scheduler/scheduler_config.json (AnimateDiff's own examples do)")
    if config.get("rescale_betas_zero_snr", False):
        raise ValueError("scheduler rescale_betas_zero_snr=true is not supported")


def ddim_schedule_from_config(config: dict[str, Any], num_steps: int, eta: float = 0.0) -> DDIMSchedule:
    """Our DDIM arrays for ``num_steps`` steps of the folder's scheduler, exactly as diffusers' ``DDIMScheduler``
    steps: timesteps from its spacing and offset, the previous alpha at ``t - T // S`` (or its final alpha)."""
    from diffusers import DDIMScheduler

    if num_steps < 1:
        raise ValueError(f"DDIM needs at least 1 step, got {num_steps}")
    check_scheduler_config(config)
    sch = DDIMScheduler.from_config(config)
    sch.set_timesteps(num_steps)
    ts = sch.timesteps.flip(0).long()  # ascending: schedule index 0 = least noisy
    if len(set(ts.tolist())) != num_steps:
        raise ValueError(f"{num_steps} DDIM steps of this scheduler repeat a timestep; use fewer steps")
    ac = sch.alphas_cumprod.float()
    prev = ts - sch.config.num_train_timesteps // num_steps
    final = torch.as_tensor(sch.final_alpha_cumprod, dtype=torch.float32)
    a = ac[ts]
    a_prev = torch.where(prev >= 0, ac[prev.clamp(min=0)], final)
    sigmas = eta * torch.sqrt((1 - a_prev.double()) / (1 - a.double()) * (1 - a.double() / a_prev.double()))
    return DDIMSchedule(timesteps=ts, alphas=a, alphas_prev=a_prev, sigmas=sigmas.float(),
                        sqrt_one_minus_alphas=torch.sqrt(1.0 - a.double()).float(),
                        timestep_list=tuple(int(t) for t in ts), stochastic=bool(eta != 0 and (sigmas != 0).any()),
                        eta=float(eta))


class AnimateDiff(nn.Module):
    """A loaded AnimateDiff model as a FIFO backend (``backends.base.Backend``)."""

    family = FAMILY

    def __init__(self, cfg: AnimateDiffConfig, motion_unet: nn.Module, vae: nn.Module, text_encoder: nn.Module,
                 tokenizer: Any, scheduler_config: dict[str, Any], source: dict[str, Any] | None = None):
        super().__init__()
        check_scheduler_config(scheduler_config)
        self.unet = MotionUNet(motion_unet)
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.source = source or {}
        cfg.scale_factor = float(vae.config.scaling_factor)
        cfg.channels = int(motion_unet.config.in_channels)
        self.cfg = cfg
        self._check_compatible()

    def _check_compatible(self) -> None:
        ctx_dim = int(self.unet.motion.config.cross_attention_dim)
        hidden = int(self.text_encoder.config.hidden_size)
        if ctx_dim != hidden:
            raise ValueError(f"the text encoder gives {hidden}-dim tokens but the U-Net cross-attends to {ctx_dim}: "
                             "the folder mixes components of different models")
        if int(self.vae.config.latent_channels) != self.cfg.channels:
            raise ValueError(f"the VAE has {self.vae.config.latent_channels} latent channels, the U-Net "
                             f"{self.cfg.channels}")

    def lora_modules(self) -> dict[str, nn.Module]:
        """The component ``--lora`` loads into (``backends/lora.py``): the motion U-Net, whose SD-1.5 layers keep
        diffusers' ``UNet2DConditionModel`` names, so SD-1.5 LoRAs match it."""
        return {"unet": self.unet.motion}

    # -- sizes ----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.unet.motion.conv_in.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def temporal_length(self) -> int:
        return int(self.cfg.default_window or 16)

    @property
    def max_window(self) -> int | None:
        """The motion modules' positional table length: no window may be longer."""
        for mod in self.unet.motion.modules():
            pe = getattr(getattr(mod, "pos_embed", None), "pe", None)
            if pe is not None:
                return int(pe.shape[1])
        return None

    @property
    def latent_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def unet_factor(self) -> int:
        return 2 ** sum(1 for b in self.unet.motion.down_blocks if b.downsamplers is not None)

    @property
    def size_multiple(self) -> int:
        return self.latent_factor * self.unet_factor

    @property
    def context_shape(self) -> tuple[int, int]:
        return int(self.tokenizer.model_max_length), int(self.text_encoder.config.hidden_size)

    @property
    def model_channels(self) -> int:
        return int(self.unet.motion.config.block_out_channels[0])

    @property
    def has_image_encoder(self) -> bool:
        return False

    # -- the model's work ------------------------------------------------------------------------------
    def ddim_schedule(self, num_steps: int, eta: float = 0.0) -> DDIMSchedule:
        return ddim_schedule_from_config(self.scheduler_config, num_steps, eta)

    schedule = ddim_schedule
    temporal_factor = 1  # one output frame per latent frame

    def latent_frames(self, num_frames: int) -> int:
        return num_frames

    def frame_decoder(self) -> FrameByFrame:
        return FrameByFrame(self.decode_latents)

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """(N, L, D) CLIP tokens, as the AnimateDiff pipeline encodes a prompt (max-length padding)."""
        tok = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        dev = self.text_encoder.device
        mask = tok.attention_mask.to(dev) if getattr(self.text_encoder.config, "use_attention_mask", False) else None
        return self.text_encoder(tok.input_ids.to(dev), attention_mask=mask)[0].to(self.dtype)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise ValueError("the AnimateDiff backend has no image encoder: --image and --latent-seed need a "
                         "VideoCrafter1 I2V model (--config videocrafter1_i2v)")

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor, chunk: int = 1) -> torch.Tensor:
        """(B, C, F, h, w) latents -> (B, 3, F, H, W) frames in about [-1, 1] (no clamp), ``chunk`` frames per call."""
        b, c, f, h, w = z.shape
        vae_dtype = self.vae.dtype
        flat = (z.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w) / self.cfg.scale_factor).to(vae_dtype)
        frames = torch.cat([self.vae.decode(flat[i : i + chunk]).sample for i in range(0, b * f, max(1, chunk))])
        return frames.reshape(b, f, *frames.shape[1:]).permute(0, 2, 1, 3, 4).float()

    @torch.no_grad()
    def encode_frames(self, x: torch.Tensor, chunk: int = 1) -> torch.Tensor:
        """(B, 3, F, H, W) frames in [-1, 1] -> scaled latents (B, C, F, h, w) (posterior mean)."""
        b, _, f, hh, ww = x.shape
        flat = x.permute(0, 2, 1, 3, 4).reshape(b * f, 3, hh, ww).to(self.vae.dtype)
        z = torch.cat([self.vae.encode(flat[i : i + chunk]).latent_dist.mean for i in range(0, b * f, max(1, chunk))])
        z = z * self.cfg.scale_factor
        return z.reshape(b, f, *z.shape[1:]).permute(0, 2, 1, 3, 4)

    def describe(self) -> dict[str, Any]:
        """The sidecar's record of the model: what was loaded and the sizes derived from its configs."""
        keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "steps_offset", "timestep_spacing",
                "set_alpha_to_one", "prediction_type")
        return {"family": FAMILY, **self.source, "latent_factor": self.latent_factor,
                "size_multiple": self.size_multiple, "max_window": self.max_window,
                "context": list(self.context_shape), "scale_factor": self.cfg.scale_factor,
                "scheduler": {k: self.scheduler_config.get(k) for k in keep}}

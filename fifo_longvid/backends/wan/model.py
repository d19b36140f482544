"""The Wan backend (Wan2.1, Wan2.2-TI2V-5B, Wan2.2-T2V-A14B's two experts, SkyReels-V2-DF): UMT5 text -> context,
the DiT (or a pair of experts, ``experts.py``), the causal VAE, the flow schedule.

Sizes come from the loaded configs, never from constants: channels and patch from the transformer, the spatial and
temporal compression from the VAE, the context width from the text encoder, the flow shift from the folder's
scheduler config. Text is encoded by diffusers' own ``WanPipeline.encode_prompt`` (prompt cleaning, padding to
the context length, embeddings past each prompt's length zeroed), so parity with diffusers is by construction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .experts import ExpertNetwork
from .network import WanNetwork, describe_network
from .vae import StreamDecoder, first_frame_latent, normalise, unnormalise
from .variants import EXPERT_RESERVE, WanVariant

FAMILY = "wan"
MAX_SEQUENCE_LENGTH = 512  # WanPipeline's max_sequence_length: the context length Wan2.1 was trained with


@dataclass
class WanConfig:
    """Run defaults of a Wan model (the fields FIFO and the pipeline read from any backend)."""

    name: str = "wan"
    channels: int = 16
    latent_size: tuple[int, int] = (60, 104)  # 480x832 px
    default_window: int | None = 20  # longest even window within the 21 latent frames Wan2.1 trained on
    default_partitions: int = 4
    default_cfg: float = 5.0  # WanPipeline's example guidance
    default_cfg_2: float | None = None  # the low-noise expert's (two-expert releases)
    default_num_frames: int = 81  # output frames: 21 latent frames
    use_scale: bool = False
    default_negative_prompt: str = ""


def cast_transformer(transformer: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Parameters to ``dtype`` except those diffusers keeps in float32 (``_keep_in_fp32_modules``: time embedder,
    modulation tables, norms); buffers (the rotary tables) untouched. ``nn.Module.to(dtype)`` would cast them
    all."""
    keep = set(getattr(transformer, "_keep_in_fp32_modules", None) or [])
    for name, p in transformer.named_parameters():
        want = torch.float32 if keep.intersection(name.split(".")) else dtype
        if p.dtype != want:
            p.data = p.data.to(want)
    return transformer


class Wan(nn.Module):
    """A loaded Wan model as a FIFO backend (``backends.base.Backend``). ``release`` says which Wan it is
    (``variants.py``); with two experts ``unet`` is an :class:`~.experts.ExpertNetwork`."""

    family = FAMILY

    def __init__(self, cfg: WanConfig, transformer: nn.Module, vae: nn.Module, text_encoder: nn.Module,
                 tokenizer: Any, scheduler_config: dict[str, Any], source: dict[str, Any] | None = None,
                 variant: WanVariant | None = None, transformer_2: nn.Module | None = None):
        super().__init__()
        self.release = variant or WanVariant("wan2.1", "wan", "WanPipeline")
        self.scheduler_config = dict(scheduler_config)
        if (transformer_2 is None) != (self.release.experts == 1):
            raise ValueError(f"{self.release.name} has {self.release.experts} expert(s) but "
                             f"{1 + (transformer_2 is not None)} transformer(s) were given")
        if transformer_2 is None:
            self.unet: Any = WanNetwork(transformer)
        else:
            boundary = self.release.boundary_ratio * int(self.scheduler_config.get("num_train_timesteps", 1000))
            self.unet = ExpertNetwork(WanNetwork(transformer), WanNetwork(transformer_2), boundary)
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.source = source or {}
        cfg.channels = int(transformer.config.out_channels)
        self.cfg = cfg
        self._check_compatible()

    def _check_compatible(self) -> None:
        tr = self.unet.transformer.config
        hidden = int(self.text_encoder.config.d_model)
        if int(tr.text_dim) != hidden:
            raise ValueError(f"the text encoder gives {hidden}-dim tokens but the transformer embeds {tr.text_dim}: "
                             "the folder mixes components of different models")
        if int(self.vae.config.z_dim) != self.cfg.channels:
            raise ValueError(f"the VAE has {self.vae.config.z_dim} latent channels, the transformer "
                             f"{self.cfg.channels}")
        if int(tr.in_channels) != self.cfg.channels:
            raise ValueError(f"the transformer takes {tr.in_channels} input channels for {self.cfg.channels} latent "
                             "channels: an image-to-video transformer, which the Wan backend does not run")
        pred = self.scheduler_config.get("prediction_type", "flow_prediction")
        flow = pred == "flow_prediction" or "shift" in self.scheduler_config
        if not flow:
            raise ValueError(f"scheduler prediction_type {pred!r}: Wan is a flow-matching (velocity) model")

    # -- sizes ----------------------------------------------------------------------------------------
    @property
    def variant(self) -> str:
        return self.unet.variant

    @property
    def device(self) -> torch.device:
        """Where the model computes: set by ``place`` (a streamed expert's weights stay on the host), else the
        transformer's."""
        placed = self.__dict__.get("_placed_on")
        return placed if placed is not None else self.unet.transformer.patch_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def temporal_length(self) -> int:
        """Latent frames of the training clip length (21 for Wan2.1's 81 frames)."""
        return self.latent_frames(self.cfg.default_num_frames)

    @property
    def default_block(self) -> int:
        """``--block``'s default: a diffusion-forcing checkpoint's ``num_frame_per_block`` (1 for Wan2.1)."""
        return self.unet.native_block

    @property
    def max_window(self) -> int | None:
        return None  # rotary positions, no learned table: any window runs (quality is best within training)

    @property
    def latent_factor(self) -> int:
        c = self.vae.config
        return int(getattr(c, "scale_factor_spatial", None) or 2 ** len(c.temperal_downsample))

    @property
    def temporal_factor(self) -> int:
        c = self.vae.config
        return int(getattr(c, "scale_factor_temporal", None) or 2 ** sum(c.temperal_downsample))

    @property
    def size_multiple(self) -> int:
        return self.latent_factor * self.unet.patch[1]

    @property
    def unet_factor(self) -> int:
        """The DiT's spatial patch: frame sides divide by VAE factor x this (the family's ``Sizes``)."""
        return int(self.unet.patch[1])

    @property
    def context_shape(self) -> tuple[int, int]:
        length = min(MAX_SEQUENCE_LENGTH, int(self.tokenizer.model_max_length))
        return length, int(self.text_encoder.config.d_model)

    @property
    def model_channels(self) -> int:
        c = self.unet.transformer.config
        return int(c.num_attention_heads) * int(c.attention_head_dim)

    @property
    def has_image_encoder(self) -> bool:
        return False

    @property
    def flow_shift(self) -> float:
        c = self.scheduler_config
        return float(c.get("flow_shift", c.get("shift", 1.0)))

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for ``num_frames`` output frames: the first latent gives 1 frame, each later one 4."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        return 1 + math.ceil((num_frames - 1) / self.temporal_factor)

    def output_frames(self, latents: int) -> int:
        return 1 + self.temporal_factor * (latents - 1)

    # -- the model's work ------------------------------------------------------------------------------
    def schedule(self, num_steps: int, eta: float = 0.0) -> Any:
        """The flow-matching schedule of the folder's scheduler config (``diffusion.flow``)."""
        if eta != 0:
            raise ValueError(f"--eta {eta}: Wan samples by flow matching, which is deterministic; use --eta 0")
        from ...diffusion.flow import flow_schedule_from_config

        sched = flow_schedule_from_config(self.scheduler_config, num_steps)
        if isinstance(self.unet, ExpertNetwork):  # rows route by schedule index on the host (no sync)
            self.unet.bind_levels(sched.timestep_list)
        return sched

    @property
    def experts(self) -> int:
        return self.release.experts

    @property
    def expert_boundary(self) -> float | None:
        """The timestep at and above which the high-noise expert runs (None: one denoiser). FIFO counts the windows
        that straddle it twice (``fifo/costs.py``)."""
        return self.unet.boundary_t if isinstance(self.unet, ExpertNetwork) else None

    def guidance(self, scale: float, scale_2: float | None = None) -> float | Callable[[torch.Tensor], torch.Tensor]:
        """The guidance scale of each frame: ``scale`` on one model; with two experts, a function of the (B, F)
        timesteps giving ``scale`` where the high-noise expert runs and ``scale_2`` (default: ``scale``) where the
        low-noise one does, as ``WanPipeline``'s ``guidance_scale`` / ``guidance_scale_2``."""
        if not isinstance(self.unet, ExpertNetwork):
            return scale
        low = scale if scale_2 is None else scale_2
        if low == scale:  # one number: guidance 1 then runs the conditional branch alone
            return scale
        boundary = self.unet.boundary_t

        def per_frame(t: torch.Tensor) -> torch.Tensor:
            high = torch.full_like(t, scale, dtype=torch.float32)
            return torch.where(t >= boundary, high, torch.full_like(high, low))

        return per_frame

    def ddim_schedule(self, num_steps: int, eta: float = 0.0) -> Any:
        raise ValueError("Wan is a flow-matching model: it has no DDIM schedule (use schedule())")

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """(N, L, D) UMT5 tokens exactly as ``WanPipeline.encode_prompt`` gives them, in the model's dtype."""
        from diffusers import WanPipeline

        pipe = WanPipeline(tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=None, scheduler=None)
        device = self.device if self.text_offload else self.text_encoder.device  # offloaded: computes on the card
        embeds, _ = pipe.encode_prompt(list(prompts), do_classifier_free_guidance=False,
                                       max_sequence_length=self.context_shape[0], device=device,
                                       dtype=self.text_encoder.dtype)
        return embeds.to(self.dtype)

    @property
    def image_input(self) -> str | None:
        """How ``--image`` enters: ``"first_frame"`` on Wan2.2-TI2V (``encode_first_frame``), else not at all."""
        return self.release.image_input

    def encode_first_frame(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) in [-1, 1] -> the (1, C, 1, h, w) float32 latent the samplers pin as the first frame, as
        ``WanImageToVideoPipeline.prepare_latents`` computes it (``vae.py``)."""
        if self.image_input != "first_frame":
            raise ValueError(f"{self.release.name} takes no first-frame image; --image needs a Wan2.2-TI2V folder")
        return first_frame_latent(self.vae, image)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise ValueError("the Wan backend has no image encoder: --latent-seed needs a VideoCrafter1 I2V model "
                         "(--config videocrafter1_i2v), and --image a Wan2.2-TI2V-5B folder or VideoCrafter1 I2V")

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor, chunk: int = 1) -> torch.Tensor:
        """(B, C, F, h, w) model latents -> (B, 3, 1 + 4(F-1), H, W) frames in [-1, 1], in one causal decode
        (``chunk`` is accepted for the interface: the causal VAE decodes the whole clip in order)."""
        return self.vae.decode(unnormalise(self.vae, z), return_dict=False)[0].float()

    def frame_decoder(self) -> StreamDecoder:
        """A streamed decoder for FIFO's dequeued latents (constant memory, see ``vae.py``)."""
        return StreamDecoder(self.vae)

    @torch.no_grad()
    def encode_frames(self, x: torch.Tensor, chunk: int = 1) -> torch.Tensor:
        """(B, 3, F, H, W) frames in [-1, 1] -> normalised latents (posterior mean)."""
        z = self.vae.encode(x.to(self.vae.dtype)).latent_dist.mean
        return normalise(self.vae, z)

    def cast(self, dtype: torch.dtype, vae_dtype: torch.dtype | None = None) -> Wan:
        """The transformer in ``dtype`` (its float32 modules kept), the VAE in ``vae_dtype`` (default: ``dtype``),
        the text encoder in float32 (it runs once per prompt)."""
        for net in self._networks():
            cast_transformer(net.transformer, dtype)
        nn.Module.to(self.vae, vae_dtype or dtype)  # (ModelMixin.to warns about fp32 modules the VAE has none of)
        nn.Module.to(self.text_encoder, torch.float32)
        return self

    def _networks(self) -> list[WanNetwork]:
        return [self.unet.high, self.unet.low] if isinstance(self.unet, ExpertNetwork) else [self.unet]

    @property
    def text_offload(self) -> bool:
        """Whether UMT5 stays in host memory and computes on the card (``place``)."""
        from ..offload import is_streamed

        return is_streamed(self.text_encoder)

    def place(self, device: torch.device | str, offload_text: bool,
              resident_experts: int | None = None) -> Wan:
        """The DiT and the VAE on ``device``. UMT5-XXL's encoder (21.2 GiB in float32: 88 % of Wan2.1-1.3B's
        weights, used once per prompt) goes there too unless ``offload_text``: then it stays in host memory and
        computes on the card one submodule at a time (``backends.offload``), so the card's peak is the DiT's,
        not the sum, and the context is the same.

        Two experts (A14B, ≈28 GB each in bf16): the first ``resident_experts`` of (high-noise, low-noise) live on
        the card, the rest stay in pinned host memory and stream through it piece by piece on every call, like
        UMT5 (the same arithmetic on the same device: the same result). Default: on a GPU, an expert is resident
        while it fits in the card's free memory less ``EXPERT_RESERVE`` of the card (activations, VAE, queue):
        both on a 141 GB card, the high-noise one on 48-80 GB, neither on 24 GB; on the CPU both."""
        from ..offload import stream_from_host, unstream

        device = torch.device(device)
        self.__dict__.pop("_placed_on", None)
        for child in self.children():
            if not (offload_text and child is self.text_encoder) and child is not self.unet:
                nn.Module.to(child, device)
        if isinstance(self.unet, ExpertNetwork):
            self._place_experts(device, resident_experts)
        else:
            nn.Module.to(self.unet, device)
        if offload_text:
            stream_from_host(self.text_encoder, device)
        else:
            unstream(self.text_encoder)
        if "high" in self.streamed_experts:  # the transformer's weights no longer say where the model computes
            if device.type == "cuda" and device.index is None:
                device = torch.device("cuda", torch.cuda.current_device())
            self._placed_on = device
        return self

    def lora_modules(self) -> dict[str, nn.Module]:
        """The components ``--lora`` (and ``--lora-2``) load into, by diffusers component name (``backends/lora.py``;
        ``wan/lora.py`` lists the same names from a folder, before loading): the low-noise expert is
        ``transformer_2``, as in diffusers' ``load_lora_weights(load_into_transformer_2=True)``."""
        if isinstance(self.unet, ExpertNetwork):
            return {"transformer": self.unet.high.transformer, "transformer_2": self.unet.low.transformer}
        return {"transformer": self.unet.transformer}

    def _place_experts(self, device: torch.device, resident: int | None) -> None:
        from ..offload import stream_from_host, unstream

        nets = (self.unet.high, self.unet.low)
        if resident is None:
            resident = len(nets) if device.type != "cuda" else self._experts_that_fit(device)
        self.resident_experts = resident
        for k, net in enumerate(nets):
            unstream(net.transformer)
            if k < resident:
                nn.Module.to(net, device)
            else:  # host memory, pinned once; each call copies it in piece by piece without blocking the host
                nn.Module.to(net, "cpu")
                stream_from_host(net.transformer, device, pin=True)

    def _experts_that_fit(self, device: torch.device) -> int:
        """How many experts (high-noise first) stay on the card: see ``place``."""
        props = torch.cuda.get_device_properties(device)
        free = props.total_memory - torch.cuda.memory_allocated(device) - EXPERT_RESERVE * props.total_memory
        n = 0
        for net in (self.unet.high, self.unet.low):
            size = sum(p.numel() * p.element_size() for p in net.parameters())
            if size > free:
                break
            free -= size
            n += 1
        return n

    @property
    def streamed_experts(self) -> list[str]:
        """Which experts stream from host memory (``place``): a subset of ``["high", "low"]``."""
        from ..offload import is_streamed

        if not isinstance(self.unet, ExpertNetwork):
            return []
        return [k for k, net in (("high", self.unet.high), ("low", self.unet.low)) if is_streamed(net.transformer)]

    def describe(self) -> dict[str, Any]:
        """The sidecar's record of the model: what was loaded and the sizes derived from its configs."""
        keep = ("_class_name", "flow_shift", "shift", "num_train_timesteps", "prediction_type", "use_flow_sigmas")
        experts = {}
        if isinstance(self.unet, ExpertNetwork):
            experts = {"transformer_2": describe_network(self.unet.low), "boundary_ratio": self.release.boundary_ratio,
                       "boundary_timestep": self.unet.boundary_t, "streamed_experts": self.streamed_experts}
        return {"family": FAMILY, "variant": self.variant, "release": self.release.name, **self.source,
                "transformer": describe_network(self._networks()[0]), **experts,
                "vae": type(self.vae).__name__, "text_encoder": type(self.text_encoder).__name__,
                "latent_factor": self.latent_factor, "temporal_factor": self.temporal_factor,
                "size_multiple": self.size_multiple, "temporal_length": self.temporal_length,
                "context": list(self.context_shape),
                "scheduler": {k: self.scheduler_config[k] for k in keep if k in self.scheduler_config}}

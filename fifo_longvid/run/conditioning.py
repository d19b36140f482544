"""What the U-Net is conditioned on: text and image tokens, the unconditional context, the anchored first
frame, and which prompt each FIFO window sees.

``--image`` enters the way the model declares (``image_input``): as image tokens in the context (a model with an
image encoder), or as the latent of the video's first frame (``"first_frame"``), which the samplers pin as an
anchor (``diffusion/sampling.py``, ``fifo/sampler.py``).

Multi-prompt: each window is conditioned on the prompt of its centre frame, so a frame is denoised
under its own prompt for most of its life in the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..backends.base import Backend
from ..backends.family import FIRST_FRAME
from ..diffusion.guidance import Scale, cfg_denoiser, unet_network
from ..fifo.queue import FifoPlan
from ..fifo.sampler import WindowBatch, WindowDenoiser
from ..io.images import load_image
from ..io.sidecar import file_sha256
from ..techniques.seeding import i2v_uncond
from .config import RunConfig


class CondState:
    """The cross-attention context of the run: text tokens per prompt, plus optional image tokens
    (``--image``, or latent seeding, which may refresh them during the run), plus the latent of a given first
    frame (``anchor``: ``--image`` on a model that takes it as the first frame)."""

    def __init__(self, text: torch.Tensor, image: torch.Tensor | None = None, anchor: torch.Tensor | None = None):
        self.text, self.image, self.anchor = text, image, anchor

    def conds(self) -> torch.Tensor:
        if self.image is None:
            return self.text
        return torch.cat([self.text, self.image.expand(self.text.shape[0], -1, -1)], dim=1)


def encode_conditioning(cfg: RunConfig, model: Backend, frame_hw: tuple[int, int]) -> tuple[CondState,
                                                                                                 torch.Tensor]:
    """(context per prompt, unconditional context): text, plus the ``--image`` tokens or first-frame latent when
    given. The unconditional context encodes ``--negative-prompt`` (default "": the empty prompt)."""
    cond_state = CondState(model.encode_text(cfg.prompts))
    uncond = i2v_uncond(model, model.encode_text([cfg.sampling.negative_prompt]))
    if cfg.conditioning.image:
        img = load_image(cfg.conditioning.image, *frame_hw).to(model.device)
        if image_input(model) == FIRST_FRAME:
            cond_state.anchor = model.encode_first_frame(img)  # type: ignore[attr-defined]
        else:
            cond_state.image = model.encode_image(img)
    return cond_state, uncond


def image_input(model: Backend) -> str | None:
    """How ``model`` takes an image: its own ``image_input`` (e.g. ``"first_frame"``), else image tokens when it
    has an image encoder, else None."""
    declared = getattr(model, "image_input", None)
    if declared is not None:
        return declared
    return "tokens" if model.has_image_encoder else None


def base_anchors(cond_state: CondState, frame: int = 0) -> dict[int, torch.Tensor] | None:
    """The base clip's anchor: the given first frame as frame ``frame`` of the clip (None without one)."""
    return None if cond_state.anchor is None else {frame: cond_state.anchor}


def prompt_schedule(cfg: RunConfig, plan: FifoPlan, warmup: int,
                    latent_frames: Callable[[int], int] = lambda n: n) -> Callable[[torch.Tensor], torch.Tensor]:
    """Frame id -> prompt index. Latent frame k out of the queue has id head + warmup + k; each window is
    conditioned on the prompt of its centre frame, so a frame is denoised under its own prompt for most of its
    life. ``latent_frames`` turns output-frame counts into latent ones (a VAE that compresses time)."""
    counts = cfg.fifo.frames_per_prompt or [cfg.fifo.num_frames]
    bounds = torch.tensor([latent_frames(int(n)) for n in torch.tensor(counts).cumsum(0)])
    offset = plan.head + warmup
    on_device: dict[torch.device, torch.Tensor] = {}  # bounds copied once per device, not every iteration

    def of(ids: torch.Tensor) -> torch.Tensor:  # on the ids' device: no host sync in the loop
        b = on_device.get(ids.device)
        if b is None:
            b = on_device[ids.device] = bounds.to(ids.device)
        return torch.bucketize(ids - offset, b, right=True).clamp(max=len(counts) - 1)

    return of


def guidance_of(model: Backend, cfg: RunConfig) -> Scale:
    """The run's guidance: ``--cfg``, or per frame where the model's experts take their own (``--cfg-2``)."""
    per_expert = getattr(model, "guidance", None)
    s = cfg.sampling
    return per_expert(s.cfg, s.cfg_2) if per_expert is not None else s.cfg  # type: ignore[return-value]


def fifo_denoiser(model: Backend, cond_state: CondState, uncond: torch.Tensor, scale: Scale, fps: int,
                  max_batch: int | None, prompt_of: Callable[[torch.Tensor], torch.Tensor],
                  executor: Any = None, techniques: Any = None) -> WindowDenoiser:
    """``executor`` (fifo/parallel.py) runs the U-Net calls, e.g. split across torch.distributed ranks.
    ``techniques`` (a TechniqueSet) may wrap the network call and the guidance (caches that skip work)."""
    net = unet_network(model.unet, fps)
    guide = cfg_denoiser
    if techniques is not None:
        net, guide = techniques.wrap_network(net), techniques.cfg_denoiser
    if executor is not None:
        net, max_batch = executor.wrap(net, max_batch), None

    def denoise(batch: WindowBatch) -> torch.Tensor:
        conds = cond_state.conds()
        if conds.shape[0] > 1:  # multi-prompt: each window takes the prompt of its centre frame
            centre = batch.frame_ids[:, batch.frame_ids.shape[1] // 2]
            conds = conds[prompt_of(centre).to(conds.device)]
        return guide(net, conds, uncond, scale, max_batch)(batch.x, batch.t)

    return denoise


def conditioning_info(cfg: RunConfig) -> dict[str, Any]:
    """The sidecar's record of the conditioning (the image by path and content hash)."""
    c = cfg.conditioning
    info: dict[str, Any] = {"latent_seed": c.latent_seed, "latent_seed_every": c.latent_seed_every}
    if c.image:
        info["image"] = {"path": str(c.image), "sha256": file_sha256(c.image, cache=False)}
    return info

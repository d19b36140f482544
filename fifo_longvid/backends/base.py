"""What a model family provides to FIFO, the samplers and the techniques: the backend seam.

``fifo/``, ``diffusion/``, ``techniques/`` and the CLI see models only through these protocols:

* a :class:`Backend` turns text into context, runs VAE decode/encode, builds its schedule (DDIM or flow
  matching: ``schedule``), and holds its default sizes; its ``unet`` is a :class:`Network`;
* a backend whose VAE compresses time (``temporal_factor`` > 1, Wan's causal VAE) streams its decode: FIFO
  hands each dequeued latent frame to ``frame_decoder().decode`` and writes the frames it returns;
* a :class:`Network` is called as ``net(x (B, C, F, h, w), t (B, F) per-frame timesteps, context (B, L, D))``
  and names its attention sites (:class:`AttnSite`) and its resolution levels (:class:`DeepSplit`), so
  techniques select layers by role, never by a family's module paths.

Attention sites are handed to techniques as *handles* in one processor convention,
``processor(attn, x, context) -> out``, where ``attn`` offers ``to_q``, ``split_heads`` and
``attend_and_project``. VideoCrafter's own ``Attention`` is such a handle; other families wrap theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from ..diffusion.schedule_protocol import Schedule
from ..errors import CheckpointError as CheckpointError  # raised by every family; kept importable here


@dataclass(frozen=True)
class AttnSite:
    """One attention layer, by role: what techniques select on.

    ``skip`` places the site on the U-Net's skip connections: an encoder site's block produces skip tensor
    number ``skip``; a decoder site's block consumes skip tensor number ``skip``. Q-cache pairs a decoder
    site with the encoder site whose features it receives (``mirror_pairs``).
    """

    path: str  # module path inside the network, e.g. "input_blocks.4.2.transformer_blocks.0.attn1"
    kind: str  # "spatial" | "temporal"
    role: str  # "attn1" | "attn2"
    stage: str  # "init" | "input" | "middle" | "output"
    block: int  # block index within its stage (0 for init/middle)
    depth: int  # transformer block index inside its transformer
    level: int  # resolution level: 0 = full latent resolution, +1 per downsampling
    heads: int
    dim_head: int
    skip: int = -1  # skip tensor produced (input) or consumed (output); -1: none

    @property
    def target(self) -> str:
        return f"{self.kind}_{self.role}"


class AttentionHandle(Protocol):
    """An attention layer as techniques drive it (see the module docstring)."""

    heads: int
    dim_head: int
    processor: Any

    def set_processor(self, processor: Any) -> None: ...
    def to_q(self, x: torch.Tensor) -> torch.Tensor: ...
    def split_heads(self, t: torch.Tensor) -> torch.Tensor: ...
    def attend_and_project(self, q: torch.Tensor, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor: ...


Located = list[tuple[AttnSite, Any]]  # (site, its AttentionHandle), in forward order


@dataclass
class DeepSplit:
    """The blocks DeepCache skips between full passes, and how to stand in for them.

    ``deep`` are the blocks below the outermost resolution level, in forward order; ``last`` is the one whose
    output enters the outermost decoder level (the feature DeepCache caches per frame). In a shallow pass every
    deep block but ``last`` returns ``placeholder(block, args, kwargs)``: something the network's forward
    accepts in its place, computed from nothing.
    """

    deep: list[nn.Module]
    last: nn.Module
    placeholder: Callable[[nn.Module, tuple, dict], Any]


class Network(Protocol):
    """A U-Net with per-frame timesteps; ``nn.Module`` so techniques may hook it."""

    def __call__(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                 fps: int | torch.Tensor = 8) -> torch.Tensor: ...
    def attention_sites(self) -> Located: ...
    def deep_split(self) -> DeepSplit: ...


class Backend(Protocol):
    """A model family, loaded: everything ``pipeline``/``fifo_run`` need (see the module docstring).

    ``cfg`` carries the run defaults (``name``, ``channels``, ``latent_size``, ``default_window``,
    ``default_partitions``, ``default_cfg``, ``default_num_frames``). ``schedule`` is the family's own sampler's
    (VideoCrafter2's scaled DDIM where its config says so), so no caller passes a family flag to a step.
    """

    cfg: Any
    unet: Any  # a Network

    @property
    def device(self) -> torch.device: ...
    @property
    def dtype(self) -> torch.dtype: ...
    @property
    def temporal_length(self) -> int: ...
    @property
    def max_window(self) -> int | None: ...
    @property
    def latent_factor(self) -> int: ...
    @property
    def size_multiple(self) -> int: ...
    @property
    def context_shape(self) -> tuple[int, int]: ...
    @property
    def model_channels(self) -> int: ...
    @property
    def has_image_encoder(self) -> bool: ...
    @property
    def temporal_factor(self) -> int: ...  # output frames per latent frame (after the first)
    def schedule(self, num_steps: int, eta: float = 0.0) -> Schedule: ...  # the model's own sampler's
    def latent_frames(self, num_frames: int) -> int: ...  # latent frames that make num_frames output frames
    def frame_decoder(self) -> Any: ...  # .decode(z (B, C, 1, h, w)) -> (B, 3, k, H, W), in stream order
    def encode_text(self, prompts: list[str]) -> torch.Tensor: ...
    def encode_image(self, images: torch.Tensor) -> torch.Tensor: ...
    def decode_latents(self, z: torch.Tensor, chunk: int = 1) -> torch.Tensor: ...
    def encode_frames(self, x: torch.Tensor, chunk: int = 1) -> torch.Tensor: ...
    def describe(self) -> dict[str, Any]: ...


def expand_timesteps(timesteps: torch.Tensor, b: int, f: int, per_frame: bool = False) -> torch.Tensor:
    """Any accepted timestep shape -> (B, F): one timestep per (sample, frame).

    (B,) one per sample; (B, F) one per frame; (F,) with ``per_frame=True`` shared by every sample.
    """
    t = torch.as_tensor(timesteps)
    if t.ndim == 0:
        return t.reshape(1, 1).expand(b, f)
    if t.ndim == 2:
        if tuple(t.shape) != (b, f):
            raise ValueError(f"per-frame timesteps must be (B, F) = {(b, f)}, got {tuple(t.shape)}")
        return t
    if t.ndim == 1 and per_frame:
        if t.shape[0] != f:
            raise ValueError(f"per_frame=True needs {f} timesteps (one per frame), got {t.shape[0]}")
        return t[None].expand(b, f)
    if t.ndim == 1:
        if t.shape[0] != b:
            raise ValueError(
                f"timesteps of shape ({t.shape[0]},) for batch {b}: pass (B,), (B, F), or (F,) with per_frame=True"
            )
        return t[:, None].expand(b, f)
    raise ValueError(f"timesteps must be 1-D or 2-D, got shape {tuple(t.shape)}")


def mirror_pairs(sites: Located | list[AttnSite], target: str = "temporal_attn1") -> dict[AttnSite, AttnSite]:
    """Decoder site -> encoder site of the same target, level, depth and shape.

    The preferred partner is the encoder site whose block produced the skip tensor the decoder block
    receives; when that block has none (a downsampling block or the stem), the nearest encoder site of the
    same level that does (ties: the later one).
    """
    flat = [s[0] if isinstance(s, tuple) else s for s in sites]
    chosen = [s for s in flat if s.target == target]
    encoder = [s for s in chosen if s.stage == "input"]
    pairs = {}
    for dec in (s for s in chosen if s.stage == "output"):
        candidates = [e for e in encoder if e.level == dec.level and e.depth == dec.depth
                      and (e.heads, e.dim_head) == (dec.heads, dec.dim_head)]
        if candidates:
            pairs[dec] = min(candidates, key=lambda e: (abs(e.skip - dec.skip), -e.skip))
    return pairs


class FrameByFrame:
    """The frame decoder of a VAE that decodes every latent frame on its own (one output frame each)."""

    def __init__(self, decode_latents: Callable[[torch.Tensor], torch.Tensor]):
        self._decode = decode_latents

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._decode(z)

    def reset(self) -> None:
        pass

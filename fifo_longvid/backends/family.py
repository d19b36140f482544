"""What a model family tells the rest of the package, so that nothing else asks "which family is this?".

Each family module (``videocrafter/family.py``, ``animatediff/family.py``, ``wan/family.py``) exposes one
:class:`Family`; ``backends/__init__.py`` keeps them in one ordered registry and answers every question from it.
Family modules import their heavy parts (diffusers, transformers, the models) only when asked to load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hub import Download

ConfigArg = Any  # a --config value: a preset name, a YAML path, or a family's own config object


@dataclass(frozen=True)
class Sizes:
    """A preset's geometry and run defaults, read without building a model (``fifo-gen plan``)."""

    latent_factor: int  # pixels per latent pixel
    size_multiple: int  # frame sides must divide by this
    temporal_factor: int  # output frames per latent frame (after the first: 1 + t (F - 1) frames from F latents)
    window: int  # default FIFO window, latent frames
    partitions: int
    num_frames: int  # default --num-frames (output frames)


@dataclass(frozen=True)
class Family:
    """One model family: how to recognise, load and describe it.

    ``provides`` names the structures techniques may need (``techniques/spec.py`` ``needs``): ``mirror`` (encoder
    layers that mirror decoder layers, Q-cache), ``levels`` (U-Net resolution levels, DeepCache),
    ``motion_adapter`` (``--motion-adapter``). ``schedule`` is ``ddim`` (epsilon prediction) or ``flow`` (velocity,
    flow matching).
    """

    name: str
    presets: tuple[str, ...]
    matches: Callable[[ConfigArg, str | Path | None], bool]  # is this --config (and --checkpoint) ours?
    load: Callable[..., Any]  # (config, checkpoint, device, dtype, motion_adapter) -> a loaded Backend
    preset_cfg: Callable[[ConfigArg], float | None]  # the guidance scale when --cfg is not given
    has_image_encoder: Callable[[ConfigArg], bool] = lambda config: False
    check_size: Callable[[ConfigArg, int | None, int | None], None] | None = None  # before any weights load
    provides: frozenset[str] = frozenset()
    schedule: str = "ddim"
    negative_prompt: bool = True  # the unconditional branch encodes --negative-prompt
    sizes: Callable[[ConfigArg], Sizes] | None = None  # the preset's geometry, without weights
    summary: str = ""
    download: Download | None = None  # what `fifo-gen download --model NAME` fetches for this family

    def capabilities(self, config: ConfigArg = None) -> dict[str, Any]:
        """The sidecar's and ``--help``'s view of what the family can do."""
        return {"family": self.name, "schedule": self.schedule, "provides": sorted(self.provides),
                "image_branch": bool(config is not None and self.has_image_encoder(config)),
                "negative_prompt": self.negative_prompt}


def motion_adapter_refusal(config: ConfigArg, family: Family) -> str:
    """The one sentence that refuses ``--motion-adapter`` on a family without ``motion_adapter`` in ``provides``
    (run validation raises it before loading; each family's ``load`` raises it too, for callers of the API)."""
    return (f"--motion-adapter is for AnimateDiff (--config animatediff); --config {config} is a {family.name} "
            "model")

"""What a model family tells the rest of the package, so that nothing else asks "which family is this?".

Each family module (``videocrafter/family.py``, ``animatediff/family.py``, ``wan/family.py``) exposes one
:class:`Family`; ``backends/__init__.py`` keeps them in one ordered registry and answers every question from it.
Family modules import their heavy parts (diffusers, transformers, the models) only when asked to load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hub import Download

ConfigArg = Any  # a --config value: a preset name, a YAML path, or a family's own config object


FIRST_FRAME = "first_frame"  # an image input: the image is the video's first latent frame, pinned at timestep 0


@dataclass(frozen=True)
class Sizes:
    """A preset's geometry and run defaults, read without building a model: the one pass that resolves a run
    config (``run/resolve.py``) and ``fifo-gen plan`` read them, and a test checks each against the loaded model."""

    latent_factor: int  # pixels per latent pixel (the VAE's downsampling)
    size_multiple: int  # frame sides must divide by this: the VAE's factor x the network's own downsampling
    temporal_factor: int  # output frames per latent frame (after the first: 1 + t (F - 1) frames from F latents)
    window: int  # default FIFO window, latent frames
    partitions: int
    num_frames: int  # default --num-frames (output frames)
    latent_size: tuple[int, int] = (40, 64)  # default latent (h, w): the frame size when --height/--width are unset
    default_block: int = 1  # frames per noise level the checkpoint was trained with (diffusion forcing)
    network_downsampling: str = "U-Net levels"  # what divides the latent further, for the frame-size message
    release: str = ""  # which checkpoint of the family the sizes were read from (e.g. "wan2.2-ti2v"), if known
    channels: int | None = None  # latent channels, when the configs say (the queue's frame size)
    experts: int = 1  # denoisers split by noise level (Wan2.2-A14B: 2); --cfg-2 and --lora-2 need 2
    image_input: str | None = None  # how --image enters where it is not the family's image encoder ("first_frame")
    cfg: float | None = None  # the checkpoint's default guidance, where it differs from the preset's
    cfg_2: float | None = None  # the low-noise expert's default guidance (experts == 2)
    expert_boundary: float | None = None  # experts == 2: the timestep at and above which the high-noise one runs
    # experts == 2: the schedule's timesteps for S levels (index 0 = least noisy), from the folder's scheduler config
    # without weights, so ``plan`` counts the windows that straddle the boundary (``fifo/costs.py``)
    level_timesteps: Callable[[int], tuple[float, ...]] | None = field(default=None, compare=False)

    @property
    def network_factor(self) -> int:
        return self.size_multiple // self.latent_factor

    def default_frame(self) -> tuple[int, int]:
        """(height, width) in pixels when the run gives none."""
        return self.latent_size[0] * self.latent_factor, self.latent_size[1] * self.latent_factor

    def check_frame(self, height: int | None, width: int | None, model: str) -> None:
        """Raise a ConfigError naming the nearest valid sizes when a side does not fit the model: otherwise a skip
        connection and its upsampled partner (or a patch grid) differ in size."""
        from ..errors import ConfigError

        m = self.size_multiple
        for name, v in (("height", height), ("width", width)):
            if v is not None and (v <= 0 or v % m):
                lo = max(m, v // m * m)
                sizes = f"{lo} or {lo + m}" if v > lo else f"{lo}"
                raise ConfigError(
                    f"--{name} {v} is not a positive multiple of {m}: the {model} model downsamples frames by "
                    f"{self.latent_factor} (VAE) x {self.network_factor} ({self.network_downsampling}); try {sizes}")


@dataclass(frozen=True)
class Family:
    """One model family: how to recognise, load and describe it. Every fact about a family lives here (or in the
    callables it points to), so ``fifo/``, ``run/`` and ``plan.py`` ask it and never name it.

    ``provides`` names the structures techniques may need (``techniques/spec.py`` ``needs``): ``mirror`` (encoder
    layers that mirror decoder layers, Q-cache), ``levels`` (U-Net resolution levels, DeepCache),
    ``motion_adapter`` (``--motion-adapter``). ``schedule`` is ``ddim`` (epsilon prediction) or ``flow`` (velocity,
    flow matching).
    """

    name: str
    presets: tuple[str, ...]
    matches: Callable[[ConfigArg, str | Path | None], bool]  # is this --config (and --checkpoint) ours?
    load: Callable[..., Any]  # (config, checkpoint, device, dtype, motion_adapter, loras=()) -> a loaded Backend
    preset_cfg: Callable[[ConfigArg], float | None]  # the guidance scale when --cfg is not given
    sizes: Callable[[ConfigArg, str | Path | None], Sizes]  # the preset's geometry, without weights
    has_image_encoder: Callable[[ConfigArg], bool] = lambda config: False
    image_refusal: Callable[[ConfigArg, str | Path | None], str] = lambda config, checkpoint: image_encoder_advice(
        config)  # the sentence for --image on a model that takes none, naming what does
    provides: frozenset[str] = frozenset()
    schedule: str = "ddim"
    dit: bool = False  # one stack of transformer blocks (no U-Net levels, no encoder/decoder mirror)
    experts: bool = False  # several denoisers, each for a range of noise levels
    negative_prompt: bool = True  # the unconditional branch encodes --negative-prompt
    # backends/costs.FamilyCosts measured for a preset, and for one release of it (Sizes.release) where they differ
    costs: Callable[..., Any] = lambda config, release="": None
    default_checkpoint: Callable[[ConfigArg], str | None] = lambda config: None  # used when --checkpoint is unset
    summary: str = ""
    download: Download | None = None  # what `fifo-gen download --model NAME` fetches for this family
    # the components --lora (first) and --lora-2 (second, a second expert) load into, read without weights;
    # () refuses --lora (lora_refusal)
    lora_targets: Callable[[ConfigArg, str | Path | None], tuple[str, ...]] = lambda config, checkpoint: ()

    @property
    def mirrored(self) -> bool:
        """Has encoder layers that mirror its decoder layers (what the Q-cache blends)."""
        return "mirror" in self.provides

    def default_eta(self) -> float:
        """1.0 for DDIM families (the reference's stochastic default); 0 for flow matching (its Euler step has
        none)."""
        return 0.0 if self.schedule == "flow" else 1.0


def image_encoder_advice(config: ConfigArg, what: str = "--image") -> str:
    """The sentence that refuses ``--image`` / ``--latent-seed`` on a model without an image encoder."""
    return (f"{what} needs a model with an image encoder (VideoCrafter1 I2V); {config!r} has none. Get it with "
            "`fifo-gen download --model videocrafter1_i2v` and add --config videocrafter1_i2v (or --config tiny_i2v "
            "to try it without weights)")


def motion_adapter_refusal(config: ConfigArg, family: Family) -> str:
    """The one sentence that refuses ``--motion-adapter`` on a family without ``motion_adapter`` in ``provides``
    (run validation raises it before loading; each family's ``load`` raises it too, for callers of the API)."""
    return (f"--motion-adapter is for AnimateDiff (--config animatediff); --config {config} is a {family.name} "
            "model")


def lora_refusal(config: ConfigArg, family: Family, second: bool = False) -> str:
    """The one sentence that refuses ``--lora`` on a family without LoRA targets, or ``--lora-2`` on a model
    without a second expert (run validation raises it before loading; ``load`` raises it for API callers)."""
    if second:
        return (f"--lora-2 loads into the second (low-noise) expert of a two-expert model such as Wan2.2-A14B; "
                f"--config {config} with this checkpoint has one denoiser (use --lora)")
    return (f"--lora needs a model that takes LoRAs (Wan or AnimateDiff: --config wan or animatediff); "
            f"--config {config} is a {family.name} model")

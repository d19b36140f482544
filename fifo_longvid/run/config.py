"""The run configuration: one typed schema for CLI flags, YAML files and ``key=value`` overrides.

Precedence: schema defaults < YAML run file (``--run-config``) < CLI flags < dotlist overrides.
OmegaConf merges against the structured schema, so unknown keys and wrong types are rejected with
the offending key named.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError, FrozenConfigError
from ..fifo.tail import TailConfig, tail_hash_settings
from ..techniques import TechniquesConfig


@dataclass
class SamplingConfig:
    steps: int | None = None  # DDIM steps / flow sigmas; FIFO: window x partitions / block (the default), base: 50
    cfg: float | None = None  # classifier-free guidance scale; None: the model preset's (12; toy: its own)
    cfg_2: float | None = None  # the low-noise expert's scale (two-expert models); None: the release's, else cfg
    eta: float | None = None  # DDIM eta; None: 1.0 (stochastic, the reference's) for DDIM, 0 for flow matching
    negative_prompt: str = ""  # what the unconditional branch encodes ("": the empty prompt, as before)
    fps: int = 8  # fps conditioning of the U-Net
    height: int | None = None  # pixels; default from the model (320 for VideoCrafter2)
    width: int | None = None
    seed: int | None = None  # None: a random seed, printed and recorded


@dataclass
class FifoConfig:
    num_frames: int | None = None  # output length; default from the model preset (100; tiny: 16)
    partitions: int | None = None  # n; steps = f * n / block; default from the preset (4; tiny: 2)
    window: int | None = None  # f; default from the preset (the model's temporal length 16; tiny: 8)
    lookahead: bool = True
    block: int | None = None  # K frames per noise level (the rolling schedule); None: 1, or what --steps needs
    stagger: bool = False  # a block's frames at their own levels of a K-times finer grid (no seams)
    init: str = "first"  # first | uniform | noise
    max_batch: str = "auto"  # samples per U-Net call: "auto", "all", or an integer
    scaled_step: bool = False  # apply scale_arr in FIFO's DDIM step (the reference does not: quirk Q1)
    frames_per_prompt: list[int] = field(default_factory=list)
    tail: TailConfig = field(default_factory=TailConfig)  # what enters the queue (--tail); fifo/tail.py


@dataclass
class OutputConfig:
    path: str | None = None
    output_fps: float = 10.0
    overwrite: bool = False
    save_latents: bool = False
    save_frames: bool = False
    checkpoint_every: int = 0  # save resumable state every K output frames (0: only on interrupt)
    resume: bool = False


@dataclass
class ConditioningConfig:
    image: str | None = None  # image-to-video: this image conditions the base clip and every FIFO step
    latent_seed: bool = False  # FIFO-Diffusion+ latent seeding: tokens of the decoded head of the initial queue
    latent_seed_every: int = 0  # re-seed from the latest output frame every K frames (0: never)


@dataclass
class LoraConfig:
    path: str = ""  # a .safetensors LoRA (diffusers, original or kohya layout: the family's loader converts it)
    scale: float = 1.0  # 0: checked and hashed, not loaded (the model without it, bit for bit)
    target: str = "main"  # main (--lora), second (--lora-2: a second expert), or a component name (transformer)


@dataclass
class RunConfig:
    mode: str = "fifo"  # fifo | base
    model: str = "videocrafter2"  # preset name or model YAML path
    checkpoint: str | None = None
    motion_adapter: str | None = None  # AnimateDiff: a MotionAdapter folder or an original motion-module file
    loras: list[LoraConfig] = field(default_factory=list)  # --lora / --lora-2, loaded in this order
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False  # torch.compile the U-Net
    prompts: list[str] = field(default_factory=list)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    fifo: FifoConfig = field(default_factory=FifoConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    techniques: TechniquesConfig = field(default_factory=TechniquesConfig)


def build_run_config(yaml_path: str | Path | None = None, flags: dict[str, Any] | None = None,
                     overrides: list[str] | None = None, item: dict[str, Any] | None = None) -> RunConfig:
    """Merge schema defaults, an optional YAML run file, CLI flags (dotted keys -> values), ``key=value``
    overrides, and last the values of one batch item (dotted keys -> values, e.g. from a prompt file row)."""
    layers = [OmegaConf.structured(RunConfig)]
    try:
        if yaml_path is not None:
            layers.append(OmegaConf.load(yaml_path))
        if flags:
            layers.append(_values_layer(flags))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"override {bad[0]!r} is not key=value (e.g. sampling.cfg=7.5)")
            layers.append(OmegaConf.from_dotlist(list(overrides)))
        if item:
            layers.append(_values_layer(item))
        merged = OmegaConf.merge(*layers)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        msg = str(e).splitlines()[0]
        raise ConfigError(f"invalid configuration: {msg}. Valid keys: see `fifo-gen --help` and "
                          "fifo_longvid/run/config.py") from None
    assert isinstance(cfg, RunConfig)
    return cfg


def freeze(cfg: Any) -> None:
    """Make a resolved config (and every section in it) read-only: after ``run/resolve.py`` it is what the run
    does and what the sidecar records, so a later assignment is a bug that should stop the run, not change it."""
    if not is_dataclass(cfg) or isinstance(cfg, type):
        return
    for f in fields(cfg):
        freeze(getattr(cfg, f.name))
    if type(cfg) not in _FROZEN.values():
        cfg.__class__ = _frozen_class(type(cfg))


def is_frozen(cfg: Any) -> bool:
    return type(cfg) in _FROZEN.values()


def thawed_copy(cfg: Any) -> Any:
    """A deep copy that can be changed again (of a frozen config too: resolving a resolved config is a no-op)."""
    out = copy.deepcopy(cfg)
    _thaw(out)
    return out


def _thaw(cfg: Any) -> None:
    if not is_dataclass(cfg) or isinstance(cfg, type):
        return
    if is_frozen(cfg):
        object.__setattr__(cfg, "__class__", type(cfg).__mro__[1])
    for f in fields(cfg):
        _thaw(getattr(cfg, f.name))


_FROZEN: dict[type, type] = {}


def _frozen_class(cls: type) -> type:
    """``cls`` with assignment refused (a subclass, so ``isinstance`` and ``asdict`` still hold)."""
    if cls not in _FROZEN:
        def refuse(self: Any, name: str, value: Any = None) -> None:
            raise FrozenConfigError(f"the run config is resolved and read-only ({cls.__name__}.{name}): change "
                                    "the settings before they are resolved (build_run_config, then generate)")

        _FROZEN[cls] = type(cls.__name__, (cls,), {"__setattr__": refuse, "__delattr__": refuse,
                                                   "__module__": cls.__module__, "__qualname__": cls.__qualname__})
    return _FROZEN[cls]


def parse_value(text: str) -> Any:
    """A value written as text (a prompt file cell), read as a ``key=value`` override would read it."""
    return OmegaConf.to_container(OmegaConf.from_dotlist([f"v={text}"]))["v"]  # type: ignore[index]


def _values_layer(values: dict[str, Any]) -> Any:
    """Dotted keys -> typed values, as one config layer. Built as a nested dict rather than a ``key=value``
    text list, so no value is ever re-parsed: any text (quotes, emoji, YAML syntax) stays as it was typed."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _literal(value)
    return OmegaConf.create(nested)


def _literal(v: Any) -> Any:
    """A value OmegaConf keeps verbatim: ``${`` would start an interpolation, so it is escaped."""
    if isinstance(v, str):
        return v.replace("${", "\\${")
    if isinstance(v, (list, tuple)):
        return [_literal(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, dict)):
        return v
    return str(v)


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return asdict(cfg)


def numerics_hash(cfg: RunConfig, checkpoint_id: str) -> str:
    """Hash of everything that changes the generated frames (not the output length or paths)."""
    d = to_dict(cfg)
    d.pop("output")
    d["fifo"].pop("num_frames")
    d["fifo"].pop("max_batch")
    if d["fifo"].get("block") in (None, 1):  # FIFO-Diffusion's one level per frame: hashes from before --block
        d["fifo"].pop("block")
    if not d["fifo"].get("stagger"):
        d["fifo"].pop("stagger", None)
    if cfg.mode == "fifo":  # the geometry (window, partitions, block) fixes the steps; --steps only chose it
        d["sampling"]["steps"] = None
    prune_tail_settings(d)
    d.pop("device")
    d.pop("compile")  # like the device and max_batch, it changes float rounding only
    if not d["sampling"]["negative_prompt"]:  # the default: hashes from before --negative-prompt stay valid
        d["sampling"].pop("negative_prompt")
    d["checkpoint"] = checkpoint_id
    if cfg.conditioning.image:
        from ..io.sidecar import file_sha256

        d["conditioning"]["image"] = file_sha256(cfg.conditioning.image, cache=False)
    hash_loras(d)
    prune_unset_expert_settings(d)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def prune_unset_expert_settings(d: dict[str, Any]) -> None:
    """A one-expert run has no ``cfg_2``: leaving the unset key out keeps hashes from before two-expert models."""
    if d.get("sampling", {}).get("cfg_2") is None:
        d.get("sampling", {}).pop("cfg_2", None)


def hash_loras(d: dict[str, Any]) -> None:
    """LoRAs enter a hash by content (sha256), scale and target; none leaves the hash as it was before --lora."""
    loras = d.pop("loras", None)
    if loras:
        from ..io.sidecar import file_sha256

        d["loras"] = [{"sha256": file_sha256(lo["path"]), "scale": float(lo["scale"]), "target": lo["target"]}
                      for lo in loras]


def prune_tail_settings(d: dict[str, Any]) -> None:
    """Only the tail settings that change the video enter a hash (none for the default ``noise``, so
    hashes from before ``--tail`` existed stay valid)."""
    tail = tail_hash_settings(TailConfig(**d["fifo"].pop("tail")))
    if tail is not None:
        d["fifo"]["tail"] = tail

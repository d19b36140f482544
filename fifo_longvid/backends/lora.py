"""LoRA adapters on a loaded backend: read the file safely, check every key against the model, load through peft.

Families differ only in how a file is read into diffusers' layout (each family's pipeline mixin converts the
original and kohya layouts) and in which modules take LoRAs (``Backend.lora_modules()``); the rest is here:

* files are read as safetensors only (a pickle is never executed);
* every key must land on a module of its target: diffusers only warns about unmatched keys (and our quiet loading
  hides the warning), so a LoRA made for another model would run as a silent no-op. Here it is a ConfigError
  naming up to three of the keys, raised while loading, before any output is opened;
* a scale of exactly 0 is checked and hashed but not loaded, so ``--lora F:0`` is "no LoRA" bit for bit;
* each file becomes one peft adapter (``lora0``, ``lora1``...); one ``set_adapters`` per module sets the scales.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# (file, target module) -> (state dict in diffusers' layout, the prefix of its keys, load_lora_adapter kwargs)
Reader = Callable[[Path, Any], tuple[dict[str, Any], str, dict[str, Any]]]
MAIN, SECOND = "main", "second"  # the config's target aliases: --lora, --lora-2
_MODULE = re.compile(r"^(.+?)\.lora_[AB]\.(weight|bias)$")


def parse_lora_spec(text: str) -> tuple[str, float]:
    """``PATH[:SCALE]`` -> (path, scale). Split at the last ``:`` only when what follows reads as a number, so
    a path with a ``:`` in it stays whole (the scale is then 1)."""
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, 1.0


def lora_entries(main: Sequence[str], second: Sequence[str] = ()) -> list[dict[str, Any]]:
    """--lora / --lora-2 ``PATH[:SCALE]`` values -> run-config ``loras`` entries, in that order."""
    return [{"path": path, "scale": scale, "target": target}
            for specs, target in ((main, MAIN), (second, SECOND)) for path, scale in map(parse_lora_spec, specs)]


def lora_key(loras: Sequence[Any]) -> tuple[tuple[str, float, str], ...]:
    """What a loaded model's LoRAs are, comparable with a run config's (path, scale, target)."""
    return tuple((str(lo.path), float(lo.scale), str(lo.target)) for lo in loras)


def applied_loras(model: Any) -> tuple[tuple[str, float, str], ...]:
    """The LoRAs ``apply_loras`` put on ``model`` (none for a model loaded without)."""
    return getattr(model, "_applied_loras", ())


def check_lora_settings(loras: Sequence[Any], targets: Sequence[str]) -> None:
    """Settings a run can refuse before loading: the file exists and the scale is a number."""
    for lo in loras:
        p = Path(lo.path)
        if not str(lo.path) or not p.is_file():
            raise ConfigError(f"--lora {lo.path}: no such file")
        if not math.isfinite(float(lo.scale)):
            raise ConfigError(f"--lora {lo.path}: the scale must be a finite number, got {lo.scale}")
        if lo.target not in targets:
            raise ConfigError(f"LoRA target {lo.target!r} of {lo.path} is not a part of this model that takes "
                              f"LoRAs ({', '.join(targets)})")


def unmatched_keys(state_dict: dict[str, Any], prefix: str, module: Any) -> list[str]:
    """The keys that would land on no module of ``module``: outside ``prefix.``, not a ``lora_A``/``lora_B``
    weight, or naming a module path it does not have."""
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

    names = {n for n, _ in module.named_modules()}
    bad = []
    for key in state_dict:
        if not key.startswith(prefix + "."):
            bad.append(key)
            continue
        rest = key[len(prefix) + 1:]
        if ".lora_A." not in rest and ".lora_B." not in rest:  # the older diffusers layout (lora.down/up)
            rest = next(iter(convert_unet_state_dict_to_peft({rest: None})))
        m = _MODULE.match(rest)
        if m is None or m.group(1) not in names:
            bad.append(key)
    return bad


def apply_loras(model: Any, loras: Sequence[Any], read: Reader) -> list[dict[str, Any]]:
    """Load ``loras`` (objects with ``path``, ``scale`` and ``target``: a component name of
    ``model.lora_modules()``) into ``model``; returns their records (path, sha256, scale, target). Call it after
    the model's dtype cast and before placement or offloading, so hooks see the LoRA layers."""
    from ..io.sidecar import file_sha256
    from .hub import quiet_loading

    modules = model.lora_modules() if loras else {}
    records, active = [], {}
    for i, lo in enumerate(loras):
        path = Path(lo.path)
        module = modules.get(lo.target)
        if module is None:
            raise ConfigError(f"LoRA target {lo.target!r} of {path} is not a part of this model that takes LoRAs "
                              f"({', '.join(modules) or 'none'})")
        sha = file_sha256(path)
        state_dict, prefix, kwargs = _read(path, module, read)
        bad = unmatched_keys(state_dict, prefix, module)
        if bad:
            raise ConfigError(f"{path}: {len(bad)} of its {len(state_dict)} keys match no module of the model's "
                              f"{lo.target} (e.g. {', '.join(bad[:3])}), so it is a LoRA for another model")
        records.append({"path": str(path), "sha256": sha, "scale": float(lo.scale), "target": lo.target})
        if float(lo.scale) == 0.0:
            continue  # checked and hashed, not loaded: exactly the model without it
        name = f"lora{i}"
        with quiet_loading():
            module.load_lora_adapter(state_dict, prefix=prefix, adapter_name=name, **kwargs)
        active.setdefault(lo.target, []).append((name, float(lo.scale)))
    for target, pairs in active.items():
        modules[target].set_adapters([n for n, _ in pairs], [s for _, s in pairs])
    model._applied_loras = lora_key(loras)
    return records


def _read(path: Path, module: Any, read: Reader) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The family's reader, with its failures (not safetensors, a layout it cannot convert) as one sentence."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"--lora {path}: not a readable .safetensors file ({str(e).splitlines()[0] if str(e) else e}"
                          "); LoRAs are read as safetensors only (a pickle is never executed)") from None
    try:
        state_dict, prefix, kwargs = read(path, module)
    except (ValueError, KeyError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"--lora {path}: its keys are in no LoRA layout this model's loader reads ({first})"
                          ) from None
    if not state_dict:
        raise ConfigError(f"--lora {path}: the file holds no LoRA weights")
    return state_dict, prefix, kwargs

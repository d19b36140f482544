"""Technique presets, as the CLI has them: the run files in ``configs/`` (``--run-config configs/NAME.yaml``).

A preset fills the technique inputs with what its file sets, through the same config merge the CLI uses, so
the page and ``fifo-gen --run-config`` mean the same. Only presets that leave the model alone are offered (the
studio serves one loaded model; ``fifo_seed.yaml`` switches to the I2V model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..run.config import ConfigError, build_run_config, to_dict


def preset_dirs() -> list[Path]:
    """``configs/`` of a source checkout (next to the package), then of the working directory."""
    here = Path(__file__).resolve().parents[2] / "configs"
    return [d for d in dict.fromkeys([here, Path.cwd() / "configs"]) if d.is_dir()]


def presets() -> dict[str, dict[str, Any]]:
    """Name -> the technique settings of ``configs/NAME.yaml`` (model-changing files left out)."""
    found: dict[str, dict[str, Any]] = {}
    for d in preset_dirs():
        for path in sorted(d.glob("*.yaml")):
            try:
                cfg = build_run_config(path)
            except (ConfigError, OSError):
                continue  # a model config or a broken file: not a run preset
            default = build_run_config()
            if cfg.model != default.model or path.stem in found:
                continue
            if to_dict(cfg)["techniques"] != to_dict(default)["techniques"]:
                found[path.stem] = to_dict(cfg)["techniques"]
    return found


def preset_names() -> list[str]:
    return list(presets())


def apply_preset(name: str, *current: Any) -> list[Any]:
    """The technique inputs (qcache v, tgate gate, cfg-cache K, deepcache K as text; attn reuse; options);
    ``none`` turns every technique off and keeps the options."""
    extra = current[-1] if current else ""
    if name == "none":
        return ["", "", "", "", False, extra]
    t = presets().get(name)
    if t is None:
        return list(current)

    def on(tech: str, key: str) -> str:
        return str(t[tech][key]) if t[tech].get("enabled") else ""

    return [on("qcache", "v"), on("tgate", "gate"), on("cfg_cache", "every"), on("deepcache", "every"),
            bool(t["attn_reuse"].get("enabled")), extra]

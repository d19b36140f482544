"""The page's inputs <-> the exact ``fifo-gen generate`` command line.

Every run of the studio is built as a ``fifo-gen generate`` argv first and parsed by the command's own parser
(``cli.parse_generate_argv``), so "Copy as CLI" is the run, not a description of it. The reverse direction
(a sidecar's resolved config -> inputs) is checked the same way: the inputs it gives are parsed again, and
every setting they do not reproduce is added as a ``key=value`` override.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..run.config import ConfigError, RunConfig, to_dict

# Options the studio decides itself: the model is loaded once per server, and the output files are its own.
RESERVED = {"-o", "--output", "--resume", "--auto-resume", "--overwrite", "--config", "-c", "--checkpoint",
            "--motion-adapter", "--device", "--dtype", "--compile", "--no-compile"}
# Run-config keys that are the server's (model identity) or per output, never copied between runs.
_SERVER_KEYS = {"model", "checkpoint", "motion_adapter", "device", "dtype", "compile"}
_FLAG_OF = {"num_frames": "--num-frames", "seed": "--seed", "cfg": "--cfg", "partitions": "--partitions",
            "steps": "--steps", "block": "--block", "qcache": "--qcache", "tgate": "--tgate",
            "cfg_cache": "--cfg-cache", "deepcache": "--deepcache"}


@dataclass
class Settings:
    """What the page's inputs hold (None: the command's default)."""

    prompt: str = ""  # one prompt per line: several lines make a multi-prompt video
    frames_per_prompt: str = ""
    num_frames: int | None = None
    seed: int | None = None
    cfg: float | None = None
    partitions: int | None = None
    steps: int | None = None  # None: window x partitions / block
    block: int | None = None  # frames per noise level (None: 1, or what the steps need)
    init: str = "first"
    tail: str = "noise"
    qcache: float | None = None
    tgate: float | None = None
    cfg_cache: int | None = None
    deepcache: int | None = None
    attn_reuse: bool = False
    loras: str = ""  # one --lora PATH[:SCALE] per line (a change of LoRAs reloads the model for that run)
    extra: str = ""  # more generate options and key=value overrides, as typed on a command line

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def prompts(self) -> list[str]:
        lines = [line.strip() for line in (self.prompt or "").splitlines() if line.strip()]
        return lines or [""]  # an empty prompt is the CLI's error to report, with its wording

    def with_extra(self, more: str) -> Settings:
        """These settings plus more options (B of an A/B compare)."""
        return replace(self, extra=f"{self.extra} {more}".strip())


def to_argv(s: Settings, config: str, checkpoint: str | None, output: str | Path) -> list[str]:
    """Settings -> ``fifo-gen generate`` arguments (after ``generate``). Defaults are left out, so the command
    reads like one a person would type."""
    argv = ["--config", config]
    if checkpoint:
        argv += ["--checkpoint", str(checkpoint)]
    prompts = s.prompts()
    for p in prompts:
        argv += ["--prompt", p]
    if len(prompts) > 1 and (s.frames_per_prompt or "").strip():
        argv += ["--frames-per-prompt", "".join(s.frames_per_prompt.split())]
    for name in ("num_frames", "seed", "partitions", "steps", "block", "cfg_cache", "deepcache"):
        v = getattr(s, name)
        if v is not None:
            argv += [_FLAG_OF[name], str(int(v))]
    for name in ("cfg", "qcache", "tgate"):
        v = getattr(s, name)
        if v is not None:
            argv += [_FLAG_OF[name], repr(float(v))]
    if s.init and s.init != "first":
        argv += ["--init", s.init]
    if s.tail and s.tail != "noise":
        argv += ["--tail", s.tail]
    if s.attn_reuse:
        argv.append("--attn-reuse")
    for line in (s.loras or "").splitlines():
        if line.strip():
            argv += ["--lora", line.strip()]
    argv += extra_args(s.extra)
    return argv + ["-o", str(output)]


def extra_args(text: str) -> list[str]:
    """The free-form options field, split as a shell would; the server's own options are refused."""
    try:
        args = shlex.split(text or "")
    except ValueError as e:
        raise ConfigError(f"more options: {e}") from None
    for a in args:
        if a.split("=", 1)[0] in RESERVED:
            raise ConfigError(f"{a.split('=', 1)[0]} is set by the studio (model, output and resume are its own); "
                              "remove it from the options")
    return args


def parse(argv: list[str]) -> RunConfig:
    """``fifo-gen generate ARGV`` -> RunConfig, through the command's own parser."""
    from ..cli.args import parse_generate_argv

    return parse_generate_argv(argv)


def command_line(argv: list[str], threads: int | None) -> str:
    """The shell command a user copies. CPU sums are split by thread, so the thread count is part of the
    command when the run was on the CPU (README, Reproducibility)."""
    env = f"OMP_NUM_THREADS={threads} " if threads else ""
    return env + shlex.join(["fifo-gen", "generate", *argv])


def argv_of_command(command: str) -> tuple[dict[str, str], list[str]]:
    """The reverse of ``command_line``: (environment assignments, generate arguments)."""
    words = shlex.split(command)
    env: dict[str, str] = {}
    while words and "=" in words[0] and not words[0].startswith("-"):
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    if words[:2] != ["fifo-gen", "generate"]:
        raise ValueError(f"not a fifo-gen generate command: {command!r}")
    return env, words[2:]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _is_setting(key: str) -> bool:
    return not key.startswith("output.") and key not in _SERVER_KEYS


# A technique's main parameter, named beside its on/off switch even when both sides hold the same (default) value.
MAIN_PARAMETER = {"qcache": "v", "tgate": "gate", "cfg_cache": "every", "deepcache": "every", "attn_reuse": "weight"}


def differing(a: RunConfig | dict[str, Any], b: RunConfig | dict[str, Any]) -> tuple[list[str], list[str]]:
    """The settings in which two runs differ, as ``key=value`` for each side (output paths left out). A technique
    switched on on one side also shows its main parameter (``qcache.v``), which may equal its default."""
    fa = flatten(a if isinstance(a, dict) else to_dict(a))
    fb = flatten(b if isinstance(b, dict) else to_dict(b))
    keys = {k for k in fa.keys() | fb.keys() if _is_setting(k) and fa.get(k) != fb.get(k)}
    for tech, param in MAIN_PARAMETER.items():
        if f"techniques.{tech}.enabled" in keys:
            keys.add(f"techniques.{tech}.{param}")
    keys = sorted(keys)
    short = [k.removeprefix("techniques.") for k in keys]
    return ([f"{s}={_text(fa.get(k))}" for s, k in zip(short, keys, strict=True)],
            [f"{s}={_text(fb.get(k))}" for s, k in zip(short, keys, strict=True)])


def _text(v: Any) -> str:
    """A value as a ``key=value`` override spells it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_text(x) for x in v) + "]"
    return str(v)


def settings_from_config(config: dict[str, Any], model: str, checkpoint: str | None) -> Settings:
    """A sidecar's resolved ``config`` -> inputs that reproduce it (history's "load settings"). What the
    inputs cannot say becomes ``key=value`` overrides in the options field, including values the model filled
    in at run time (a sidecar's ``fifo.window``): spelled out, they give the same run."""
    s, f, t = config.get("sampling", {}), config.get("fifo", {}), config.get("techniques", {})
    prompts = list(config.get("prompts") or [])
    fpp = f.get("frames_per_prompt") or []

    def on(name: str, key: str) -> Any:
        tech = t.get(name, {})
        return tech.get(key) if tech.get("enabled") else None

    settings = Settings(
        prompt="\n".join(prompts), frames_per_prompt=",".join(str(n) for n in fpp),
        num_frames=f.get("num_frames"), seed=s.get("seed"), cfg=s.get("cfg"), partitions=f.get("partitions"),
        steps=s.get("steps") if config.get("mode", "fifo") == "fifo" else None, block=f.get("block"),
        init=f.get("init") or "first", tail=(f.get("tail") or {}).get("mode") or "noise",
        qcache=on("qcache", "v"), tgate=on("tgate", "gate"), cfg_cache=on("cfg_cache", "every"),
        deepcache=on("deepcache", "every"), attn_reuse=bool(on("attn_reuse", "enabled")),
    )
    main, second = _lora_lines(config.get("loras") or [], model, checkpoint)
    settings.loras = "\n".join(main)
    rebuilt = flatten(to_dict(parse(to_argv(settings, model, checkpoint, "x.mp4"))))
    wanted = flatten(config)
    overrides = [f"{k}={_text(v)}" for k, v in sorted(wanted.items())
                 if _is_setting(k) and k in rebuilt and rebuilt[k] != v and k != "loras"]
    settings.extra = shlex.join([a for spec in second for a in ("--lora-2", spec)] + overrides)
    return settings


def _lora_lines(loras: list[dict[str, Any]], model: str, checkpoint: str | None) -> tuple[list[str], list[str]]:
    """A sidecar's resolved LoRAs -> ``PATH:SCALE`` lines for --lora (the model's first LoRA target) and for
    --lora-2 (any other target)."""
    from ..backends import family_for

    targets = family_for(model, checkpoint).lora_targets(model, checkpoint) if loras else ()
    main = [f"{lo['path']}:{lo['scale']}" for lo in loras if targets and lo.get("target") in (targets[0], "main")]
    second = [f"{lo['path']}:{lo['scale']}" for lo in loras if f"{lo['path']}:{lo['scale']}" not in main]
    return main, second

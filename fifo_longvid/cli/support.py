"""What the CLI commands share: the stderr console, error exits, flag mapping, devices and threads."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import click
import typer
from rich.console import Console
from typer.core import TyperCommand

from ..errors import CheckpointError, ConfigError, NonFiniteError, OutOfMemory, StateMismatch


def _stderr_console() -> Console:
    """On a terminal: rich's defaults. Elsewhere (a job log): no wrapping at 80 columns."""
    if Console(stderr=True).is_terminal:
        return Console(stderr=True)
    return Console(stderr=True, soft_wrap=True, width=160)


err = _stderr_console()

EXIT_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileExistsError, PermissionError,
                                                 NotADirectoryError, ValueError)


def fail(msg: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


TGATE_DEFAULT = 0.4  # TGATE's 10 of 25 steps


class OptionalTgateCommand(TyperCommand):
    """``--tgate`` takes an optional value: a bare ``--tgate`` means TGATE's default gate."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = list(args)
        for i, a in enumerate(args):
            if a == "--tgate" and (i + 1 == len(args) or not _is_number(args[i + 1])):
                args.insert(i + 1, str(TGATE_DEFAULT))
                break
        return super().parse_args(ctx, args)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def build_flags(o: dict[str, Any]) -> dict[str, Any]:
    """CLI option values, by parameter name, -> dotted run-config flags. Shared by ``generate`` and ``batch``
    (batch has no --prompt/--output/--resume/--image/--frames-per-prompt: those come per item)."""
    flags: dict[str, Any] = {"mode": o["mode"], "model": o["config"], "device": o["device"], "dtype": o["dtype"],
                             "compile": o.get("compile", False)}
    if o.get("prompt"):
        flags["prompts"] = list(o["prompt"])
    path_opts = {"checkpoint": o.get("checkpoint"), "motion_adapter": o.get("motion_adapter"),
                 "output.path": o.get("output"),
                 "conditioning.image": o.get("image")}
    opt = {
        **{k: str(v) for k, v in path_opts.items() if v},
        "sampling.seed": o["seed"], "sampling.steps": o["steps"], "sampling.cfg": o["cfg"], "sampling.eta": o["eta"],
        "sampling.cfg_2": o.get("cfg_2"),
        "sampling.negative_prompt": o["negative_prompt"],
        "sampling.height": o["height"], "sampling.width": o["width"], "sampling.fps": o["fps"],
        "fifo.num_frames": o["num_frames"], "fifo.partitions": o["partitions"], "fifo.lookahead": o["lookahead"],
        "fifo.init": o["init"], "fifo.max_batch": o["max_batch"], "fifo.block": o.get("block"),
        "output.output_fps": o["output_fps"], "output.checkpoint_every": o["checkpoint_every"],
        "conditioning.latent_seed_every": o["latent_seed_every"],
    }
    flags.update({k: v for k, v in opt.items() if v is not None})
    switches = {"conditioning.latent_seed": o["latent_seed"], "output.overwrite": o["overwrite"],
                "fifo.stagger": o.get("stagger", False),
                "output.save_latents": o["save_latents"], "output.save_frames": o["save_frames"],
                "output.resume": o.get("resume", False)}
    for k, v in switches.items():
        if v:
            flags[k] = True
    qcache, qcache_schedule = o["qcache"], o["qcache_schedule"]
    if qcache is not None:  # range and grammar are checked by the pipeline's validate()
        flags["techniques.qcache.enabled"] = True
        flags["techniques.qcache.v"] = qcache
    if qcache_schedule is not None:
        flags["techniques.qcache.enabled"] = True
        flags["techniques.qcache.schedule"] = qcache_schedule
    if o["qcache_targets"] is not None:
        flags["techniques.qcache.targets"] = [t.strip() for t in o["qcache_targets"].split(",") if t.strip()]
    flags.update(tail_flags(o.get("tail"), o.get("tail_cutoff"), o.get("tail_window")))
    if o.get("tgate") is not None:  # ranges are checked by the pipeline's validate()
        flags["techniques.tgate.enabled"] = True
        flags["techniques.tgate.gate"] = o["tgate"]
    for key in ("cfg_cache", "deepcache"):
        if o.get(key) is not None:
            flags[f"techniques.{key}.enabled"] = True
            flags[f"techniques.{key}.every"] = o[key]
    if o.get("attn_reuse"):
        flags["techniques.attn_reuse.enabled"] = True
    from ..backends.lora import lora_entries

    loras = lora_entries(o.get("lora") or [], o.get("lora_2") or [])
    if loras:
        flags["loras"] = loras
    fpp = o.get("frames_per_prompt")
    if fpp:
        try:
            flags["fifo.frames_per_prompt"] = [int(x) for x in fpp.split(",")]
        except ValueError:
            raise ConfigError(f"--frames-per-prompt must be comma-separated integers, got {fpp!r}") from None
    return flags


def tail_flags(mode: str | None, cutoff: str | None, window: str | None) -> dict[str, Any]:
    """--tail, --tail-cutoff, --tail-window -> fifo.tail.* (ranges are checked by validation.py).
    Raises ConfigError (the commands print it as one error line, the studio shows it in the page)."""
    from ..fifo.tail import parse_cutoff, parse_window

    flags: dict[str, Any] = {}
    for opt, spec, implied in (("--tail-cutoff", cutoff, "coherent"), ("--tail-window", window, "rescheduled")):
        if spec is None:
            continue
        if mode not in (None, implied):
            raise ConfigError(f"{opt} belongs to --tail {implied}, not --tail {mode}")
        if flags.get("fifo.tail.mode", implied) != implied:
            raise ConfigError("--tail-cutoff (coherent) and --tail-window (rescheduled) belong to different --tail "
                              "modes")
        flags["fifo.tail.mode"] = implied
        try:
            a, b = parse_cutoff(spec) if implied == "coherent" else parse_window(spec)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        keys = ("cutoff_s", "cutoff_t") if implied == "coherent" else ("window", "stride")
        flags[f"fifo.tail.{keys[0]}"] = a
        if b is not None:
            flags[f"fifo.tail.{keys[1]}"] = b
    if mode is not None:
        flags["fifo.tail.mode"] = mode
    return flags


def exit_on_known_error(e: BaseException) -> None:
    """Known failures become one clear line and an exit code; anything else returns (the caller re-raises)."""
    known = EXIT_ERRORS + (CheckpointError, NonFiniteError, StateMismatch, FileNotFoundError, OSError, OutOfMemory)
    if isinstance(e, known):
        fail(str(e), 1 if isinstance(e, (NonFiniteError, OSError, OutOfMemory)) else 2)


def local_device(device: str) -> str:
    """One GPU per process when several processes share a node (torchrun LOCAL_RANK, SLURM_LOCALID)."""
    import torch

    local = os.environ.get("LOCAL_RANK") or os.environ.get("SLURM_LOCALID")
    if local and device in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return f"cuda:{int(local) % torch.cuda.device_count()}"
    return device


def threads_from_slurm(env: Mapping[str, str] | None = None) -> int | None:
    """Tie torch's CPU threads to the CPUs SLURM gave this task (``SLURM_CPUS_PER_TASK``), unless
    ``OMP_NUM_THREADS`` says otherwise (torchrun sets it to 1). Returns the thread count it set, if any."""
    env = os.environ if env is None else env
    cpus = env.get("SLURM_CPUS_PER_TASK", "").strip()
    if not cpus.isdigit() or int(cpus) < 1 or env.get("OMP_NUM_THREADS"):
        return None
    import torch

    torch.set_num_threads(int(cpus))
    return int(cpus)

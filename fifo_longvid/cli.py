"""``fifo-gen``: the command line. The only module that sees raw CLI values.

``generate`` is the default command, so ``fifo-gen --prompt "..."`` works directly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .config import ConfigError, build_run_config

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Generate arbitrarily long videos from text with FIFO-Diffusion on VideoCrafter2.\n\n"
    "Run `fifo-gen --prompt \"...\"` (same as `fifo-gen generate --prompt ...`). "
    "The `tiny` config runs anywhere without weights: add `--config tiny`.",
)
err = Console(stderr=True)

COMMANDS = {"generate", "download", "convert"}

_EXIT_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileExistsError, PermissionError,
                                                 NotADirectoryError, ValueError)


def _fail(msg: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(code)


class _Bars:
    """Two rich progress bars (base clip; FIFO iterations) fed by the pipeline's progress callback."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), TextColumn("{task.fields[rate]}"), console=err, transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.fifo_start: float | None = None

    def __call__(self, task: str, done: int, total: int) -> None:
        if task not in self.tasks:
            label = {"base clip": "base clip (DDIM steps)", "fifo": "FIFO iterations"}.get(task, task)
            self.tasks[task] = self.progress.add_task(label, total=total, rate="")
        tid = self.tasks[task]
        rate = ""
        elapsed = self.progress.tasks[tid].elapsed
        if task == "fifo" and elapsed:
            rate = f"{done / elapsed:.2f} it/s"
        self.progress.update(tid, completed=done, total=total, rate=rate)


@app.command()
def generate(
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="Text prompt. Repeat for a multi-prompt "
                                              "video (with --frames-per-prompt).")] = [],  # noqa: B006
    config: Annotated[str, typer.Option("--config", "-c", help="Model preset (videocrafter2, tiny) or a "
                                        "model YAML path.")] = "videocrafter2",
    checkpoint: Annotated[Path | None, typer.Option(help="Weights (.ckpt or .safetensors). Default for "
                                                    "videocrafter2: checkpoints/videocrafter2/model.ckpt.")] = None,
    mode: Annotated[str, typer.Option(help="fifo: long video (FIFO-Diffusion). base: one plain "
                                      "VideoCrafter2 clip.")] = "fifo",
    num_frames: Annotated[int | None, typer.Option("--num-frames", "-l", help="Output length in frames "
                                                   "(FIFO).")] = None,
    partitions: Annotated[int | None, typer.Option("--partitions", "-n", help="FIFO partitions n; DDIM "
                                                   "steps = window x n.")] = None,
    lookahead: Annotated[bool | None, typer.Option("--lookahead/--no-lookahead", help="Lookahead denoising "
                                                   "(windows overlap by half; default on).")] = None,
    init: Annotated[str | None, typer.Option(help="Queue init: first (base clip, reference), uniform "
                                             "(FIFO-Diffusion+ unilatent), noise (no base clip).")] = None,
    frames_per_prompt: Annotated[str | None, typer.Option(help="Comma list of frame counts, one per "
                                                          "--prompt, e.g. 40,60.")] = None,
    max_batch: Annotated[str | None, typer.Option(help="Samples per U-Net call (windows x 2 for CFG): "
                                                  "auto, all or N. Lower = less memory, slower.")] = None,
    qcache: Annotated[float | None, typer.Option(
        "--qcache", help="Weighted Q-cache v in [0, 1]: decoder queries of the temporal self-attention become "
        "(1-v)*Q_dec + v*Q_enc of the mirrored encoder layer (FIFO-Diffusion+). 0.9 is the paper's setting.")] = None,
    qcache_schedule: Annotated[str | None, typer.Option(
        help="v over denoising progress instead of a constant: linear:0.9:0.8 (noisiest -> cleanest), "
        "list:V1,...,VS, or const:V. Implies --qcache.")] = None,
    qcache_targets: Annotated[str | None, typer.Option(
        help="Comma list of attention layers to blend: temporal_attn1 (default), temporal_attn2, "
        "spatial_attn1, spatial_attn2.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: random, printed and recorded).")] = None,
    steps: Annotated[int | None, typer.Option(help="DDIM steps. FIFO: must equal window x partitions "
                                              "(default). Base: default 50.")] = None,
    cfg: Annotated[float | None, typer.Option("--cfg", help="Classifier-free guidance scale (default 12).")] = None,
    eta: Annotated[float | None, typer.Option(help="DDIM eta, 0 = deterministic (default 1.0).")] = None,
    height: Annotated[int | None, typer.Option(help="Frame height in pixels, multiple of 16.")] = None,
    width: Annotated[int | None, typer.Option(help="Frame width in pixels, multiple of 16.")] = None,
    fps: Annotated[int | None, typer.Option(help="fps conditioning of the model (default 8).")] = None,
    output_fps: Annotated[float | None, typer.Option(help="Frame rate of the written video (default 10).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output: .mp4, .gif, or a folder for "
                                                "PNGs. A .json sidecar is written next to it.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    save_latents: Annotated[bool, typer.Option(help="Also save the output latents (.latents.safetensors).")] = False,
    save_frames: Annotated[bool, typer.Option(help="Also save every frame as PNG in <name>_frames/.")] = False,
    checkpoint_every: Annotated[int | None, typer.Option(help="Save resumable state every K output frames.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its saved state.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16.")] = "auto",
    run_config: Annotated[Path | None, typer.Option(help="YAML run file (same keys as the overrides).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides of the run config, "
                                                          "e.g. sampling.cfg=7.5 fifo.partitions=2.")] = None,
) -> None:
    """Generate a video (FIFO-Diffusion by default, or one base clip with --mode base)."""
    flags: dict[str, Any] = {"mode": mode, "model": config, "device": device, "dtype": dtype}
    if prompt:
        flags["prompts"] = list(prompt)
    opt = {
        "checkpoint": str(checkpoint) if checkpoint else None,
        "sampling.seed": seed, "sampling.steps": steps, "sampling.cfg": cfg, "sampling.eta": eta,
        "sampling.height": height, "sampling.width": width, "sampling.fps": fps,
        "fifo.num_frames": num_frames, "fifo.partitions": partitions, "fifo.lookahead": lookahead,
        "fifo.init": init, "fifo.max_batch": max_batch,
        "output.path": str(output) if output else None, "output.output_fps": output_fps,
        "output.checkpoint_every": checkpoint_every,
    }
    flags.update({k: v for k, v in opt.items() if v is not None})
    for k, v in {"output.overwrite": overwrite, "output.save_latents": save_latents,
                 "output.save_frames": save_frames, "output.resume": resume}.items():
        if v:
            flags[k] = True
    if qcache is not None:
        if not 0.0 <= qcache <= 1.0:
            _fail(f"--qcache must be in [0, 1] (the weight of the encoder queries), got {qcache}")
        flags["techniques.qcache.enabled"] = True
        flags["techniques.qcache.v"] = qcache
    if qcache_schedule is not None:
        from .techniques.qcache import VSchedule

        try:
            VSchedule(qcache_schedule)
        except ValueError as e:
            _fail(str(e))
        flags["techniques.qcache.enabled"] = True
        flags["techniques.qcache.schedule"] = qcache_schedule
    if qcache_targets is not None:
        flags["techniques.qcache.targets"] = [t.strip() for t in qcache_targets.split(",") if t.strip()]
    if frames_per_prompt:
        try:
            flags["fifo.frames_per_prompt"] = [int(x) for x in frames_per_prompt.split(",")]
        except ValueError:
            _fail(f"--frames-per-prompt must be comma-separated integers, got {frames_per_prompt!r}")
    try:
        run = build_run_config(run_config, flags, overrides or [])
        if run.checkpoint is None and run.model == "videocrafter2":
            default_ckpt = Path("checkpoints/videocrafter2/model.ckpt")
            run.checkpoint = str(default_ckpt) if default_ckpt.exists() else None
        _run(run)
    except typer.Exit:
        raise
    except Exception as e:  # noqa: BLE001 - turn known failures into one clear line and exit code
        from .diffusion.sampling import NonFiniteError
        from .fifo.state import StateMismatch
        from .models.load import CheckpointError

        known = _EXIT_ERRORS + (CheckpointError, NonFiniteError, StateMismatch, FileNotFoundError, OSError)
        if isinstance(e, known):
            _fail(str(e), 1 if isinstance(e, (NonFiniteError, OSError)) else 2)
        raise


def _run(run: Any) -> None:
    from .pipeline import generate as run_generation

    bars = _Bars()
    with bars.progress:
        result = run_generation(run, progress=bars, log=lambda m: err.print(m, highlight=False))
    t = result.timings
    status = "partial" if result.partial else "done"
    err.print(f"[green]{status}[/]: {result.frames} frames -> {result.output} (seed {result.seed}, "
              f"{t.get('total_s', 0):.1f} s); metadata {result.sidecar}", highlight=False)
    if result.partial:
        raise typer.Exit(130)


@app.command()
def download(
    model: Annotated[str, typer.Option(help="Which weights: videocrafter2.")] = "videocrafter2",
    dest: Annotated[Path, typer.Option(help="Target folder.")] = Path("checkpoints"),
) -> None:
    """Fetch the model checkpoint from the Hugging Face Hub (resumable)."""
    from .models.download import download_checkpoint

    try:
        path = download_checkpoint(model, dest, log=lambda m: err.print(m, highlight=False))
    except (ValueError, RuntimeError) as e:
        _fail(str(e), 1)
    err.print(f"[green]ok[/]: {path}")


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="A .ckpt/.pt checkpoint (read with weights_only=True).")],
    dst: Annotated[Path, typer.Argument(help="Output .safetensors file.")],
    half: Annotated[bool, typer.Option(help="Store float tensors as fp16 (half the size).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Convert a checkpoint to safetensors (safe to share, loads without pickle, memory-mappable)."""
    from .models.convert import convert_checkpoint
    from .models.load import CheckpointError

    try:
        out = convert_checkpoint(src, dst, half=half, overwrite=overwrite)
    except (CheckpointError, FileExistsError, ValueError) as e:
        _fail(str(e))
    err.print(f"[green]ok[/]: {out}")


def main(argv: list[str] | None = None) -> None:
    """Entry point; inserts the default ``generate`` command when none is named."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in COMMANDS and args[0] not in ("--help", "-h", "--version"):
        args.insert(0, "generate")
    if args and args[0] == "--version":
        from importlib.metadata import version

        print(f"fifo-gen {version('fifo_longvid')}")
        return
    app(args=args, prog_name="fifo-gen")


if __name__ == "__main__":
    main()

"""``fifo-gen``: the command line. The only module that sees raw CLI values.

``generate`` is the default command, so ``fifo-gen --prompt "..."`` works directly.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..interrupts import EXIT_INTERRUPTED, ignore_stop_signals, terminate_as_interrupt
from .args import generate_options, run_config_from_options, with_options_of
from .batch import batch_command
from .plan import plan_command
from .progress import Bars, plural
from .report import report_command
from .support import (
    OptionalTgateCommand,
    err,
    exit_on_known_error,
    fail,
    threads_from_slurm,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Generate arbitrarily long videos from text with FIFO-Diffusion on VideoCrafter2, AnimateDiff and Wan2.1."
    "\n\n"
    "Run `fifo-gen --prompt \"...\"` (same as `fifo-gen generate --prompt ...`). "
    "The `tiny` config runs anywhere without weights: add `--config tiny`.",
)
COMMANDS = {"generate", "batch", "download", "convert", "studio", "plan", "report"}

@app.command(cls=OptionalTgateCommand)
@with_options_of(generate_options)
def generate(**options: Any) -> None:
    """Generate a video (FIFO-Diffusion by default, or one base clip with --mode base).

    Ctrl-C or SIGTERM (a scheduler's stop): the current iteration ends, a playable NAME.partial.mp4 and the
    resume state are written, and the exit code is 130; the same command plus --resume continues.
    """
    try:
        with terminate_as_interrupt():
            run = run_config_from_options(options)
            if options["auto_resume"] and _auto_resume(run):
                return
            _run(run)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("interrupted before the first frame: nothing to keep", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as e:  # noqa: BLE001 - turn known failures into one clear line and exit code
        exit_on_known_error(e)
        raise


def _auto_resume(run: Any) -> bool:
    """``--auto-resume``: resume when -o has a saved state; True (nothing to do) when -o is already complete."""
    import json

    from ..fifo.state import saved_seed
    from ..run.outputs import OutputFiles

    if not run.output.path:
        fail("--auto-resume needs -o/--output (the saved state is found by the output name)")
    files = OutputFiles.of(run.output.path)
    if files.final.exists() and files.sidecar.is_file():
        try:
            complete = json.loads(files.sidecar.read_text(encoding="utf-8")).get("complete")
        except (OSError, ValueError):
            complete = False
        if complete:
            err.print(f"{run.output.path} is already complete; nothing to do", highlight=False)
            return True
    if files.state.exists():
        run.output.resume = True
        if run.sampling.seed is None:
            run.sampling.seed = saved_seed(files.state)
    return False


def _run(run: Any) -> None:
    from ..fifo.parallel import dist_env
    from ..run.pipeline import generate as run_generation

    threads = threads_from_slurm()
    if dist_env() is not None:
        _run_distributed(run)
        return
    with Bars(err) as bars:
        if threads:
            bars.print(f"torch threads: {threads} (SLURM_CPUS_PER_TASK)")
        result = run_generation(run, progress=bars, log=bars.print)
    _report(result)


def _report(result: Any) -> None:
    t = result.timings
    status = "partial" if result.partial else "done"
    where = f" -> {result.output}" if result.frames else " (no video yet)"
    err.print(f"[green]{status}[/]: {plural(result.frames, 'frame')}{where} (seed {result.seed}, "
              f"{t.get('total_s', 0):.1f} s); metadata {result.sidecar}", highlight=False)
    if result.partial:
        err.print("interrupted: the same command plus --resume continues it", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED)


def _run_distributed(run: Any) -> None:
    """Under torchrun: one video, the windows of every FIFO iteration split across the ranks (fifo/parallel.py).
    Rank 0 owns the queue, the progress bars and the output; the other ranks serve U-Net calls."""
    import torch.distributed as dist

    from ..fifo.parallel import DistributedExecutor, init_distributed, serve_run
    from ..run.pipeline import generate as run_generation
    from ..techniques import check_distributed

    try:  # every rank sees the same config, so every rank stops here with the same message
        check_distributed(run.techniques)
    except ValueError as e:
        fail(str(e))
    rank, world, device = init_distributed(run.device)
    run.device = device
    try:
        if rank != 0:
            from ..run.resolve import check_loaded, resolve

            with ignore_stop_signals():  # rank 0 decides when to stop (it needs us to finish the iteration)
                resolved = resolve(run)
                cfg = resolved.config
                model = resolved.family.load(cfg.model, cfg.checkpoint, device, cfg.dtype, cfg.motion_adapter,
                                             loras=cfg.loras)
                check_loaded(resolved, model)
                calls = serve_run(cfg, resolved.latent_hw, model)
            err.print(f"rank {rank}: served {calls} U-Net calls", highlight=False)
            return
        err.print(f"distributed: {world} ranks ({dist.get_backend()}), windows split across them", highlight=False)
        executor = DistributedExecutor(device)
        try:
            with Bars(err) as bars:
                result = run_generation(run, progress=bars, log=bars.print, executor=executor)
        finally:
            executor.close()
        _report(result)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


_BATCH_PER_ITEM = ("prompt", "output", "resume", "auto_resume", "image", "frames_per_prompt", "overrides")


def _with_options_of_generate(func: Any) -> Any:
    """A ``**opts`` command (batch, plan) with its own options, then every option of ``generate`` except the
    per-item ones, then the overrides: typer declares each option once."""
    own = inspect.signature(func, eval_str=True).parameters
    gen = inspect.signature(generate_options, eval_str=True).parameters
    head = [p for n, p in own.items() if n not in ("overrides", "opts")]
    shared = [p for n, p in gen.items() if n not in _BATCH_PER_ITEM and n not in own]
    params = head + shared + [own["overrides"]]
    func.__signature__ = inspect.Signature(params)
    func.__annotations__ = {p.name: p.annotation for p in params}
    return func


batch = app.command("batch")(_with_options_of_generate(batch_command))
plan = app.command("plan")(_with_options_of_generate(plan_command))
report = app.command("report")(report_command)


@app.command()
def download(
    model: Annotated[str, typer.Option(help="Which weights: videocrafter2 (text-to-video), videocrafter1_i2v "
                                       "(image-to-video, for --image and --latent-seed), animatediff (an SD-1.5 "
                                       "base and a motion adapter, for --config animatediff), wan "
                                       "(Wan-AI/Wan2.1-T2V-1.3B-Diffusers) or skyreels-df "
                                       "(Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers), both for --config wan; "
                                       "wan2.2-ti2v-5b or wan2.2-t2v-a14b, each into its own folder. --list "
                                       "shows them all.")
                      ] = "videocrafter2",
    dest: Annotated[Path, typer.Option(help="Target folder.")] = Path("checkpoints"),
    list_models: Annotated[bool, typer.Option("--list", help="List the --model names and exit.")] = False,
) -> None:
    """Fetch the model checkpoint from the Hugging Face Hub (resumable)."""
    from ..backends import download, downloadable

    if list_models:
        for name in downloadable():
            typer.echo(name)
        return
    try:
        path = download(model, dest, log=lambda m: err.print(m, highlight=False))
    except (ValueError, RuntimeError) as e:
        fail(str(e), 1)
    err.print(f"[green]ok[/]: {path}")


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="A .ckpt/.pt checkpoint (read with weights_only=True).")],
    dst: Annotated[Path, typer.Argument(help="Output .safetensors file.")],
    half: Annotated[bool, typer.Option(help="Store float tensors as fp16 (half the size).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Convert a checkpoint to safetensors (safe to share, loads without pickle, memory-mappable)."""
    from ..backends import convert_checkpoint
    from ..backends.base import CheckpointError

    try:
        out = convert_checkpoint(src, dst, half=half, overwrite=overwrite)
    except (CheckpointError, FileExistsError, ValueError) as e:
        fail(str(e))
    err.print(f"[green]ok[/]: {out}")


@app.command()
def studio(
    config: Annotated[str, typer.Option("--config", "-c", help="Model preset or model YAML (default: the shipped "
                                        "toy model, no download).")] = "toy",
    checkpoint: Annotated[Path | None, typer.Option(help="Weights for --config (as for generate).")] = None,
    out_dir: Annotated[Path, typer.Option("--out-dir", "-d", help="Where videos and sidecars are written; the "
                                          "page's history lists this folder.")] = Path("outputs"),
    host: Annotated[str, typer.Option(help="Address to bind. Anything but loopback exposes the page (and your "
                                      "machine's time) to the network: set it explicitly only if you mean it.")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 7860,
) -> None:
    """A local web page (Gradio) that shows the video while it is made: live preview, stop/resume, "Copy as CLI",
    A/B compare and history. Needs gradio: the package's "studio" extra."""
    try:
        import gradio  # noqa: F401 - an optional extra
    except ImportError as e:
        from rich.markup import escape

        fail(escape(f"the studio needs gradio: pip install -e '.[studio]' ({e})"))
    from ..studio.server import serve

    try:
        serve(config=config, checkpoint=str(checkpoint) if checkpoint else None, out_dir=out_dir, host=host,
              port=port, log=lambda m: err.print(m, highlight=False))
    except Exception as e:  # noqa: BLE001
        exit_on_known_error(e)
        raise


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

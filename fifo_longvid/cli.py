"""``fifo-gen``: the command line. The only module that sees raw CLI values.

``generate`` is the default command, so ``fifo-gen --prompt "..."`` works directly.
"""

from __future__ import annotations

import contextlib
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

COMMANDS = {"generate", "batch", "download", "convert"}

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
    image: Annotated[Path | None, typer.Option(
        help="Image-to-video (I2V models): this png/jpg conditions the whole video. It is centre-cropped to the "
        "frame's aspect ratio and resized to --height x --width (the reference squashed it instead); "
        "grayscale/RGBA are converted.")] = None,
    latent_seed: Annotated[bool, typer.Option(
        "--latent-seed", help="FIFO-Diffusion+ latent seeding (I2V models): image tokens of the decoded head of "
        "the initial queue join the text context of every conditional U-Net call.")] = False,
    latent_seed_every: Annotated[int | None, typer.Option(
        help="With --latent-seed: every K output frames, replace the image tokens by those of the latest "
        "output frame (the context length stays constant).")] = None,
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
    flags = build_flags(dict(locals()))
    try:
        run = build_run_config(run_config, flags, overrides or [])
        _default_checkpoint(run)
        _run(run)
    except typer.Exit:
        raise
    except Exception as e:  # noqa: BLE001 - turn known failures into one clear line and exit code
        _exit_on_known_error(e)
        raise


def build_flags(o: dict[str, Any]) -> dict[str, Any]:
    """CLI option values, by parameter name, -> dotted run-config flags. Shared by ``generate`` and ``batch``
    (batch has no --prompt/--output/--resume/--image/--frames-per-prompt: those come per item)."""
    flags: dict[str, Any] = {"mode": o["mode"], "model": o["config"], "device": o["device"], "dtype": o["dtype"]}
    if o.get("prompt"):
        flags["prompts"] = list(o["prompt"])
    path_opts = {"checkpoint": o.get("checkpoint"), "output.path": o.get("output"),
                 "conditioning.image": o.get("image")}
    opt = {
        **{k: str(v) for k, v in path_opts.items() if v},
        "sampling.seed": o["seed"], "sampling.steps": o["steps"], "sampling.cfg": o["cfg"], "sampling.eta": o["eta"],
        "sampling.height": o["height"], "sampling.width": o["width"], "sampling.fps": o["fps"],
        "fifo.num_frames": o["num_frames"], "fifo.partitions": o["partitions"], "fifo.lookahead": o["lookahead"],
        "fifo.init": o["init"], "fifo.max_batch": o["max_batch"],
        "output.output_fps": o["output_fps"], "output.checkpoint_every": o["checkpoint_every"],
        "conditioning.latent_seed_every": o["latent_seed_every"],
    }
    flags.update({k: v for k, v in opt.items() if v is not None})
    switches = {"conditioning.latent_seed": o["latent_seed"], "output.overwrite": o["overwrite"],
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
    fpp = o.get("frames_per_prompt")
    if fpp:
        try:
            flags["fifo.frames_per_prompt"] = [int(x) for x in fpp.split(",")]
        except ValueError:
            _fail(f"--frames-per-prompt must be comma-separated integers, got {fpp!r}")
    return flags


def _default_checkpoint(run: Any) -> None:
    if run.checkpoint is None and run.model in ("videocrafter2", "videocrafter1_i2v"):
        default_ckpt = Path("checkpoints") / run.model / "model.ckpt"
        run.checkpoint = str(default_ckpt) if default_ckpt.exists() else None


def _exit_on_known_error(e: BaseException) -> None:
    """Known failures become one clear line and an exit code; anything else returns (the caller re-raises)."""
    from .diffusion.sampling import NonFiniteError
    from .fifo.state import StateMismatch
    from .models.load import CheckpointError

    known = _EXIT_ERRORS + (CheckpointError, NonFiniteError, StateMismatch, FileNotFoundError, OSError)
    if isinstance(e, known):
        _fail(str(e), 1 if isinstance(e, (NonFiniteError, OSError)) else 2)


def _run(run: Any) -> None:
    from .fifo.parallel import dist_env
    from .pipeline import generate as run_generation

    if dist_env() is not None:
        _run_distributed(run)
        return
    bars = _Bars()
    with bars.progress:
        result = run_generation(run, progress=bars, log=lambda m: err.print(m, highlight=False))
    _report(result)


def _report(result: Any) -> None:
    t = result.timings
    status = "partial" if result.partial else "done"
    err.print(f"[green]{status}[/]: {result.frames} frames -> {result.output} (seed {result.seed}, "
              f"{t.get('total_s', 0):.1f} s); metadata {result.sidecar}", highlight=False)
    if result.partial:
        raise typer.Exit(130)


def _run_distributed(run: Any) -> None:
    """Under torchrun: one video, the windows of every FIFO iteration split across the ranks (fifo/parallel.py).
    Rank 0 owns the queue, the progress bars and the output; the other ranks serve U-Net calls."""
    import signal

    import torch.distributed as dist

    from .fifo.parallel import DistributedExecutor, init_distributed, serve_run
    from .pipeline import generate as run_generation

    rank, world, device = init_distributed(run.device)
    run.device = device
    try:
        if rank != 0:
            from .models.load import load_model

            signal.signal(signal.SIGINT, signal.SIG_IGN)  # rank 0 decides when to stop (and saves the state)
            calls = serve_run(run, load_model(run.model, run.checkpoint, device, run.dtype))
            err.print(f"rank {rank}: served {calls} U-Net calls", highlight=False)
            return
        err.print(f"distributed: {world} ranks ({dist.get_backend()}), windows split across them", highlight=False)
        executor = DistributedExecutor(device)
        bars = _Bars()
        try:
            with bars.progress:
                result = run_generation(run, progress=bars, log=lambda m: err.print(m, highlight=False),
                                        executor=executor)
        finally:
            executor.close()
        _report(result)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


_BATCH_PER_ITEM = ("prompt", "output", "resume", "image", "frames_per_prompt", "overrides")


def _batch(
    prompts_file: Annotated[Path, typer.Argument(help="Prompt file: .txt (one prompt a line, # comments), .csv/.tsv "
                                                 "(a prompt column plus seed, num_frames, qcache, name, image, or "
                                                 "dotted run-config keys), or .jsonl with the same fields.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", "-d", help="Folder for the videos, their sidecars and "
                                          "manifest.jsonl.")],
    shard: Annotated[str | None, typer.Option(help="Do shard K/N of the items (0 <= K < N, item i goes to shard "
                                              "i mod N). Default: from SLURM_ARRAY_TASK_ID/COUNT, "
                                              "SLURM_PROCID/NTASKS or torchrun's RANK/WORLD_SIZE.")] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed item (default: record "
                                            "the error in the manifest and go on).")] = False,
    fmt: Annotated[str, typer.Option("--format", help="mp4, gif or png (a folder of PNGs per item).")] = "mp4",
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides of the run config for every "
                                                          "item; every run-config key is reachable this way.")] = None,
    **opts: Any,
) -> None:
    """Generate one video per line of a prompt file, resumably; shards over SLURM arrays / torchrun ranks.

    Every generate option applies to every item; --overwrite redoes items even if complete.

    A re-run skips complete items and redoes the rest. Exit code 1 if any item failed.
    """
    from .batch import plan_batch, resolve_shard, run_batch, shard_items
    from .io.prompts import read_prompts
    from .models.load import load_model
    from .models.presets import load_model_config

    try:
        flags = build_flags(opts)
        base = build_run_config(opts["run_config"], flags, overrides or [])
        _default_checkpoint(base)
        if base.checkpoint:
            flags["checkpoint"] = base.checkpoint
        try:
            has_image = load_model_config(base.model).image is not None
        except ValueError as e:
            _fail(str(e))
        items = read_prompts(prompts_file, allow_images=has_image)
        the_shard = resolve_shard(shard)
        planned = plan_batch(items, out_dir, flags, overrides or [], opts["run_config"], fmt, prompts_file)
        mine = shard_items(planned, the_shard)
        device = _local_device(base.device)
        err.print(f"{len(planned)} items, shard {the_shard} ({the_shard.source}): {len(mine)} items -> {out_dir}",
                  highlight=False)
        bars = _BatchBars(len(mine))
        with bars.progress, _sigterm_as_sigint():
            summary = run_batch(mine, out_dir, the_shard, None, fail_fast=fail_fast, overwrite=opts["overwrite"],
                                log=lambda m: bars.progress.console.print(m, highlight=False), progress=bars,
                                on_item=bars.item_event,
                                load=lambda: load_model(base.model, base.checkpoint, device, base.dtype))
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to continue", highlight=False)
        raise typer.Exit(130) from None
    except Exception as e:  # noqa: BLE001
        _exit_on_known_error(e)
        raise
    _print_summary(summary)
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def _with_generate_options(func: Any) -> Any:
    """Give ``func`` (a ``**opts`` command) every option of ``generate`` except the per-item ones, so typer
    declares them once: generate's signature is the single source of truth."""
    import inspect

    own = inspect.signature(func, eval_str=True).parameters
    gen = inspect.signature(generate, eval_str=True).parameters
    head = [p for n, p in own.items() if n not in ("overrides", "opts")]
    shared = [p for n, p in gen.items() if n not in _BATCH_PER_ITEM and n not in own]
    params = head + shared + [own["overrides"]]
    func.__signature__ = inspect.Signature(params)
    func.__annotations__ = {p.name: p.annotation for p in params}
    return func


batch = app.command("batch")(_with_generate_options(_batch))


def _local_device(device: str) -> str:
    """One GPU per process when several processes share a node (torchrun LOCAL_RANK, SLURM_LOCALID)."""
    import os

    import torch

    local = os.environ.get("LOCAL_RANK") or os.environ.get("SLURM_LOCALID")
    if local and device in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return f"cuda:{int(local) % torch.cuda.device_count()}"
    return device


@contextlib.contextmanager
def _sigterm_as_sigint() -> Any:
    """SLURM preemption sends SIGTERM: treat it like Ctrl-C (finish the iteration, save state, record it)."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        h = signal.getsignal(signal.SIGINT)
        if callable(h):
            h(signum, frame)
        else:
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _BatchBars(_Bars):
    """An outer bar over the items plus the per-item inner bars (base clip, FIFO iterations = frames)."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.items = self.progress.add_task("items", total=total, rate="")

    def item_event(self, event: str, item: Any, record: Any) -> None:
        if event == "start":
            for tid in self.tasks.values():  # fresh inner bars for this item (task ids stay valid)
                self.progress.reset(tid, completed=0)
            self.progress.update(self.items, description=f"items [{item.item.index}] {item.name[:48]}")
        else:
            self.progress.advance(self.items)


def _print_summary(s: Any) -> None:
    from rich.table import Table

    table = Table(title=f"batch, shard {s.shard}")
    for col in ("done", "skipped", "failed", "busy", "total time", "s/frame"):
        table.add_column(col, justify="right")
    spf = f"{s.s_per_frame:.2f}" if s.s_per_frame is not None else "-"
    table.add_row(str(s.done), str(s.skipped), str(s.failed), str(s.busy), f"{s.seconds:.1f} s", spf)
    err.print(table)
    for name, error in s.failures:
        err.print(f"[red]failed[/] {name}: {error}", highlight=False)
    if s.interrupted:
        err.print("interrupted: run the same command again to continue", highlight=False)


@app.command()
def download(
    model: Annotated[str, typer.Option(help="Which weights: videocrafter2 (text-to-video) or videocrafter1_i2v "
                                       "(image-to-video, for --image and --latent-seed).")] = "videocrafter2",
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

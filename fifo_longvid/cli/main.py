"""``fifo-gen``: the command line. The only module that sees raw CLI values.

``generate`` is the default command, so ``fifo-gen --prompt "..."`` works directly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..interrupts import EXIT_INTERRUPTED, ignore_stop_signals, terminate_as_interrupt
from ..run.config import build_run_config
from .batch import batch_command
from .plan import plan_command
from .progress import Bars, plural
from .report import report_command
from .support import (
    TGATE_DEFAULT,
    OptionalTgateCommand,
    build_flags,
    default_checkpoint,
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
def generate(
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="Text prompt. Repeat for a multi-prompt "
                                              "video (with --frames-per-prompt).")] = [],  # noqa: B006
    config: Annotated[str, typer.Option("--config", "-c", help="Model preset or a model YAML path. VideoCrafter: "
                                        "videocrafter2, videocrafter1_i2v, toy (trained, shipped), tiny. AnimateDiff: "
                                        "animatediff (needs --checkpoint), tiny_animatediff (no weights). Wan: wan "
                                        "(Wan2.1-T2V-1.3B or SkyReels-V2-DF-1.3B folder), tiny_wan (no weights).")
                      ] = "videocrafter2",
    checkpoint: Annotated[Path | None, typer.Option(help="Weights. VideoCrafter: a .ckpt or .safetensors (default "
                                                    "checkpoints/videocrafter2/model.ckpt). AnimateDiff: a diffusers "
                                                    "AnimateDiffPipeline folder, an SD-1.5 folder or a single-file "
                                                    "SD-1.5 .safetensors (the last two with --motion-adapter). Wan: a "
                                                    "diffusers WanPipeline or SkyReelsV2DiffusionForcingPipeline "
                                                    "folder (default checkpoints/wan/).")
                          ] = None,
    motion_adapter: Annotated[Path | None, typer.Option(help="AnimateDiff motion modules for an SD-1.5 checkpoint: a "
                                                        "diffusers MotionAdapter folder or an original "
                                                        "mm_sd_v15_v2.ckpt / .safetensors.")] = None,
    mode: Annotated[str, typer.Option(help="fifo: long video (FIFO-Diffusion). base: one plain clip of the "
                                      "model.")] = "fifo",
    num_frames: Annotated[int | None, typer.Option("--num-frames", "-l", help="Output length in frames "
                                                   "(FIFO). Wan: output frames; the queue counts latent frames, 4 "
                                                   "frames each after the first.")] = None,
    partitions: Annotated[int | None, typer.Option("--partitions", "-n", help="FIFO partitions n: the queue holds "
                                                   "window x n frames; steps = window x n / block.")] = None,
    block: Annotated[int | None, typer.Option("--block", "-k", help="Frames per noise level K (the rolling "
                                              "schedule): each iteration moves every block one level down and emits "
                                              "K frames, so steps = window x partitions / K. 1 (default) is "
                                              "FIFO-Diffusion; K must divide the window (half of it with "
                                              "lookahead). A diffusion-forcing checkpoint defaults to its own "
                                              "block size.")] = None,
    stagger: Annotated[bool, typer.Option("--stagger", help="With --block K: each frame of a block keeps its own "
                                          "level of a K-times finer schedule and steps K levels per iteration, so "
                                          "no two frames share a level and blocks leave no seams (same cost; each "
                                          "frame takes S steps, on one of K interleaved grids).")] = False,
    lookahead: Annotated[bool | None, typer.Option("--lookahead/--no-lookahead", help="Lookahead denoising "
                                                   "(windows overlap by half; default on).")] = None,
    init: Annotated[str | None, typer.Option(help="Queue init: first (base clip, reference), uniform "
                                             "(FIFO-Diffusion+ unilatent), noise (no base clip).")] = None,
    frames_per_prompt: Annotated[str | None, typer.Option(help="Comma list of frame counts, one per "
                                                          "--prompt, e.g. 40,60.")] = None,
    max_batch: Annotated[str | None, typer.Option(help="Samples per U-Net call (windows x 2 for CFG): "
                                                  "auto (a fixed rule of the model, the shapes and the card's "
                                                  "total memory: the same command gives the same bits), all or N. "
                                                  "Lower = less memory, slower.")] = None,
    qcache: Annotated[float | None, typer.Option(
        "--qcache", help="Weighted Q-cache v in [0, 1]: decoder queries of the temporal self-attention become "
        "(1-v)*Q_dec + v*Q_enc of the mirrored encoder layer (FIFO-Diffusion+). 0.9 is the paper's setting.")] = None,
    qcache_schedule: Annotated[str | None, typer.Option(
        help="v over denoising progress instead of a constant: linear:0.9:0.8 (noisiest -> cleanest), "
        "list:V1,...,VS, or const:V. Implies --qcache.")] = None,
    qcache_targets: Annotated[str | None, typer.Option(
        help="Comma list of attention layers to blend: temporal_attn1 (default), temporal_attn2, "
        "spatial_attn1, spatial_attn2.")] = None,
    tail: Annotated[str | None, typer.Option(
        help="What enters the queue each iteration: noise (fresh white noise, FIFO-Diffusion; default), coherent "
        "(low frequencies from the last queue latent, high from fresh noise: Ouroboros-Diffusion), rescheduled "
        "(shuffled reuse of earlier tail noise: FreeNoise).")] = None,
    tail_cutoff: Annotated[str | None, typer.Option(
        help="Coherent tail: Gaussian low-pass widths D_S[:D_T] in normalised frequency (default 0.25:1.0). "
        "Implies --tail coherent.")] = None,
    tail_window: Annotated[str | None, typer.Option(
        help="Rescheduled tail: noise period W[:S], S = frames per shuffled block (default: the FIFO window and "
        "4; FreeNoise used 16:4). Implies --tail rescheduled.")] = None,
    tgate: Annotated[float | None, typer.Option(
        "--tgate", metavar="[GATE]", help="TGATE: each frame computes its cross-attention for the first GATE of its "
        f"schedule (default {TGATE_DEFAULT}: TGATE's 10 of 25 steps), then reuses it; windows past the gate run "
        "without guidance (cond only).")] = None,
    cfg_cache: Annotated[int | None, typer.Option(
        "--cfg-cache", metavar="K", help="FasterCache CFG-Cache: each window computes its uncond pass every K "
        "iterations (staggered); in between it is rebuilt from the cond pass and per-frame frequency deltas.")] = None,
    attn_reuse: Annotated[bool, typer.Option(
        "--attn-reuse", help="FasterCache attention reuse: spatial self-attention on alternate iterations per "
        "frame, extrapolated from its last two outputs in between (not in the noisiest part).")] = False,
    deepcache: Annotated[int | None, typer.Option(
        "--deepcache", metavar="K", help="DeepCache: each window runs the full U-Net every K iterations (staggered), "
        "only the outermost resolution level in between, with cached deep features.")] = None,
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
    steps: Annotated[int | None, typer.Option(help="Denoising steps (DDIM, or flow-matching sigmas). FIFO: with "
                                              "--block, partitions = steps x block / window; with --partitions, "
                                              "block = partitions x window / steps; alone, the smallest block that "
                                              "fits (default: window x partitions, block 1). Few-step models: e.g. "
                                              "--steps 4 --cfg 1. Base: default 50.")] = None,
    cfg: Annotated[float | None, typer.Option("--cfg", help="Classifier-free guidance scale (default: the model's; "
                                              "12 for VideoCrafter2, 7.5 AnimateDiff, 5 Wan).")] = None,
    negative_prompt: Annotated[str | None, typer.Option(
        help="What the unconditional (guidance) branch encodes instead of the empty prompt (default \"\": the "
        "empty prompt, as the reference and diffusers' pipelines do without one). Every family supports it.")] = None,
    eta: Annotated[float | None, typer.Option(help="DDIM eta, 0 = deterministic (default 1.0; flow-matching models "
                                              "(Wan) have no eta: their Euler step is deterministic).")] = None,
    height: Annotated[int | None, typer.Option(help="Frame height in pixels: a multiple of 8 x 2^(U-Net levels - 1), "
                                               "64 for VideoCrafter2 and tiny.")] = None,
    width: Annotated[int | None, typer.Option(help="Frame width in pixels, the same multiple as --height.")] = None,
    fps: Annotated[int | None, typer.Option(help="fps conditioning of the model (default 8).")] = None,
    output_fps: Annotated[float | None, typer.Option(help="Frame rate of the written video (default 10).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output: .mp4, .gif, or a folder for "
                                                "PNGs. A .json sidecar is written next to it.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    save_latents: Annotated[bool, typer.Option(help="Also save the output latents (.latents.safetensors).")] = False,
    save_frames: Annotated[bool, typer.Option(help="Also save every frame as PNG in <name>_frames/.")] = False,
    checkpoint_every: Annotated[int | None, typer.Option(help="Save resumable state every K output frames.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its saved state.")] = False,
    auto_resume: Annotated[bool, typer.Option(
        "--auto-resume", help="For job scripts that may be requeued: continue from the saved state of -o if it has "
        "one, else start; a complete -o is left as it is (exit 0).")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    dtype: Annotated[str, typer.Option(help="U-Net and VAE precision: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, "
                                        "bf16. The queue, noise and DDIM maths stay fp32.")] = "auto",
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the U-Net (first "
                                          "iterations compile; worth it for long runs on a GPU).")] = False,
    run_config: Annotated[Path | None, typer.Option(help="YAML run file (same keys as the overrides).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides of the run config, "
                                                          "e.g. sampling.cfg=7.5 fifo.partitions=2.")] = None,
) -> None:
    """Generate a video (FIFO-Diffusion by default, or one base clip with --mode base).

    Ctrl-C or SIGTERM (a scheduler's stop): the current iteration ends, a playable NAME.partial.mp4 and the
    resume state are written, and the exit code is 130; the same command plus --resume continues.
    """
    options = dict(locals())
    try:
        with terminate_as_interrupt():
            run = run_config_from_options(options)
            if auto_resume and _auto_resume(run):
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


def run_config_from_options(options: dict[str, Any]) -> Any:
    """``generate``'s option values (by parameter name) -> the RunConfig it runs. The studio parses its
    ``fifo-gen generate`` argv through this same function (``parse_generate_argv``)."""
    run = build_run_config(options["run_config"], build_flags(options), list(options["overrides"] or []))
    default_checkpoint(run)
    return run


def parse_generate_argv(argv: list[str]) -> Any:
    """``fifo-gen generate ARGV`` -> its RunConfig, without running anything: the command's own parser and
    option mapping, so a command line shown to a user means exactly what the studio ran. Raises ConfigError
    for anything ``generate`` would refuse before loading weights."""
    from ..run.config import ConfigError

    command = typer.main.get_command(app).commands["generate"]  # type: ignore[attr-defined]
    try:
        ctx = command.make_context("fifo-gen generate", list(argv))
    except Exception as e:
        if callable(getattr(e, "format_message", None)):  # a usage error of click (or of typer's bundled click)
            raise ConfigError(e.format_message()) from None
        raise
    with ctx:
        return run_config_from_options(dict(ctx.params))


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
            from ..backends import load_backend

            with ignore_stop_signals():  # rank 0 decides when to stop (it needs us to finish the iteration)
                model = load_backend(run.model, run.checkpoint, device, run.dtype, run.motion_adapter)
                calls = serve_run(run, model)
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


batch = app.command("batch")(_with_generate_options(batch_command))
plan = app.command("plan")(_with_generate_options(plan_command))
report = app.command("report")(report_command)


@app.command()
def download(
    model: Annotated[str, typer.Option(help="Which weights: videocrafter2 (text-to-video), videocrafter1_i2v "
                                       "(image-to-video, for --image and --latent-seed), animatediff (an SD-1.5 "
                                       "base and a motion adapter, for --config animatediff), wan "
                                       "(Wan-AI/Wan2.1-T2V-1.3B-Diffusers) or skyreels-df "
                                       "(Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers), both for --config wan.")
                      ] = "videocrafter2",
    dest: Annotated[Path, typer.Option(help="Target folder.")] = Path("checkpoints"),
) -> None:
    """Fetch the model checkpoint from the Hugging Face Hub (resumable)."""
    from ..backends import download

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

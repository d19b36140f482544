"""The ``fifo-gen generate`` options and the one parser of a generate argv, used by the command and the studio.

``generate_options`` declares every option once (typer reads its signature); ``generate`` in ``main.py`` and the
``batch``/``plan`` commands take their options from it, and ``parse_generate_argv`` turns an argv into the exact
RunConfig the command would run, so a command line shown by the studio means what it ran.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ConfigError
from ..run.config import build_run_config
from .support import TGATE_DEFAULT, OptionalTgateCommand, build_flags


def generate_options(
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
    lora: Annotated[list[str], typer.Option(
        "--lora", metavar="PATH[:SCALE]", help="A LoRA (.safetensors; diffusers, original Wan/ComfyUI or kohya "
        "layout) on the model's denoiser (Wan: its transformer; AnimateDiff: the SD-1.5 U-Net), at SCALE (default "
        "1.0). Repeat for several. Every key must match the model, else the run stops before writing anything; "
        "SCALE 0 is the same as leaving it out. VideoCrafter takes none.")] = [],  # noqa: B006
    lora_2: Annotated[list[str], typer.Option(
        "--lora-2", metavar="PATH[:SCALE]", help="A LoRA on the second, low-noise expert (transformer_2) of a "
        "two-expert model (Wan2.2-A14B folders); --lora then goes to the high-noise expert. Repeatable.")
                      ] = [],  # noqa: B006
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
        help="Image-to-video. VideoCrafter1 I2V: this png/jpg's tokens condition every step of the whole video. "
        "Wan2.2-TI2V-5B folder: it is the video's first frame (its latent pinned at timestep 0 while that frame is "
        "in the FIFO queue; later frames follow the text). Other models refuse it. It is centre-cropped to the "
        "frame's aspect ratio and resized to --height x --width; grayscale/RGBA are converted.")] = None,
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
                                              "12 for VideoCrafter2, 7.5 AnimateDiff, 5 Wan, 4 Wan2.2-A14B's "
                                              "high-noise expert).")] = None,
    cfg_2: Annotated[float | None, typer.Option("--cfg-2", help="Guidance scale of the low-noise expert of a "
                                                "two-expert model (Wan2.2-A14B: frames whose noise level is below "
                                                "its boundary). Default: the release's (3 for T2V-A14B) when --cfg "
                                                "is not given either, else --cfg.")] = None,
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
) -> dict[str, Any]:
    """Every option of ``fifo-gen generate``, by parameter name."""
    return dict(locals())


def with_options_of(source: Callable[..., Any], skip: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """Give a ``**options`` command the signature of ``source`` (less ``skip``), so typer declares each option
    once."""

    def wrap(func: Any) -> Any:
        params = [p for n, p in inspect.signature(source, eval_str=True).parameters.items() if n not in skip]
        func.__signature__ = inspect.Signature(params)
        func.__annotations__ = {p.name: p.annotation for p in params}
        return func

    return wrap


def run_config_from_options(options: dict[str, Any]) -> Any:
    """``generate``'s option values (by parameter name) -> the RunConfig it runs. The studio parses its
    ``fifo-gen generate`` argv through this same function (``parse_generate_argv``)."""
    return build_run_config(options["run_config"], build_flags(options), list(options["overrides"] or []))


def parse_generate_argv(argv: list[str]) -> Any:
    """``fifo-gen generate ARGV`` -> its RunConfig, without running anything: the command's own parser and
    option mapping, so a command line shown to a user means exactly what the studio ran. Raises ConfigError
    for anything ``generate`` would refuse before loading weights."""
    command = _generate_command()
    try:
        ctx = command.make_context("fifo-gen generate", list(argv))
    except Exception as e:
        if callable(getattr(e, "format_message", None)):  # a usage error of click (or of typer's bundled click)
            raise ConfigError(e.format_message()) from None
        raise
    with ctx:
        return run_config_from_options(dict(ctx.params))




def _generate_command() -> Any:
    """A click command with exactly ``generate``'s options (and its tolerant ``--tgate`` parsing)."""
    app = typer.Typer(add_completion=False)

    @app.command(cls=OptionalTgateCommand)
    @with_options_of(generate_options)
    def generate(**options: Any) -> None:  # pragma: no cover - parsed, never run
        pass

    return typer.main.get_command(app)

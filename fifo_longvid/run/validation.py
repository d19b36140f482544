"""Reject bad run settings before any work is done (no weights loaded, no file written), each with what
to do instead."""

from __future__ import annotations

from pathlib import Path

from ..backends import Family, family_for
from ..backends.family import FIRST_FRAME, Sizes, image_encoder_advice, lora_refusal, motion_adapter_refusal
from ..backends.lora import MAIN, SECOND, check_lora_settings
from ..errors import ConfigError
from ..fifo.init import INIT_MODES
from ..fifo.sizing import parse_max_batch
from ..fifo.tail import check_tail_config
from ..io.prompts import MAX_PROMPT_CHARS
from .config import RunConfig


def validate(cfg: RunConfig, family: Family | None = None, sizes: Sizes | None = None) -> None:
    """Reject bad settings before any work is done, with what to do instead. ``family``: the run's, as
    ``run/resolve.py`` looked it up (asked of the registry here only when validating on its own); ``sizes``: what
    the checkpoint's configs say (its experts), where known."""
    if cfg.mode not in ("fifo", "base"):
        raise ConfigError(f"mode must be 'fifo' or 'base', got {cfg.mode!r}")
    if not cfg.prompts or any(not p.strip() for p in cfg.prompts):
        raise ConfigError("empty prompt: pass --prompt \"a description of the video\"")
    for p in cfg.prompts:
        if len(p) > MAX_PROMPT_CHARS:
            raise ConfigError(f"prompt is {len(p)} characters (at most {MAX_PROMPT_CHARS}; the text encoder reads "
                              f"only its first 77 tokens anyway): {p[:40]}...")
    if family is None:
        family = family_for(cfg.model, cfg.checkpoint)
    _check_sampling(cfg, family)
    _check_experts(cfg, family, sizes)
    if cfg.mode == "fifo":
        _check_fifo(cfg)
    elif len(cfg.prompts) > 1:
        raise ConfigError("--mode base takes one prompt")
    parse_max_batch(cfg.fifo.max_batch)
    if cfg.motion_adapter and "motion_adapter" not in family.provides:
        raise ConfigError(motion_adapter_refusal(cfg.model, family))
    _check_conditioning(cfg, family, sizes)
    _check_loras(cfg, family)
    from ..techniques import check_compile, check_family
    from ..techniques import check_config as check_techniques

    try:
        check_techniques(cfg.techniques)  # every enabled technique and their combination
        check_family(cfg.techniques, family.name, family.provides,
                     " (a DiT: one stack of transformer blocks)" if family.dit else "")
        if cfg.compile:
            check_compile(cfg.techniques)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_loras(cfg: RunConfig, family: Family) -> None:
    """--lora on a family without LoRA targets, --lora-2 on a model without a second expert, a missing file or
    a bad scale: refused here, before any weights load (``run/resolve.py`` has mapped main/second to names)."""
    if not cfg.loras:
        return
    targets = family.lora_targets(cfg.model, cfg.checkpoint)
    if not targets:
        raise ConfigError(lora_refusal(cfg.model, family))
    if any(lo.target == SECOND for lo in cfg.loras):
        raise ConfigError(lora_refusal(cfg.model, family, second=True))
    check_lora_settings(cfg.loras, (*targets, MAIN))  # main: not mapped yet when validated on its own


def _check_sampling(cfg: RunConfig, family: Family) -> None:
    s = cfg.sampling
    if s.cfg is not None and s.cfg < 0:
        raise ConfigError(f"--cfg must be >= 0, got {s.cfg}")
    if s.eta is not None and not 0.0 <= s.eta <= 1.0:
        raise ConfigError(f"--eta must be in [0, 1], got {s.eta}")
    if family.schedule == "flow" and s.eta:
        raise ConfigError(f"--eta {s.eta}: the {family.name} family samples with flow matching's deterministic Euler "
                          "step, which has no eta; drop --eta (or set --eta 0)")
    if s.negative_prompt and not family.negative_prompt:
        raise ConfigError(f"--negative-prompt: the {family.name} family has no negative-prompt branch")


def _check_experts(cfg: RunConfig, family: Family, sizes: Sizes | None) -> None:
    """--cfg-2 needs a second expert; per-frame technique state is not carried across the expert switch yet."""
    experts = sizes.experts if sizes is not None else 1
    if cfg.sampling.cfg_2 is not None and experts < 2:
        raise ConfigError(f"--cfg-2 sets the low-noise expert's guidance, and {cfg.model} "
                          f"({cfg.checkpoint or 'no checkpoint'}) has one denoiser; drop --cfg-2 (or pass a "
                          "two-expert Wan2.2-A14B folder with --checkpoint)")
    if cfg.sampling.cfg_2 is not None and cfg.sampling.cfg_2 < 0:
        raise ConfigError(f"--cfg-2 must be >= 0, got {cfg.sampling.cfg_2}")
    if experts > 1:
        from ..techniques import enabled

        on = [spec.flag for spec in enabled(cfg.techniques)]
        if on:
            raise ConfigError(f"{', '.join(on)}: these keep per-frame state that has not been tested across the "
                              "switch between the two experts of this model; run it without them")


def _check_fifo(cfg: RunConfig) -> None:
    f = cfg.fifo
    if f.num_frames is not None and f.num_frames < 1:
        raise ConfigError(f"--num-frames must be >= 1, got {f.num_frames}")
    if f.partitions is not None and f.partitions < 1:
        raise ConfigError(f"--partitions must be >= 1, got {f.partitions}")
    if f.block is not None and f.block < 1:
        raise ConfigError(f"--block must be >= 1, got {f.block}")
    if cfg.sampling.steps is not None and cfg.sampling.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {cfg.sampling.steps}")
    if f.init not in INIT_MODES:
        raise ConfigError(f"--init must be one of {', '.join(INIT_MODES)}, got {f.init!r}")
    if f.window is not None and f.window < 1:
        raise ConfigError(f"fifo.window must be >= 1, got {f.window}")
    if f.lookahead and f.window is not None and f.window % 2:
        raise ConfigError(f"lookahead needs an even window length, got {f.window}; use --no-lookahead")
    if f.frames_per_prompt:
        if len(f.frames_per_prompt) != len(cfg.prompts):
            raise ConfigError(f"--frames-per-prompt has {len(f.frames_per_prompt)} entries for "
                              f"{len(cfg.prompts)} prompts; give one count per --prompt")
        if any(n < 1 for n in f.frames_per_prompt):
            raise ConfigError("--frames-per-prompt counts must be >= 1")
        if f.num_frames is not None and f.num_frames != sum(f.frames_per_prompt):
            raise ConfigError(f"--num-frames {f.num_frames} != sum of --frames-per-prompt "
                              f"({sum(f.frames_per_prompt)}); give one or make them agree")
    elif len(cfg.prompts) > 1:
        raise ConfigError("several prompts need --frames-per-prompt N1,N2,... (frames for each prompt)")
    try:
        check_tail_config(f.tail)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_conditioning(cfg: RunConfig, family: Family, sizes: Sizes | None = None) -> None:
    """--image needs a model with an image encoder, or one that takes the image as its first frame (the
    checkpoint's ``sizes.image_input``); --latent-seed needs the image encoder."""
    c = cfg.conditioning
    if c.image or c.latent_seed:
        try:
            has_image = family.has_image_encoder(cfg.model)
        except ValueError:
            has_image = True  # the model config error is reported when loading
        first_frame = sizes is not None and sizes.image_input == FIRST_FRAME
        if c.image and not (has_image or first_frame):
            raise ConfigError(family.image_refusal(cfg.model, cfg.checkpoint))
        if c.latent_seed and not has_image:
            raise ConfigError(image_encoder_advice(cfg.model, "--latent-seed"))
        if c.latent_seed and c.image:
            raise ConfigError("--image and --latent-seed both set the image tokens; use one of them")
        if c.latent_seed and cfg.mode != "fifo":
            raise ConfigError("--latent-seed seeds the FIFO queue; it needs --mode fifo")
        if c.latent_seed and cfg.fifo.init == "noise":
            raise ConfigError("--latent-seed decodes the head of a queue built from a base clip; use --init first "
                              "or uniform")
    if c.image and not Path(c.image).is_file():
        raise ConfigError(f"--image {c.image}: no such file")
    if c.latent_seed_every < 0:
        raise ConfigError(f"--latent-seed-every must be >= 0, got {c.latent_seed_every}")
    if c.latent_seed_every and not c.latent_seed:
        raise ConfigError("--latent-seed-every K needs --latent-seed")

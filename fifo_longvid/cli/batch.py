"""``fifo-gen batch``: one video per line of a prompt file (the command; the work is in ``batch/runner.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..interrupts import EXIT_INTERRUPTED, terminate_as_interrupt
from ..run.config import build_run_config
from .progress import BatchBars, plural
from .support import (
    build_flags,
    err,
    exit_on_known_error,
    fail,
    local_device,
    threads_from_slurm,
)


def batch_command(
    prompts_file: Annotated[Path, typer.Argument(help="Prompt file: .txt (one prompt a line, # comments), .csv/.tsv "
                                                 "(a prompt column plus seed, num_frames, qcache, name, image, lora, "
                                                 "or dotted run-config keys), or .jsonl with the same fields.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", "-d", help="Folder for the videos, their sidecars and "
                                          "manifest.jsonl.")],
    shard: Annotated[str | None, typer.Option(help="Do shard K/N of the items (0 <= K < N, item i goes to shard "
                                              "i mod N). Default: from SLURM_ARRAY_TASK_ID/COUNT, "
                                              "SLURM_PROCID/NTASKS or torchrun's RANK/WORLD_SIZE.")] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed item (default: record "
                                            "the error in the manifest and go on).")] = False,
    fmt: Annotated[str, typer.Option("--format", help="mp4, gif or png (a folder of PNGs per item).")] = "mp4",
    report: Annotated[bool, typer.Option("--report", help="Also write each item's drift report beside it: "
                                         "NAME.report.json and NAME.report.png (as fifo-gen report).")] = False,
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides of the run config for every "
                                                          "item; every run-config key is reachable this way.")] = None,
    **opts: Any,
) -> None:
    """Generate one video per line of a prompt file, resumably; shards over SLURM arrays / torchrun ranks.

    Every generate option applies to every item; --overwrite redoes items even if complete.

    A re-run skips complete items and redoes the rest. Exit code 1 if any item failed.
    """

    try:
        with terminate_as_interrupt():
            summary = _run_batch_command(prompts_file, out_dir, shard, fail_fast, fmt, overrides or [], opts,
                                         report)
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to continue", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as e:  # noqa: BLE001
        exit_on_known_error(e)
        raise
    _print_summary(summary)
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def _run_batch_command(prompts_file: Path, out_dir: Path, shard: str | None, fail_fast: bool, fmt: str,
                       overrides: list[str], opts: dict[str, Any], report: bool = False) -> Any:
    from ..backends import family_for
    from ..batch.runner import plan_batch, run_batch
    from ..batch.sharding import resolve_shard, shard_items
    from ..io.prompts import read_prompts
    from ..run.resolve import apply_presets

    flags = build_flags(opts)
    base = build_run_config(opts["run_config"], flags, overrides or [])
    family = family_for(base.model, base.checkpoint)
    apply_presets(base, family)
    if base.checkpoint:
        flags["checkpoint"] = base.checkpoint
    try:  # an image encoder, or a checkpoint that takes the image as its first frame (Wan2.2-TI2V)
        has_image = family.has_image_encoder(base.model) or \
            family.sizes(base.model, base.checkpoint).image_input is not None
    except ValueError as e:
        fail(str(e))
    items = read_prompts(prompts_file, allow_images=has_image)
    the_shard = resolve_shard(shard)
    planned = plan_batch(items, out_dir, flags, overrides or [], opts["run_config"], fmt, prompts_file)
    mine = shard_items(planned, the_shard)
    device = local_device(base.device)
    err.print(f"{plural(len(planned), 'item')}, shard {the_shard} ({the_shard.source}): "
              f"{plural(len(mine), 'item')} -> {out_dir}", highlight=False)
    threads = threads_from_slurm()
    with BatchBars(err, len(mine)) as bars:
        if threads:
            bars.print(f"torch threads: {threads} (SLURM_CPUS_PER_TASK)")
        return run_batch(mine, out_dir, the_shard, None, fail_fast=fail_fast, overwrite=opts["overwrite"],
                         log=bars.print, progress=bars, on_item=bars.item_event, report=report,
                         load=lambda loras=(): family.load(base.model, base.checkpoint, device, base.dtype,
                                                           base.motion_adapter, loras=loras))


def _print_summary(s: Any) -> None:
    from rich.table import Table

    table = Table(title=f"batch, shard {s.shard}")
    for col in ("done", "skipped", "failed", "interrupted", "busy", "total time", "s/frame"):
        table.add_column(col, justify="right")
    spf = f"{s.s_per_frame:.2f}" if s.s_per_frame is not None else "-"
    table.add_row(str(s.done), str(s.skipped), str(s.failed), str(int(s.interrupted)), str(s.busy),
                  f"{s.seconds:.1f} s", spf)
    err.print(table)
    for name, error in s.failures:
        err.print(f"[red]failed[/] {name}: {error}", highlight=False)
    if s.interrupted:
        err.print("interrupted: run the same command again to continue", highlight=False)

"""Batch runs: many prompts -> many videos, sharded over SLURM array tasks / torchrun ranks, resumable.

Guarantees, also when jobs are preempted or shards run at the same time in one output folder:

* **Names** are deterministic (``io/naming.py``): index, prompt slug, and a hash of (prompt, seed, settings).
  A changed setting changes the name, so an old result is never taken for a new one.
* **Exactly once.** Item ``i`` belongs to shard ``i mod N``. A re-run skips an item whose video and sidecar
  are complete (``"complete": true``) and redoes anything else (continuing from a saved ``--checkpoint-every``
  state when one exists). A per-item ``flock`` stops two overlapping processes from making the same video.
* **Manifest** (the choice: one file per shard, merged on read). Each shard appends its records to its own
  ``manifest.shard-K-of-N.jsonl`` (one JSON line per event, one ``write`` + ``fsync``; only that shard writes
  it, guarded by a lock file). ``manifest.jsonl`` is a merged view -- the latest record of every item,
  sorted by index -- rebuilt from all shard files under an ``fcntl`` lock and published by an atomic rename,
  so readers never see half a file and no shard's update is lost. The shard files are the source of truth.
* **Failures** (NaN, out of memory, a bad image path, ...) are recorded with their error and the batch goes on,
  unless ``fail_fast``.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io.naming import item_hash, output_name, prompt_seed
from ..io.prompts import BatchItem, PromptFileError
from ..io.sidecar import file_sha256, sidecar_path
from ..run.config import (
    RunConfig,
    build_run_config,
    hash_loras,
    parse_value,
    prune_tail_settings,
    prune_unset_expert_settings,
    to_dict,
)
from .manifest import Manifest, now_iso
from .sharding import Shard

SUFFIXES = {"mp4": ".mp4", "gif": ".gif", "png": ""}


# ------------------------------------------------------------------------------------------------
# Planning: one validated run config per item


@dataclass
class PlannedItem:
    item: BatchItem
    cfg: RunConfig
    seed: int
    seed_source: str  # row | base+index | prompt-hash
    digest: str
    name: str
    output: Path

    @property
    def index(self) -> int:
        return self.item.index

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.output)


_NOT_HASHED = {"output": ("path", "overwrite", "resume", "checkpoint_every", "save_latents", "save_frames"),
               "fifo": ("max_batch",)}


def settings_of(cfg: RunConfig, checkpoint_id: str) -> dict[str, Any]:
    """Everything that changes the video file, minus prompt and seed (hashed separately)."""
    d = to_dict(cfg)
    for top in ("prompts", "device"):
        d.pop(top)
    d["sampling"].pop("seed")
    for sec, keys in _NOT_HASHED.items():
        for k in keys:
            d[sec].pop(k, None)
    prune_tail_settings(d)
    hash_loras(d)  # by content; none: names from before --lora stay valid
    prune_unset_expert_settings(d)  # no second expert: names from before --cfg-2 stay valid
    d["checkpoint"] = checkpoint_id
    d.get("conditioning", {}).pop("image", None)  # hashed by content instead
    return d


def checkpoint_id(cfg: RunConfig) -> str:
    if cfg.checkpoint is None:
        return f"recipe:{cfg.model}"
    p = Path(cfg.checkpoint)
    return "sha256:" + file_sha256(p) if p.is_file() else f"path:{p}"


def plan_batch(items: list[BatchItem], out_dir: str | Path, flags: dict[str, Any], overrides: list[str],
               run_config: str | Path | None = None, fmt: str = "mp4", prompt_file: str | Path = "prompts",
               validate_fn: Callable[[RunConfig], None] | None = None) -> list[PlannedItem]:
    """Resolve every item's run config, seed, hash and output name. Raises ``PromptFileError`` listing every
    line whose settings are invalid; nothing has been generated at that point."""
    from ..backends import family_for
    from ..backends.lora import lora_entries
    from ..run.resolve import apply_presets, resolve

    families: dict[tuple[str, str | None], Any] = {}  # asked once per model a batch names (usually one)
    out_dir = Path(out_dir)
    flags = dict(flags)
    base_seed = flags.pop("sampling.seed", None)
    for k in ("prompts", "output.path", "output.resume"):
        flags.pop(k, None)
    if fmt not in SUFFIXES:
        raise ConfigError(f"--format must be one of {', '.join(SUFFIXES)}, got {fmt!r}")
    suffix = SUFFIXES[fmt]
    planned: list[PlannedItem] = []
    problems: list[tuple[int, str]] = []
    ckpt_ids: dict[str | None, str] = {}
    for it in items:
        if it.seed is not None:
            seed, source = it.seed, "row"
        elif base_seed is not None:
            seed, source = int(base_seed) + it.index, "base+index"
        else:
            seed, source = prompt_seed(it.prompt), "prompt-hash"
        item_values: dict[str, Any] = {"sampling.seed": seed}
        if it.num_frames is not None:
            item_values["fifo.num_frames"] = it.num_frames
        if it.qcache is not None:
            item_values.update({"techniques.qcache.enabled": True, "techniques.qcache.v": it.qcache})
        if it.image is not None:
            item_values["conditioning.image"] = it.image
        if it.loras is not None:  # the item's LoRAs replace the batch's --lora
            item_values["loras"] = lora_entries(list(it.loras), [])
        item_values.update({k: parse_value(v) if isinstance(v, str) else v for k, v in it.overrides.items()})
        try:
            cfg = build_run_config(run_config, {**flags, "prompts": [it.prompt]}, list(overrides), item_values)
            key = (cfg.model, cfg.checkpoint)
            if key not in families:
                families[key] = family_for(*key)
            apply_presets(cfg, families[key])  # the item's name hashes the settings at this point
            image = cfg.conditioning.image
            cfg.conditioning.image = None  # a missing image fails that item at run time, not the whole batch
            try:
                if validate_fn is not None:
                    validate_fn(cfg)
                else:
                    resolve(cfg, families[key])  # every check generate makes before loading; cfg is left as it is
            finally:
                cfg.conditioning.image = image
        except (ConfigError, ValueError) as e:
            problems.append((it.line, str(e).splitlines()[0]))
            continue
        if cfg.checkpoint not in ckpt_ids:
            ckpt_ids[cfg.checkpoint] = checkpoint_id(cfg)
        img_sha = None
        if cfg.conditioning.image and Path(cfg.conditioning.image).is_file():
            img_sha = file_sha256(cfg.conditioning.image, cache=False)
        digest = item_hash(it.prompt, seed, settings_of(cfg, ckpt_ids[cfg.checkpoint]), img_sha)
        name = output_name(it.index, it.name or it.prompt, digest, suffix)
        out = out_dir / name
        cfg.output.path = str(out)
        planned.append(PlannedItem(it, cfg, seed, source, digest, name, out))
    if problems:
        raise PromptFileError(prompt_file, problems)
    return planned


def is_complete(p: PlannedItem) -> bool:
    """The video exists and its sidecar says the run completed (written after the video's atomic rename)."""
    if not p.output.exists() or not p.sidecar.is_file():
        return False
    try:
        return bool(json.loads(p.sidecar.read_text(encoding="utf-8")).get("complete"))
    except (OSError, json.JSONDecodeError):
        return False


# ------------------------------------------------------------------------------------------------
# Running


@dataclass
class BatchSummary:
    shard: Shard
    total: int = 0  # items of this shard
    done: int = 0
    skipped: int = 0
    failed: int = 0
    busy: int = 0  # locked by another process right now
    interrupted: bool = False
    frames: int = 0
    gen_seconds: float = 0.0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def s_per_frame(self) -> float | None:
        return self.gen_seconds / self.frames if self.frames else None

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed else 0


def _error_text(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}".rstrip(": ")


def run_batch(planned: list[PlannedItem], out_dir: str | Path, shard: Shard, model: Any, *, fail_fast: bool = False,
              overwrite: bool = False, log: Callable[[str], None] = print,
              progress: Callable[[str, int, int], None] | None = None,
              on_item: Callable[[str, PlannedItem, dict[str, Any] | None], None] | None = None,
              generate_fn: Callable[..., Any] | None = None, load: Callable[[], Any] | None = None,
              report: bool = False) -> BatchSummary:
    """Generate this shard's items (``planned`` must already be this shard's) and keep the manifest current.

    ``on_item(event, item, record)``: event is ``start`` | ``skip`` | ``end`` (for progress bars).
    ``load(loras)``: builds the model when ``model`` is None, on the first item that needs it (a re-run that only
    skips never loads weights), and again when an item's LoRAs differ from those of the loaded model.
    ``report``: write each finished item's drift report beside it (``NAME.report.json`` and ``.png``), also for
    a complete item skipped without one.
    """
    from ..backends.lora import applied_loras, lora_key
    from ..fifo.state import StateMismatch, state_path
    from ..run.pipeline import generate

    generate_fn = generate_fn or generate
    manifest = Manifest(out_dir, shard)
    summary = BatchSummary(shard, total=len(planned))
    t_batch = time.perf_counter()
    host, pid = socket.gethostname(), os.getpid()
    with manifest.shard_lock():
        prior = manifest.records()
        try:
            for p in planned:
                base = {"name": p.name, "index": p.item.index, "line": p.item.line, "prompt": p.item.prompt,
                        "seed": p.seed, "seed_source": p.seed_source, "hash": p.digest, "output": str(p.output),
                        "sidecar": str(p.sidecar), "host": host, "pid": pid}
                if not overwrite and is_complete(p):
                    summary.skipped += 1
                    if report:
                        item_report(p, log, only_missing=True)
                    if prior.get(p.name, {}).get("status") != "done":  # finished but killed before recording
                        manifest.append({**base, "status": "done", "recovered": True, "error": None})
                    if on_item:
                        on_item("skip", p, None)
                    continue
                with manifest.item_lock(p.name) as mine:
                    if mine and not overwrite and is_complete(p):  # finished by another process meanwhile
                        summary.skipped += 1
                        if on_item:
                            on_item("skip", p, None)
                        continue
                    if not mine:
                        summary.busy += 1
                        log(f"{p.name}: being generated by another process; left to it")
                        if on_item:
                            on_item("skip", p, None)
                        continue
                    if load is not None and (model is None or applied_loras(model) != lora_key(p.cfg.loras)):
                        if model is not None:
                            log(f"{p.name}: other LoRAs than the previous item's; loading the model again")
                            model = None  # the old copy goes before the new one loads
                        model = load(p.cfg.loras)
                    rec = _run_item(p, base, manifest, generate_fn, model, overwrite, progress, log, on_item,
                                    state_path, StateMismatch, report)
                status = rec["status"]
                if status == "done":
                    summary.done += 1
                    summary.frames += rec.get("frames", 0)
                    summary.gen_seconds += rec.get("seconds", 0.0)
                elif status == "interrupted":
                    summary.interrupted = True
                    break
                else:
                    summary.failed += 1
                    summary.failures.append((p.name, rec.get("error") or ""))
                    if fail_fast:
                        log(f"--fail-fast: stopping after the failure of {p.name}")
                        break
        finally:
            manifest.rewrite_view()
    summary.seconds = time.perf_counter() - t_batch
    return summary


def _run_item(p: PlannedItem, base: dict[str, Any], manifest: Manifest, generate_fn: Callable[..., Any], model: Any,
              overwrite: bool, progress: Any, log: Callable[[str], None], on_item: Any, state_path: Any,
              state_mismatch: type[Exception], report: bool = False) -> dict[str, Any]:
    started = now_iso()
    manifest.append({**base, "status": "running", "started": started, "error": None})
    manifest.rewrite_view()
    if on_item:
        on_item("start", p, None)
    cfg = copy.deepcopy(p.cfg)
    has_state = state_path(p.output).exists()
    cfg.output.resume = has_state and not overwrite
    cfg.output.overwrite = True  # the name is ours (it carries the settings hash); leftovers are incomplete
    t0 = time.perf_counter()
    rec: dict[str, Any] = {**base, "started": started}
    try:
        try:
            result = generate_fn(cfg, model=model, progress=progress, log=log)
        except (state_mismatch, ConfigError) as e:
            if not cfg.output.resume:
                raise
            log(f"{p.name}: cannot resume ({e}); starting over")
            cfg = copy.deepcopy(p.cfg)
            cfg.output.overwrite = True
            result = generate_fn(cfg, model=model, progress=progress, log=log)
        rec.update(status="interrupted" if result.partial else "done", frames=result.frames,
                   output=str(result.output), sidecar=str(result.sidecar), error=None,
                   timings={k: round(v, 3) for k, v in result.timings.items()}, resumed=cfg.output.resume)
    except KeyboardInterrupt:
        rec.update(status="interrupted", error="KeyboardInterrupt")
        manifest.append({**rec, "finished": now_iso(), "seconds": round(time.perf_counter() - t0, 3)})
        raise
    except Exception as e:  # noqa: BLE001 - recorded, and the batch goes on
        rec.update(status="failed", error=_error_text(e))
        _free_cuda_memory(e)
        log(f"[red]failed[/]: {p.name}: {rec['error']}")
    rec.update(finished=now_iso(), seconds=round(time.perf_counter() - t0, 3))
    if rec.get("frames"):
        rec["s_per_frame"] = round(rec["seconds"] / rec["frames"], 4)
    if report and rec["status"] == "done":
        rec["report"] = item_report(p, log)
    manifest.append(rec)
    manifest.rewrite_view()
    if on_item:
        on_item("end", p, rec)
    return rec


def item_report(p: PlannedItem, log: Callable[[str], None], only_missing: bool = False) -> str | None:
    """``--report``: the item's drift report beside its video; a video it cannot measure (one frame) is
    logged, not failed. Returns the JSON's path."""
    from ..report import VideoError, report_paths, write_report
    from ..report.table import drift_line

    if only_missing and all(f.exists() for f in report_paths(p.output)):
        return str(report_paths(p.output)[0])
    try:
        js, png, rep = write_report(p.output, label=p.name)
    except (VideoError, OSError) as e:
        log(f"{p.name}: no drift report: {e}")
        return None
    log(f"{p.name}: {drift_line(rep)} -> {js.name}, {png.name}")
    return str(js)


def _free_cuda_memory(e: BaseException) -> None:
    """After an out-of-memory item, give the cached blocks back so the next item starts clean."""
    import torch

    from ..run.fifo_run import OutOfMemory

    oom = (OutOfMemory, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))
    if isinstance(e, oom) and torch.cuda.is_available():
        torch.cuda.empty_cache()

"""Which items this process does: a shard K of N, from ``--shard`` or the launcher's environment
(SLURM job arrays, the tasks of a SLURM step, torchrun ranks). Item ``i`` belongs to shard ``i mod N``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int
    source: str = "single"

    def owns(self, item_index: int) -> bool:
        return item_index % self.count == self.index

    @property
    def label(self) -> str:
        return f"{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(spec: str) -> Shard:
    """``K/N`` with 0 <= K < N (0-based, like SLURM_ARRAY_TASK_ID with --array=0-(N-1))."""
    try:
        k_s, n_s = spec.split("/")
        k, n = int(k_s), int(n_s)
    except ValueError:
        raise ConfigError(f"--shard must be K/N (e.g. 0/4), got {spec!r}") from None
    if n < 1 or not 0 <= k < n:
        raise ConfigError(f"--shard {spec}: need N >= 1 and 0 <= K < N (shards are numbered 0..N-1)")
    return Shard(k, n, "--shard")


def _env_int(env: Mapping[str, str], key: str) -> int | None:
    v = env.get(key, "").strip()
    try:
        return int(v) if v else None
    except ValueError:
        raise ConfigError(f"environment variable {key}={v!r} is not an integer") from None


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard:
    """The shard of this process from its launcher's environment.

    A SLURM job array ``--array=A-B[:S]`` (task ``(SLURM_ARRAY_TASK_ID - A) / S`` of ``SLURM_ARRAY_TASK_COUNT``) and
    the tasks of an ``srun`` step (``SLURM_PROCID`` of ``SLURM_STEP_NUM_TASKS``; only inside a step, i.e. when
    ``SLURM_STEP_ID`` is set: a batch script sees ``SLURM_NTASKS`` of the whole job but is one process) or
    torchrun's ``RANK``/``WORLD_SIZE`` combine: task t of array element a is shard a * tasks + t.
    Nothing set: one shard.
    """
    env = os.environ if env is None else env
    parts = [p for p in (_array_part(env), _task_part(env)) if p is not None]
    k, n = 0, 1
    for i, m, what in parts:
        if not 0 <= i < m:
            raise ConfigError(f"{what}: task {i} is outside 0..{m - 1}; check the job's environment")
        k, n = k * m + i, n * m
    return Shard(k, n, " + ".join(p[2] for p in parts) or "single")


def _array_part(env: Mapping[str, str]) -> tuple[int, int, str] | None:
    """(index, count) of this task in a SLURM job array whose ids form a range ``A-B`` or ``A-B:S``."""
    a_id = _env_int(env, "SLURM_ARRAY_TASK_ID")
    if a_id is None:
        return None
    count = _env_int(env, "SLURM_ARRAY_TASK_COUNT") or 1
    lo = _env_int(env, "SLURM_ARRAY_TASK_MIN") or 0
    step = _env_int(env, "SLURM_ARRAY_TASK_STEP") or 1
    hi = _env_int(env, "SLURM_ARRAY_TASK_MAX")
    hi = lo + step * (count - 1) if hi is None else hi
    if count == 1:
        raise ConfigError(
            f"SLURM array task {a_id} is the only task of its array, so the number of shards is unknown. To redo "
            f"task {a_id} of an N-task array (--array=0-(N-1)), add --shard {a_id}/N to the fifo-gen options; "
            "to do every item in one job, submit without --array")
    if (a_id - lo) % step or lo + step * (count - 1) != hi:
        raise ConfigError(
            f"SLURM array task {a_id}: the array's {count} ids ({lo}..{hi}) are not a range A-B or A-B:S, so "
            f"this task's shard is ambiguous; submit --array=0-{count - 1}, or pass --shard K/N")
    return (a_id - lo) // step, count, "SLURM array"


def _task_part(env: Mapping[str, str]) -> tuple[int, int, str] | None:
    """(rank, count) among the processes of one ``srun`` step, or of one torchrun launch."""
    if env.get("SLURM_STEP_ID", "").strip():
        p_id = _env_int(env, "SLURM_PROCID")
        p_n = _env_int(env, "SLURM_STEP_NUM_TASKS") or _env_int(env, "SLURM_NTASKS")
        if p_id is not None and p_n and p_n > 1:
            return p_id, p_n, "SLURM tasks"
    r_id, r_n = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
    if r_id is not None and r_n and r_n > 1:
        return r_id, r_n, "torchrun"
    return None


def resolve_shard(spec: str | None, env: Mapping[str, str] | None = None) -> Shard:
    return parse_shard(spec) if spec else shard_from_env(env)


def shard_items(items: list[Any], shard: Shard) -> list[Any]:
    """Items of this shard: round robin on the item index (balanced, and stable when the file only grows)."""
    return [it for it in items if shard.owns(it.index)]

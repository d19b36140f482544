"""Resumable FIFO state: the queue, the noise generator, what has been emitted, and a config hash.

The state file is written atomically (temp file + rename). Emitted latents stream to an append-only
log on disk (constant memory), so a resumed run can rebuild its video bit for bit by re-decoding
them, then carry on from the queue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import StateMismatch
from ..io.atomic import temp_path
from .queue import FrameQueue


@dataclass
class FifoState:
    queue: FrameQueue
    rng_state: torch.Tensor
    iteration: int
    emitted: int  # latents written to the LatentLog so far
    config_hash: str
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. the current image tokens
    seed: int | None = None  # the run's seed, so a resume without --seed (a requeued job) finds it


def state_path(output: str | Path) -> Path:
    p = Path(output)
    return p.parent / f"{p.name}.state.pt"


def save_state(path: str | Path, state: FifoState) -> Path:
    path = Path(path)
    payload = {
        "queue": {k: v.cpu() for k, v in state.queue.state_dict().items()},
        "rng_state": state.rng_state,
        "iteration": state.iteration,
        "emitted": state.emitted,
        "config_hash": state.config_hash,
        "extras": {k: v.cpu() for k, v in state.extras.items()},
        "seed": state.seed,
        "format": 1,
    }
    tmp = temp_path(path)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def saved_seed(path: str | Path) -> int | None:
    """The seed recorded in a state file (None for files written before it was recorded)."""
    seed = torch.load(path, map_location="cpu", weights_only=True).get("seed")
    return None if seed is None else int(seed)


def load_state(path: str | Path, config_hash: str, device: torch.device) -> FifoState:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--resume: no saved state at {path}; run without --resume to start fresh")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("config_hash") != config_hash:
        raise StateMismatch(
            f"--resume: {path} was saved by a run with different settings (config hash "
            f"{payload.get('config_hash')} vs {config_hash}): prompt, seed, model, sampling, FIFO or technique "
            "options differ. Use the original options, or delete the state file to start over."
        )
    q = FrameQueue.from_state_dict(payload["queue"])
    q.latents = q.latents.to(device)
    extras = {k: v.to(device) for k, v in payload.get("extras", {}).items()}
    return FifoState(q, payload["rng_state"], int(payload["iteration"]), int(payload["emitted"]), config_hash, extras,
                     payload.get("seed"))


class LatentLog:
    """Append-only float32 file of equally shaped latents (one record per output frame)."""

    def __init__(self, path: str | Path, shape: tuple[int, ...]):
        self.path = Path(path)
        self.shape = tuple(shape)
        self.record = int(torch.Size(self.shape).numel()) * 4
        self._f = None

    def open(self, keep: int = 0) -> LatentLog:
        """Open for appending, keeping only the first ``keep`` records (drops any unsaved tail)."""
        mode = "r+b" if (keep and self.path.exists()) else "wb"
        self._f = open(self.path, mode)
        self._f.truncate(keep * self.record)
        self._f.seek(keep * self.record)
        return self

    def append(self, z: torch.Tensor) -> None:
        self._f.write(z.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        self._f.flush()

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Records [start, stop) stacked on dim 0."""
        with open(self.path, "rb") as f:
            f.seek(start * self.record)
            buf = bytearray(f.read((stop - start) * self.record))
        return torch.frombuffer(buf, dtype=torch.float32).reshape(stop - start, *self.shape)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

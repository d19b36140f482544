"""The FIFO queue: latents at increasing noise levels, plus the per-slot bookkeeping that moves with them.

Slot 0 is the least noisy (next out), slot Q-1 the noisiest. Each slot carries its latent, its DDIM
schedule index and a permanent frame id; ``pop_push`` shifts all three together, so per-frame state
keyed by frame id (technique caches, per-frame prompts) follows its frame for free.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Window:
    """Slots ``[start, start + length)`` go through the U-Net; only ``[commit_start, commit_end)`` are kept."""

    start: int
    length: int
    commit_start: int
    commit_end: int

    @property
    def stop(self) -> int:
        return self.start + self.length


@dataclass(frozen=True)
class FifoPlan:
    """Geometry of diagonal denoising: window ``f`` frames, ``n`` partitions, S = f*n DDIM steps.

    With lookahead the queue has f/2 extra context slots in front, windows stride by f/2 and only
    the back half of each window is committed (the reference's lookahead denoising).
    """

    f: int
    n: int
    lookahead: bool = True

    def __post_init__(self) -> None:
        if self.f < 1:
            raise ValueError(f"window length f must be >= 1, got {self.f}")
        if self.n < 1:
            raise ValueError(f"partitions must be >= 1, got {self.n}")
        if self.lookahead and self.f % 2:
            raise ValueError(f"lookahead needs an even window length f, got {self.f}; use --no-lookahead")

    @property
    def steps(self) -> int:
        return self.f * self.n

    @property
    def num_lookahead(self) -> int:
        return self.f // 2 if self.lookahead else 0

    @property
    def length(self) -> int:
        return self.steps + self.num_lookahead

    @property
    def head(self) -> int:
        """Slot dequeued after each iteration (the first non-lookahead slot)."""
        return self.num_lookahead

    def slot_indices(self) -> torch.Tensor:
        """Schedule index of every slot: lookahead slots sit at index 0, main slot i at index i."""
        return torch.cat([torch.zeros(self.num_lookahead, dtype=torch.long), torch.arange(self.steps)])

    def windows(self) -> list[Window]:
        """Windows in the reference's processing order (noisiest first)."""
        if self.lookahead:
            half = self.f // 2
            return [Window(r * half, self.f, r * half + half, r * half + self.f)
                    for r in reversed(range(2 * self.n))]
        return [Window(r * self.f, self.f, r * self.f, r * self.f + self.f) for r in reversed(range(self.n))]

    def windows_independent(self) -> bool:
        """True when no window reads a slot an earlier window commits, so all can run in one batch."""
        written: set[int] = set()
        for w in self.windows():
            if written & set(range(w.start, w.stop)):
                return False
            written |= set(range(w.commit_start, w.commit_end))
        return True


@dataclass
class FrameQueue:
    latents: torch.Tensor  # (B, C, Q, h, w)
    step_idx: torch.Tensor  # (Q,) long, schedule index per slot
    frame_ids: torch.Tensor  # (Q,) long, permanent id of the frame in each slot
    next_id: int

    @classmethod
    def create(cls, latents: torch.Tensor, plan: FifoPlan) -> FrameQueue:
        q = latents.shape[2]
        if q != plan.length:
            raise ValueError(f"queue has {q} slots, plan needs {plan.length}")
        return cls(latents, plan.slot_indices(), torch.arange(q, dtype=torch.long), q)

    def gather(self, windows: list[Window]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stack windows into a batch: latents (W*B, C, f, h, w), step_idx and frame_ids (W*B, f)."""
        b = self.latents.shape[0]
        x = torch.cat([self.latents[:, :, w.start : w.stop] for w in windows], dim=0)
        idx = torch.stack([self.step_idx[w.start : w.stop] for w in windows]).repeat_interleave(b, dim=0)
        ids = torch.stack([self.frame_ids[w.start : w.stop] for w in windows]).repeat_interleave(b, dim=0)
        return x, idx, ids

    def scatter(self, windows: list[Window], x: torch.Tensor) -> None:
        """Write back each window's committed slots from a batch laid out like ``gather``."""
        b = self.latents.shape[0]
        for k, w in enumerate(windows):
            lo, hi = w.commit_start - w.start, w.commit_end - w.start
            self.latents[:, :, w.commit_start : w.commit_end] = x[k * b : (k + 1) * b, :, lo:hi]

    def pop_push(self, head: int, tail_noise: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Return (latent at slot ``head``, its frame id), shift everything one slot forward, enqueue noise.

        Schedule indices stay with the slots (each slot has a fixed noise level); latents and frame
        ids move one slot toward the front.
        """
        out = self.latents[:, :, head : head + 1].clone()
        out_id = int(self.frame_ids[head])
        self.latents = torch.cat([self.latents[:, :, 1:], tail_noise], dim=2)
        self.frame_ids = torch.cat([self.frame_ids[1:], torch.tensor([self.next_id])])
        self.next_id += 1
        return out, out_id

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"latents": self.latents, "step_idx": self.step_idx, "frame_ids": self.frame_ids,
                "next_id": torch.tensor(self.next_id)}

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> FrameQueue:
        return cls(sd["latents"], sd["step_idx"], sd["frame_ids"], int(sd["next_id"]))

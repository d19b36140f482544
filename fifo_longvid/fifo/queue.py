"""The FIFO queue: latents at increasing noise levels, plus the per-slot bookkeeping that moves with them.

Slot 0 is the least noisy (next out), slot Q-1 the noisiest. Each slot carries its latent, its DDIM
schedule index and a permanent frame id; ``pop_push`` shifts all three together, so per-frame state
keyed by frame id (technique caches, per-frame prompts) follows its frame for free.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    """Geometry of diagonal denoising: window ``f`` frames, ``n`` partitions, blocks of ``block`` frames.

    The queue's main part holds f*n frames; ``block`` consecutive frames share one noise level, so there are
    S = f*n / block levels (DDIM steps or flow sigmas), and each iteration moves every block one level down and
    emits one clean block. ``block = 1`` is FIFO-Diffusion (one level per frame); ``block = f`` without lookahead
    makes every window one level, i.e. a native clip, pipelined (the rolling schedule of Rolling Forcing).

    With lookahead the queue has f/2 extra context slots in front, windows stride by f/2 and only
    the back half of each window is committed (the reference's lookahead denoising).
    """

    f: int
    n: int
    lookahead: bool = True
    block: int = 1
    stagger: bool = False  # blocks' frames at their own levels of a K-times finer grid (see ``levels``)

    def __post_init__(self) -> None:
        if self.f < 1:
            raise ValueError(f"window length f must be >= 1, got {self.f}")
        if self.n < 1:
            raise ValueError(f"partitions must be >= 1, got {self.n}")
        if self.lookahead and self.f % 2:
            raise ValueError(f"lookahead needs an even window length f, got {self.f}; use --no-lookahead")
        span = self.f // 2 if self.lookahead else self.f
        if self.block < 1 or span % self.block:
            raise ValueError(f"block {self.block} must divide {'half the window' if self.lookahead else 'the window'}"
                             f" ({span} frames), so that no block straddles a committed half")

    @property
    def frames(self) -> int:
        """Frames in the main part of the queue (f * n): each passes through every level."""
        return self.f * self.n

    @property
    def steps(self) -> int:
        """Noise levels S = f * n / block: the schedule's step count."""
        return self.frames // self.block

    @property
    def levels(self) -> int:
        """Points of the schedule the queue spans: S, or f * n when staggered (each frame keeps its own level of
        the finer grid and steps ``block`` levels per iteration, so adjacent frames always differ by the same
        amount and no two share a level: blocks without seams, at the price of K sub-grids of S steps)."""
        return self.frames if self.stagger else self.steps

    @property
    def stride(self) -> int:
        """Levels a frame steps down per iteration."""
        return self.block if self.stagger else 1

    @property
    def num_lookahead(self) -> int:
        return self.f // 2 if self.lookahead else 0

    @property
    def length(self) -> int:
        return self.frames + self.num_lookahead

    @property
    def head(self) -> int:
        """First slot dequeued after each iteration (the first non-lookahead slot); a block leaves from here."""
        return self.num_lookahead

    def slot_indices(self) -> torch.Tensor:
        """Schedule index of every slot: lookahead slots sit at index 0, main slot i at index i // block (i when
        staggered)."""
        main = torch.arange(self.frames) // (1 if self.stagger else self.block)
        return torch.cat([torch.zeros(self.num_lookahead, dtype=torch.long), main])

    def windows(self) -> list[Window]:
        """Windows in the reference's processing order (noisiest first)."""
        if self.lookahead:
            half = self.f // 2
            return [Window(r * half, self.f, r * half + half, r * half + self.f)
                    for r in reversed(range(2 * self.n))]
        return [Window(r * self.f, self.f, r * self.f, r * self.f + self.f) for r in reversed(range(self.n))]

    def straddling(self, high: Sequence[bool]) -> list[int]:
        """Positions in ``windows()`` of the windows whose frames lie on both sides of an expert boundary: ``high[i]``
        says whether schedule index i belongs to the high-noise expert. Such a window runs through both experts
        (each frame keeps its own expert's result), so it costs two window calls."""
        idx = self.slot_indices().tolist()
        return [k for k, w in enumerate(self.windows()) if len({bool(high[i]) for i in idx[w.start : w.stop]}) == 2]

    def windows_independent(self) -> bool:
        """True when no window reads a slot an earlier window commits, so all can run in one batch."""
        written: set[int] = set()
        for w in self.windows():
            if written & set(range(w.start, w.stop)):
                return False
            written |= set(range(w.commit_start, w.commit_end))
        return True


class FrameQueue:
    """The queue's latents in a preallocated ring buffer, float32.

    Logical slot s lives at physical index ``(offset + s) % Q``; ``pop_push`` writes the tail noise into
    the slot it frees and advances ``offset``, so an iteration moves no latents and allocates nothing.
    Frame ids are consecutive by construction (each dequeue enqueues ``next_id``), so the id of slot s is
    ``next_id - Q + s``: derived, never stored, and the same on every device. Schedule indices belong to
    the slots, not the frames, and never move.
    """

    def __init__(self, latents: torch.Tensor, step_idx: torch.Tensor, next_id: int, offset: int = 0):
        self.buffer = latents
        self.step_idx = step_idx
        self.next_id = int(next_id)
        self.offset = int(offset) % latents.shape[2]

    @classmethod
    def create(cls, latents: torch.Tensor, plan: FifoPlan) -> FrameQueue:
        q = latents.shape[2]
        if q != plan.length:
            raise ValueError(f"queue has {q} slots, plan needs {plan.length}")
        return cls(latents.contiguous(), plan.slot_indices(), q)

    @property
    def length(self) -> int:
        return int(self.buffer.shape[2])

    @property
    def first_id(self) -> int:
        """Frame id in slot 0."""
        return self.next_id - self.length

    @property
    def latents(self) -> torch.Tensor:
        """The latents in slot order (a copy when the ring has wrapped; for init, seeding, tests, state)."""
        if self.offset == 0:
            return self.buffer
        return torch.roll(self.buffer, -self.offset, dims=2)

    @latents.setter
    def latents(self, value: torch.Tensor) -> None:
        self.buffer, self.offset = value.contiguous(), 0

    @property
    def frame_ids(self) -> torch.Tensor:
        return torch.arange(self.length, dtype=torch.long) + self.first_id

    def physical(self, slots: torch.Tensor) -> torch.Tensor:
        """Physical buffer indices of logical ``slots`` (a long tensor on the buffer's device)."""
        return (slots + self.offset) % self.length

    def gather_slots(self, slots: torch.Tensor, windows: int) -> torch.Tensor:
        """(W*B, C, f, h, w): ``slots`` (W*f logical indices, window-major) stacked as a batch of windows."""
        b, c, _, h, w = self.buffer.shape
        x = self.buffer.index_select(2, self.physical(slots))  # (B, C, W*f, h, w)
        return x.view(b, c, windows, -1, h, w).permute(2, 0, 1, 3, 4, 5).reshape(windows * b, c, -1, h, w)

    def scatter_slots(self, slots: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``values`` (B, C, len(slots), h, w) into the logical ``slots``."""
        self.buffer.index_copy_(2, self.physical(slots), values)

    def gather(self, windows: list[Window]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stack windows into a batch: latents (W*B, C, f, h, w), step_idx and frame_ids (W*B, f)."""
        b = self.buffer.shape[0]
        slots = torch.cat([torch.arange(w.start, w.stop) for w in windows]).to(self.buffer.device)
        x = self.gather_slots(slots, len(windows))
        idx = torch.stack([self.step_idx[w.start : w.stop] for w in windows]).repeat_interleave(b, dim=0)
        ids = torch.stack([self.frame_ids[w.start : w.stop] for w in windows]).repeat_interleave(b, dim=0)
        return x, idx, ids

    def scatter(self, windows: list[Window], x: torch.Tensor) -> None:
        """Write back each window's committed slots from a batch laid out like ``gather``."""
        b = self.buffer.shape[0]
        for k, w in enumerate(windows):
            lo, hi = w.commit_start - w.start, w.commit_end - w.start
            slots = torch.arange(w.commit_start, w.commit_end, device=self.buffer.device)
            self.scatter_slots(slots, x[k * b : (k + 1) * b, :, lo:hi].to(self.buffer.dtype))

    def pop_push(self, head: int, tail_noise: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Return (latent at slot ``head``, its frame id), shift everything one slot forward, enqueue noise.

        Schedule indices stay with the slots (each slot has a fixed noise level); latents and frame
        ids move one slot toward the front. Slot 0's buffer entry is reused for the tail.
        """
        q = self.length
        out = self.buffer[:, :, (self.offset + head) % q].unsqueeze(2).clone()
        out_id = self.first_id + head
        self.buffer[:, :, self.offset] = tail_noise[:, :, 0].to(self.buffer.dtype)
        self.offset = (self.offset + 1) % q
        self.next_id += 1
        return out, out_id

    def pop_push_block(self, head: int, tails: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``pop_push`` once per frame of ``tails`` (B, C, K, h, w): returns the K dequeued latents (B, C, K, h, w)
        in order and the first one's id. The new frames enter the back in order (a block at the noisiest level)."""
        if tails.shape[2] == 1:
            return self.pop_push(head, tails)
        outs, first = [], self.first_id + head
        for j in range(tails.shape[2]):
            out, _ = self.pop_push(head, tails[:, :, j : j + 1])
            outs.append(out)
        return torch.cat(outs, dim=2), first

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"latents": self.latents, "step_idx": self.step_idx, "frame_ids": self.frame_ids,
                "next_id": torch.tensor(self.next_id)}

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> FrameQueue:
        next_id = int(sd["next_id"])
        latents = sd["latents"]
        ids = sd.get("frame_ids")
        if ids is not None and not torch.equal(ids.cpu(), torch.arange(latents.shape[2]) + next_id - latents.shape[2]):
            raise ValueError("saved queue has non-consecutive frame ids; the state file is corrupt")
        return cls(latents.float().contiguous(), sd["step_idx"], next_id)

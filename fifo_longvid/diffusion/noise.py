"""One injectable source of randomness for a whole run.

Every random draw (initial noise, per-step DDIM noise when eta > 0, FIFO tail noise) goes through
a ``NoiseSource``. It draws float32 on a seeded CPU ``torch.Generator`` and moves the result to the
target device, so a seed gives the same video on any device and in any model dtype; its state can be
saved and restored for bit-exact resume. On CUDA the draw lands in pinned memory and is copied with
``non_blocking=True``: the caching host allocator keeps each pinned block alive until its copy has
finished, so the CPU never waits for the GPU here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..devices import resolve_device


class NoiseSource:
    """Seeded float32 noise. The queue and the DDIM arithmetic stay float32 whatever the model dtype."""

    def __init__(self, seed: int, device: torch.device | str = "cpu"):
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._pin = self.device.type == "cuda"

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        z = torch.randn(tuple(shape), generator=self.generator, dtype=torch.float32, pin_memory=self._pin)
        return z.to(self.device, non_blocking=True) if self.device.type != "cpu" else z

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


class ReplayNoise(NoiseSource):
    """Serves pre-recorded tensors in order (tests replaying the reference's noise draws)."""

    def __init__(self, tensors: Sequence[torch.Tensor], device: torch.device | str = "cpu"):
        super().__init__(0, device)
        self._queue = list(tensors)

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        if not self._queue:
            raise RuntimeError("ReplayNoise ran out of recorded tensors")
        t = self._queue.pop(0)
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"recorded noise has shape {tuple(t.shape)}, asked for {tuple(shape)}")
        return t.to(self.device, torch.float32)

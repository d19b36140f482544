"""What enters the queue at the tail each FIFO iteration (``--tail``).

FIFO enqueues a latent at the noisiest schedule index every iteration. Three ways to make it:

- ``noise`` (FIFO-Diffusion, the default): fresh white noise, exactly ``noise.randn(shape)``.
- ``coherent`` (Ouroboros-Diffusion, arXiv 2501.09019, "coherent tail latent sampling"): the low
  frequencies come from the queue's last latent forward-diffused to the tail's noise level, the high
  frequencies from fresh noise, mixed in the 3-D Fourier domain under a Gaussian low-pass.
- ``rescheduled`` (FreeNoise, arXiv 2310.15169, "noise rescheduling"): the first W tails are fresh
  noise; after that every block of S tails is a shuffled copy of the S noise frames enqueued W
  frames earlier, so the noise repeats (locally shuffled) with period W.

This lives in ``fifo/`` rather than ``techniques/``: it decides the sampler's input, reads only the
queue and the schedule, and never touches the U-Net. Every draw goes through the run's
``NoiseSource`` (one seed, one video), the per-iteration path has no host synchronisation, the
arithmetic is float32, and any history is part of the resumable state (``state_dict``). A sampler is
the ``tail`` hook of ``FifoStepper.step``: ``sampler(queue, noise) -> (B, C, 1, h, w)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch

from ..diffusion.noise import NoiseSource
from ..diffusion.schedule_protocol import Schedule
from .queue import FrameQueue

TAIL_MODES = ("noise", "coherent", "rescheduled")
MIX_MODES = ("preserve", "linear")


@dataclass
class TailConfig:
    mode: str = "noise"  # noise | coherent | rescheduled
    cutoff_s: float = 0.25  # coherent: Gaussian low-pass width d_s over normalised spatial frequency
    cutoff_t: float = 1.0  # coherent: width d_t over normalised temporal frequency
    mix: str = "preserve"  # coherent: preserve (unit variance per frequency) | linear (the demo code's 1 - LPF)
    window: int | None = None  # rescheduled: noise period W (default: the FIFO window f)
    stride: int = 4  # rescheduled: frames per shuffled block S (FreeNoise's window_stride)


def check_tail_config(cfg: TailConfig) -> None:
    """Raise ``ValueError`` with what to use instead."""
    if cfg.mode not in TAIL_MODES:
        raise ValueError(f"--tail must be one of {', '.join(TAIL_MODES)}, got {cfg.mode!r}")
    if not (cfg.cutoff_s > 0 and cfg.cutoff_t > 0) or not all(map(math.isfinite, (cfg.cutoff_s, cfg.cutoff_t))):
        raise ValueError(f"--tail-cutoff needs D_S > 0 and D_T > 0, got {cfg.cutoff_s}:{cfg.cutoff_t} "
                         "(0.25:1.0 is Ouroboros-Diffusion's setting)")
    if cfg.mix not in MIX_MODES:
        raise ValueError(f"fifo.tail.mix must be one of {', '.join(MIX_MODES)}, got {cfg.mix!r}")
    if cfg.window is not None and cfg.window < 1:
        raise ValueError(f"--tail-window W must be >= 1, got {cfg.window}")
    if cfg.stride < 1:
        raise ValueError(f"--tail-window stride S must be >= 1, got {cfg.stride}")
    if cfg.window is not None and cfg.stride > cfg.window:
        raise ValueError(f"--tail-window stride {cfg.stride} exceeds the window {cfg.window}: a block must copy "
                         "noise from before itself; use S <= W (FreeNoise: 16:4)")


def tail_hash_settings(cfg: TailConfig) -> dict[str, Any] | None:
    """The settings that change the video in ``cfg.mode`` (None for ``noise``: nothing to hash)."""
    if cfg.mode == "coherent":
        return {"mode": cfg.mode, "cutoff_s": cfg.cutoff_s, "cutoff_t": cfg.cutoff_t, "mix": cfg.mix}
    if cfg.mode == "rescheduled":
        return {"mode": cfg.mode, "window": cfg.window, "stride": cfg.stride}
    return None if cfg.mode == "noise" else asdict(cfg)


def parse_cutoff(spec: str) -> tuple[float, float | None]:
    """``"D_S"`` or ``"D_S:D_T"`` -> (d_s, d_t or None)."""
    parts = spec.split(":")
    try:
        if len(parts) > 2:
            raise ValueError
        d_s = float(parts[0])
        d_t = float(parts[1]) if len(parts) == 2 else None
    except ValueError:
        raise ValueError(f"--tail-cutoff must be D_S or D_S:D_T (e.g. 0.25 or 0.25:1.0), got {spec!r}") from None
    return d_s, d_t


def parse_window(spec: str) -> tuple[int, int | None]:
    """``"W"`` or ``"W:S"`` -> (window, stride or None)."""
    parts = spec.split(":")
    try:
        if len(parts) > 2:
            raise ValueError
        w = int(parts[0])
        s = int(parts[1]) if len(parts) == 2 else None
    except ValueError:
        raise ValueError(f"--tail-window must be W or W:S (e.g. 16 or 16:4), got {spec!r}") from None
    return w, s


# ---------------------------------------------------------------- frequency maths

def _centred_coords(n: int, device: torch.device | str) -> torch.Tensor:
    """Normalised frequency of every FFT bin, on the demo code's grid: after ``fftshift`` bin j sits at
    ``2 j / n - 1``; returned in the unshifted FFT layout. For n = 1 the only bin gets -1 (not 0):
    that is what the published filter does with a one-frame volume."""
    return torch.fft.ifftshift(2.0 * torch.arange(n, dtype=torch.float32, device=device) / n - 1.0)


def gaussian_low_pass(shape: tuple[int, int, int], d_s: float, d_t: float,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Gaussian low-pass ``exp(-tau^2 / (2 d_t^2) - (u^2 + v^2) / (2 d_s^2))`` over (frames, h, w), in the
    unshifted FFT layout. Equal to the demo code's ``exp(-((d_s/d_t)^2 tau^2 + u^2 + v^2) / (2 d_s^2))``."""
    t, h, w = shape
    tau, u, v = (_centred_coords(n, device) for n in (t, h, w))
    expo = (tau[:, None, None] / d_t) ** 2 + ((u[None, :, None] ** 2 + v[None, None, :] ** 2) / d_s**2)
    return torch.exp(-0.5 * expo)


def high_pass_weight(lpf: torch.Tensor, mix: str) -> torch.Tensor:
    """Weight of the fresh noise per frequency. ``linear`` (demo code): 1 - LPF, which loses variance
    where 0 < LPF < 1. ``preserve``: sqrt(1 - LPF^2), so two unit-variance inputs give a unit-variance output."""
    if mix == "linear":
        return 1.0 - lpf
    return (1.0 - lpf.square()).clamp_min(0.0).sqrt()


def frequency_mix(low_src: torch.Tensor, high_src: torch.Tensor, lpf: torch.Tensor, hpf: torch.Tensor) -> torch.Tensor:
    """Low band of ``low_src`` plus high band of ``high_src`` (3-D FFT over the last three axes), real part."""
    dims = (-3, -2, -1)
    spec = torch.fft.fftn(low_src, dim=dims) * lpf + torch.fft.fftn(high_src, dim=dims) * hpf
    return torch.fft.ifftn(spec, dim=dims).real


# ---------------------------------------------------------------- samplers

def last_slot(queue: FrameQueue, back: int = 0) -> torch.Tensor:
    """A view of the queue's logical slot ``length - 1 - back`` (``back = 0``: the last, noisiest one),
    (B, C, 1, h, w): no copy, no host sync."""
    p = (queue.offset + queue.length - 1 - back) % queue.length
    return queue.buffer[:, :, p : p + 1]


class TailSampler(Protocol):
    """``FifoStepper.step``'s ``tail`` hook: called once per iteration, after the denoising step, before the pops."""

    def __call__(self, queue: FrameQueue, noise: NoiseSource, block: int = 1) -> torch.Tensor:
        """The new tail block (B, C, block, h, w) float32, oldest frame first."""

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None: ...


class NoiseTail:
    """Fresh white noise: FIFO-Diffusion's tail, bit for bit."""

    def __call__(self, queue: FrameQueue, noise: NoiseSource, block: int = 1) -> torch.Tensor:
        shape = queue.buffer[:, :, :1].shape
        if block == 1:
            return noise.randn(shape)
        return torch.cat([noise.randn(shape) for _ in range(block)], dim=2)  # one frame at a time, as K = 1 draws

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        pass


class CoherentTail:
    """Ouroboros-Diffusion's coherent tail latent sampling.

    The source is the queue's last latent after this iteration's denoising step (the demo code's
    ``latents[:, :, [-1]]`` before the pop: the second-to-last latent once the queue has shifted), at the
    noise level of schedule index ``S-2``. It is forward-diffused to the tail's level in one jump,
    ``x_T = sqrt(a_T / a_src) x + sqrt(1 - a_T / a_src) eps`` (the demo code walks the DDPM betas one by
    one: the same distribution, ``prod(1 - beta) = a_T / a_src``), then mixed with fresh noise ``eta``:
    ``tail = IFFT(LPF * FFT(x_T) + HPF * FFT(eta))`` over (frames=1, h, w). Under flow matching the jump is the
    interpolant's own (``FlowSchedule.renoise``); the schedule supplies (keep, fresh) either way.
    """

    def __init__(self, schedule: Schedule, d_s: float = 0.25, d_t: float = 1.0, mix: str = "preserve"):
        self.keep, self.fresh = schedule.renoise()  # from the last slot's level after its step to the tail's
        self.d_s, self.d_t, self.mix = float(d_s), float(d_t), mix
        self._filters: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def filters(self, shape: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (shape, str(device))
        if key not in self._filters:
            lpf = gaussian_low_pass(shape, self.d_s, self.d_t, device)
            self._filters[key] = (lpf, high_pass_weight(lpf, self.mix))
        return self._filters[key]

    def __call__(self, queue: FrameQueue, noise: NoiseSource, block: int = 1) -> torch.Tensor:
        """With blocks, frame j of the new block comes from frame j of the last block (all one level)."""
        outs = [self.one(last_slot(queue, block - 1 - j).float(), noise) for j in range(block)]
        return outs[0] if block == 1 else torch.cat(outs, dim=2)

    def one(self, src: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        eps = noise.randn(src.shape).to(src.device)
        eta = noise.randn(src.shape).to(src.device)
        x_t = self.keep * src + self.fresh * eps
        lpf, hpf = self.filters(tuple(src.shape[-3:]), src.device)
        return frequency_mix(x_t, eta, lpf, hpf)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}  # everything it reads is in the queue; its draws are in the NoiseSource state

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        pass


class RescheduledTail:
    """FreeNoise's noise rescheduling, one frame at a time.

    Tail k < W is fresh noise. For k >= W, tails come in blocks of S: at the start of a block a
    permutation ``p`` of S is drawn (argsort of S normals from the NoiseSource), and tail k = noise of
    tail ``k - j - W + p[j]`` with j = (k - W) mod S. So each block is a permutation of the S tails W
    earlier, and every tail is a copy of one of the first W. A ring buffer keeps the last W + S tails
    (it is saved and restored with the resume state).
    """

    def __init__(self, window: int, stride: int):
        if stride > window:
            raise ValueError(f"rescheduling stride {stride} exceeds the window {window}")
        self.window, self.stride = int(window), int(stride)
        self.size = self.window + self.stride
        self.count = 0
        self.history: torch.Tensor | None = None  # (B, C, W+S, h, w) float32 ring, slot = k mod (W+S)
        self.perm: torch.Tensor | None = None  # (S,) long, the current block's permutation

    def __call__(self, queue: FrameQueue, noise: NoiseSource, block: int = 1) -> torch.Tensor:
        """A block of K tails is K consecutive tails of the one-frame rule."""
        if block == 1:
            return self.one(queue, noise)
        return torch.cat([self.one(queue, noise) for _ in range(block)], dim=2)

    def one(self, queue: FrameQueue, noise: NoiseSource) -> torch.Tensor:
        shape, device = queue.buffer[:, :, :1].shape, queue.buffer.device
        if self.history is None:
            self.history = torch.zeros((*shape[:2], self.size, *shape[3:]), dtype=torch.float32, device=device)
        if self.history.device != device:  # restored from a CPU state file
            self.history = self.history.to(device)
            self.perm = self.perm.to(device) if self.perm is not None else None
        k = self.count
        if k < self.window:
            z = noise.randn(shape).to(device)
        else:
            j = (k - self.window) % self.stride
            if j == 0 or self.perm is None:
                self.perm = torch.argsort(noise.randn((self.stride,)).to(device))
            src = (self.perm[j : j + 1] + (k - j - self.window)) % self.size
            z = self.history.index_select(2, src)
        self.history[:, :, k % self.size] = z[:, :, 0]
        self.count = k + 1
        return z

    def state_dict(self) -> dict[str, torch.Tensor]:
        sd = {"count": torch.tensor(self.count)}
        if self.history is not None:
            sd["history"] = self.history
        if self.perm is not None:
            sd["perm"] = self.perm
        return sd

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self.count = int(sd.get("count", 0))
        self.history = sd["history"].to(torch.float32) if "history" in sd else None
        self.perm = sd["perm"].long() if "perm" in sd else None


def make_tail_sampler(cfg: TailConfig, schedule: Schedule, fifo_window: int) -> TailSampler:
    """The sampler for ``cfg.mode``; ``fifo_window`` (f) is the default rescheduling period."""
    check_tail_config(cfg)
    if cfg.mode == "coherent":
        return CoherentTail(schedule, cfg.cutoff_s, cfg.cutoff_t, cfg.mix)
    if cfg.mode == "rescheduled":
        window = cfg.window or fifo_window
        if cfg.stride > window:
            raise ValueError(f"--tail-window stride {cfg.stride} exceeds the window {window} (default: the FIFO "
                             "window f); use S <= W")
        return RescheduledTail(window, cfg.stride)
    return NoiseTail()

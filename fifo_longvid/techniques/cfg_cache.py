"""CFG-Cache (FasterCache) under FIFO: compute each window's uncond pass every K iterations, rebuild it between.

FasterCache (Lv et al., 2024) notes that the difference between the uncond and cond outputs changes
slowly, with its low frequencies dominating early and its high frequencies late. When the uncond pass
runs, each frame stores the split difference (per channel, 2-D FFT over (h, w), circular low-pass of
radius ``min(h, w) // 5`` around DC):

    Δ_LF = LF(u) − LF(c),   Δ_HF = HF(u) − HF(c)

and in between its uncond output is rebuilt from this iteration's cond output:

    ε_u ≈ IFFT(LF(c) + w1·Δ_LF + HF(c) + w2·Δ_HF) = c + w1·ifft(Δ_LF) + w2·ifft(Δ_HF)

(the FFT is linear and the mask symmetric, so the deltas are stored back in (h, w) space as two real
tensors: the same numbers as FasterCache's complex ones, half the memory). w1 and w2 follow FasterCache's
code (diffusers ``FasterCacheDenoiserHook``): they start at 1 when the deltas are recorded and are
multiplied by α = 1.1 at every skipped step, w1 while the frame's timestep is in (99, 901) (the noisy
part), w2 while it is in (-1, 301) (the clean part). Uncond passes are skipped only while the timestep
is below 641 (diffusers' ``unconditional_batch_timestep_skip_range``).

FIFO mapping: the timestep of a frame is its schedule index's, so every weight and range is judged per
frame. Windows are fixed slot ranges, numbered w; window w computes its uncond pass when
``(iteration + w) % K == 0``, so every iteration computes about (eligible windows)/K uncond passes: the
batch stays the same size every iteration. Deltas are written only by the window that commits the frame;
a window skips its uncond pass only when every frame it commits has a delta (new frames enter at the
noisy tail, whose windows always compute it). Non-committed frames without a delta get ε_u = c: their
result is discarded anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..devices import index_tensor, to_device
from ..diffusion.schedule_protocol import Schedule
from .hooks import RowFacts
from .spec import TechniqueSpec
from .store import FrameStore

NS_LF, NS_HF, NS_W = "cfg_cache/delta_lf", "cfg_cache/delta_hf", "cfg_cache/weights"


@dataclass
class CFGCacheConfig:
    enabled: bool = False
    every: int = 3  # K: a window computes its uncond pass every K iterations
    alpha_lf: float = 1.1
    alpha_hf: float = 1.1
    lf_range: list[int] = field(default_factory=lambda: [99, 901])  # timesteps where w1 compounds
    hf_range: list[int] = field(default_factory=lambda: [-1, 301])  # timesteps where w2 compounds
    skip_range: list[int] = field(default_factory=lambda: [-1, 641])  # timesteps where uncond may be skipped


def check_config(cfg: CFGCacheConfig) -> None:
    if cfg.every < 1:
        raise ValueError(f"--cfg-cache K must be >= 1 (compute each window's uncond pass every K iterations), "
                         f"got {cfg.every}")
    for name in ("lf_range", "hf_range", "skip_range"):
        r = getattr(cfg, name)
        if len(r) != 2 or r[0] >= r[1]:
            raise ValueError(f"techniques.cfg_cache.{name} must be [low, high] timesteps with low < high, got {r}")


# -- the maths ---------------------------------------------------------------------------------------
def lowpass_mask(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(h, w) bool: frequencies within radius min(h, w)//5 of DC, in unshifted FFT layout.

    FasterCache builds the same disc on the fftshift-ed spectrum around (h//2, w//2); shifted index k
    holds frequency k - n//2, which is what ``fftfreq(n) * n`` gives for unshifted index k.
    """
    r = min(h, w) // 5
    fy = torch.fft.fftfreq(h, device=device).mul(h).round()
    fx = torch.fft.fftfreq(w, device=device).mul(w).round()
    return fy[:, None] ** 2 + fx[None, :] ** 2 <= r * r


def split_bands(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Low- and high-frequency parts of ``d`` over its last two dims, in float32; they sum to ``d``."""
    d = d.float()
    mask = lowpass_mask(d.shape[-2], d.shape[-1], d.device)
    low = torch.fft.ifft2(torch.fft.fft2(d) * mask).real
    return low, d - low


def rebuild_uncond(e_c: torch.Tensor, d_lf: torch.Tensor, d_hf: torch.Tensor, w1: torch.Tensor,
                   w2: torch.Tensor) -> torch.Tensor:
    """ε_u ≈ c + w1·Δ_LF + w2·Δ_HF (weights broadcast from the leading dims)."""
    shape = (-1,) + (1,) * (e_c.dim() - 1)
    return e_c.float() + w1.reshape(shape) * d_lf + w2.reshape(shape) * d_hf


def step_weights(timesteps: torch.Tensor, alpha: float, t_range: list[int]) -> torch.Tensor:
    """Per schedule index: the factor a skipped step multiplies the weight by (α inside the range, else 1)."""
    inside = (timesteps > t_range[0]) & (timesteps < t_range[1])
    return torch.where(inside, torch.tensor(alpha, dtype=torch.float32), torch.tensor(1.0))


def uncond_turn(iteration: int, window: int, every: int) -> bool:
    """Window ``window`` computes its uncond pass on every ``every``-th iteration, staggered by window."""
    return (iteration + window) % every == 0


class CFGCache:
    name = "cfg_cache"

    def __init__(self, cfg: CFGCacheConfig, store: FrameStore):
        check_config(cfg)
        self.cfg, self.store = cfg, store
        store.keep_on_host(NS_W)  # two floats per frame, advanced on the host (see rebuild)
        self.active = False
        self._lf_step = self._hf_step = self._may_skip = None

    def bind(self, schedule: Schedule) -> None:
        ts = schedule.timesteps.cpu()
        self._lf_step = step_weights(ts, self.cfg.alpha_lf, self.cfg.lf_range)
        self._hf_step = step_weights(ts, self.cfg.alpha_hf, self.cfg.hf_range)
        self._may_skip = (ts > self.cfg.skip_range[0]) & (ts < self.cfg.skip_range[1])

    def set_phase(self, phase: str) -> None:
        self.active = phase == "fifo"

    def remove(self) -> None:
        self.active = False

    def describe(self) -> dict[str, Any]:
        c = self.cfg
        return {"every": c.every, "alpha_lf": c.alpha_lf, "alpha_hf": c.alpha_hf, "lf_range": list(c.lf_range),
                "hf_range": list(c.hf_range), "skip_range": list(c.skip_range),
                "lowpass_radius": "min(h, w) // 5", "stagger": "(iteration + window) % every == 0"}

    # -- guidance-level hooks ------------------------------------------------------------------------
    def skip_uncond(self, facts: RowFacts) -> list[bool]:
        """Per row (window): True when its uncond pass can be rebuilt instead of computed."""
        if not self.active or self._may_skip is None:
            return [False] * facts.rows
        out = []
        for r in range(facts.rows):
            committed = facts.commit[r]
            idx = facts.step_idx[r][committed]
            ids = facts.frame_ids[r][committed].tolist()
            out.append(not uncond_turn(facts.iteration, int(facts.window[r]), self.cfg.every)
                       and bool(self._may_skip[idx].all()) and all(self.store.has(NS_LF, ids)))
        return out

    def record(self, facts: RowFacts, rows: list[int], e_c: torch.Tensor, e_u: torch.Tensor) -> None:
        """Store the split deltas of the committed frames of ``rows`` (e_c, e_u: (len(rows), C, F, h, w))."""
        if not self.active or not rows:
            return
        rr, ff, ids = _committed(facts, rows)
        if not ids:
            return
        low, high = split_bands(e_u[rr, :, ff] - e_c[rr, :, ff])
        self.store.put(NS_LF, ids, low)
        self.store.put(NS_HF, ids, high)
        self.store.put(NS_W, ids, torch.ones(len(ids), 2))

    def rebuild(self, facts: RowFacts, rows: list[int], e_c: torch.Tensor) -> torch.Tensor:
        """ε_u for ``rows`` (e_c: (len(rows), C, F, h, w), float32); weights of committed frames advance."""
        e_u = e_c.float().clone()
        pos, ff, ids, commit = [], [], [], []
        for k, r in enumerate(rows):
            for j, (i, c) in enumerate(zip(facts.frame_ids[r].tolist(), facts.commit[r].tolist(), strict=True)):
                if self.store.get(NS_LF, i) is not None:
                    pos.append(k), ff.append(j), ids.append(i), commit.append(c)
        if not ids:
            return e_u
        idx = torch.stack([facts.step_idx[rows[k], j] for k, j in zip(pos, ff, strict=True)])
        w = self.store.gather(NS_W, ids) * torch.stack([self._lf_step[idx], self._hf_step[idx]], dim=1)
        dev = e_c.device
        pk, pf = index_tensor(pos, dev), index_tensor(ff, dev)
        e_u[pk, :, pf] = rebuild_uncond(e_c[pk, :, pf], self.store.gather(NS_LF, ids), self.store.gather(NS_HF, ids),
                                        *to_device(w.t().contiguous(), dev))
        keep = [m for m, c in enumerate(commit) if c]
        if keep:
            self.store.put(NS_W, [ids[m] for m in keep], w[keep])
        return e_u


def _committed(facts: RowFacts, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Positions (row-in-``rows``, frame) and ids of the committed frames of ``rows``."""
    rr, ff, ids = [], [], []
    for k, r in enumerate(rows):
        for j in torch.nonzero(facts.commit[r]).flatten().tolist():
            rr.append(k), ff.append(j), ids.append(int(facts.frame_ids[r, j]))
    return torch.tensor(rr, dtype=torch.long), torch.tensor(ff, dtype=torch.long), ids


def apply(cfg: CFGCacheConfig, store: FrameStore) -> CFGCache:
    return CFGCache(cfg, store)


SPEC = TechniqueSpec("cfg_cache", "--cfg-cache", check_config, lambda net, cfg, store: apply(cfg, store))

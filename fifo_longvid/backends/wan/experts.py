"""Wan2.2-A14B's two experts under FIFO: each frame is denoised by the expert its own timestep selects.

diffusers' ``WanPipeline`` switches experts per *step*: ``t >= boundary_ratio x num_train_timesteps`` runs
``transformer`` (high noise), anything below runs ``transformer_2`` (low noise). A FIFO window holds frames at
many noise levels, so a window can straddle the boundary. :class:`ExpertNetwork` keeps the rule per frame:

* a window whose frames all lie on one side is one call of that expert;
* a straddling window runs through *both* experts over all of its frames (so every frame still attends over the
  whole window), and each frame takes its rows from its own expert.

Without lookahead at most one window of an iteration straddles; with lookahead at most two of 2n (the boundary
falls in the overlapping halves), so the extra work is at most one window per iteration (``plan`` counts it).
In ``--mode base`` every step has one timestep and the rule is diffusers' exactly.

Which rows need which expert is decided on the host, from the step context's host mirror (the schedule index
of every frame) and the host copy of the schedule's timesteps, so an iteration adds no host sync. A call with no
host context (a bare network call) reads the timesteps back instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...devices import to_device
from ...diffusion.context import publish, rows_for
from ..base import DeepSplit, Located
from .network import WanNetwork


class ExpertNetwork(nn.Module):
    """``(x, t, context) -> velocity`` over a high-noise and a low-noise :class:`WanNetwork`."""

    def __init__(self, high: WanNetwork, low: WanNetwork, boundary_t: float):
        super().__init__()
        if high.patch != low.patch or type(high.transformer) is not type(low.transformer):
            raise ValueError("the two experts differ in class or patch size: the folder mixes models")
        self.high, self.low = high, low
        self.boundary_t = float(boundary_t)
        self.native_block = high.native_block
        self.variant = high.variant
        self.patch = high.patch
        self._level_is_high: torch.Tensor | None = None  # (S,) bool on the host, per schedule index
        self.calls = {"high": 0, "low": 0}  # expert calls, for tests and the run's log
        self.samples = {"high": 0, "low": 0}  # samples (batch rows) each expert ran: what plan's count predicts
        self.routed_on_host = 0  # calls routed from the published host mirror (the rest read the timesteps back)

    @property
    def transformer(self) -> nn.Module:
        """The high-noise expert's transformer (its config answers the sizes; both experts share them)."""
        return self.high.transformer

    @property
    def dtype(self) -> torch.dtype:
        return self.high.dtype

    def bind_levels(self, timesteps: tuple[float, ...] | list[float]) -> None:
        """The host copy of the run's schedule timesteps (index 0 = least noisy), so rows route with no sync. The
        comparison is in float32, as on the device (``t >= boundary`` there, and in ``WanPipeline``): 0.9 x 1000 is
        900.0000000000001 as a Python float but 900 in float32."""
        self._level_is_high = torch.tensor([float(t) for t in timesteps], dtype=torch.float32) >= self.boundary_t

    def expert_mask(self, t: torch.Tensor) -> torch.Tensor:
        """(B, F) bool on the host: True where a frame belongs to the high-noise expert."""
        ctx = rows_for(t.shape[0])
        host = ctx.host if ctx is not None else None
        if host is not None and self._level_is_high is not None and tuple(host.step_idx.shape) == tuple(t.shape):
            idx = host.step_idx.clamp(0, self._level_is_high.numel() - 1)
            self.routed_on_host += 1
            return self._level_is_high[idx]
        return t.detach().float().cpu() >= self.boundary_t  # no host mirror (a bare call): read t back, a sync

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                fps: int | torch.Tensor | None = None, per_frame: bool = False) -> torch.Tensor:
        from ..base import expand_timesteps

        b, f = x.shape[0], x.shape[2]
        t = expand_timesteps(timesteps, b, f, per_frame)
        mask = self.expert_mask(t)
        rows_high = mask.any(dim=1).nonzero().flatten().tolist()  # host tensors: no device sync
        rows_low = (~mask).any(dim=1).nonzero().flatten().tolist()
        if len(rows_high) == b and not rows_low:
            return self._call("high", x, t, context, fps)
        if len(rows_low) == b and not rows_high:
            return self._call("low", x, t, context, fps)
        out_high = self._rows("high", rows_high, x, t, context, fps)
        out_low = self._rows("low", rows_low, x, t, context, fps)
        pick = to_device(mask.view(b, 1, f, 1, 1), x.device)
        return torch.where(pick, out_high, out_low)

    def _call(self, which: str, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
              fps: int | torch.Tensor | None) -> torch.Tensor:
        self.calls[which] += 1
        self.samples[which] += int(x.shape[0])
        net = self.high if which == "high" else self.low
        return net(x, t, context, fps=fps)

    def _rows(self, which: str, rows: list[int], x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
              fps: int | torch.Tensor | None) -> torch.Tensor:
        """The expert's output on ``rows`` placed in a full-batch tensor (other rows zero: never picked)."""
        full = torch.zeros_like(x)
        if not rows:
            return full
        if len(rows) == x.shape[0]:
            return self._call(which, x, t, context, fps)
        sel = to_device(torch.tensor(rows, dtype=torch.long), x.device)
        ctx = rows_for(x.shape[0])
        fps_rows = fps
        if isinstance(fps, torch.Tensor) and fps.ndim == 1 and fps.shape[0] == x.shape[0]:
            fps_rows = fps.index_select(0, sel.to(fps.device))
        with publish(ctx.select(rows) if ctx is not None else None):
            part = self._call(which, x.index_select(0, sel), t.index_select(0, sel),
                              context.index_select(0, sel), fps_rows)
        return full.index_copy(0, sel, part.to(full.dtype))

    # -- what techniques and the sidecar read -------------------------------------------------------------
    def attention_sites(self) -> Located:
        """Both experts' sites; techniques with per-frame state are refused on two experts (validation), so the
        list serves describe-only callers."""
        from dataclasses import replace

        return [(replace(site, path=f"{name}.{site.path}"), handle)
                for name, net in (("high", self.high), ("low", self.low)) for site, handle in net.attention_sites()]

    def deep_split(self) -> DeepSplit:
        return self.high.deep_split()

    def forward_diffusers(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                          fps: Any = None, per_frame: bool = False) -> torch.Tensor:
        """The reference: each frame from its own expert's diffusers forward (both run over every row)."""
        from ..base import expand_timesteps

        t = expand_timesteps(timesteps, x.shape[0], x.shape[2], per_frame)
        high = self.high.forward_diffusers(x, t, context, fps)
        low = self.low.forward_diffusers(x, t, context, fps)
        return torch.where((t.to(x.device) >= self.boundary_t).view(x.shape[0], 1, x.shape[2], 1, 1), high, low)

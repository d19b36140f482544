"""Window executors: who runs the U-Net calls of a FIFO iteration.

All windows of an iteration (x both CFG branches) form one batch of samples. An executor wraps the raw
network call ``net(x, t, context) -> eps`` of that batch:

* ``LocalExecutor``: this process, in chunks of at most ``max_batch`` samples (what ``generate`` does).
* ``DistributedExecutor`` (rank 0) + ``serve`` (ranks 1..G-1): the FIFO paper's parallel inference. Every
  rank holds the model; rank 0 owns the queue, the noise and the writer. For each call rank 0 broadcasts
  (x, t, context), every rank denoises its contiguous slice of the windows (whole windows: the
  cond/uncond pair of a window stays together), and the slices are all-gathered back to rank 0.

A sample's eps depends only on its own slice's computation, so the result is bit-identical to a single
process that runs the same chunks (``max_batch`` = samples per rank); on GPUs, other chunk sizes change
only float rounding. Launch with ``torchrun --nproc-per-node G -m fifo_longvid generate ...``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from ..diffusion.context import publish, rows_for
from ..diffusion.guidance import NetworkFn, chunked

_STOP, _RUN = 0, 1
_HEADER = 13  # cmd, B, C, F, h, w, T (t's second dim), L, D, unit, x dtype, context dtype, t dtype
# t: integer DDIM timesteps, or flow matching's float sigma x 1000 (truncating those would change the numerics)
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.long)


def split_sizes(n: int, parts: int, unit: int = 1) -> list[int]:
    """Contiguous split of ``n`` samples over ``parts`` ranks in whole units (windows); the first ranks
    take one unit more when it does not divide evenly. Sizes sum to ``n``."""
    if parts < 1 or unit < 1:
        raise ValueError(f"parts and unit must be >= 1, got {parts}, {unit}")
    if n % unit:
        unit = 1
    units = n // unit
    base, extra = divmod(units, parts)
    return [(base + (1 if r < extra else 0)) * unit for r in range(parts)]


class LocalExecutor:
    """Everything in this process (the single-GPU path)."""

    def wrap(self, net: NetworkFn, max_batch: int | None) -> NetworkFn:
        return lambda x, t, ctx: chunked(net, x, t, ctx, max_batch)

    def close(self) -> None:
        pass


def dist_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when launched by torchrun with more than one process, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def init_distributed(device: str) -> tuple[int, int, str]:
    """Join the process group (NCCL on CUDA, gloo on CPU); returns (rank, world, device for this rank)."""
    import torch.distributed as dist

    env = dist_env()
    assert env is not None
    rank, world, local = env
    use_cuda = device != "cpu" and torch.cuda.is_available() and not device.startswith("mps")
    if use_cuda:
        dev = f"cuda:{local}" if device in ("auto", "cuda") else device
        torch.cuda.set_device(torch.device(dev))
    else:
        dev = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, dev


class DistributedExecutor:
    """Rank 0's side: broadcast each network call, compute slice 0, gather every rank's slice."""

    def __init__(self, device: torch.device | str, unit: int = 2):
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = torch.device(device)
        self.unit = unit  # samples per window: cond + uncond
        self.closed = False
        if self.rank != 0:
            raise RuntimeError("DistributedExecutor runs on rank 0; other ranks call serve()")

    def wrap(self, net: NetworkFn, max_batch: int | None) -> NetworkFn:
        def run(x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
            header = torch.tensor([_RUN, *x.shape, t.shape[1], ctx.shape[1], ctx.shape[2], self.unit,
                                   _DTYPES.index(x.dtype), _DTYPES.index(ctx.dtype), _DTYPES.index(t.dtype)],
                                  dtype=torch.long)
            self._bcast(header)
            x, t, ctx = x.contiguous(), t.contiguous(), ctx.contiguous()
            for z in (x, t, ctx):
                self._bcast(z)
            return _compute_and_gather(net, x, t, ctx, max_batch, self.unit, 0, self.world, self._gather)

        return run

    def _bcast(self, z: torch.Tensor) -> None:
        buf = z.to(self._comm_device())
        self.dist.broadcast(buf, src=0)

    def _comm_device(self) -> torch.device:
        return self.device if self.dist.get_backend() == "nccl" else torch.device("cpu")

    def _gather(self, part: torch.Tensor) -> list[torch.Tensor]:
        return _all_gather(self.dist, part, self._comm_device())

    def close(self) -> None:
        """Release the workers (their ``serve`` returns). Safe to call twice, and after a worker died."""
        if self.closed:
            return
        self.closed = True
        try:
            self._bcast(torch.tensor([_STOP] + [0] * (_HEADER - 1), dtype=torch.long))
        except Exception:  # noqa: BLE001 - a dead peer must not hide rank 0's own error
            pass


def _all_gather(dist: Any, part: torch.Tensor, comm: torch.device) -> list[torch.Tensor]:
    bufs = [torch.empty_like(part, device=comm) for _ in range(dist.get_world_size())]
    dist.all_gather(bufs, part.to(comm).contiguous())
    return bufs


class RankFailed(RuntimeError):
    """Another rank could not compute its slice of a call; every rank has left the call."""


def _compute_and_gather(net: NetworkFn, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor, max_batch: int | None,
                        unit: int, rank: int, world: int,
                        gather: Callable[[torch.Tensor], list[torch.Tensor]]) -> torch.Tensor:
    """This rank's slice through the network, padded to the largest slice for all_gather; rank 0 reassembles.

    Every rank first gathers a one-number status, whether its slice failed (an OOM, say) or not. So a failure on
    any rank leaves all of them at the same collective: rank 0 raises (its own error, or ``RankFailed``) and then
    releases the workers with STOP, instead of meeting workers blocked in the data gather, which on NCCL hangs
    until the watchdog fires minutes later."""
    sizes = split_sizes(x.shape[0], world, unit)
    lo = sum(sizes[:rank])
    hi = lo + sizes[rank]
    out_shape = (max(sizes), *x.shape[1:])
    error: BaseException | None = None
    eps = x.new_zeros((0, *x.shape[1:]))
    if hi > lo:
        step = rows_for(x.shape[0])  # rank 0 only: workers see no sampler, hence no step context
        try:
            with publish(step.narrow(lo, hi) if step is not None else None):
                eps = chunked(net, x[lo:hi], t[lo:hi], ctx[lo:hi], max_batch)
        except Exception as e:  # noqa: BLE001 - reported to every rank below, then re-raised on rank 0
            error = e
    status = gather(torch.tensor([0.0 if error is None else 1.0], device=x.device))
    failed = [r for r, s in enumerate(status) if float(s.reshape(-1)[0]) != 0.0]
    if failed:
        if rank != 0:
            if error is not None:
                print(f"rank {rank}: U-Net call failed: {type(error).__name__}: {error}", flush=True)
            return x.new_zeros(out_shape)  # back to serve(): rank 0 now raises and sends STOP
        if error is not None:
            raise error
        raise RankFailed(f"rank {failed[0]} failed while computing its slice of a U-Net call (see its log); "
                         "all ranks stopped")
    padded = x.new_zeros(out_shape)
    padded[: eps.shape[0]] = eps
    parts = gather(padded)
    if rank != 0:
        return padded
    return torch.cat([p[:s].to(x.device) for p, s in zip(parts, sizes, strict=True)], dim=0)


def serve(net: NetworkFn, device: torch.device | str, max_batch: int | None) -> int:
    """Ranks 1..G-1: answer rank 0's network calls until it says stop. Returns the number of calls served."""
    import torch.distributed as dist

    device = torch.device(device)
    comm = device if dist.get_backend() == "nccl" else torch.device("cpu")
    rank, world = dist.get_rank(), dist.get_world_size()
    calls = 0
    while True:
        header = torch.zeros(_HEADER, dtype=torch.long, device=comm)
        dist.broadcast(header, src=0)
        cmd, b, c, f, h, w, tf, length, d, unit, xd, cd, td = (int(v) for v in header.tolist())
        if cmd == _STOP:
            return calls
        x = torch.empty((b, c, f, h, w), dtype=_DTYPES[xd], device=comm)
        t = torch.empty((b, tf), dtype=_DTYPES[td], device=comm)
        ctx = torch.empty((b, length, d), dtype=_DTYPES[cd], device=comm)
        for z in (x, t, ctx):
            dist.broadcast(z, src=0)
        with torch.no_grad():
            _compute_and_gather(net, x.to(device), t.to(device), ctx.to(device), max_batch, unit, rank, world,
                                lambda p: _all_gather(dist, p, comm))
        calls += 1


def serve_run(cfg: Any, latent_hw: tuple[int, int], model: Any) -> int:
    """A worker rank of ``generate``: set the U-Net up as rank 0 does for the FIFO phase (the resolved config
    ``cfg``, the schedule for the techniques, max batch), then ``serve`` until rank 0 is done. Returns the number
    of calls served."""
    from ..diffusion.guidance import unet_network
    from ..techniques import apply_techniques
    from .queue import FifoPlan
    from .sizing import resolve_max_batch

    fc = cfg.fifo
    plan = FifoPlan(fc.window, fc.partitions, fc.lookahead, fc.block or 1, fc.stagger)
    sched = model.schedule(plan.levels, cfg.sampling.eta).to(model.device).strided(plan.stride)
    max_batch = resolve_max_batch(fc.max_batch, model.device, model, latent_hw, fc.window)
    techniques = apply_techniques(model.unet, cfg.techniques)
    try:
        techniques.bind(sched)
        techniques.set_phase("fifo")
        return serve(unet_network(model.unet, cfg.sampling.fps), model.device, max_batch)
    finally:
        techniques.remove()

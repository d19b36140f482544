"""How window, partitions, block and steps fit together: ``steps x block = window x partitions``.

The queue's main part holds f * n frames (window f, n partitions). With blocks of K frames per noise level it
has S = f * n / K levels, so the step count is free of the window: ``--steps`` picks S, ``--block`` K, and the
third follows. K must divide the window (half the window with lookahead, so that no block straddles a
committed half). This module knows no model: the caller passes the window and the defaults it resolved.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import GeometryError


@dataclass(frozen=True)
class Geometry:
    window: int
    partitions: int
    block: int
    lookahead: bool

    @property
    def steps(self) -> int:
        return self.window * self.partitions // self.block


def valid_blocks(window: int, lookahead: bool) -> list[int]:
    """Block sizes that fit the window: divisors of f (of f/2 with lookahead), smallest first."""
    span = window // 2 if lookahead else window
    return [k for k in range(1, span + 1) if span % k == 0]


def _span_text(window: int, lookahead: bool) -> str:
    return f"half the window ({window // 2}: lookahead is on)" if lookahead else f"the window ({window})"


def _nearest(target: int, candidates: set[int]) -> str:
    """'6 or 8' (the nearest fitting values below and above ``target``), or the one that exists."""
    below = max((c for c in candidates if c < target), default=None)
    above = min((c for c in candidates if c > target), default=None)
    return " or ".join(str(v) for v in (below, above) if v is not None)


def fitting_steps(window: int, lookahead: bool, block: int | None = None, partitions: int | None = None,
                  limit: int = 0) -> set[int]:
    """Every step count up to ``limit`` (default: a generous range) that some geometry gives."""
    limit = limit or 4 * window * 8
    blocks = [block] if block is not None else valid_blocks(window, lookahead)
    out: set[int] = set()
    for k in blocks:
        parts = [partitions] if partitions is not None else range(1, limit * k // window + 1)
        out.update(window * n // k for n in parts if (window * n) % k == 0 and 0 < window * n // k <= limit)
    return out


def resolve_geometry(window: int, lookahead: bool, steps: int | None = None, block: int | None = None,
                     partitions: int | None = None, default_partitions: int = 4,
                     default_block: int = 1) -> Geometry:
    """The run's geometry from what the user gave (``None``: not given).

    Without ``steps``: n = partitions or the preset's, K = block or the model's (1, or a diffusion-forcing
    checkpoint's native block when it fits). With ``steps`` and ``block``: n = S K / f. With ``steps`` and
    ``partitions``: K = n f / S. With ``steps`` alone: the model's block if it fits, else the smallest K that does.
    Raises :class:`GeometryError` naming the values that fit.
    """
    blocks = valid_blocks(window, lookahead)
    span = _span_text(window, lookahead)
    if block is not None and block not in blocks:
        raise GeometryError(f"--block {block} does not divide {span}; valid blocks: "
                            f"{', '.join(map(str, blocks))}")
    if partitions is not None and partitions < 1:
        raise GeometryError(f"--partitions must be >= 1, got {partitions}")
    if steps is not None and steps < 1:
        raise GeometryError(f"--steps must be >= 1, got {steps}")
    native = default_block if default_block in blocks else 1
    if steps is None:
        return Geometry(window, partitions or default_partitions, block or native, lookahead)
    if block is not None and partitions is not None:
        have = window * partitions // block
        if have != steps:
            raise GeometryError(f"--steps {steps} contradicts window {window} x {partitions} partitions / block "
                                f"{block} = {have} steps; give two of --steps, --block and --partitions")
        return Geometry(window, partitions, block, lookahead)
    if block is not None:
        if (steps * block) % window == 0:
            return Geometry(window, steps * block // window, block, lookahead)
        fit = _nearest(steps, fitting_steps(window, lookahead, block=block, limit=2 * steps + window))
        raise GeometryError(f"--steps {steps} does not fit --block {block} with window {window}: steps x block must be "
                            f"a multiple of the window (steps = window x partitions / block); nearest that fit: {fit}")
    order = [native] + [k for k in blocks if k != native]
    if partitions is not None:
        for k in blocks:
            if k * steps == window * partitions:
                return Geometry(window, partitions, k, lookahead)
        fit = _nearest(steps, fitting_steps(window, lookahead, partitions=partitions, limit=2 * steps + window))
        raise GeometryError(f"--steps {steps} does not fit window {window} x {partitions} partitions: the block "
                            f"(window x partitions / steps) must divide {span}; steps that fit: {fit}")
    for k in order:
        if (steps * k) % window == 0:
            return Geometry(window, steps * k // window, k, lookahead)
    fit = _nearest(steps, fitting_steps(window, lookahead, limit=2 * steps + window))
    raise GeometryError(f"--steps {steps} fits no block with window {window}: steps x block must be a multiple of the "
                        f"window for a block dividing {span}; nearest step counts that fit: {fit}")

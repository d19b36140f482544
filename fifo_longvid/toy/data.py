"""Procedural videos of coloured shapes on a black background, each with a caption made from its parameters.

Everything is drawn from a seed, so a caption's ground truth (colour, shape, direction, speed) is known
exactly. Straight-line motion wraps around the frame (a torus), so "a red circle moving right" is a valid
video of any length; "bouncing" shapes reflect off the walls.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

FRAME_SIZE = 64
# Saturated colours far apart in RGB, so a pixel's nearest palette entry is its colour name.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.95, 0.1, 0.1),
    "green": (0.1, 0.85, 0.2),
    "blue": (0.15, 0.3, 1.0),
    "yellow": (0.95, 0.9, 0.1),
}
BACKGROUND = (0.0, 0.0, 0.0)
SHAPES = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
MOTIONS = (*DIRECTIONS, "bouncing")
SIZE_RANGE = (9.0, 13.0)  # "radius" in pixels
SPEED_RANGE = (1.5, 3.0)  # pixels per frame


@dataclass(frozen=True)
class ShapeSpec:
    """One shape's full ground truth; position in pixels (x right, y down) at frame 0."""

    shape: str
    colour: str
    motion: str  # a DIRECTIONS key, or "bouncing"
    x: float
    y: float
    vx: float
    vy: float
    size: float

    @property
    def phrase(self) -> str:
        how = "bouncing" if self.motion == "bouncing" else f"moving {self.motion}"
        return f"a {self.colour} {self.shape} {how}"


@dataclass(frozen=True)
class VideoSpec:
    shapes: tuple[ShapeSpec, ...]

    @property
    def caption(self) -> str:
        return " and ".join(s.phrase for s in self.shapes)


def caption_of(colour: str, shape: str, motion: str) -> str:
    return ShapeSpec(shape, colour, motion, 0, 0, 0, 0, 0).phrase


def parse_caption(caption: str) -> ShapeSpec:
    """The first shape's colour/shape/motion named by a caption (position and speed set to 0)."""
    words = caption.lower().replace(",", " ").split()
    colour = next((w for w in words if w in PALETTE), None)
    shape = next((w for w in words if w in SHAPES), None)
    motion = "bouncing" if "bouncing" in words else next((w for w in words if w in DIRECTIONS), None)
    if colour is None or shape is None or motion is None:
        raise ValueError(
            f"caption {caption!r} is not a toy caption: expected e.g. 'a red circle moving right' "
            f"(colours {', '.join(PALETTE)}; shapes {', '.join(SHAPES)}; motions {', '.join(MOTIONS)})"
        )
    return ShapeSpec(shape, colour, motion, 0.0, 0.0, 0.0, 0.0, 0.0)


def sample_shape(rng: random.Random, colour: str | None = None, shape: str | None = None,
                 motion: str | None = None, size: int = FRAME_SIZE) -> ShapeSpec:
    """A random shape; any of colour/shape/motion may be fixed."""
    colour = colour or rng.choice(list(PALETTE))
    shape = shape or rng.choice(SHAPES)
    motion = motion or rng.choice(MOTIONS)
    r = rng.uniform(*SIZE_RANGE)
    speed = rng.uniform(*SPEED_RANGE)
    if motion == "bouncing":
        angle = rng.uniform(0, 2 * math.pi)
        vx, vy = speed * math.cos(angle), speed * math.sin(angle)
        x, y = rng.uniform(r, size - r), rng.uniform(r, size - r)
    else:
        dx, dy = DIRECTIONS[motion]
        vx, vy = speed * dx, speed * dy
        x, y = rng.uniform(0, size), rng.uniform(0, size)
    return ShapeSpec(shape, colour, motion, x, y, vx, vy, r)


def sample_video(rng: random.Random, num_shapes: int = 1, size: int = FRAME_SIZE) -> VideoSpec:
    """One or more shapes of distinct colours."""
    colours = rng.sample(list(PALETTE), num_shapes)
    return VideoSpec(tuple(sample_shape(rng, colour=c, size=size) for c in colours))


def _reflect(p: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Position of a point bouncing between lo and hi (unfolded coordinate p)."""
    span = hi - lo
    q = torch.remainder(p - lo, 2 * span)
    return lo + torch.where(q > span, 2 * span - q, q)


def trajectory(s: ShapeSpec, frames: torch.Tensor, size: int = FRAME_SIZE) -> torch.Tensor:
    """(F, 2) centre (x, y) at the given (float) frame indices."""
    x = s.x + s.vx * frames
    y = s.y + s.vy * frames
    if s.motion == "bouncing":
        x, y = _reflect(x, s.size, size - s.size), _reflect(y, s.size, size - s.size)
    else:
        x, y = torch.remainder(x, size), torch.remainder(y, size)
    return torch.stack([x, y], dim=-1)


def shape_sdf(shape: str, dx: torch.Tensor, dy: torch.Tensor, r: float) -> torch.Tensor:
    """Signed distance (pixels, negative inside) to a shape of roughly equal area for equal r."""
    if shape == "circle":
        return torch.sqrt(dx**2 + dy**2) - r
    if shape == "square":
        return torch.maximum(dx.abs(), dy.abs()) - 0.886 * r  # same area as the circle
    if shape == "triangle":  # equilateral, apex up (y grows downwards)
        h = 0.78 * r  # inradius; area ~ circle's
        c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
        return torch.stack([dy, c * dx - s * dy, -c * dx - s * dy]).amax(0) - h
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def render_shape_mask(s: ShapeSpec, centres: torch.Tensor, size: int = FRAME_SIZE) -> torch.Tensor:
    """(F, H, W) anti-aliased coverage in [0, 1] of shape ``s`` at the given centres (torus distances)."""
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    dx = grid[None, None, :] - centres[:, 0, None, None]
    dy = grid[None, :, None] - centres[:, 1, None, None]
    dx = torch.remainder(dx + size / 2, size) - size / 2
    dy = torch.remainder(dy + size / 2, size) - size / 2
    dx, dy = torch.broadcast_tensors(dx, dy)
    return (0.5 - shape_sdf(s.shape, dx, dy, s.size)).clamp(0, 1)


def render(spec: VideoSpec, num_frames: int, start: int = 0, size: int = FRAME_SIZE) -> torch.Tensor:
    """(3, F, H, W) video in [-1, 1] (the VAE's input range); later shapes are drawn on top."""
    frames = torch.arange(start, start + num_frames, dtype=torch.float32)
    video = torch.tensor(BACKGROUND).view(3, 1, 1, 1).expand(3, num_frames, size, size).clone()
    for s in spec.shapes:
        m = render_shape_mask(s, trajectory(s, frames, size), size)[None]
        video = video * (1 - m) + torch.tensor(PALETTE[s.colour]).view(3, 1, 1, 1) * m
    return video * 2 - 1


class ShapeClips(torch.utils.data.IterableDataset):
    """Endless seeded clips ``(video (3, F, H, W) in [-1, 1], caption)``; ``two_shape_p`` of them hold two shapes.

    Each worker/rank gets its own stream from ``seed``; the stream is a pure function of the seed.
    """

    def __init__(self, num_frames: int, seed: int = 0, two_shape_p: float = 0.0, size: int = FRAME_SIZE):
        super().__init__()
        self.num_frames, self.seed, self.two_shape_p, self.size = num_frames, seed, two_shape_p, size

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = random.Random(self.seed * 1000 + (info.id if info else 0))
        while True:
            n = 2 if rng.random() < self.two_shape_p else 1
            spec = sample_video(rng, n, self.size)
            start = rng.randrange(0, 64)
            yield render(spec, self.num_frames, start, self.size), spec.caption

"""Quality of a generated toy video, measured against what its caption says (the ground truth).

Frames are ``(F, H, W, 3)`` floats in [0, 1] (or uint8). The foreground is every pixel clearly brighter
than the black background. Per frame we measure which palette colour the foreground is, which shape
template it matches best (centred on its wrap-around centroid, sized by its area), and where its
centroid is; over time, whether it moves the captioned way, how smoothly (jerk), and how much the
background flickers. ``drift_curve`` repeats the per-frame scores over consecutive segments of a long video.
Only single-shape captions are scored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .data import DIRECTIONS, PALETTE, SHAPES, ShapeSpec, parse_caption, render_shape_mask

FG_THRESHOLD = 0.3  # max RGB channel above this = foreground (background is black, shapes are saturated)
MIN_AREA = 12  # pixels; smaller foreground counts as "no shape" in that frame
MIN_STEP = 0.5  # pixels per frame; a smaller displacement is not "moving"


@dataclass
class VideoScores:
    colour_acc: float  # share of foreground pixels nearest the captioned colour (mean over frames)
    shape_acc: float  # share of frames whose best template is the captioned shape
    shape_iou: float  # mean IoU with the captioned shape's template
    direction_acc: float  # share of frame steps moving the captioned way by >= MIN_STEP px
    speed: float  # mean displacement along the captioned direction, px/frame (bouncing: speed)
    jerk: float  # mean |third difference| of the centroid trajectory, px/frame^3
    flicker: float  # mean |frame difference| over pixels that are background in both frames
    area_cv: float  # std / mean of the foreground area over frames
    presence: float  # share of frames with a shape at all

    @property
    def score(self) -> float:
        """One number in [0, 1]: right colour x right shape x right motion."""
        return self.colour_acc * self.shape_acc * self.direction_acc

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "score": self.score}


def to_frames(video: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) float32 in [0, 1] from uint8 frames, [0, 1] floats, or a (3, F, H, W) tensor in [-1, 1]."""
    v = torch.as_tensor(np.asarray(video) if not isinstance(video, torch.Tensor) else video)
    if v.dtype == torch.uint8:
        return v.float() / 255
    if v.ndim == 4 and v.shape[0] == 3 and v.shape[-1] != 3:  # model layout, [-1, 1]
        return ((v.float().permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
    if v.ndim != 4 or v.shape[-1] != 3:
        raise ValueError(f"expected frames (F, H, W, 3) or a (3, F, H, W) video, got shape {tuple(v.shape)}")
    return v.float().clamp(0, 1)


def foreground(frames: torch.Tensor) -> torch.Tensor:
    return frames.amax(-1) > FG_THRESHOLD


def colour_shares(frames: torch.Tensor, fg: torch.Tensor, colour: str) -> torch.Tensor:
    """(F,) share of each frame's foreground whose nearest palette colour is ``colour`` (0 without foreground).

    Compared after dividing by the brightest channel, so a dim anti-aliased edge keeps its hue."""
    names = list(PALETTE)
    pal = torch.tensor([PALETTE[n] for n in names])
    pal = pal / pal.amax(-1, keepdim=True)
    px = frames.reshape(-1, 3)
    px = px / px.amax(-1, keepdim=True).clamp(min=1e-3)
    nearest = torch.cdist(px, pal).argmin(-1).reshape(fg.shape)
    hit = ((nearest == names.index(colour)) & fg).flatten(1).sum(1).float()
    return hit / fg.flatten(1).sum(1).clamp(min=1)


def circular_centroid(fg: torch.Tensor) -> torch.Tensor:
    """(F, 2) centroid (x, y) on the wrap-around frame (NaN where a frame has no foreground)."""
    _, h, w = fg.shape
    out = []
    for size, axis in ((w, 2), (h, 1)):
        ang = (torch.arange(size, dtype=torch.float32) + 0.5) * (2 * math.pi / size)
        weight = fg.float().sum(dim=3 - axis)  # (F, size): mass per column (x) or row (y)
        s, c = (weight * ang.sin()).sum(1), (weight * ang.cos()).sum(1)
        pos = torch.remainder(torch.atan2(s, c), 2 * math.pi) * (size / (2 * math.pi)) - 0.5
        out.append(torch.where(weight.sum(1) > 0, pos, torch.nan))
    return torch.stack(out, dim=1)


def classify_shapes(fg: torch.Tensor, centres: torch.Tensor) -> tuple[list[str | None], torch.Tensor]:
    """Best-matching shape per frame (None: no shape) and (F, len(SHAPES)) IoU with each template."""
    n, h, w = fg.shape
    ious = torch.zeros(n, len(SHAPES))
    best: list[str | None] = []
    for i in range(n):
        area = int(fg[i].sum())
        if area < MIN_AREA or torch.isnan(centres[i]).any():
            best.append(None)
            continue
        shift = (h // 2 - int(round(float(centres[i, 1]))), w // 2 - int(round(float(centres[i, 0]))))
        m = torch.roll(fg[i], shifts=shift, dims=(0, 1))
        frac = centres[i] - centres[i].round()
        centre = torch.tensor([[w / 2 - 0.5 + float(frac[0]), h / 2 - 0.5 + float(frac[1])]])
        r = math.sqrt(area / math.pi)  # all three shapes have area ~ pi r^2 (data.shape_sdf)
        for k, shape in enumerate(SHAPES):
            t = render_shape_mask(ShapeSpec(shape, "red", "right", 0, 0, 0, 0, r), centre, w)[0] > 0.5
            ious[i, k] = (t & m).sum() / (t | m).sum().clamp(min=1)
        best.append(SHAPES[int(ious[i].argmax())])
    return best, ious


def unwrap_steps(centres: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(F-1, 2) frame-to-frame displacements, wrapped into (-size/2, size/2] (a torus)."""
    d = centres[1:] - centres[:-1]
    size = torch.tensor([w, h], dtype=torch.float32)
    return torch.remainder(d + size / 2, size) - size / 2


def score_video(video: torch.Tensor | np.ndarray, caption: str) -> VideoScores:
    """All per-video metrics for a single-shape caption such as 'a red circle moving right'."""
    if " and " in caption:
        raise ValueError(f"only single-shape captions are scored, got {caption!r}")
    target = parse_caption(caption)
    frames = to_frames(video)
    n, h, w, _ = frames.shape
    fg = foreground(frames)
    area = fg.flatten(1).sum(1).float()
    present = area >= MIN_AREA
    colour = colour_shares(frames, fg, target.colour)
    centres = circular_centroid(fg)
    shapes, ious = classify_shapes(fg, centres)
    k = SHAPES.index(target.shape)
    steps = unwrap_steps(centres, h, w)
    valid = present[1:] & present[:-1]
    if target.motion == "bouncing":
        along = steps.norm(dim=1)
    else:
        along = steps @ torch.tensor(DIRECTIONS[target.motion], dtype=torch.float32)
    moving = (along >= MIN_STEP) & valid
    pos = torch.cumsum(torch.nan_to_num(steps), 0)
    jerk_ok = valid[2:] & valid[1:-1] & valid[:-2]
    jerk = (pos[3:] - 3 * pos[2:-1] + 3 * pos[1:-2] - pos[:-3]).norm(dim=1) if n >= 5 else torch.zeros(0)
    jerk = jerk[jerk_ok[1:]] if jerk.numel() else jerk
    bg = ~fg[1:] & ~fg[:-1]
    diff = (frames[1:] - frames[:-1]).abs().mean(-1)
    return VideoScores(
        colour_acc=float(colour.mean()),
        shape_acc=float(np.mean([s == target.shape for s in shapes])),
        shape_iou=float(ious[:, k].mean()),
        direction_acc=float(moving.float().mean()) if n > 1 else 0.0,
        speed=float(along[valid].mean()) if valid.any() else 0.0,
        jerk=float(jerk.mean()) if jerk.numel() else float("nan"),
        flicker=float((diff * bg).sum() / bg.sum().clamp(min=1)) if n > 1 else 0.0,
        area_cv=float(area.std() / area.mean().clamp(min=1)) if n > 1 else 0.0,
        presence=float(present.float().mean()),
    )


def drift_curve(video: torch.Tensor | np.ndarray, caption: str, segment: int = 32) -> list[dict[str, float]]:
    """Scores of consecutive ``segment``-frame pieces of a long video, in order (quality over time)."""
    frames = to_frames(video)
    return [{"start": s, **score_video(frames[s:s + segment], caption).as_dict()}
            for s in range(0, frames.shape[0] - segment + 1, segment)]


def summarize(values: list[float]) -> tuple[float, float]:
    """(mean, std over seeds), ignoring NaNs."""
    a = np.asarray(values, dtype=np.float64)
    a = a[~np.isnan(a)]
    return (float(a.mean()), float(a.std())) if a.size else (float("nan"), float("nan"))

"""Training objectives of the toy model that need no Lightning: the text tower's caption classifier, the
learning-rate schedule and anchored timesteps (``training.py`` wires them into the Lightning modules)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import MOTIONS, PALETTE, SHAPES, parse_caption


class CaptionHead(torch.nn.Module):
    """Cosine classifiers of colour, shape and motion on the token-mean context, to train the text tower only.

    A real text tower arrives pretrained; the toy's is seeded noise, and trained by the diffusion loss alone it
    maps "moving left" and "moving right" to contexts 0.7 % apart (colours: 88 %), so no prompt can steer motion.
    Unit-norm features at a fixed temperature can only be classified by pulling the captions apart. Not shipped.
    """

    def __init__(self, width: int, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature
        self.classes = {"colour": list(PALETTE), "shape": list(SHAPES), "motion": list(MOTIONS)}
        self.weights = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(torch.randn(len(v), width) / width**0.5) for k, v in self.classes.items()})

    def loss(self, ctx: torch.Tensor, captions: list[str]) -> torch.Tensor:
        feat = F.normalize(ctx.float().mean(1), dim=-1)
        specs = [parse_caption(c) for c in captions]
        total = feat.new_zeros(())
        for name, names in self.classes.items():
            target = torch.tensor([names.index(getattr(s, name)) for s in specs], device=ctx.device)
            logits = feat @ F.normalize(self.weights[name], dim=-1).T / self.temperature
            total = total + F.cross_entropy(logits, target)
        return total / len(self.classes)


def cosine_lr(step: int, warmup: int, decay_steps: int = 0, floor: float = 0.1) -> float:
    """Learning-rate factor: linear warm-up, then constant, or a cosine down to ``floor`` over ``decay_steps``.

    A run that ends on a decayed rate lands nearer a minimum than one stopped at full rate (the EMA alone
    averages over a window, it does not settle)."""
    warm = min(1.0, (step + 1) / warmup)
    if not decay_steps:
        return warm
    progress = min(1.0, step / decay_steps)
    return warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def anchored_timesteps(b: int, f: int, timesteps: int = 1000, clean_max: int = 100, noisy_min: int = 300,
                       max_anchor: int = 2) -> torch.Tensor:
    """(B, F) timesteps with one or two nearly clean frames at one end of the clip and the rest heavily noised.

    With every frame at one t, the frames themselves show the direction by the time the position is resolved,
    so the motion word buys the epsilon loss nothing: trained that way the toy's loss was the same to four
    digits under "moving left" and "moving right". When one clean frame fixes the position and the rest are
    noise, the rest can only be placed by the caption's direction, and the loss pays for reading it."""
    k = torch.randint(1, max_anchor + 1, (b, 1))
    at_end = torch.rand(b, 1) < 0.5
    pos = torch.arange(f).expand(b, f)
    anchor = torch.where(at_end, pos >= f - k, pos < k)
    clean = torch.randint(0, clean_max, (b, 1)).expand(b, f)
    noisy = torch.randint(noisy_min, timesteps, (b, 1)).expand(b, f)
    return torch.where(anchor, clean, noisy)

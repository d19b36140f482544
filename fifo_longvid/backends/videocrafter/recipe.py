"""Seeded weight recipe for tiny test models.

The reference goldens were computed with weights that are *defined* rather than stored: one CPU
``torch.Generator`` walks every persistent tensor in ``state_dict()`` order and draws
``u ~ U(-1, 1)``, scaled by a per-tensor rule. Re-deriving them here lets the tiny preset run
without any file, and lets tests check the exact reference weights by sha256.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

import torch

# Buffers the model computes from its config; the recipe never draws for them.
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "scale_arr",
)


def recipe_tensor(key: str, shape: Iterable[int], generator: torch.Generator) -> torch.Tensor:
    """Draw one tensor of the recipe (float32 throughout, as the reference did)."""
    shape = list(shape)
    u = torch.rand(shape, generator=generator, dtype=torch.float32) * 2 - 1
    if len(shape) >= 2:
        return u * torch.tensor(1.0 / math.sqrt(math.prod(shape[1:])), dtype=torch.float32)
    if key.endswith("weight"):  # GroupNorm / LayerNorm scales
        return 1 + torch.tensor(0.1, dtype=torch.float32) * u
    return torch.tensor(0.05, dtype=torch.float32) * u  # biases, class embeddings, logit_scale


def recipe_state_dict(entries: Iterable[tuple[str, list[int], int]]) -> dict[str, torch.Tensor]:
    """Build the weights for ``(key, shape, seed)`` entries, in the given (state_dict) order."""
    generators: dict[int, torch.Generator] = {}
    out: dict[str, torch.Tensor] = {}
    for key, shape, seed in entries:
        if seed not in generators:
            generators[seed] = torch.Generator().manual_seed(int(seed))
        out[key] = recipe_tensor(key, shape, generators[seed])
    return out


def recipe_for_model(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The recipe weights for every persistent tensor of ``model`` except the schedule buffers."""
    entries = [
        (k, list(v.shape), seed)
        for k, v in model.state_dict().items()
        if k not in SCHEDULE_BUFFERS
    ]
    return recipe_state_dict(entries)


def tensor_sha256(t: torch.Tensor) -> str:
    """sha256 of the C-order little-endian float32 bytes (the recipe's checksum)."""
    return hashlib.sha256(t.detach().to(torch.float32).contiguous().cpu().numpy().tobytes()).hexdigest()


def verify_against(weights: Mapping[str, torch.Tensor], params: list[dict]) -> list[str]:
    """Keys whose tensor differs from the recipe json's ``params`` list (empty = all match)."""
    bad = []
    for p in params:
        w = weights.get(p["key"])
        if w is None or list(w.shape) != list(p["shape"]) or tensor_sha256(w) != p["sha256"]:
            bad.append(p["key"])
    return bad

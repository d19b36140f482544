"""Scaled dot-product attention in batch chunks, shared by every backend's attention.

CUDA's memory-efficient and flash SDPA kernels put the batch on a grid axis limited to 2**16 - 1
(pytorch#142228, #146704). Temporal attention has samples x h x w rows (2560 per sample at 320x512,
4096 at 512x512), so FIFO's large batches are split into chunks under the limit; rows are independent,
so the result is equal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MAX_ATTENTION_BATCH = 65535


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool = False) -> torch.Tensor:
    """``scaled_dot_product_attention`` over (N, H, L, D), in chunks of at most MAX_ATTENTION_BATCH rows."""
    n, limit = q.shape[0], MAX_ATTENTION_BATCH
    if n <= limit:
        return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    return torch.cat([F.scaled_dot_product_attention(q[i : i + limit], k[i : i + limit], v[i : i + limit],
                                                     is_causal=is_causal) for i in range(0, n, limit)])

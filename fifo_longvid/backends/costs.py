"""What a family's model costs on a GPU, as measured: the type each family fills in for its presets
(``Family.costs``), read by ``fifo-gen plan`` and ``--max-batch auto`` through the arithmetic of ``fifo/costs.py``.

Every constant was measured at full size on fake CUDA tensors (``tests/fakecuda``: the package's own code on
``device="cuda"`` with torch's allocator count, flash-attention shapes, no data) and is checked there by
``tests/test_fake_cuda.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FamilyCosts:
    ref_latent: tuple[int, int]  # latent (h, w) of the measurements
    ref_frames: int  # frames per window of the measurements
    params_run_dtype: float  # U-Net + VAE parameters (run in --dtype)
    params_fp32: float  # text / image encoders (always fp32)
    act_bytes_per_sample: float  # peak activation bytes of one sample of a U-Net call, fp16/bf16, flash attention
    unet_flop_per_sample: float  # one sample (one window, one CFG branch) through the U-Net
    vae_flop_per_frame: float  # one latent frame decoded
    store_bytes_per_frame: dict[str, float] = field(default_factory=dict)  # per technique, fp16/bf16
    temporal_factor: int = 1  # output frames per dequeued latent frame (Wan's causal VAE: 4)
    channels: int = 4  # latent channels (the queue's size)
    flop_ratio: dict[str, float] = field(default_factory=dict)  # this family's own FLOP_RATIO entries, where counted
    # > 0: the fp32 encoders stay in host memory and compute on the card piecewise; the card's rise while encoding
    # (the largest piece plus activations)
    text_visit_bytes: float = 0.0
    experts: int = 1  # denoisers split by noise level (Wan2.2-A14B: 2); params_run_dtype counts all of them
    expert_params: float = 0.0  # parameters of one expert (experts > 1)
    host_bytes: float = 0.0  # host memory the loaded weights take before placement (A14B: both experts + UMT5)
    # the placement rule of experts on a GPU (the backend's ``place``): an expert stays on the card while it fits in
    # the card less ``expert_reserve`` of it; the others stay in host memory and visit the card one weight-owning
    # submodule at a time, the largest of ``expert_visit_params`` parameters
    expert_reserve: float = 0.0
    expert_visit_params: float = 0.0

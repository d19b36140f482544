"""What a FIFO run costs on a GPU, per model family: a cheap model for ``fifo-gen plan`` and for ``auto``.

Every constant was measured at full size on fake CUDA tensors (``tests/fakecuda``: the package's own code on
``device="cuda"`` with torch's allocator count, flash-attention shapes, no data) and is checked there by
``tests/test_fake_cuda.py``. Off the reference size, activations, stores and FLOPs scale linearly with latent
pixels (and frames): exact at the reference size, an approximation elsewhere (attention grows faster).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

ALL_FOUR = ("tgate", "cfg_cache", "attn_reuse", "deepcache")


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


_VC = dict(ref_latent=(40, 64), ref_frames=16, act_bytes_per_sample=825_696_256, unet_flop_per_sample=12.5815e12,
           vae_flop_per_frame=1.5635e12,
           store_bytes_per_frame={"tgate": 19.99e6, "cfg_cache": 0.082e6, "attn_reuse": 54.55e6, "deepcache": 6.55e6})
COSTS: dict[str, FamilyCosts] = {
    "videocrafter2": FamilyCosts(params_run_dtype=1.4968e9, params_fp32=0.3542e9, **_VC),  # type: ignore[arg-type]
    "videocrafter1_i2v": FamilyCosts(params_run_dtype=1.5224e9, params_fp32=1.0865e9, **_VC),  # type: ignore[arg-type]
    "animatediff": FamilyCosts(ref_latent=(64, 64), ref_frames=16, params_run_dtype=1.3597e9, params_fp32=0.1237e9,
                               act_bytes_per_sample=1_092_452_352, unet_flop_per_sample=17.6750e12,
                               vae_flop_per_frame=2.5145e12,
                               store_bytes_per_frame={"tgate": 31.99e6, "cfg_cache": 0.131e6, "attn_reuse": 87.27e6,
                                                      "deepcache": 10.49e6}),
    # Wan2.1-T2V-1.3B (backends/wan/full.py): the DiT (its float32 modules: 3.1M params) + the causal VAE; UMT5-XXL's
    # encoder is 5.68B fp32 params (21.2 GiB), kept in host memory and computing on the card piece by piece
    # (Wan.place). FLOPs as scripts/bench_wan_flops.py counts them: one 20-frame window sample, and one latent frame
    # through the streamed decoder (4 output frames).
    "wan": FamilyCosts(ref_latent=(60, 104), ref_frames=20, params_run_dtype=1.5428e9, params_fp32=5.6840e9,
                       act_bytes_per_sample=1_528_496_384, unet_flop_per_sample=260.5625e12,
                       vae_flop_per_frame=13.552e12, store_bytes_per_frame={"tgate": 191.69e6, "cfg_cache": 0.799e6,
                                                                             "attn_reuse": 548.94e6},
                       temporal_factor=4, channels=16,
                       # attention reuse: a window call with every other frame's self-attention reused is 0.639 of
                       # plain (the DiT's full 3D attention is most of it), on the 41.2 % of steps below t=681
                       flop_ratio={"attn_reuse": 0.851},
                       # UMT5's token embedding (256384 x 4096 fp32, 3.9 GiB) is the largest piece to visit
                       text_visit_bytes=4.2309e9),
}
# FLOPs with a technique on, over plain, at full size (VideoCrafter2, README "Acceleration", scripts/bench_accel.py);
# assumed for the other families. Several techniques multiply, except all four together (measured: 0.446).
FLOP_RATIO = {"tgate": 0.739, "cfg_cache": 0.792, "attn_reuse": 0.964, "deepcache": 0.627, "qcache": 1.0}
FLOP_RATIO_ALL_FOUR = 0.446


def costs_for(model: str) -> FamilyCosts | None:
    """The cost table of a ``--config`` name (None: not measured, e.g. the CPU test models)."""
    return COSTS.get(str(model))


def dtype_bytes(dtype: str | torch.dtype) -> int:
    return {"fp32": 4, "float32": 4, torch.float32: 4}.get(dtype, 2)  # type: ignore[call-overload]


def _pixels(c: FamilyCosts, latent_hw: tuple[int, int]) -> float:
    return latent_hw[0] * latent_hw[1] / (c.ref_latent[0] * c.ref_latent[1])


def weights_bytes(c: FamilyCosts, dtype: str | torch.dtype) -> float:
    """The weights on the card through the iterations (an offloaded encoder is not among them)."""
    return c.params_run_dtype * dtype_bytes(dtype) + (0 if c.text_visit_bytes else c.params_fp32 * 4)


def encoding_bytes(c: FamilyCosts, dtype: str | torch.dtype) -> float:
    """The card's holding while the prompts are encoded: the weights, plus an offloaded encoder's largest piece
    and its activations (without offloading, the encoder's activations are small beside one U-Net call's)."""
    return weights_bytes(c, dtype) + c.text_visit_bytes


def activation_bytes_per_sample(c: FamilyCosts, latent_hw: tuple[int, int], frames: int,
                                dtype: str | torch.dtype) -> float:
    """fp32 is taken as twice fp16 (not measured: fake SDPA has no fp32 flash path)."""
    return c.act_bytes_per_sample * _pixels(c, latent_hw) * frames / c.ref_frames * dtype_bytes(dtype) / 2


def store_bytes_at_largest(c: FamilyCosts, techniques: list[str], latent_hw: tuple[int, int], queue_frames: int,
                           dtype: str | torch.dtype) -> float:
    """The techniques' per-frame stores once every queued frame holds an entry (an upper bound: the measured
    stores at 70 of 72 frames were 3.7 GiB for attention reuse and 3.9 GiB for fifo_fast at 320x512)."""
    per_frame = sum(c.store_bytes_per_frame.get(t, 0.0) for t in techniques)
    return per_frame * _pixels(c, latent_hw) * queue_frames * dtype_bytes(dtype) / 2


def unet_flop_per_sample(c: FamilyCosts, latent_hw: tuple[int, int], frames: int) -> float:
    return c.unet_flop_per_sample * _pixels(c, latent_hw) * frames / c.ref_frames


def vae_flop_per_frame(c: FamilyCosts, latent_hw: tuple[int, int]) -> float:
    """One latent frame decoded (``temporal_factor`` output frames in steady state)."""
    return c.vae_flop_per_frame * _pixels(c, latent_hw)


def flop_ratio(techniques: list[str], c: FamilyCosts | None = None) -> float:
    """FLOPs with ``techniques`` over plain: the family's own count where it has one, else VideoCrafter2's."""
    own = {} if c is None else c.flop_ratio
    if all(t in techniques for t in ALL_FOUR) and not own:
        return FLOP_RATIO_ALL_FOUR * FLOP_RATIO["qcache"]
    r = 1.0
    for t in techniques:
        r *= own.get(t, FLOP_RATIO.get(t, 1.0))
    return r

"""Reading SD-1.5 U-Net LoRAs for AnimateDiff (``backends/lora.py`` does the rest): diffusers'
``StableDiffusionLoraLoaderMixin.lora_state_dict`` (what ``AnimateDiffPipeline`` uses) converts the kohya / A1111
layout (``lora_unet_*``, with network alphas) into diffusers' ``unet.*`` keys. Only the U-Net takes LoRAs here: a
file's text-encoder part is refused as unmatched keys rather than silently dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_unet_lora(path: Path, unet: Any) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(state dict, key prefix, ``load_lora_adapter`` kwargs) of an SD-1.5 LoRA file; safetensors only."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    state_dict, alphas, metadata = StableDiffusionLoraLoaderMixin.lora_state_dict(
        str(path), use_safetensors=True, return_lora_metadata=True)
    kwargs: dict[str, Any] = {}
    if alphas:
        kwargs["network_alphas"] = alphas
    elif metadata:
        kwargs["metadata"] = metadata
    return state_dict, "unet", kwargs

"""Reading Wan LoRAs (``backends/lora.py`` does the rest): diffusers' ``WanPipeline.lora_state_dict`` converts the
original Wan / ComfyUI layout (``diffusion_model.*.lora_down/lora_up/alpha``, the alpha folded into the weights)
and the kohya / musubi layout (``lora_unet_*``) into diffusers' ``transformer.*.lora_A/lora_B``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_wan_lora(path: Path, transformer: Any) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(state dict, key prefix, ``load_lora_adapter`` kwargs) of a LoRA file for ``transformer``. Safetensors
    only (``use_safetensors=True``: diffusers would otherwise allow a pickle). A text-to-video LoRA on an
    image-to-video transformer gets zero image projections, as diffusers' ``load_lora_weights`` gives it."""
    from diffusers import WanPipeline

    state_dict, metadata = WanPipeline.lora_state_dict(str(path), use_safetensors=True, return_lora_metadata=True)
    if getattr(transformer.config, "image_dim", None) is not None:
        state_dict = WanPipeline._maybe_expand_t2v_lora_for_i2v(transformer, state_dict)
    return state_dict, "transformer", {"metadata": metadata} if metadata else {}


def lora_targets(folder: Path | None) -> tuple[str, ...]:
    """The components of a Wan folder that take LoRAs: the transformer, and a second expert's ``transformer_2``
    when the folder has one (read from its configs, no weights)."""
    if folder is not None and (Path(folder) / "transformer_2" / "config.json").is_file():
        return "transformer", "transformer_2"
    return ("transformer",)

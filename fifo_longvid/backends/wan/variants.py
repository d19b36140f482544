"""Which Wan model a diffusers folder holds, read from its configs (``model_index.json``, ``transformer/`` and
``vae/``), never from its path, and without reading any weights.

| variant          | pipeline class                     | what tells it apart                         |
|------------------|------------------------------------|---------------------------------------------|
| wan2.1           | WanPipeline                        | one transformer, no boundary                |
| skyreels-df      | SkyReelsV2DiffusionForcingPipeline | its class                                   |
| wan2.2-ti2v      | WanPipeline                        | ``expand_timesteps``: per-token timesteps   |
| wan2.2-a14b      | WanPipeline                        | ``transformer_2`` and ``boundary_ratio``    |

Image-to-video folders whose transformer takes the image as extra input channels (Wan2.2-I2V-A14B) or as CLIP
tokens (Wan2.1-I2V-14B) are refused with one sentence that names what works instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import CheckpointError
from ..hub import class_name, part_config

T2V_PIPELINES = ("WanPipeline", "SkyReelsV2DiffusionForcingPipeline")
I2V_PIPELINE = "WanImageToVideoPipeline"


@dataclass(frozen=True)
class WanVariant:
    """The facts of one Wan checkpoint that change how FIFO runs it."""

    name: str  # wan2.1 | skyreels-df | wan2.2-ti2v | wan2.2-a14b
    kind: str  # the transformer's family: "wan" (WanTransformer3DModel) or "skyreels-df"
    pipeline: str  # model_index.json's _class_name
    experts: int = 1  # 2: a high-noise transformer and a low-noise transformer_2
    boundary_ratio: float | None = None  # t >= boundary_ratio x num_train_timesteps runs the high-noise expert
    expand_timesteps: bool = False  # Wan2.2-TI2V: per-token timesteps; an image is pinned as the first frame

    @property
    def image_input(self) -> str | None:
        """How an ``--image`` enters: ``"first_frame"`` (the first latent frame is the image's latent at t = 0)."""
        return "first_frame" if self.expand_timesteps else None


# Run defaults of the full-size releases that differ from Wan2.1's (WanConfig): the frame, the length, the FIFO
# window and the guidance their model cards publish. TI2V-5B: 704x1280 (44x80 latents), 121 frames (31 latents),
# guidance 5; A14B T2V: 480x832, 81 frames, guidance 4 on the high-noise expert and 3 on the low-noise one.
RELEASE_DEFAULTS: dict[str, dict[str, Any]] = {
    "wan2.2-ti2v": {"latent_size": (44, 80), "default_num_frames": 121, "default_window": 30,
                    "default_partitions": 2, "default_cfg": 5.0},
    "wan2.2-a14b": {"default_cfg": 4.0, "default_cfg_2": 3.0},
}


# share of a card kept free of resident experts when placing two experts (``Wan.place``; ``plan`` applies the same
# rule): room for the activations, the VAE and the queue
EXPERT_RESERVE = 0.4


def _read_index(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "model_index.json").read_text())


def _present(entry: Any) -> bool:
    """A component entry of model_index.json: ``["diffusers", "Cls"]`` when saved, ``[null, null]`` when None."""
    return isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[1] is not None


def refuse_i2v(folder: Path, index: dict[str, Any], advice: str) -> CheckpointError:
    """The sentence for image-to-video folders this backend does not run."""
    dit = part_config(folder, "transformer") or {}
    if _present(index.get("image_encoder")) or dit.get("image_dim") is not None:
        why = ("a Wan2.1 image-to-video folder (its transformer takes CLIP image tokens); FIFO runs an image on "
               "Wan2.2-TI2V-5B (--image pins it as the first frame)")
    elif int(dit.get("in_channels", 16)) != int(dit.get("out_channels", 16)):
        why = (f"an image-to-video folder whose transformer takes the image as {dit.get('in_channels')} input "
               "channels (Wan2.2-I2V-A14B); FIFO runs an image on Wan2.2-TI2V-5B (--image pins it as the first "
               "frame), and the A14B experts with Wan2.2-T2V-A14B")
    else:
        why = "an image-to-video pipeline"
    return CheckpointError(f"{folder} is a {I2V_PIPELINE} folder, {why}; the Wan backend takes text-to-video "
                           f"{' or '.join(T2V_PIPELINES)} folders (Wan2.1, Wan2.2-TI2V-5B, Wan2.2-T2V-A14B, "
                           f"SkyReels-V2-DF)\n  {advice}")


def variant_of(folder: str | Path, advice: str) -> WanVariant:
    """The folder's :class:`WanVariant`, or a CheckpointError saying what was found and what ``advice`` offers."""
    folder = Path(folder)
    if not folder.exists():
        raise CheckpointError(f"Wan checkpoint not found: {folder}\n  {advice}")
    index_path = folder / "model_index.json"
    if not folder.is_dir() or not index_path.is_file():
        raise CheckpointError(f"{folder}: no model_index.json, so this is not a diffusers pipeline folder\n  {advice}")
    name = class_name(index_path)
    if name is None:
        raise CheckpointError(f"{index_path} names no pipeline (no _class_name); re-download the folder\n  {advice}")
    index = _read_index(folder)
    if name == I2V_PIPELINE:
        raise refuse_i2v(folder, index, advice)
    if name not in T2V_PIPELINES:
        raise CheckpointError(f"{folder} is a {name} folder; the Wan backend takes text-to-video "
                              f"{' or '.join(T2V_PIPELINES)} folders\n  {advice}")
    if name == "SkyReelsV2DiffusionForcingPipeline":
        return WanVariant("skyreels-df", "skyreels-df", name)
    ratio = index.get("boundary_ratio")
    two = _present(index.get("transformer_2"))
    if two and ratio is None:
        raise CheckpointError(f"{folder} has a transformer_2 but no boundary_ratio in model_index.json, so which "
                              f"expert denoises which noise level is unknown; re-download the folder\n  {advice}")
    if ratio is not None and not two:
        raise CheckpointError(f"{folder}: model_index.json sets boundary_ratio {ratio} but has no transformer_2 "
                              f"(the low-noise expert); re-download the folder\n  {advice}")
    if ratio is not None and not 0.0 < float(ratio) < 1.0:
        raise CheckpointError(f"{folder}: boundary_ratio {ratio} is not between 0 and 1")
    expand = bool(index.get("expand_timesteps", False))
    if two and expand:
        raise CheckpointError(f"{folder} sets both expand_timesteps and two experts, a combination no published "
                              f"Wan2.2 folder has\n  {advice}")
    if two:
        return WanVariant("wan2.2-a14b", "wan", name, experts=2, boundary_ratio=float(ratio))
    if expand:
        return WanVariant("wan2.2-ti2v", "wan", name, expand_timesteps=True)
    return WanVariant("wan2.1", "wan", name)

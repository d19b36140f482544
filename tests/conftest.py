"""Shared fixtures: the tiny recipe-weight model and the reference goldens (tests/reference/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REF = Path(__file__).parent / "reference"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def golden(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(REF / f"{name}.safetensors"))


def golden_meta(name: str) -> dict:
    return json.loads((REF / f"{name}.json").read_text())


@pytest.fixture(scope="session")
def tiny_model():
    from fifo_longvid import load_model

    return load_model("tiny", device="cpu")


class TinyWanFolders(dict):
    """Tiny Wan folders by kind (``backends/wan/tiny.py KINDS``), each written once, when first asked for."""

    def __init__(self, root):
        super().__init__()
        self.root = root

    def __missing__(self, kind: str):
        from fifo_longvid.backends.wan.tiny import write_tiny_folder

        self[kind] = write_tiny_folder(self.root / kind, kind)
        return self[kind]


@pytest.fixture(scope="session")
def wan_folders(tmp_path_factory):
    """Tiny Wan pipeline folders (Wan2.1, SkyReels-V2-DF, Wan2.2-TI2V, -A14B, -I2V-A14B), written by diffusers' own
    ``save_pretrained``: the layout a user downloads. Tests copy them before altering anything."""
    folders = TinyWanFolders(tmp_path_factory.mktemp("wan"))
    for kind in ("wan", "skyreels-df"):
        folders[kind]  # noqa: B018 - written up front, as before
    return folders


def fifo_replay_noise(name: str, lookahead: bool = True):
    """ReplayNoise serving golden_fifo's recorded prepare/shift noises in the reference's draw order."""
    from fifo_longvid.diffusion.noise import ReplayNoise

    g = golden("golden_fifo")
    pn, sn = g["prepare_noise"], g["shift_noise"]
    if not lookahead:
        pn = pn[:, :, -16:]
    slots = [pn[:, :, [k]] for k in range(pn.shape[2])]
    shifts = [sn[:, :, [i]] for i in range(sn.shape[2])]
    return ReplayNoise(slots + shifts)

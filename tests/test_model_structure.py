"""The model's state dict equals the reference checkpoints' key manifests; presets match the YAMLs."""

from __future__ import annotations

import json

import pytest
import torch

from fifo_longvid.backends.videocrafter.load import build_model
from fifo_longvid.backends.videocrafter.presets import load_model_config, tiny, videocrafter2
from fifo_longvid.backends.videocrafter.recipe import verify_against

from .conftest import REF


def test_full_size_state_dict_equals_videocrafter2_manifest():
    manifest = json.loads((REF / "videocrafter2_t2v_manifest.json").read_text())
    model = build_model(videocrafter2(), "meta")
    sd = model.state_dict()
    got = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()]
    want = [(e["key"], e["shape"], e["dtype"]) for e in manifest["keys"]]
    assert len(got) == manifest["num_keys"] == 2039
    assert got == want  # same keys, shapes, dtypes and order
    counts = manifest["parameter_counts"]
    for prefix in ("model.diffusion_model", "first_stage_model", "cond_stage_model"):
        n = sum(p.numel() for k, p in model.named_parameters() if k.startswith(prefix + "."))
        assert n == counts[prefix]["parameters"], prefix
    persistent = {b["name"] for b in manifest["registered_buffers"] if b["persistent"]}
    assert persistent <= set(sd)


def test_tiny_recipe_weights_match_reference_checksums(tiny_model):
    recipe = json.loads((REF / "tiny_t2v_weights_recipe.json").read_text())
    assert verify_against(tiny_model.state_dict(), recipe["params"]) == []
    keys = [k for k in tiny_model.state_dict() if not k.startswith(("betas", "alphas", "sqrt", "log_",
                                                                      "posterior", "scale_arr"))]
    assert keys == [p["key"] for p in recipe["params"]]


def test_reference_yaml_parses_to_tiny_preset():
    ref = load_model_config(REF / "tiny_t2v.yaml")
    mine = tiny()
    assert ref.unet == mine.unet and ref.vae == mine.vae
    assert ref.text.arch == mine.text.arch and ref.text.layer == mine.text.layer
    assert ref.latent_size == mine.latent_size and ref.use_scale and ref.scale_b == 0.7


@pytest.mark.parametrize("name", ["tiny", "videocrafter2"])
def test_configs_yaml_equal_presets(name):
    from pathlib import Path

    files = {"tiny": "tiny_t2v.yaml", "videocrafter2": "videocrafter2_t2v.yaml"}
    path = Path(__file__).parents[1] / "configs" / files[name]
    from_yaml = load_model_config(path)
    preset = load_model_config(name)
    from_yaml.text.model_config_file = preset.text.model_config_file
    assert from_yaml == preset


def test_unknown_preset_and_key_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown model config 'nope'"):
        load_model_config("nope")
    bad = tmp_path / "m.yaml"
    bad.write_text("unet:\n  model_channelz: 3\n")
    with pytest.raises(ValueError, match="model_channelz"):
        load_model_config(bad)


def test_schedule_buffers_match_reference(tiny_model):
    from .conftest import golden

    g = golden("golden_ddim_schedule")
    for k in ("alphas_cumprod", "betas", "scale_arr"):
        assert torch.equal(getattr(tiny_model, k), g[k])
    assert tiny_model.scale_arr.shape == (1400,)  # quirk Q3

"""VAE and text encoder against the reference goldens (tiny recipe weights) and full-size manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fifo_longvid.backends.videocrafter.recipe import recipe_state_dict, verify_against
from fifo_longvid.backends.videocrafter.text import OpenCLIPTextEncoder, TextEncoderConfig
from fifo_longvid.backends.videocrafter.vae import AutoencoderKL, VAEConfig, decode_video, encode_video

REF = Path(__file__).parent / "reference"
PROMPTS = ["a person swimming in ocean, high quality, 4K resolution.", ""]


def _subset(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _manifest_part(prefix: str) -> list[tuple[str, list[int]]]:
    keys = json.loads((REF / "videocrafter2_t2v_manifest.json").read_text())["keys"]
    return [(k["key"][len(prefix) :], k["shape"]) for k in keys if k["key"].startswith(prefix)]


def _keys_shapes(module: torch.nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in module.state_dict().items()]


def _tiny_vae_config() -> VAEConfig:
    model_params = yaml.safe_load((REF / "tiny_t2v.yaml").read_text())["model"]["params"]
    params = model_params["first_stage_config"]["params"]
    dd = params["ddconfig"]
    return VAEConfig(
        embed_dim=params["embed_dim"],
        z_channels=dd["z_channels"],
        resolution=dd["resolution"],
        in_channels=dd["in_channels"],
        out_ch=dd["out_ch"],
        ch=dd["ch"],
        ch_mult=tuple(dd["ch_mult"]),
        num_res_blocks=dd["num_res_blocks"],
        attn_resolutions=tuple(dd["attn_resolutions"]),
        dropout=dd["dropout"],
        double_z=dd["double_z"],
    )


def _tiny_text_config(layer: str = "penultimate") -> TextEncoderConfig:
    config_file = str(REF / "tiny_openclip.json")
    return TextEncoderConfig(arch="tiny_openclip", layer=layer, model_config_file=config_file)


@pytest.fixture(scope="module")
def recipe() -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Tiny LatentDiffusion weights (~10M draws): built once for the whole module."""
    params = json.loads((REF / "tiny_t2v_weights_recipe.json").read_text())["params"]
    return recipe_state_dict([(p["key"], p["shape"], p["seed"]) for p in params]), params


@pytest.fixture(scope="module")
def vae(recipe) -> AutoencoderKL:
    model = AutoencoderKL(_tiny_vae_config()).eval()
    model.load_state_dict(_subset(recipe[0], "first_stage_model."), strict=True)
    return model


@pytest.fixture(scope="module")
def text_encoders(recipe) -> dict[str, OpenCLIPTextEncoder]:
    sd = _subset(recipe[0], "cond_stage_model.")
    out = {}
    for layer in ("penultimate", "last"):
        enc = OpenCLIPTextEncoder(_tiny_text_config(layer))
        enc.load_state_dict(sd, strict=True)
        out[layer] = enc
    return out


def test_recipe_sha256(recipe) -> None:
    weights, params = recipe
    ours = {k: v for k, v in weights.items() if k.startswith(("first_stage_model.", "cond_stage_model."))}
    wanted = [p for p in params if p["key"].startswith(("first_stage_model.", "cond_stage_model."))]
    assert len(ours) == len(wanted) > 0
    assert verify_against(ours, wanted) == []


def test_vae_decode_golden(vae) -> None:
    g = load_file(str(REF / "golden_vae_decode.safetensors"))
    with torch.no_grad():
        out = decode_video(vae, g["z"])
        out_chunked = decode_video(vae, g["z"], chunk=3)
    assert out.shape == g["out"].shape == (1, 3, 8, 64, 64)
    torch.testing.assert_close(out, g["out"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out_chunked, out, atol=1e-5, rtol=1e-5)


def test_vae_encode_roundtrip_runs(vae) -> None:
    x = torch.rand(2, 3, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z = encode_video(vae, x, chunk=2)
        zs = encode_video(vae, x, sample=True, generator=torch.Generator().manual_seed(1))
        mean, logvar = vae.encode(x[:, :, 0])
        rec = decode_video(vae, z)
    assert z.shape == zs.shape == (2, 4, 3, 4, 6)
    torch.testing.assert_close(z[:, :, 0], 0.18215 * mean, atol=1e-6, rtol=1e-5)
    assert logvar.min() >= -30 and logvar.max() <= 20
    assert not torch.equal(z, zs)
    assert rec.shape == x.shape and torch.isfinite(rec).all()


def test_text_golden(text_encoders) -> None:
    g = load_file(str(REF / "golden_text.safetensors"))
    enc = text_encoders["penultimate"]
    tokens = enc.tokenize(PROMPTS)
    assert tokens.dtype == torch.int64
    assert torch.equal(tokens, g["tokens"])
    with torch.no_grad():
        emb = enc(PROMPTS)
        emb_from_tokens = enc(tokens)
    assert emb.shape == (2, 77, 64)
    torch.testing.assert_close(emb, g["emb"], atol=1e-4, rtol=1e-4)
    assert torch.equal(emb, emb_from_tokens)


def test_text_last_layer_differs(text_encoders) -> None:
    with torch.no_grad():
        pen = text_encoders["penultimate"](PROMPTS)
        last = text_encoders["last"](PROMPTS)
    assert last.shape == pen.shape
    assert (last - pen).abs().max() > 1e-2


def test_text_full_size_matches_manifest_on_meta() -> None:
    enc = OpenCLIPTextEncoder(TextEncoderConfig(), device="meta")
    assert not hasattr(enc.model, "visual")
    assert all(p.is_meta for p in enc.parameters())
    assert _keys_shapes(enc) == _manifest_part("cond_stage_model.")


def test_vae_full_size_matches_manifest_on_meta() -> None:
    with torch.device("meta"):
        model = AutoencoderKL(VAEConfig())
    assert _keys_shapes(model) == _manifest_part("first_stage_model.")


def test_text_sequence_first_open_clip_layout(recipe) -> None:
    """open_clip <= 2.24 resblocks were sequence-first; the encoder must follow the installed layout."""
    enc = OpenCLIPTextEncoder(_tiny_text_config())
    enc.load_state_dict(_subset(recipe[0], "cond_stage_model."), strict=True)
    with torch.no_grad():
        batch_first = enc(PROMPTS)
        enc.model.transformer.batch_first = False
        for block in enc.model.transformer.resblocks:
            block.attn.batch_first = False
        seq_first = enc(PROMPTS)
    torch.testing.assert_close(seq_first, batch_first, atol=1e-5, rtol=1e-5)

"""Checkpoint loading: formats, safety, and readable reports for every bad file."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from fifo_longvid import load_model
from fifo_longvid.backends.videocrafter.convert import convert_checkpoint
from fifo_longvid.backends.videocrafter.load import CheckpointError, read_checkpoint


@pytest.fixture(scope="module")
def tiny_sd(tiny_model):
    return {k: v.clone() for k, v in tiny_model.state_dict().items()}


def _same_unet(model, ref):
    x = torch.ones(1, 4, 2, 16, 16)
    ctx = torch.ones(1, 77, 64)
    with torch.no_grad():
        return torch.equal(model.unet(x, torch.tensor([10]), ctx), ref.unet(x, torch.tensor([10]), ctx))


def test_lightning_ckpt_and_safetensors_load(tiny_model, tiny_sd, tmp_path):
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": tiny_sd, "epoch": 3}, ckpt)
    m = load_model("tiny", ckpt, device="cpu")
    assert _same_unet(m, tiny_model)
    st = convert_checkpoint(ckpt, tmp_path / "model.safetensors")
    assert _same_unet(load_model("tiny", st, device="cpu"), tiny_model)
    half = convert_checkpoint(ckpt, tmp_path / "half.safetensors", half=True)
    assert os.path.getsize(half) < os.path.getsize(st) * 0.6
    with pytest.raises(FileExistsError):
        convert_checkpoint(ckpt, st)


def test_bare_state_dict_loads(tiny_model, tiny_sd, tmp_path):
    p = tmp_path / "bare.pt"
    torch.save(tiny_sd, p)
    assert _same_unet(load_model("tiny", p, device="cpu"), tiny_model)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="(?s)checkpoint not found.*fifo-gen download"):
        read_checkpoint(tmp_path / "nope.ckpt")


def test_videocrafter2_without_checkpoint_says_what_to_do():
    with pytest.raises(CheckpointError, match="(?s)needs a checkpoint.*fifo-gen download"):
        load_model("videocrafter2", None, device="cpu")


def test_truncated_checkpoint(tiny_sd, tmp_path):
    p = tmp_path / "cut.ckpt"
    torch.save({"state_dict": tiny_sd}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(p)
    s = tmp_path / "cut.safetensors"
    save_file({"a": torch.zeros(1000)}, str(s))
    s.write_bytes(s.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(s)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_with_code_is_refused(tmp_path):
    p = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Evil()}, p)
    with pytest.raises(CheckpointError, match="(?s)refusing to load.*pickled Python objects"):
        read_checkpoint(p)
    raw = tmp_path / "evil.pt"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError):
        read_checkpoint(raw)


def test_other_architecture_reports(tiny_sd, tmp_path):
    i2v = dict(tiny_sd)
    i2v["image_proj_model.latents"] = torch.zeros(1, 16, 64)
    i2v["embedder.model.visual.conv1.weight"] = torch.zeros(96, 3, 14, 14)
    p = tmp_path / "i2v.pt"
    torch.save(i2v, p)
    with pytest.raises(CheckpointError, match="(?s)unexpected 2 keys.*VideoCrafter1 image-to-video"):
        load_model("tiny", p, device="cpu")
    # the tiny weights into the full-size architecture: same names, other sizes
    plain = tmp_path / "tiny.pt"
    torch.save(tiny_sd, plain)
    with pytest.raises(CheckpointError, match="(?s)shape mismatches.*another model size"):
        load_model("videocrafter2", plain, device="cpu")
    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not look like a VideoCrafter checkpoint"):
        load_model("tiny", other, device="cpu")


def test_dtype_rules():
    """Half precision loads on the CPU too: U-Net and VAE in the requested dtype, everything else float32."""
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model("tiny", None, device="cpu", dtype="fp8")
    m = load_model("tiny", None, device="cpu", dtype="bf16")
    assert m.dtype == torch.bfloat16 and m.first_stage_model.post_quant_conv.weight.dtype == torch.bfloat16
    assert next(m.cond_stage_model.parameters()).dtype == torch.float32
    assert m.alphas_cumprod.dtype == torch.float32 and m.scale_arr.dtype == torch.float32
    assert load_model("tiny", None, device="cpu").dtype == torch.float32  # the CPU default stays fp32

"""VideoCrafter1 I2V model, image tokens and latent seeding against the reference goldens."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fifo_longvid import load_model
from fifo_longvid.backends.videocrafter.image import clip_preprocess
from fifo_longvid.backends.videocrafter.load import build_model
from fifo_longvid.backends.videocrafter.presets import load_model_config, tiny_i2v, videocrafter1_i2v
from fifo_longvid.backends.videocrafter.recipe import verify_against
from fifo_longvid.cli.main import app
from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
from fifo_longvid.diffusion.sampling import sample_clip
from fifo_longvid.fifo.init import init_queue
from fifo_longvid.fifo.queue import FifoPlan
from fifo_longvid.fifo.sampler import fifo_iteration
from fifo_longvid.io.images import load_image
from fifo_longvid.techniques.seeding import i2v_uncond, seed_image_tokens

from .conftest import REF, fifo_replay_noise, golden


@pytest.fixture(scope="module")
def i2v_model():
    return load_model("tiny_i2v", device="cpu")


def test_full_size_i2v_state_dict_equals_manifest():
    manifest = json.loads((REF / "videocrafter1_i2v_manifest.json").read_text())
    model = build_model(videocrafter1_i2v(), "meta")
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert got == [(e["key"], e["shape"]) for e in manifest["keys"]]
    for prefix in ("model.diffusion_model", "embedder", "image_proj_model"):
        n = sum(p.numel() for k, p in model.named_parameters() if k.startswith(prefix + "."))
        assert n == manifest["parameter_counts"][prefix]["parameters"], prefix


def test_tiny_i2v_recipe_and_reference_yaml(i2v_model):
    recipe = json.loads((REF / "tiny_i2v_weights_recipe.json").read_text())
    assert verify_against(i2v_model.state_dict(), recipe["params"]) == []
    ref = load_model_config(REF / "tiny_i2v.yaml")
    assert ref.unet == tiny_i2v().unet


@torch.no_grad()
def test_image_embed_golden(i2v_model):
    g = golden("golden_image_embed")
    torch.testing.assert_close(clip_preprocess(g["image"]), g["preprocessed"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(i2v_model.embedder(g["image"]), g["vision_tokens"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(i2v_model.encode_image(g["image"]), g["tokens"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(i2v_model.encode_image(g["zero_image"]), g["zero_image_tokens"], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_unet_i2v_golden(i2v_model):
    g = golden("golden_unet_i2v")
    run = lambda ctx: i2v_model.unet(g["x"], g["ts"], ctx, fps=g["fps"], per_frame=True)  # noqa: E731
    torch.testing.assert_close(run(g["context"]), g["out"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(run(g["text_emb"]), g["out_text_only"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(run(g["uncond_context"]), g["out_uncond"], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_base_sampling_i2v_golden(i2v_model):
    g = golden("golden_base_sampling_i2v")
    uncond = i2v_uncond(i2v_model, i2v_model.encode_text([""]))
    torch.testing.assert_close(uncond, g["uncond"], atol=1e-4, rtol=1e-4)
    den = cfg_denoiser(unet_network(i2v_model.unet, g["fps"]), g["cond"], g["uncond"], 12.0)  # 77 vs 93 tokens
    out = sample_clip(den, g["x_T"], i2v_model.schedule(16, 0.0))  # VideoCrafter's scaled DDIM
    assert (out - g["samples"]).abs().max().item() < 1e-2


@torch.no_grad()
def test_fifo_latent_seed_golden(i2v_model):
    g = golden("golden_fifo_seed")
    plan = FifoPlan(8, 2, True)
    sched = i2v_model.ddim_schedule(16, 0.0)
    noise = fifo_replay_noise("golden_fifo_seed")
    q = init_queue(plan, sched, noise, "first", base=g["base_latents"])
    torch.testing.assert_close(q.latents, g["initial_queue"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(i2v_model.decode_latents(q.latents[:, :, :1])[:, :, 0], g["seed_frame"], atol=1e-4,
                               rtol=1e-4)
    tokens = seed_image_tokens(i2v_model, q.latents)
    torch.testing.assert_close(tokens, g["seed_image_tokens"], atol=1e-4, rtol=1e-4)
    cond = torch.cat([g["text_cond"], tokens], dim=1)
    torch.testing.assert_close(cond, g["cond"], atol=1e-4, rtol=1e-4)
    den = cfg_denoiser(unet_network(i2v_model.unet, g["fps"]), cond, g["uncond"], 12.0)
    outs = [fifo_iteration(lambda b: den(b.x, b.t), q, plan, sched, noise, iteration=i)[0] for i in range(20)]
    out = torch.cat(outs, dim=2)
    err = (out - g["out_latents"]).abs().max().item()
    print(f"golden_fifo_seed max abs error {err:.2e}")
    assert err < 1e-2
    frames = i2v_model.decode_latents(out[:, :, -12:])
    video = ((frames.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)[0].permute(1, 2, 3, 0)
    assert (video.int() - g["video_uint8"].int()).abs().max() <= 1


def _run(args):
    return CliRunner().invoke(app, ["generate", *args])


SMALL = ["--config", "tiny_i2v", "--height", "64", "--width", "64", "--seed", "1", "--num-frames", "4",
         "fifo.window=4"]


def test_reseeding_keeps_context_length(i2v_model, tmp_path, monkeypatch):
    from fifo_longvid.run import conditioning, fifo_run, pipeline

    lengths = []
    real = conditioning.CondState.conds

    def spy(self):
        c = real(self)
        lengths.append(c.shape[1])
        return c

    monkeypatch.setattr(conditioning.CondState, "conds", spy)
    from fifo_longvid.run.config import build_run_config

    cfg = build_run_config(flags={"model": "tiny_i2v", "prompts": ["a boat"], "output.path": str(tmp_path / "s")},
                           overrides=["fifo.window=4", "sampling.height=64", "sampling.width=64", "fifo.num_frames=4",
                                      "conditioning.latent_seed=true", "conditioning.latent_seed_every=1"])
    calls = {"n": 0}
    real_tokens = fifo_run.frame_image_tokens

    def count(model, frame):
        calls["n"] += 1
        return real_tokens(model, frame)

    monkeypatch.setattr(fifo_run, "frame_image_tokens", count)
    res = pipeline.generate(cfg, model=i2v_model, log=lambda m: None)
    assert res.frames == 4 and calls["n"] == 4
    # the base clip is text-only (as the reference); every FIFO call sees text + one 16-token image block
    assert lengths[0] == 77 and len(lengths) > 4 and set(lengths[1:]) == {77 + 16}


def test_image_to_video_cli(tmp_path):
    img = tmp_path / "boat.png"
    Image.fromarray((np.random.default_rng(0).random((40, 90)) * 255).astype(np.uint8), mode="L").save(img)
    out = tmp_path / "boat.mp4"
    r = _run(["--prompt", "a boat", "--image", str(img), *SMALL, "-o", str(out)])
    assert r.exit_code == 0, r.output
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["conditioning"]["image"]["path"] == str(img) and len(meta["conditioning"]["image"]["sha256"]) == 64


def test_image_loading_converts_modes(tmp_path):
    rgba = tmp_path / "a.png"
    Image.new("RGBA", (100, 50), (255, 0, 0, 128)).save(rgba)
    x = load_image(rgba, 64, 64)
    assert x.shape == (1, 3, 64, 64) and x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("args,needle", [
    (["--config", "tiny", "--latent-seed"], "needs a model with an image encoder"),
    (["--config", "tiny", "--image", "x.png"], "fifo-gen download --model videocrafter1_i2v"),
    (["--config", "tiny_i2v", "--image", "/nonexistent/boat.png"], "no such file"),
    (["--config", "tiny_i2v", "--latent-seed-every", "2"], "needs --latent-seed"),
])
def test_bad_image_inputs(tmp_path, args, needle):
    r = _run(["--prompt", "a boat", *args, "-o", str(tmp_path / "o.mp4")])
    assert r.exit_code != 0 and needle in r.output.replace("\n", " ") and "Traceback" not in r.output


def test_unreadable_image(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    r = _run(["--prompt", "a boat", *SMALL, "--image", str(bad), "-o", str(tmp_path / "o.mp4")])
    assert r.exit_code != 0 and "cannot read it as an image" in r.output.replace("\n", " ")

"""``--image`` on Wan2.2-TI2V-5B (issue #31): the image's latent is the video's first frame, pinned at timestep 0
(an anchor), against diffusers' ``WanImageToVideoPipeline`` with ``expand_timesteps``; and the refusals on the Wan
folders that take no image this way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from fifo_longvid.backends import load_backend
from fifo_longvid.cli.main import app
from fifo_longvid.diffusion.context import current
from fifo_longvid.diffusion.noise import NoiseSource
from fifo_longvid.io.sidecar import file_sha256
from fifo_longvid.run import pipeline
from fifo_longvid.run.config import build_run_config

PROMPT = "a red circle bouncing"


@pytest.fixture(scope="module")
def folders(wan_folders):
    return wan_folders  # the session's tiny folders (conftest), written once for every Wan test file


@pytest.fixture(scope="module")
def ti2v(folders):
    return load_backend("wan", folders["wan2.2-ti2v"], "cpu", "fp32")


def image_file(path, size: int, seed: int = 0):
    arr = (np.random.default_rng(seed).random((size, size, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


def diffusers_pipe(folder):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    pipe = WanImageToVideoPipeline.from_pretrained(folder, image_encoder=None, image_processor=None)
    shift = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["flow_shift"]
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_condition(pipe, path, size: int, frames: int) -> torch.Tensor:
    """The image latent exactly as ``prepare_latents`` computes it (float32)."""
    image = pipe.video_processor.preprocess(Image.open(path), height=size, width=size).to(dtype=torch.float32)
    x = torch.zeros(1, 48, 1 + (frames - 1) // 4, size // 16, size // 16)
    _, cond, mask = pipe.prepare_latents(image, 1, 48, size, size, frames, torch.float32, torch.device("cpu"),
                                         None, x)
    assert mask[0, 0, 0].eq(0).all() and mask[0, 0, 1:].eq(1).all()
    return cond


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def latents_of(out) -> torch.Tensor:
    return load_file(str(out.with_suffix(".latents.safetensors")))["latents"]


def _generate(folder, out, *overrides: str, model=None, image=None):
    flags = {"model": "wan", "checkpoint": str(folder), "prompts": [PROMPT], "output.path": str(out)}
    cfg = build_run_config(flags=flags, overrides=["sampling.seed=3", "output.save_latents=true", "sampling.cfg=5",
                                                   f"conditioning.image={image}", *overrides])
    return pipeline.generate(cfg, model=model, log=lambda m: None)


# -- base mode: the peer check ---------------------------------------------------------------------------------
def test_base_clip_with_image_equals_diffusers_i2v_pipeline(folders, ti2v, tmp_path):
    """``--mode base --image`` equals ``WanImageToVideoPipeline`` (expand_timesteps) from the same x_T, at 64x64 px
    (2x2 tokens per frame); its first latent frame is the image latent, bitwise."""
    folder, size, window, steps = folders["wan2.2-ti2v"], 64, 3, 4
    img = image_file(tmp_path / "img.png", size)  # the frame's size: our crop/resize and diffusers' are the identity
    out = tmp_path / "base.mp4"
    _generate(folder, out, "mode=base", f"fifo.window={window}", f"sampling.steps={steps}",
              f"sampling.height={size}", f"sampling.width={size}", model=ti2v, image=img)
    got = latents_of(out)
    frames = 1 + 4 * (window - 1)
    pipe = diffusers_pipe(folder)
    x_T = NoiseSource(3, "cpu").randn((1, 48, window, size // 16, size // 16))  # the run's first draw
    want = pipe(image=Image.open(img), prompt=PROMPT, negative_prompt="", height=size, width=size,
                num_frames=frames, num_inference_steps=steps, guidance_scale=5.0, latents=x_T.clone(),
                output_type="latent", max_sequence_length=ti2v.context_shape[0]).frames
    assert got.shape == want.shape == (1, 48, window, 4, 4)
    assert rel(got, want) < 1e-5
    cond = diffusers_condition(pipe, img, size, frames)
    assert torch.equal(got[:, :, :1], cond) and torch.equal(want[:, :, :1], cond)
    assert not torch.equal(got[:, :, 1:2], cond)


# -- FIFO: the anchor in every window that holds it --------------------------------------------------------------
def test_fifo_pins_the_image_in_every_window_that_holds_it(folders, ti2v, tmp_path):
    """Every network call whose window holds the first kept frame sees the image latent there at t = 0 (and t = 0
    nowhere else); the first saved frame is the image latent; the same seed gives equal latents."""
    folder = folders["wan2.2-ti2v"]
    img = image_file(tmp_path / "img.png", 32)
    cond = ti2v.encode_first_frame(torch.from_numpy(np.asarray(Image.open(img), dtype=np.float32) / 255.0)
                                   .permute(2, 0, 1)[None] * 2 - 1)
    seen = {"base": 0, "fifo": 0, "fifo_without": 0}
    anchor_id = 2 + (4 * 2 - 4)  # lookahead head (window/2) + warm-up (f*n - f) with --init first

    def check(module, args, kwargs):
        x, t = args[0], args[1]
        ctx = current()
        assert ctx is not None and ctx.rows == x.shape[0] and t.shape == x.shape[:1] + x.shape[2:3]
        if ctx.phase == "base":
            pinned = torch.zeros_like(t, dtype=torch.bool)
            pinned[:, 0] = True
        else:
            pinned = ctx.frame_ids == anchor_id
        for r, j in pinned.nonzero().tolist():
            assert torch.equal(x[r, :, j : j + 1], cond[0]) and t[r, j] == 0
        assert (t[~pinned] > 0).all()
        key = ctx.phase if ctx.phase == "base" or pinned.any() else "fifo_without"
        seen[key] += 1

    outs = []
    handle = ti2v.unet.register_forward_pre_hook(check, with_kwargs=True)
    try:
        for k in range(2):
            out = tmp_path / f"v{k}.mp4"
            _generate(folder, out, "fifo.window=4", "fifo.partitions=2", "fifo.num_frames=13", "sampling.height=32",
                      "sampling.width=32", model=ti2v, image=img)
            outs.append(latents_of(out))
    finally:
        handle.remove()
    assert seen["base"] > 0 and seen["fifo"] > 0 and seen["fifo_without"] > 0  # it leaves the queue, FIFO goes on
    assert outs[0].shape == (1, 48, 4, 2, 2)
    assert torch.equal(outs[0][:, :, :1], cond) and torch.equal(outs[0], outs[1])


def test_cli_first_frame_is_diffusers_image_latent_and_sidecar_records_it(folders, tmp_path):
    folder = folders["wan2.2-ti2v"]
    img = image_file(tmp_path / "img.png", 32, seed=1)
    out = tmp_path / "v.mp4"
    r = CliRunner().invoke(app, ["generate", "--config", "wan", "--checkpoint", str(folder), "--image", str(img),
                                 "--prompt", PROMPT, "--height", "32", "--width", "32", "--partitions", "2",
                                 "--num-frames", "13", "--seed", "4", "-o", str(out), "fifo.window=4",
                                 "--save-latents"])
    assert r.exit_code == 0, r.output
    from fifo_longvid.io.video import read_video

    assert read_video(out).shape == (13, 32, 32, 3)
    z = latents_of(out)
    assert z.shape == (1, 48, 4, 2, 2)
    assert torch.equal(z[:, :, :1], diffusers_condition(diffusers_pipe(folder), img, 32, 13))
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["conditioning"]["image"] == {"path": str(img), "sha256": file_sha256(img, cache=False)}
    assert side["model"]["release"] == "wan2.2-ti2v"


# -- refusals ----------------------------------------------------------------------------------------------------
def _refused(folder, tmp_path, img):
    out = tmp_path / "no.mp4"
    r = CliRunner().invoke(app, ["generate", "--config", "wan", "--checkpoint", str(folder), "--image", str(img),
                                 "--prompt", PROMPT, "--height", "32", "--width", "32", "--num-frames", "5",
                                 "-o", str(out), "fifo.window=4"])
    assert r.exit_code == 2, r.output
    assert not any(p.name.startswith("no") for p in tmp_path.iterdir())
    return " ".join(r.output.split())


def test_image_on_a_wan21_folder_is_refused_naming_what_works(folders, tmp_path):
    img = image_file(tmp_path / "img.png", 32)
    msg = _refused(folders["wan"], tmp_path, img)
    assert "is a wan2.1 folder" in msg and "Wan2.2-TI2V-5B" in msg and "videocrafter1_i2v" in msg
    assert "Traceback" not in msg


def test_latent_seed_stays_videocrafter_only(folders, tmp_path):
    out = tmp_path / "no.mp4"
    r = CliRunner().invoke(app, ["generate", "--config", "wan", "--checkpoint", str(folders["wan2.2-ti2v"]),
                                 "--latent-seed", "--prompt", PROMPT, "--height", "32", "--width", "32",
                                 "-o", str(out), "fifo.window=4"])
    assert r.exit_code == 2 and "--latent-seed needs a model with an image encoder" in " ".join(r.output.split())
    assert not out.exists()


def test_wan21_i2v_clip_folder_is_refused_with_the_variant_sentence(folders, tmp_path):
    """A Wan2.1-I2V folder (CLIP image encoder, transformer ``image_dim``): the configs say so, no weights read."""
    folder = tmp_path / "i2v"
    shutil.copytree(folders["wan"], folder)
    index = json.loads((folder / "model_index.json").read_text())
    index.update(_class_name="WanImageToVideoPipeline", image_encoder=["transformers", "CLIPVisionModelWithProjection"],
                 image_processor=["transformers", "CLIPImageProcessor"])
    (folder / "model_index.json").write_text(json.dumps(index))
    dit = json.loads((folder / "transformer" / "config.json").read_text())
    dit.update(image_dim=4, in_channels=36)
    (folder / "transformer" / "config.json").write_text(json.dumps(dit))
    runs = tmp_path / "runs"
    runs.mkdir()
    img = image_file(tmp_path / "img.png", 32)
    msg = _refused(folder, runs, img)
    assert "Wan2.1 image-to-video folder (its transformer takes CLIP image tokens)" in msg
    assert "Wan2.2-TI2V-5B" in msg


def test_a_batch_on_a_ti2v_folder_takes_one_image_per_item(folders, tmp_path):
    """``image.png;a prompt`` lines in a prompt file: each item's video starts from its own image (its first saved
    latent is that image's latent), and the same file on a Wan2.1 folder is refused before anything is made."""
    for k in range(2):
        image_file(tmp_path / f"i{k}.png", 32, seed=k)
    prompts = tmp_path / "p.txt"
    prompts.write_text("i0.png;a red circle bouncing\ni1.png;a blue square\n")
    out = tmp_path / "out"
    tiny = ["--num-frames", "9", "--height", "32", "--width", "32", "--partitions", "2", "--save-latents",
            "fifo.window=4"]
    r = CliRunner().invoke(app, ["batch", str(prompts), "--config", "wan", "--checkpoint",
                                 str(folders["wan2.2-ti2v"]), "--out-dir", str(out), "--seed", "5", *tiny])
    assert r.exit_code == 0, r.output
    recs = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [x["status"] for x in recs] == ["done", "done"]
    firsts = [latents_of(Path(x["output"]))[:, :, :1] for x in recs]
    assert not torch.equal(firsts[0], firsts[1])  # each item pinned its own image
    r = CliRunner().invoke(app, ["batch", str(prompts), "--config", "wan", "--checkpoint", str(folders["wan"]),
                                 "--out-dir", str(tmp_path / "o2"), *tiny])
    assert r.exit_code != 0 and not (tmp_path / "o2").exists()


def test_an_interrupted_image_run_resumes_bitwise(folders, ti2v, tmp_path):
    """SIGINT while the image's frame is still pinned in the queue, then --resume: the anchor is encoded again from
    the image (its sha256 is in the resume hash) and the video equals an uninterrupted run's, bitwise."""
    import os
    import signal

    from fifo_longvid.errors import StateMismatch
    from fifo_longvid.fifo.state import state_path

    img = image_file(tmp_path / "img.png", 32)
    folder = folders["wan2.2-ti2v"]
    tiny = ["sampling.height=32", "sampling.width=32", "fifo.window=4", "fifo.partitions=2", "fifo.num_frames=21"]

    def run(out, *extra, progress=None):
        flags = {"model": "wan", "checkpoint": str(folder), "prompts": [PROMPT], "output.path": str(out)}
        cfg = build_run_config(flags=flags, overrides=["sampling.seed=3", "output.save_latents=true",
                                                       f"conditioning.image={img}", *tiny, *extra])
        return pipeline.generate(cfg, model=ti2v, log=lambda m: None, progress=progress)

    def stop(task, done, total):
        if task == "fifo" and done == 2:  # the pinned frame has not left the queue yet (a queue of 8 slots)
            os.kill(os.getpid(), signal.SIGINT)

    out = tmp_path / "cut.mp4"
    part = run(out, progress=stop)
    assert part.partial and state_path(out).exists()
    resumed = run(out, "output.resume=true")
    uncut = run(tmp_path / "uncut.mp4")
    assert not resumed.partial and resumed.frames == uncut.frames == 21
    assert torch.equal(latents_of(out), latents_of(tmp_path / "uncut.mp4"))
    assert run(tmp_path / "cut2.mp4", progress=stop).partial
    image_file(img, 32, seed=4)  # the same path, another image: its run cannot be continued
    with pytest.raises(StateMismatch, match="(?i)image|setting|hash"):
        run(tmp_path / "cut2.mp4", "output.resume=true")

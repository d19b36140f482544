"""The fifo-gen command line: a smoke run per command, and a clear error + non-zero exit for bad input."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from fifo_longvid.backends import load_backend
from fifo_longvid.cli.main import app, main
from fifo_longvid.io.video import read_video

runner = CliRunner()
SMALL = ["--config", "tiny", "--height", "64", "--width", "64", "--seed", "3"]


def invoke(args):
    return runner.invoke(app, args)


def test_help_lists_commands_and_options():
    r = invoke(["--help"])
    assert r.exit_code == 0 and "generate" in r.output and "download" in r.output and "convert" in r.output
    r = invoke(["generate", "--help"])
    assert r.exit_code == 0
    for opt in ("--prompt", "--num-frames", "--partitions", "--lookahead", "--init", "--max-batch", "--resume"):
        assert opt in r.output


def test_default_command_is_generate(monkeypatch):
    seen = {}
    monkeypatch.setattr("fifo_longvid.cli.main.app", lambda args, prog_name: seen.setdefault("args", args))
    main(["--prompt", "x", "--config", "tiny"])
    assert seen["args"][:2] == ["generate", "--prompt"]


def test_base_mode_writes_mp4_and_sidecar(tmp_path):
    out = tmp_path / "fox.mp4"
    r = invoke(["generate", "--prompt", "a red fox running", *SMALL, "--mode", "base", "--steps", "3",
                "-o", str(out)])
    assert r.exit_code == 0, r.output
    frames = read_video(out)
    assert frames.shape == (8, 64, 64, 3)  # the tiny preset's window
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["prompt"] == "a red fox running" and meta["seed"] == 3 and meta["mode"] == "base"
    assert meta["config"]["sampling"]["steps"] == 3 and meta["checkpoint_id"] == "recipe:tiny"
    # existing output without --overwrite: refused, old file untouched
    before = out.read_bytes()
    r = invoke(["generate", "--prompt", "a red fox running", *SMALL, "--mode", "base", "-o", str(out)])
    assert r.exit_code != 0 and "--overwrite" in r.output and out.read_bytes() == before


@pytest.mark.parametrize("preset,px,channels,latent_frames,frames,sampler", [
    ("tiny", 64, 4, 4, 4, "DDIM"),
    ("tiny_animatediff", 32, 4, 4, 4, "DDIM"),
    ("tiny_wan", 32, 16, 4, 13, "flow-matching"),  # Wan's causal VAE: 1 + 4 x 3 frames from 4 latent frames
])
def test_base_mode_saves_latents_and_frames_and_names_its_sampler(tmp_path, preset, px, channels, latent_frames,
                                                                  frames, sampler):
    """--mode base honours --save-latents and --save-frames as FIFO mode does (same names and format), and its
    log and progress lines name the schedule's sampler, not always DDIM."""
    out = tmp_path / "clip.mp4"
    r = invoke(["generate", "--prompt", "a red fox running", "--config", preset, "--height", str(px), "--width",
                str(px), "--seed", "3", "--mode", "base", "--steps", "2", "--save-latents", "--save-frames",
                "-o", str(out), f"fifo.window={latent_frames}"])
    assert r.exit_code == 0, r.output
    video = read_video(out)
    assert video.shape == (frames, px, px, 3)
    z = load_file(str(tmp_path / "clip.latents.safetensors"))["latents"]
    assert z.dtype == torch.float32 and z.shape[:3] == (1, channels, latent_frames) and torch.isfinite(z).all()
    pngs = sorted((tmp_path / "clip_frames").iterdir())
    assert [p.name for p in pngs] == [f"{k:05d}.png" for k in range(frames)]
    stills = np.stack([iio.imread(p) for p in pngs])
    decoded = load_backend(preset, device="cpu", dtype="fp32").decode_latents(z)[0]  # the PNGs: exactly these
    assert np.array_equal(stills, ((decoded.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(1, 2, 3, 0).numpy())
    assert f"2 {sampler} steps" in r.output and f"base clip ({sampler} steps): 2/2" in r.output
    assert sampler == "DDIM" or "DDIM" not in r.output


def test_fifo_base_clip_progress_names_the_sampler():
    """The FIFO base clip reports its steps under the same sampler-named task as --mode base."""
    from fifo_longvid.diffusion.flow import flow_schedule_from_config
    from fifo_longvid.diffusion.schedule import make_ddim_schedule
    from fifo_longvid.run.fifo_run import base_clip_progress

    seen = []
    ddim = make_ddim_schedule(torch.linspace(0.99, 0.01, 1000), 4)
    base_clip_progress(lambda *a: seen.append(a), ddim)(1, 4)
    base_clip_progress(lambda *a: seen.append(a), flow_schedule_from_config({}, 4))(2, 4)
    assert seen == [("base clip (DDIM steps)", 1, 4), ("base clip (flow-matching steps)", 2, 4)]
    assert base_clip_progress(None, ddim) is None


def test_fifo_gif_with_override(tmp_path):
    out = tmp_path / "swim.gif"
    r = invoke(["generate", "--prompt", "a person swimming", *SMALL, "--num-frames", "3", "-o", str(out),
                "fifo.window=4", "sampling.cfg=7.5"])
    assert r.exit_code == 0, r.output
    assert read_video(out).shape[0] == 3
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["config"]["sampling"]["cfg"] == 7.5 and meta["config"]["fifo"]["window"] == 4


@pytest.mark.parametrize("args,needle", [
    (["--prompt", "", "--config", "tiny"], "empty prompt"),
    (["--prompt", "x", "--config", "tiny", "--height", "100"], "multiple of 64"),
    (["--prompt", "x", "--config", "no_such_model"], "unknown model config 'no_such_model'"),
    (["--prompt", "x", "--config", "tiny", "sampling.cfgg=3"], "cfgg"),
    (["--prompt", "x", "--config", "tiny", "notakeyvalue"], "key=value"),
    (["--prompt", "x", "--config", "tiny", "--num-frames", "0"], "num-frames must be >= 1"),
    (["--prompt", "x", "--config", "tiny", "--partitions", "0"], "partitions must be >= 1"),
    (["--prompt", "x", "--config", "tiny", "--steps", "7"], "--steps 7 fits no block with window 8"),
    (["--prompt", "x", "--config", "tiny", "fifo.window=3"], "even window"),
    (["--prompt", "x", "--config", "videocrafter2", "--checkpoint", "/nonexistent/model.ckpt"],
     "checkpoint not found"),
])
def test_bad_input_exits_with_clear_message(tmp_path, args, needle):
    out = tmp_path / "o.mp4"
    r = invoke(["generate", *args, "-o", str(out)])
    assert r.exit_code != 0
    assert needle in r.output.replace("\n", " ") or needle in r.output
    assert "Traceback" not in r.output
    assert not out.exists() and not list(tmp_path.iterdir())


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = invoke(["generate", "--prompt", "x", "--config", "tiny", "-o", str(blocker / "sub" / "o.mp4")])
    assert r.exit_code != 0 and "Traceback" not in r.output and "director" in r.output.lower()


def test_nan_latents_stop_and_name_the_step(tiny_model, tmp_path):
    sd = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    sd["model.diffusion_model.out.2.bias"][0] = float("nan")
    ckpt = tmp_path / "nan.safetensors"
    save_file(sd, str(ckpt))
    out = tmp_path / "o.mp4"
    r = invoke(["generate", "--prompt", "x", *SMALL, "--checkpoint", str(ckpt), "-o", str(out)])
    assert r.exit_code != 0
    assert "NaN/inf in the latents at base sampling step 1" in r.output.replace("\n", " ")
    assert not out.exists()


def test_convert_command(tiny_model, tmp_path):
    src = tmp_path / "m.ckpt"
    torch.save({"state_dict": tiny_model.state_dict()}, src)
    r = invoke(["convert", str(src), str(tmp_path / "m.safetensors"), "--half"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.safetensors").exists()
    r = invoke(["convert", str(tmp_path / "missing.ckpt"), str(tmp_path / "n.safetensors")])
    assert r.exit_code != 0 and "not found" in r.output


def test_download_without_network_explains(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(**kw):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    r = invoke(["download", "--dest", str(tmp_path)])
    assert r.exit_code != 0
    text = r.output.replace("\n", " ")
    assert "VideoCrafter/VideoCrafter2" in text and "model.ckpt" in text

"""Wan2.2-TI2V-5B under FIFO (issue #31, part 1) on tiny folders written by diffusers' own ``save_pretrained``:
recognition from configs, the per-frame network against diffusers' per-token forward, ``--mode base`` against
``WanPipeline(expand_timesteps=True)``, the 2.2 VAE (patch 2, residual) streamed one latent at a time, the CLI,
and the refusal of I2V-A14B folders."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from fifo_longvid.backends import family_for, load_backend
from fifo_longvid.backends.wan.load import read_variant
from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
from fifo_longvid.diffusion.sampling import sample_clip
from fifo_longvid.io.video import read_video

PROMPT = "a red circle bouncing"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def folders(wan_folders):
    return wan_folders  # the session's tiny folders (conftest), written once for every Wan test file


@pytest.fixture(scope="module")
def ti2v(folders):
    return load_backend("wan", folders["wan2.2-ti2v"], "cpu", "fp32")


def fifo_gen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fifo_longvid", *args], capture_output=True, text=True, timeout=300)


# -- recognition -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, experts, channels, factor", [("wan2.2-ti2v", 1, 48, 16), ("wan2.2-a14b", 2, 16, 8)])
def test_folders_are_recognised_and_sizes_equal_the_loaded_model(folders, kind, experts, channels, factor):
    folder = folders[kind]
    v = read_variant(folder)
    assert v.name == kind and v.experts == experts
    sizes = family_for("wan").sizes("wan", folder)  # configs only
    model = load_backend("wan", folder, "cpu", "fp32")
    assert model.release.name == sizes.release == kind and model.experts == sizes.experts == experts
    assert (sizes.latent_factor, sizes.size_multiple, sizes.temporal_factor, sizes.channels) == \
        (model.latent_factor, model.size_multiple, model.temporal_factor, model.cfg.channels)
    assert (sizes.latent_factor, sizes.channels) == (factor, channels)
    if kind == "wan2.2-ti2v":
        assert sizes.image_input == "first_frame" and sizes.size_multiple == 32
        assert (sizes.latent_size, sizes.num_frames, sizes.window, sizes.cfg) == ((44, 80), 121, 30, 5.0)
    else:
        assert (sizes.cfg, sizes.cfg_2) == (4.0, 3.0)


# -- the network -----------------------------------------------------------------------------------------
def test_per_frame_network_equals_diffusers_per_token_forward(ti2v):
    """At 64x64 px (latent 4x4: 2x2 tokens per frame), including a frame at t = 0 (an image frame of TI2V)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 48, 3, 4, 4, generator=g)
    ctx = torch.randn(2, *ti2v.context_shape, generator=g)
    net = ti2v.unet
    with torch.no_grad():
        for t in (torch.tensor([[0.0, 750.0, 750.0], [0.0, 333.3, 333.3]]),
                  torch.tensor([[999.0, 500.0, 12.5], [640.0, 90.0, 980.0]]), 421.0):
            assert rel(net(x, t, ctx), net.forward_diffusers(x, t, ctx)) < 1e-6
        pinned = net(x, torch.tensor([[0.0, 750.0, 750.0]] * 2), ctx)
        uniform = net(x, torch.tensor([[750.0] * 3] * 2), ctx)
    assert rel(pinned, uniform) > 1e-4  # the zero on frame 0 matters: the comparison is not vacuous


def test_base_clip_equals_diffusers_wan_pipeline_with_expand_timesteps(folders, ti2v):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    folder = folders["wan2.2-ti2v"]
    steps, scale, frames = 5, 5.0, 9  # 9 output frames = 3 latent frames
    shift = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["flow_shift"]
    pipe = WanPipeline.from_pretrained(folder)
    assert pipe.config.expand_timesteps
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    pipe.set_progress_bar_config(disable=True)
    x_T = torch.randn(1, 48, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    want = pipe(PROMPT, negative_prompt="", height=64, width=64, num_frames=frames, num_inference_steps=steps,
                guidance_scale=scale, latents=x_T.clone(), output_type="latent",
                max_sequence_length=ti2v.context_shape[0]).frames
    den = cfg_denoiser(unet_network(ti2v.unet, 8), ti2v.encode_text([PROMPT]), ti2v.encode_text([""]), scale)
    got = sample_clip(den, x_T, ti2v.schedule(steps))
    assert rel(got, want) < 1e-5


# -- the 2.2 VAE (patch 2, residual) ---------------------------------------------------------------------
def test_streamed_vae22_decode_equals_one_shot_in_constant_memory(ti2v):
    from fifo_longvid.backends.wan.vae import unnormalise

    vae = ti2v.vae
    assert vae.config.patch_size == 2 and vae.config.is_residual
    z = torch.randn(1, 48, 8, 4, 4, generator=torch.Generator().manual_seed(3))
    dec = ti2v.frame_decoder()
    parts, sizes = [], {}
    for i in range(8):
        parts.append(dec.decode(z[:, :, i : i + 1]))
        sizes[i + 1] = dec.cache_bytes()
    assert [p.shape[2] for p in parts] == [1] + [4] * 7 and parts[0].shape[-2:] == (64, 64)
    with torch.no_grad():
        one_shot = vae.decode(unnormalise(vae, z), return_dict=False)[0]
    assert one_shot.shape == (1, 3, 29, 64, 64)
    assert rel(torch.cat(parts, dim=2), one_shot) < 1e-5
    assert sizes[3] == sizes[8] > 0
    dec.reset()
    assert torch.equal(dec.decode(z[:, :, :1]), parts[0])


# -- the CLI ---------------------------------------------------------------------------------------------
def _cli(folder, out, *extra: str) -> list[str]:
    return ["--config", "wan", "--checkpoint", str(folder), "--prompt", PROMPT, "--height", "32", "--width", "32",
            "--partitions", "2", "--num-frames", "13", "--seed", "3", "fifo.window=4", "--save-latents", "-o",
            str(out), *extra]


def test_cli_on_a_ti2v_folder_writes_the_asked_frames_reproducibly(folders, tmp_path):
    folder = folders["wan2.2-ti2v"]
    latents = []
    for run in ("a", "b"):
        out = tmp_path / run / "v.mp4"
        r = fifo_gen(*_cli(folder, out))
        assert r.returncode == 0, r.stderr
        assert read_video(out).shape == (13, 32, 32, 3)
        side = json.loads(out.with_suffix(".json").read_text())
        assert side["frames_written"] == 13 and side["config"]["sampling"]["cfg"] == 5.0
        saved = sorted(out.parent.glob("*.safetensors"))
        assert saved, list(out.parent.iterdir())
        latents.append(load_file(saved[0]))
    assert latents[0].keys() == latents[1].keys()
    for k in latents[0]:
        assert torch.equal(latents[0][k], latents[1][k])
    (z,) = latents[0].values()
    assert z.shape == (1, 48, 4, 2, 2)  # 13 frames = 4 latent frames of TI2V's 48 channels, 32 px / 16


def test_cli_refuses_a_side_that_is_not_a_multiple_of_32(folders, tmp_path):
    out = tmp_path / "v.mp4"
    r = fifo_gen(*_cli(folders["wan2.2-ti2v"], out, "--height", "48"))
    assert r.returncode == 2 and "multiple of 32" in r.stderr and "32 or 64" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_i2v_a14b_folder_is_refused_in_one_sentence(folders, tmp_path):
    out = tmp_path / "v.mp4"
    r = fifo_gen(*_cli(folders["wan2.2-i2v-a14b"], out))
    assert r.returncode == 2 and r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "WanImageToVideoPipeline" in errors[0] and "36 input channels" in errors[0], r.stderr
    assert "TI2V-5B" in errors[0] and "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())


# -- downloads and plan ----------------------------------------------------------------------------------
def test_wan22_downloads_go_to_their_own_folders_and_say_what_to_fetch_offline(monkeypatch, tmp_path):
    import huggingface_hub

    from fifo_longvid.backends import download
    from fifo_longvid.backends.wan.download import HUB_FILES

    seen = []

    def offline(**kwargs):
        seen.append(kwargs)
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    for model, repo, sub in (("wan2.2-ti2v-5b", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", "wan2.2-ti2v-5b"),
                             ("wan2.2-t2v-a14b", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", "wan2.2-t2v-a14b"),
                             ("wan", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "wan")):  # Wan2.1 stays where it was
        with pytest.raises(RuntimeError, match=f"(?s)could not download {repo}.*Without network.*{repo}"):
            download(model, tmp_path, log=lambda s: None)
        assert seen[-1]["repo_id"] == repo and seen[-1]["local_dir"] == str(tmp_path / sub)
    assert "transformer_2/*.safetensors" in HUB_FILES and "transformer_2/*.json" in HUB_FILES
    r = fifo_gen("download", "--list")
    assert r.returncode == 0 and {"wan", "skyreels-df", "wan2.2-ti2v-5b", "wan2.2-t2v-a14b"} <= set(r.stdout.split())


@pytest.mark.parametrize("release, frame, guidance", [
    ("wan2.2-ti2v", "704x1280, window 30 x 2 partitions", "guidance 5;"),
    ("wan2.2-a14b", "480x832, window 20 x 4 partitions", "guidance 4 (high-noise expert) / 3 (low-noise expert)")])
def test_plan_on_a_release_folder_shows_its_geometry_guidance_and_peaks(tmp_path, release, frame, guidance):
    """Plan needs no weights: a folder of the release's configs (``full.write_config_folder``) is enough."""
    from fifo_longvid.backends.wan.full import write_config_folder

    folder = write_config_folder(tmp_path / release, release)
    peaks = {}
    for gb in (24, 80):
        r = fifo_gen("plan", "--config", "wan", "--checkpoint", str(folder), "--gpu-memory", str(gb), "--dtype",
                     "bf16", "--json")
        assert r.returncode == 0, r.stderr
        p = json.loads(r.stdout)
        peaks[gb] = (p["peak_gib"], p["fits"])
        r = fifo_gen("plan", "--config", "wan", "--checkpoint", str(folder), "--gpu-memory", str(gb), "--dtype",
                     "bf16")
        assert frame in r.stderr and guidance in r.stderr, r.stderr
    if release == "wan2.2-ti2v":
        assert peaks[24][1] and peaks[80][1] and peaks[24][0] < 24
        assert "host memory for the weights" not in r.stderr
    else:  # placed as Wan.place places them: both experts stream on 24 GB, the low-noise one on 80 GB
        assert peaks[24][1] and peaks[80][1] and peaks[24][0] < 24 and 26.6 < peaks[80][0] < 80
        assert "host memory for the weights: 74.5 GiB (2 experts" in r.stderr
        assert "experts on the card: 1 of 2; 1 streams from host memory" in r.stderr

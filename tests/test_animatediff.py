"""The AnimateDiff backend through diffusers: per-frame timesteps, the peer check against diffusers' own
pipeline, loading the folders diffusers writes, and FIFO with the techniques on it (tiny random weights)."""

from __future__ import annotations

import json

import imageio.v3 as iio
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from fifo_longvid.backends import load_backend
from fifo_longvid.backends.animatediff.attention import PlainProcessor
from fifo_longvid.backends.animatediff.load import load_motion_adapter
from fifo_longvid.backends.animatediff.tiny import TINY_SCHEDULER, tiny_components
from fifo_longvid.backends.base import CheckpointError, mirror_pairs
from fifo_longvid.cli.main import app
from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
from fifo_longvid.diffusion.sampling import sample_ddim

from .test_accel import ALL, config, rel, run

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def parts():
    return tiny_components()


@pytest.fixture(scope="module")
def model():
    return load_backend("tiny_animatediff", device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def folders(parts, tmp_path_factory):
    """An AnimateDiffPipeline folder, an SD-1.5 folder and a MotionAdapter folder, written by diffusers itself."""
    from diffusers import AnimateDiffPipeline, DDIMScheduler, StableDiffusionPipeline

    root = tmp_path_factory.mktemp("ad")
    sched = DDIMScheduler(**TINY_SCHEDULER)
    common = {k: parts[k] for k in ("vae", "text_encoder", "tokenizer")}
    AnimateDiffPipeline(unet=parts["unet"], motion_adapter=parts["motion_adapter"], scheduler=sched,
                        **common).save_pretrained(root / "pipeline")
    StableDiffusionPipeline(unet=parts["unet"], scheduler=sched, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False, **common).save_pretrained(root / "sd15")
    parts["motion_adapter"].save_pretrained(root / "adapter")
    return root


def _motion(parts):
    from diffusers import UNetMotionModel

    return UNetMotionModel.from_unet2d(parts["unet"], parts["motion_adapter"]).eval()


# -- per-frame timesteps ---------------------------------------------------------------------------------------
@torch.no_grad()
def test_equal_timesteps_equal_unet_motion_model(model):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 16, 16, generator=g)
    ctx = model.encode_text(["a red fox", ""])
    t = torch.tensor([700, 310])
    ref = model.unet.motion(x, t, encoder_hidden_states=ctx.repeat_interleave(8, dim=0)).sample
    ours = model.unet(x, t, ctx)
    ours_table = model.unet(x, t[:, None].expand(2, 8), ctx)  # the same timesteps as a (B, F) table
    # not bitwise: the time-embedding MLP runs on B*F rows instead of B (its matmul differs by ~1e-7 with the row
    # count); everything after it is the same diffusers blocks in the same order
    for y in (ours, ours_table):
        assert rel(y, ref) <= 1e-6 and (y - ref).abs().max() <= 1e-5


@torch.no_grad()
def test_per_frame_timesteps_with_identity_motion_modules(parts):
    """Motion modules made identity (zero output projection: residual only) -> frames are independent, so each
    frame of a per-frame-timestep forward equals a uniform-timestep forward at that frame's own t."""
    from fifo_longvid.backends.animatediff.network import MotionUNet

    motion = _motion(parts)
    for name, p in motion.named_parameters():
        if ".motion_modules." in f".{name}" and ".proj_out." in name:
            p.zero_()
    net = MotionUNet(motion)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 6, 16, 16, generator=g)
    ctx = torch.randn(1, 77, 32, generator=g)
    t = torch.tensor([[990, 800, 600, 400, 200, 1]])
    per_frame = net(x, t, ctx)
    for k in range(6):
        uniform = net(x, t[:, k], ctx)
        assert (per_frame[:, :, k] - uniform[:, :, k]).abs().max() <= 1e-5
    # with the motion modules at work the frames talk to each other: the per-frame table matters
    live = MotionUNet(_motion(parts))
    assert (live(x, t, ctx)[:, :, 2] - live(x, t[:, 2], ctx)[:, :, 2]).abs().max() > 1e-4


# -- peer check ---------------------------------------------------------------------------------------------
@torch.no_grad()
def test_base_clip_equals_animatediff_pipeline(parts, model):
    """A 16-frame base clip through our DDIM and guidance equals diffusers' AnimateDiffPipeline with DDIMScheduler,
    eta = 0, from the same initial latents."""
    from diffusers import AnimateDiffPipeline, DDIMScheduler

    pipe = AnimateDiffPipeline(unet=parts["unet"], motion_adapter=parts["motion_adapter"], vae=parts["vae"],
                               text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"],
                               scheduler=DDIMScheduler(**TINY_SCHEDULER))
    pipe.set_progress_bar_config(disable=True)
    x_T = torch.randn(1, 4, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    steps, scale, prompt = 8, 7.5, "a red fox running"
    theirs = pipe(prompt, num_frames=16, height=32, width=32, num_inference_steps=steps, guidance_scale=scale,
                  eta=0.0, latents=x_T.clone(), output_type="latent").frames
    den = cfg_denoiser(unet_network(model.unet), model.encode_text([prompt]), model.encode_text([""]), scale)
    ours = sample_ddim(den, x_T, model.ddim_schedule(steps, 0.0), use_scale=False)
    assert theirs.shape == ours.shape
    assert rel(ours, theirs) < 1e-5, rel(ours, theirs)


def test_schedule_follows_the_folder_config(model):
    sch = model.ddim_schedule(16)
    from diffusers import DDIMScheduler

    ref = DDIMScheduler(**TINY_SCHEDULER)
    ref.set_timesteps(16)
    assert sch.timestep_list == tuple(reversed(ref.timesteps.tolist()))
    assert sch.alphas_prev[0] == ref.alphas_cumprod[0]  # set_alpha_to_one false: the first alpha, not 1
    bad = dict(TINY_SCHEDULER, prediction_type="v_prediction")
    from fifo_longvid.backends.animatediff.model import ddim_schedule_from_config

    with pytest.raises(ValueError, match="epsilon"):
        ddim_schedule_from_config(bad, 16)


def test_sizes_come_from_the_configs(model):
    assert model.latent_factor == 2  # two VAE blocks
    assert model.size_multiple == 4  # and one U-Net downsampling
    assert model.max_window == 32  # the motion modules' positional table
    assert model.context_shape == (77, 32)


# -- loading ------------------------------------------------------------------------------------------------
@torch.no_grad()
def test_folders_load_to_the_same_network(folders, model):
    a = load_backend("animatediff", folders / "pipeline", device="cpu", dtype="fp32")
    b = load_backend("animatediff", folders / "sd15", device="cpu", dtype="fp32",
                     motion_adapter=folders / "adapter")
    x = torch.randn(1, 4, 8, 16, 16, generator=torch.Generator().manual_seed(3))
    ctx = model.encode_text(["x"])
    ya, yb, yt = (m.unet(x, torch.tensor([500]), ctx) for m in (a, b, model))
    assert torch.equal(ya, yb) and torch.equal(ya, yt)
    assert a.describe()["layout"] == "AnimateDiffPipeline folder" and a.describe()["latent_factor"] == 2


def test_original_motion_module_file_loads(parts, tmp_path):
    """An original AnimateDiff motion-module file (``temporal_transformer``/``attention_blocks`` keys, with
    ``pos_encoder.pe``), read safely and converted to the same MotionAdapter weights."""
    sd = {k: v for k, v in parts["motion_adapter"].state_dict().items() if "pos_embed" not in k}  # recomputed
    original = {}
    for k, v in sd.items():
        head, _, rest = k.partition(".motion_modules.")
        j, _, tail = rest.partition(".")
        tail = (tail.replace("attn1", "attention_blocks.0").replace("attn2", "attention_blocks.1")
                .replace("norm1", "norms.0").replace("norm2", "norms.1").replace("norm3", "ff_norm"))
        original[f"{head}.motion_modules.{j}.temporal_transformer.{tail}"] = v
        if tail.endswith("attention_blocks.0.to_q.weight"):
            original[f"{head}.motion_modules.{j}.temporal_transformer.{tail[:-len('to_q.weight')]}pos_encoder.pe"] = (
                torch.zeros(1, 24, v.shape[1]))
    path = tmp_path / "mm_tiny.safetensors"
    save_file(original, str(path))
    adapter = load_motion_adapter(path)
    assert adapter.config.motion_max_seq_length == 24
    assert all(torch.equal(adapter.state_dict()[k], v) for k, v in sd.items())
    save_file({"foo": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match="not an AnimateDiff motion-module file"):
        load_motion_adapter(tmp_path / "bad.safetensors")


def test_loading_errors_are_actionable(folders, tmp_path):
    with pytest.raises(CheckpointError, match="--motion-adapter"):
        load_backend("animatediff", folders / "sd15", device="cpu")
    with pytest.raises(CheckpointError, match="drop --motion-adapter"):
        load_backend("animatediff", folders / "pipeline", device="cpu", motion_adapter=folders / "adapter")
    with pytest.raises(CheckpointError, match="not a diffusers"):
        load_backend("animatediff", tmp_path, device="cpu")
    with pytest.raises(CheckpointError, match="needs weights"):
        load_backend("animatediff", None, device="cpu")


# -- Q-cache pairing ----------------------------------------------------------------------------------------
def test_qcache_pairs_follow_the_skip_connections(model):
    pairs = {d.path: e.path for d, e in mirror_pairs(model.unet.attention_sites(), "temporal_attn1").items()}
    # up block 1 (full resolution) receives the skips of down block 0's layers (and conv_in, which has none)
    assert pairs["up_blocks.1.motion_modules.0.transformer_blocks.0.attn1"] == \
        "down_blocks.0.motion_modules.1.transformer_blocks.0.attn1"
    assert pairs["up_blocks.1.motion_modules.1.transformer_blocks.0.attn1"] == \
        "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1"
    assert pairs["up_blocks.0.motion_modules.0.transformer_blocks.0.attn1"] == \
        "down_blocks.1.motion_modules.1.transformer_blocks.0.attn1"
    assert len(pairs) == 6  # every decoder motion module has a partner at its level


# -- FIFO with the techniques ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plain(model):
    with torch.no_grad():
        return run(model, None, 8)


@torch.no_grad()
def test_techniques_off_are_bitwise_plain(model, plain):
    from fifo_longvid.techniques import TechniquesConfig

    assert torch.equal(run(model, TechniquesConfig(), 8).outs, plain.outs)
    for name, always in (("qcache", {"v": 0.0}), ("cfg_cache", {"every": 1}), ("deepcache", {"every": 1}),
                         ("tgate", {"gate": 1.0})):
        assert torch.equal(run(model, config(**{name: always}), 8).outs, plain.outs), name
    assert all(isinstance(h.processor, PlainProcessor) for _, h in model.unet.attention_sites())


@pytest.mark.parametrize("name", ["qcache", "tgate", "attn_reuse", "cfg_cache", "deepcache"])
@torch.no_grad()
def test_each_technique_changes_the_output(model, plain, name):
    on = {"qcache": {"v": 0.9}, **ALL}[name]
    r = run(model, config(**{name: on}), 8)
    assert torch.isfinite(r.outs).all() and 0 < rel(r.outs, plain.outs) < 1.0
    if name in ("tgate", "cfg_cache", "deepcache"):
        assert sum(r.samples) < sum(plain.samples) or name == "deepcache"
    assert all(isinstance(h.processor, PlainProcessor) for _, h in model.unet.attention_sites())


# -- the command line -----------------------------------------------------------------------------------------
def _gen(tmp_path, name, *args):
    out = tmp_path / f"{name}.mp4"
    options = [a for a in args if "=" not in a] + [a for a in args if "=" in a]  # key=value overrides go last
    r = CliRunner().invoke(app, ["generate", "--prompt", "a red fox running", "--seed", "3", "--num-frames", "24",
                                 "--save-latents", "-o", str(out), *options])
    assert r.exit_code == 0, r.output
    return out, load_file(str(out.with_suffix(".latents.safetensors")))["latents"]


@pytest.mark.slow
def test_cli_fifo_on_diffusers_folders(folders, tmp_path):
    """24-frame FIFO videos from the folders diffusers wrote (64x64 px, the default size); the SD-1.5 folder +
    --motion-adapter gives the same video as the pipeline folder; --qcache 0.9 and --tgate each change it."""
    small = ["--partitions", "1", "fifo.window=8"]  # (CPU time: 8 DDIM steps)
    out, z = _gen(tmp_path, "pipe", "--config", "animatediff", "--checkpoint", str(folders / "pipeline"), *small)
    assert iio.imread(out).shape[:3] == (24, 64, 64)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["model"]["family"] == "animatediff" and side["config"]["sampling"]["cfg"] == 7.5
    _, z_sd = _gen(tmp_path, "sd", "--config", "animatediff", "--checkpoint", str(folders / "sd15"),
                   "--motion-adapter", str(folders / "adapter"), *small)
    assert torch.equal(z, z_sd)
    px32 = ["--height", "32", "--width", "32"]  # the techniques at a quarter of the pixels, against plain at 32x32
    _, z32 = _gen(tmp_path, "pipe32", "--config", "animatediff", "--checkpoint", str(folders / "pipeline"), *small,
                  *px32)
    for name, flags in (("qcache", ["--qcache", "0.9"]), ("tgate", ["--tgate"])):
        out_t, z_t = _gen(tmp_path, name, "--config", "animatediff", "--checkpoint", str(folders / "pipeline"),
                          *small, *px32, *flags)
        assert z_t.shape == z32.shape and not torch.equal(z_t, z32) and torch.isfinite(z_t).all()
        side = json.loads(out_t.with_suffix(".json").read_text())
        assert name in side["techniques"]
        if name == "qcache":
            assert side["techniques"]["qcache"]["pairs"]  # the derived encoder -> decoder pairing


def test_cli_tiny_animatediff_and_refusals(tmp_path):
    out, z = _gen(tmp_path, "tiny", "--config", "tiny_animatediff", "--height", "32", "--width", "32",
                  "--partitions", "1")
    assert iio.imread(out).shape[:3] == (24, 32, 32) and z.shape[2] == 24
    for args, message in ((["fifo.window=40"], "positional table"), (["--image", str(out)], "image encoder"),
                          (["--height", "30"], "multiple of 4")):
        r = CliRunner().invoke(app, ["generate", "--prompt", "x", "--config", "tiny_animatediff", *args,
                                     "-o", str(tmp_path / "r.mp4")])
        assert r.exit_code != 0 and message in r.output, r.output


# -- resume and batch runs: the generic machinery on the second family -------------------------------------------
SMALL = ["fifo.window=4", "fifo.partitions=2", "sampling.height=32", "sampling.width=32", "sampling.seed=7",
         "sampling.eta=1.0", "output.save_latents=true"]


def _run(model, out, extra=(), progress=None):
    from fifo_longvid.run import pipeline
    from fifo_longvid.run.config import build_run_config

    cfg = build_run_config(flags={"model": "tiny_animatediff", "prompts": ["a red fox running"],
                                  "output.path": str(out)}, overrides=SMALL + list(extra))
    return pipeline.generate(cfg, model=model, progress=progress, log=lambda m: None)


def test_interrupt_then_resume_with_tgate_equals_uninterrupted(model, tmp_path):
    import os
    import signal

    extra = ["fifo.num_frames=6", "techniques.tgate.enabled=true", "output.checkpoint_every=2"]
    full = _run(model, tmp_path / "full", extra)
    assert full.frames == 6 and not full.partial

    def interrupt(task, done, total):
        if task == "fifo" and done == 8:
            os.kill(os.getpid(), signal.SIGINT)

    part = _run(model, tmp_path / "cut", extra, progress=interrupt)
    assert part.partial and 0 < part.frames < 6
    resumed = _run(model, tmp_path / "cut", extra + ["output.resume=true"])
    assert resumed.frames == 6 and not resumed.partial
    a = load_file(str((tmp_path / "full").with_suffix(".latents.safetensors")))["latents"]
    b = load_file(str((tmp_path / "cut").with_suffix(".latents.safetensors")))["latents"]
    assert torch.equal(a, b)


def test_cli_batch_on_tiny_animatediff(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox running\na blue car\n")
    r = CliRunner().invoke(app, ["batch", str(prompts), "--config", "tiny_animatediff", "--num-frames", "2",
                                 "--out-dir", str(tmp_path / "out"), "--seed", "5", "--height", "32", "--width", "32",
                                 "fifo.window=4", "fifo.partitions=1"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "out").glob("*.mp4"))) == 2


@pytest.mark.parametrize("setting", ["fifo.init=uniform", "fifo.init=noise", "fifo.tail.mode=coherent",
                                     "fifo.tail.mode=rescheduled", "fifo.lookahead=false"])
def test_init_tail_and_lookahead_modes_run(model, tmp_path, setting):
    extra = ["fifo.num_frames=3", setting] + (["fifo.window=3"] if "lookahead" in setting else [])
    r = _run(model, tmp_path / "v", extra)
    z = load_file(str((tmp_path / "v").with_suffix(".latents.safetensors")))["latents"]
    assert r.frames == 3 and torch.isfinite(z).all()


def test_download_animatediff_without_network_explains(tmp_path, monkeypatch):
    import huggingface_hub

    seen = []

    def offline(**kw):
        seen.append(kw)
        raise OSError("Network is unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    r = CliRunner().invoke(app, ["download", "--model", "animatediff", "--dest", str(tmp_path)])
    text = r.output.replace("\n", " ")
    assert r.exit_code != 0 and "stable-diffusion-v1-5" in text and "by hand" in text
    assert seen[0]["local_dir"] == str(tmp_path / "animatediff" / "sd15")
    assert "unet/diffusion_pytorch_model.safetensors" in seen[0]["allow_patterns"]

"""The toy world: generator, ground-truth metrics, the shipped trained weights, and what they generate."""

from __future__ import annotations

import random

import pytest
import torch

from fifo_longvid.toy.data import ShapeClips, VideoSpec, caption_of, parse_caption, render, sample_shape
from fifo_longvid.toy.metrics import drift_curve, score_video


def _videos(n: int, frames: int, seed: int = 0):
    rng = random.Random(seed)
    for _ in range(n):
        spec = VideoSpec((sample_shape(rng, motion=rng.choice(["left", "right", "up", "down"])),))
        yield render(spec, frames), spec.caption


def test_generator_is_seeded_and_captions_parse():
    a, b = iter(ShapeClips(8, seed=3)), iter(ShapeClips(8, seed=3))
    (va, ca), (vb, cb) = next(a), next(b)
    assert ca == cb and torch.equal(va, vb)
    assert va.shape == (3, 8, 64, 64) and va.min() >= -1 and va.max() <= 1
    t = parse_caption(ca)
    assert caption_of(t.colour, t.shape, t.motion) == ca
    with pytest.raises(ValueError, match="not a toy caption"):
        parse_caption("a person swimming in the ocean")


def test_metrics_score_generator_videos_near_perfect():
    for video, caption in _videos(4, 96):
        s = score_video(video, caption)
        assert s.colour_acc > 0.98 and s.shape_acc > 0.95 and s.direction_acc > 0.98, (caption, s)
        assert s.jerk < 1.0 and s.flicker < 0.01 and s.area_cv < 0.05 and s.presence == 1.0, (caption, s)
        curve = drift_curve(video, caption, segment=32)
        assert len(curve) == 3 and min(c["score"] for c in curve) > 0.95


def test_metrics_score_shuffled_noised_and_mismatched_videos_worse():
    g = torch.Generator().manual_seed(0)
    for video, caption in _videos(3, 96, seed=1):
        clean = score_video(video, caption)
        shuffled = score_video(video[:, torch.randperm(96, generator=g)], caption)
        assert shuffled.direction_acc < 0.75 and shuffled.jerk > 10 * max(clean.jerk, 0.5)
        noised = score_video((video + 0.6 * torch.randn(video.shape, generator=g)).clamp(-1, 1), caption)
        assert noised.score < 0.5 * clean.score and noised.flicker > 20 * max(clean.flicker, 1e-3)
        t = parse_caption(caption)
        other = caption_of("blue" if t.colour != "blue" else "red", t.shape, t.motion)
        assert score_video(video, other).colour_acc < 0.05
        reverse = {"left": "right", "right": "left", "up": "down", "down": "up"}[t.motion]
        assert score_video(video, caption_of(t.colour, t.shape, reverse)).direction_acc < 0.05


def _export_random_toy(path):
    """A toy-architecture file laid out exactly like the shipped one (random weights), and its ShippedWeights."""
    from safetensors.torch import save_file

    from fifo_longvid.backends.videocrafter.load import build_model
    from fifo_longvid.backends.videocrafter.presets import TOY_TEXT_SEED, toy
    from fifo_longvid.backends.videocrafter.shipped import ShippedWeights, file_digest, stored_keys

    cfg = toy()
    model = build_model(cfg, "cpu")
    sd = {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items() if k in stored_keys(model)}
    save_file(sd, str(path), metadata={"scale_factor": repr(cfg.scale_factor), "text_seed": str(TOY_TEXT_SEED),
                                       "text": "trained"})
    return ShippedWeights(path, file_digest(path), TOY_TEXT_SEED)


def test_shipped_weights_load_strictly_and_check_sha256(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    from fifo_longvid.backends.videocrafter import shipped
    from fifo_longvid.backends.videocrafter.load import CheckpointError, load_model

    entry = _export_random_toy(tmp_path / "toy.safetensors")
    monkeypatch.setitem(shipped.SHIPPED, "toy", entry)
    model = load_model("toy", device="cpu")
    sd = load_file(str(entry.path))
    assert set(sd) == shipped.stored_keys(model)
    for k in ("model.diffusion_model.out.2.weight", "first_stage_model.decoder.conv_out.weight"):
        assert torch.equal(model.state_dict()[k], sd[k].float())
    assert sum(p.numel() for p in model.parameters()) < 10_000_000

    data = bytearray(entry.path.read_bytes())  # one flipped byte: refused by sha256
    data[-10] ^= 0xFF
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    monkeypatch.setitem(shipped.SHIPPED, "toy", shipped.ShippedWeights(bad, entry.sha256, entry.text_seed))
    with pytest.raises(CheckpointError, match="sha256"):
        load_model("toy", device="cpu")

    sd.pop("first_stage_model.decoder.conv_out.bias")  # right hash, wrong keys: refused by the strict check
    meta = {"scale_factor": repr(model.cfg.scale_factor), "text_seed": "7", "text": "trained"}
    save_file(sd, str(bad), metadata=meta)
    monkeypatch.setitem(shipped.SHIPPED, "toy", shipped.ShippedWeights(bad, shipped.file_digest(bad), 7))
    with pytest.raises(CheckpointError, match="missing"):
        load_model("toy", device="cpu")


def _shipped_toy_present() -> bool:
    from fifo_longvid.backends.videocrafter.shipped import SHIPPED

    return SHIPPED["toy"].path.exists()


@pytest.fixture(scope="module")
def toy_model():
    from fifo_longvid import load_model

    return load_model("toy", device="cpu")


def _fifo_scores(model, prompt: str, out, seed: int = 0, frames: int = 24, **flags):
    import imageio.v3 as iio

    from fifo_longvid.run.config import build_run_config
    from fifo_longvid.run.pipeline import generate

    cfg = build_run_config(flags={"model": "toy", "device": "cpu", "prompts": [prompt], "fifo.num_frames": frames,
                                  "sampling.seed": seed, "output.path": str(out), **flags})
    generate(cfg, model=model, log=lambda _m: None)
    return score_video(torch.from_numpy(iio.imread(out)), prompt)



# Mean colour accuracy of two 24-frame FIFO videos: the shipped model (12094 U-Net steps; grid colour 0.999) draws
# the prompted colour, the same run with a random U-Net draws none (README "The toy model": motion is not learned).
COLOUR_THRESHOLD = 0.8


@pytest.mark.slow
@pytest.mark.skipif(not _shipped_toy_present(), reason="toy weights not shipped (see README 'The toy model')")
def test_toy_fifo_video_scores_above_random_weights(toy_model, tmp_path):
    """Trained weights draw the prompted colour in FIFO videos; the same runs with a random U-Net do not."""
    import copy

    from fifo_longvid.backends.videocrafter.recipe import recipe_for_model

    def colour(model, tag):
        return sum(_fifo_scores(model, p, tmp_path / f"{tag}{i}.mp4", seed=i).colour_acc
                   for i, p in enumerate(QUALITY_PROMPTS)) / len(QUALITY_PROMPTS)

    trained = colour(toy_model, "trained")
    rand = copy.deepcopy(toy_model)
    rand.unet.load_state_dict(recipe_for_model(rand.unet, 0))
    random_colour = colour(rand, "random")
    assert trained > COLOUR_THRESHOLD > random_colour, (trained, random_colour)


QUALITY_PROMPTS = ("a red circle moving right", "a blue square moving down")
TECHNIQUES = {
    "qcache 0.9": {"techniques.qcache.enabled": True, "techniques.qcache.v": 0.9},
    "tgate": {"techniques.tgate.enabled": True},
    "cfg-cache 3": {"techniques.cfg_cache.enabled": True, "techniques.cfg_cache.every": 3},
    "attn-reuse": {"techniques.attn_reuse.enabled": True},
    "deepcache 3": {"techniques.deepcache.enabled": True, "techniques.deepcache.every": 3},
}
# A technique may cost this much colour, shape or direction accuracy against plain FIFO on the same prompts and
# seeds (README "The toy model": the quality table).
QUALITY_MARGIN = 0.2
# Except where the quality table measured a real cost: TGATE's cached cross-attention rounds the toy's shapes
# (shape 0.73 against plain's 1.00 here on the 12094-step model; in the table it is the one technique that costs
# shape beyond the spread). The margin states that cost, so a TGATE that got worse still fails.
MARGINS = {("tgate", "shape_acc"): 0.35}


def _mean_scores(model, tmp_path, name: str, **flags) -> dict[str, float]:
    runs = [_fifo_scores(model, p, tmp_path / f"{name}{i}.mp4", seed=i, frames=32, **flags)
            for i, p in enumerate(QUALITY_PROMPTS)]
    return {m: sum(getattr(r, m) for r in runs) / len(runs) for m in ("colour_acc", "shape_acc", "direction_acc")}


@pytest.fixture(scope="module")
def plain_quality(toy_model, tmp_path_factory):
    return _mean_scores(toy_model, tmp_path_factory.mktemp("plain"), "plain")


@pytest.mark.slow
@pytest.mark.skipif(not _shipped_toy_present(), reason="toy weights not shipped (see README 'The toy model')")
@pytest.mark.parametrize("name", list(TECHNIQUES))
def test_technique_keeps_toy_quality_within_a_margin_of_plain(toy_model, plain_quality, tmp_path, name):
    got = _mean_scores(toy_model, tmp_path, name, **TECHNIQUES[name])
    print(f"{name}: {got} (plain {plain_quality})")
    for m, v in got.items():
        assert v >= plain_quality[m] - MARGINS.get((name, m), QUALITY_MARGIN), (m, v, plain_quality[m])

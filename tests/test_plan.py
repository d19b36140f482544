"""``fifo-gen plan``: no weights, no GPU; the numbers of issue 25's Done-when and every bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fifo_longvid.cli.main import app
from fifo_longvid.plan import CARDS, card_for, make_plan
from fifo_longvid.run.config import ConfigError, build_run_config

REPO = Path(__file__).resolve().parents[1]
KEYS = {"model", "height", "width", "num_frames", "iterations", "calls_per_frame", "tflop_per_frame", "max_batch",
        "peak_gib", "gpu_gib", "fits", "floor_s_per_frame"}


def plan_json(*args: str) -> dict:
    r = CliRunner().invoke(app, ["plan", "--config", "videocrafter2", "--num-frames", "300", "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_plan_json_for_300_frames_without_weights_or_gpu():
    t0 = time.perf_counter()
    p = plan_json()
    assert time.perf_counter() - t0 < 60
    assert KEYS <= set(p)
    assert p["model"] == "videocrafter2" and (p["height"], p["width"], p["num_frames"]) == (320, 512, 300)
    assert p["tflop_per_frame"] == pytest.approx(202.9, rel=0.03)  # 201.3 U-Net + 1.56 VAE
    assert p["details"]["unet_tflop_per_frame"] == pytest.approx(201.3, rel=0.01)
    assert p["details"]["vae_tflop_per_frame"] == pytest.approx(1.56, rel=0.01)
    assert p["iterations"] == 300 + 48  # init from a base clip drops S - f = 64 - 16 frames
    assert p["fits"] and p["max_batch"] == 16 and p["calls_per_frame"] == 1
    assert p["peak_gib"] == pytest.approx(16.4, abs=0.1)  # the fake-CUDA tracker's plain iteration on 80 GB
    assert 0 < p["floor_s_per_frame"] < 1


def test_the_peak_grows_with_max_batch():
    peaks = [plan_json("--max-batch", str(b))["peak_gib"] for b in (1, 2, 4, 8, 16)]
    assert peaks == sorted(peaks) and len(set(peaks)) == 5


def test_an_8_gib_card_gets_a_batch_that_fits():
    p = plan_json("--gpu-memory", "8")
    assert p["fits"] and p["peak_gib"] <= 8 and p["max_batch"] < 16 and p["gpu_gib"] == 8


def test_a_2_gib_card_does_not_fit_and_the_plan_says_what_would():
    p = plan_json("--gpu-memory", "2")
    assert not p["fits"] and p["advice"] and "card" in p["advice"][-1]
    r = CliRunner().invoke(app, ["plan", "--config", "videocrafter2", "--gpu-memory", "2"])
    assert r.exit_code == 0 and "fits: NO" in r.output and "would fit" in r.output


def test_stores_and_smaller_batches_are_suggested_when_they_would_fit():
    cfg = build_run_config(REPO / "configs" / "fifo_fast.yaml", flags={"model": "videocrafter1_i2v", "prompts": ["x"],
                                                                       "fifo.max_batch": "16"})
    p = make_plan(cfg, card_for("3060", None))
    assert not p.fits and p.details["stores_gib"] > 3
    assert any("--max-batch" in a for a in p.advice) or any("techniques" in a for a in p.advice)
    assert p.tflop_per_frame < 0.5 * make_plan(build_run_config(flags={"model": "videocrafter1_i2v", "prompts": ["x"]}),
                                               card_for("3060", None)).tflop_per_frame


@pytest.mark.parametrize("gpu", sorted(CARDS))
def test_every_card_in_the_table(gpu):
    p = make_plan(build_run_config(flags={"model": "animatediff", "prompts": ["x"]}), card_for(gpu, None))
    assert p.gpu_gib == CARDS[gpu].gib and p.height == p.width == 512 and p.floor_s_per_frame > 0


@pytest.mark.parametrize("args, message", [
    (["--gpu", "k80"], "not in the table"),
    (["--gpu-memory", "0"], "positive number of GiB"),
    (["--config", "tiny"], "no cost table"),
    (["--height", "300"], "multiple of 64"),
    (["--mode", "base"], "FIFO runs"),
])
def test_bad_inputs_are_clear_errors(args, message):
    r = CliRunner().invoke(app, ["plan", *args])
    assert r.exit_code != 0 and message in r.output.replace("\n", " ") and "Traceback" not in r.output


def test_card_for_keeps_the_named_cards_flops_with_its_own_memory():
    c = card_for("4090", 20)
    assert c.gib == 20 and c.tflops_half == CARDS["4090"].tflops_half
    with pytest.raises(ConfigError):
        card_for(None, -1)


def test_auto_keeps_the_stores_reserve_free():
    from fifo_longvid.fifo.autobatch import cuda_fit

    gib = 2**30
    assert cuda_fit(gib, 10 * gib, 80 * gib) == 32  # 54 GiB of budget -> 32 samples
    assert cuda_fit(gib, 10 * gib, 80 * gib, reserve_bytes=30 * gib) == 16  # 24 GiB left -> 16


def test_store_reserve_is_zero_without_techniques_or_a_cost_table():
    import torch

    from fifo_longvid.fifo.sizing import store_reserve

    fast = build_run_config(REPO / "configs" / "fifo_fast.yaml", flags={"model": "videocrafter2", "prompts": ["x"]})
    plain = build_run_config(flags={"model": "videocrafter2", "prompts": ["x"]})
    from fifo_longvid.backends import costs_for
    from fifo_longvid.techniques import enabled_acceleration

    vc2, tiny = costs_for("videocrafter2"), costs_for("tiny")
    fast_techs, plain_techs = enabled_acceleration(fast.techniques), enabled_acceleration(plain.techniques)
    half = torch.float16
    assert tiny is None and not plain_techs
    assert store_reserve(plain_techs, vc2, (40, 64), 72, half) == 0
    assert store_reserve(fast_techs, tiny, (40, 64), 72, half) == 0
    assert store_reserve(fast_techs, vc2, (40, 64), 72, half) / 2**30 == pytest.approx(5.44, abs=0.05)


def wan_plan(*args: str) -> dict:
    r = CliRunner().invoke(app, ["plan", "--config", "wan", "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_wan_plan_at_480x832_counts_output_frames():
    """Wan2.1-1.3B: the family's defaults (480x832, window 20 x 4 partitions, 81 output frames); one iteration
    dequeues one latent frame = 4 output frames, so the FLOPs per output frame are a quarter of an iteration's and
    agree with scripts/bench_wan_flops.py (1045.6 TFLOP: 1042.2 DiT + 3.39 VAE)."""
    p = wan_plan()
    assert KEYS <= set(p)
    assert p["model"] == "wan" and (p["height"], p["width"], p["num_frames"]) == (480, 832, 81)
    d = p["details"]
    assert (d["window"], d["partitions"], d["samples_per_iteration"]) == (20, 4, 16)
    assert d["latent_frames"] == 21 and d["frames_per_iteration"] == 4
    assert p["tflop_per_frame"] == pytest.approx(1046, rel=0.03)
    assert d["unet_tflop_per_frame"] == pytest.approx(1042.2, rel=0.01)
    assert d["vae_tflop_per_frame"] == pytest.approx(3.39, rel=0.01)
    assert p["iterations"] == 21 + 60  # 21 latent frames; init from a base clip drops S - f = 80 - 20 frames
    # weights on the card: DiT + VAE in fp16 (1.54B), 2.9 GiB; UMT5-XXL (5.68B in fp32, 21.2 GiB) stays in host
    # memory and computes on the card piece by piece, its largest piece the 3.9 GiB token embedding
    assert d["weights_gib"] == pytest.approx(2.87, abs=0.05) and d["text_encoder_gib"] == pytest.approx(21.2, abs=0.1)
    assert d["encoding_gib"] == pytest.approx(2.87 + 3.94, abs=0.05)
    assert p["fits"] and p["max_batch"] == 16 and p["peak_gib"] == pytest.approx(25.8, abs=0.2)


def test_wan_num_frames_are_output_frames():
    """--num-frames 301 = 1 + 4 x 75: 76 latent frames, 76 + 60 iterations; --num-frames 300 rounds up to 76."""
    assert wan_plan("--num-frames", "301")["iterations"] == 76 + 60
    assert wan_plan("--num-frames", "300")["iterations"] == 76 + 60
    assert wan_plan("--num-frames", "305")["iterations"] == 77 + 60


def test_wan_on_small_cards_and_bad_sizes():
    """With UMT5-XXL (21 GiB) in host memory, a 3060's 12 GiB holds the run; 6 GiB cannot even encode the prompts
    (DiT + VAE + the 3.9 GiB token embedding) and the advice says so; sizes must divide by 16 (VAE 8 x patch 2);
    tgate + cfg_cache (Wan's fastest combination) cut the FLOPs."""
    small = wan_plan("--gpu", "3060")
    assert small["fits"] and small["max_batch"] == 4 and small["peak_gib"] <= 12
    assert wan_plan("--gpu-memory", "8")["fits"]
    p = wan_plan("--gpu-memory", "6")
    assert not p["fits"] and p["peak_gib"] == p["details"]["encoding_gib"]
    (advice,) = p["advice"]
    assert "encoding the prompts" in advice and "at least 7 GiB" in advice, advice
    r = CliRunner().invoke(app, ["plan", "--config", "wan", "--height", "488"])
    assert r.exit_code != 0 and "multiple of 16" in r.output
    fast = wan_plan("--tgate", "0.4", "--cfg-cache", "3")
    assert fast["tflop_per_frame"] < 0.65 * wan_plan()["tflop_per_frame"] and fast["details"]["stores_gib"] > 10
    reuse = wan_plan("--attn-reuse")  # the DiT's self-attention is most of its FLOPs: a counted ratio, not VC's
    assert reuse["tflop_per_frame"] < 0.9 * wan_plan()["tflop_per_frame"] and reuse["details"]["stores_gib"] > 10
    for flag in (["--deepcache", "3"], ["--qcache", "0.5"]):
        r = CliRunner().invoke(app, ["plan", "--config", "wan", *flag])
        assert r.exit_code != 0 and "the wan family has none" in r.output.replace("\n", " "), (flag, r.output)

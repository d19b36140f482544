"""scripts/consistency.py: VBench-scale flickering and low-frequency drift on videos with known answers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "consistency.py"
spec = importlib.util.spec_from_file_location("consistency", SCRIPT)
consistency = importlib.util.module_from_spec(spec)
spec.loader.exec_module(consistency)


def _video(values: list[float], h: int = 32, w: int = 48) -> list[np.ndarray]:
    return [np.full((h, w, 3), v, np.uint8) for v in values]


def test_static_video_has_no_flicker_and_no_drift():
    s = consistency.summarise(consistency.measure(iter(_video([100] * 40)), lag=8))
    assert s["flicker_mae"] == 0 and s["vbench_temporal_flickering"] == 1.0
    assert s["drift_first_max"] == 0 and s["drift_lag_max"] == 0


def test_flicker_is_vbench_mae_of_consecutive_frames():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (16, 24, 3), dtype=np.uint8) for _ in range(6)]
    s = consistency.summarise(consistency.measure(iter(frames)))
    mae = np.mean([np.abs(frames[i + 1].astype(np.float32) - frames[i]).mean() for i in range(5)])
    assert s["flicker_mae"] == pytest.approx(mae, rel=1e-6)
    assert s["vbench_temporal_flickering"] == pytest.approx((255 - mae) / 255, rel=1e-6)


def test_drift_curves_follow_a_brightness_ramp():
    c = consistency.measure(iter(_video(list(range(0, 100, 2)))), lag=10)  # +2 per frame
    np.testing.assert_allclose(c["drift_first"], np.arange(0, 100, 2), atol=1e-9)
    assert np.isnan(c["drift_lag"][:10]).all()
    np.testing.assert_allclose(c["drift_lag"][10:], 20.0, atol=1e-9)
    np.testing.assert_allclose(c["flicker"][1:], 2.0)


def test_low_pass_ignores_fine_detail_but_sees_layout():
    checker = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, -1)
    flipped = 255 - checker  # every pixel changes by 255, every 2x2 cell keeps its mean
    c = consistency.measure(iter([checker, flipped]), grid=16)
    assert c["flicker"][1] == 255 and c["drift_first"][1] == 0
    half = np.zeros((32, 32, 3), np.uint8)
    half[:, 16:] = 200  # a layout change
    assert consistency.measure(iter([np.zeros_like(half), half]), grid=16)["drift_first"][1] == pytest.approx(100)
    assert consistency.cell_means(np.zeros((20, 50, 3)), 4).shape == (4, 10, 3)


def test_cli_on_written_videos(tmp_path, capsys):
    from fifo_longvid.io.video import VideoWriter

    for name, vals in (("still", [90] * 12), ("ramp", list(range(0, 120, 10)))):
        with VideoWriter(tmp_path / f"{name}.mp4", 10) as w:
            for v in vals:
                w.append(np.full((32, 32, 3), v, np.uint8))
    assert consistency.main([str(tmp_path / "still.mp4"), str(tmp_path / "ramp.mp4"), "--lag", "4", "--json",
                             "--csv", str(tmp_path / "curves") + "/"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["still"]["frames"] == 12 and out["still"]["flicker_mae"] < 1.0
    assert out["ramp"]["drift_first_last"] == pytest.approx(110, abs=3)  # H.264 rounding
    assert out["ramp"]["drift_lag_mean"] == pytest.approx(40, abs=3)
    assert (tmp_path / "curves" / "ramp.csv").read_text().splitlines()[0] == "frame,flicker,drift_first,drift_lag"
    assert consistency.main([str(tmp_path / "ramp.mp4")]) == 0
    assert "VBench temporal_flickering" in capsys.readouterr().out
    assert consistency.main([str(tmp_path / "missing.mp4")]) == 2

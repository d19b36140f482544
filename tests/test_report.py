"""``fifo-gen report``: each metric moves the right way by the known amount on synthetic videos, CIELAB is
checked against the formula written out here, and every bad input exits 2 with one sentence and writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fifo_longvid.cli.main import app
from fifo_longvid.io.video import write_video
from fifo_longvid.report import measure_video, report_paths, write_report
from fifo_longvid.report.table import drift_line

runner = CliRunner()
H = W = 64


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of uint8 sRGB, from the standard's formulas: sRGB decoding, the sRGB->XYZ matrix, then
    the CIE 1976 L*a*b* function. Independent of the library the report uses."""
    c = rgb.astype(np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def solid(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (H, W, 3)).copy()


def pattern() -> np.ndarray:
    """A colourful, sharp still picture: coloured 8x8 checks."""
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return np.kron(cells, np.ones((8, 8, 1), np.uint8))


def invoke(args):
    return runner.invoke(app, ["report", *map(str, args)])


def seg_means(values: list[float], seg: int) -> list[float]:
    return [float(np.mean(values[i:i + seg])) for i in range(0, len(values), seg)]


def test_constant_video_shows_no_drift(tmp_path):
    video = write_video(tmp_path / "still.mp4", [pattern()] * 40, fps=10)
    rep = measure_video(video)
    assert rep["frames"] == 40 and rep["fps"] == 10 and rep["segment_frames"] == 10 and len(rep["segments"]) == 4
    d = rep["drift"]
    for m in ("lightness", "a", "b", "contrast"):
        assert abs(d[m]["change"]) < 0.2 and abs(d[m]["max_excursion"]) < 0.2, (m, d[m])
    assert abs(d["saturation"]["change"]) < 0.005
    assert abs(d["sharpness"]["change"]) < 0.01 * d["sharpness"]["first"]
    assert all(s["motion"] < 0.3 for s in rep["segments"])
    assert all(s["hist_distance"] < 0.02 for s in rep["segments"])


def test_lightness_ramp_matches_cielab_within_5_percent(tmp_path):
    greys = [50 + 2 * t for t in range(60)]  # a ramp of known slope: 2 levels a frame
    video = write_video(tmp_path / "ramp.mp4", [solid((g, g, g)) for g in greys], fps=10)
    rep = measure_video(video, segment_frames=10)
    expected = seg_means([float(srgb_to_lab(np.array([g, g, g], np.uint8))[0]) for g in greys], 10)
    got = [s["lightness"] for s in rep["segments"]]
    assert len(got) == 6
    np.testing.assert_allclose(got, expected, rtol=0.05)
    assert got == sorted(got)  # it only rises
    change = rep["drift"]["lightness"]["change"]
    assert change == pytest.approx(expected[-1] - expected[0], rel=0.05) and change > 20
    assert rep["drift"]["lightness"]["max_excursion"] == pytest.approx(change)
    assert abs(rep["drift"]["a"]["change"]) < 0.5 and rep["drift"]["saturation"]["last"] < 0.02


def test_colour_frames_match_cielab_exactly_on_png(tmp_path):
    frames = [pattern(), np.roll(pattern(), 8, axis=1)]
    video = write_video(tmp_path / "colours", frames * 2)  # a PNG folder: lossless
    rep = measure_video(video, segment_frames=2)
    lab = srgb_to_lab(np.stack(frames))
    seg = rep["segments"][0]
    for k, m in enumerate(("lightness", "a", "b")):
        assert seg[m] == pytest.approx(lab[..., k].mean(), rel=0.05, abs=0.3), m
    assert seg["contrast"] == pytest.approx(lab[0, ..., 0].std(), rel=0.05)
    assert rep["fps"] is None and rep["segments"][1]["hist_distance"] < 1e-6


def test_hue_change_moves_b_and_the_histogram(tmp_path):
    red, blue = np.array([200, 40, 40]), np.array([40, 40, 200])
    frames = [solid(tuple(np.round(red + (blue - red) * t / 59).astype(int))) for t in range(60)]
    video = write_video(tmp_path / "hue.mp4", frames, fps=10)
    rep = measure_video(video, segment_frames=10)
    lab = [srgb_to_lab(f[0, 0]) for f in frames]
    b_exp = seg_means([float(x[2]) for x in lab], 10)
    assert rep["drift"]["b"]["change"] == pytest.approx(b_exp[-1] - b_exp[0], rel=0.05)
    assert rep["drift"]["b"]["change"] < -80  # yellowish-red to blue
    hist = [s["hist_distance"] for s in rep["segments"]]
    assert hist[0] == 0 and hist[-1] > 0.9 and hist == sorted(hist)
    assert abs(rep["drift"]["saturation"]["change"]) < 0.05  # the same saturation throughout


def _square(x: int) -> np.ndarray:
    f = np.zeros((H, W, 3), np.uint8)
    f[24:40, x:x + 16] = 255
    return f


def test_motion_that_stops(tmp_path):
    xs = [2 * t for t in range(20)] + [38] * 20  # 2 px a frame, then still
    video = write_video(tmp_path / "stop", [_square(x) for x in xs])
    rep = measure_video(video, segment_frames=10)
    moving = 2 * 2 * 16 * 255 / (H * W)  # two 2x16 strips change by 255 in every channel
    motion = [s["motion"] for s in rep["segments"]]
    assert motion[0] == pytest.approx(moving) and motion[1] == pytest.approx(moving)
    assert motion[2] == pytest.approx(0) and motion[3] == 0
    assert rep["drift"]["motion"]["change"] == pytest.approx(-moving)
    assert abs(rep["drift"]["lightness"]["change"]) < 1e-6  # the same picture, moved


def test_motion_on_mp4_is_close_to_the_lossless_value(tmp_path):
    xs = [2 * t for t in range(20)] + [38] * 20
    rep = measure_video(write_video(tmp_path / "stop.mp4", [_square(x) for x in xs], fps=10))
    motion = [s["motion"] for s in rep["segments"]]
    assert motion[0] == pytest.approx(2 * 2 * 16 * 255 / (H * W), rel=0.25) and motion[-1] < 0.3


def test_flicker_every_other_frame(tmp_path):
    video = write_video(tmp_path / "flicker", [solid((100,) * 3) if t % 2 else solid((140,) * 3)
                                               for t in range(40)])
    rep = measure_video(video, segment_frames=10)
    assert all(s["motion"] == pytest.approx(40) for s in rep["segments"])  # every frame changes by 40 levels
    assert abs(rep["drift"]["lightness"]["change"]) < 1e-6 and rep["drift"]["motion"]["change"] == pytest.approx(0)


def test_blur_lowers_sharpness_and_contrast(tmp_path):
    frames, f = [], pattern().astype(np.float64)
    for _ in range(30):
        frames.append(np.round(f).astype(np.uint8))
        f = (f + np.roll(f, 1, 0) + np.roll(f, -1, 0) + np.roll(f, 1, 1) + np.roll(f, -1, 1)) / 5  # a box blur
    rep = measure_video(write_video(tmp_path / "blur", frames), segment_frames=10)
    sharp = [s["sharpness"] for s in rep["segments"]]
    contrast = [s["contrast"] for s in rep["segments"]]
    assert sharp == sorted(sharp, reverse=True) and sharp[-1] < 0.2 * sharp[0]
    assert contrast == sorted(contrast, reverse=True)


def test_segments_default_seconds_and_remainder(tmp_path):
    video = write_video(tmp_path / "g.mp4", [pattern()] * 34, fps=8)
    assert [(s["start"], s["end"]) for s in measure_video(video)["segments"]] == [(0, 8), (8, 16), (16, 24),
                                                                                   (24, 34)]  # 2 left: joined
    rep = measure_video(video, segment_s=0.5)
    assert rep["segment_frames"] == 4 and rep["segments"][-1] == {**rep["segments"][-1], "start": 32, "end": 34}
    short = write_video(tmp_path / "short.gif", [pattern()] * 6, fps=10)  # under 2 s: two 3-frame segments
    assert measure_video(short)["segment_frames"] == 3


def test_cli_table_json_and_chart(tmp_path):
    a = write_video(tmp_path / "a.mp4", [solid((g, g, g)) for g in range(60, 100)], fps=10)
    b = write_video(tmp_path / "b.mp4", [solid((80, 80, 80))] * 40, fps=10)
    chart = tmp_path / "drift.png"
    r = invoke([a, b, "-o", chart, "--label", "ramp"])
    assert r.exit_code == 0, r.output
    assert "drift report" in r.output and "last-first" in r.output and "[ramp]" in r.output and "[b.mp4]" in r.output
    from PIL import Image

    with Image.open(chart) as im:
        assert im.format == "PNG" and im.width > 800 and im.height > 400
    r = invoke([a, "--json", "--segment-frames", "20"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert {"video", "frames", "fps", "segment_frames", "segments", "drift"} <= set(rep)
    assert rep["frames"] == 40 and rep["segment_frames"] == 20 and len(rep["segments"]) == 2
    assert set(rep["segments"][0]) >= {"start", "end", "lightness", "a", "b", "saturation", "contrast",
                                       "sharpness", "motion", "hist_distance"}
    assert set(rep["drift"]["lightness"]) == {"first", "last", "change", "max_excursion", "max_excursion_segment"}
    both = json.loads(invoke([a, b, "--json"]).stdout)
    assert [x["label"] for x in both] == ["a.mp4", "b.mp4"]
    r = invoke([a, "-o", chart])  # exists: refused without --overwrite, untouched
    assert r.exit_code == 2 and "--overwrite" in r.output


def test_long_table_shows_a_sample_of_segments(tmp_path):
    video = write_video(tmp_path / "long", [pattern()] * 100)
    r = invoke([video, "--segment-frames", "2", "--rows", "5"])
    assert r.exit_code == 0 and "(5 of 50 segments shown" in r.output


def test_write_report_beside_the_video(tmp_path):
    video = write_video(tmp_path / "fox.mp4", [pattern()] * 20, fps=10)
    js, png, rep = write_report(video, label="fox")
    assert (js, png) == report_paths(video) == (tmp_path / "fox.report.json", tmp_path / "fox.report.png")
    assert json.loads(js.read_text())["label"] == "fox" and png.stat().st_size > 1000
    assert rep["frames"] == 20 and "L* +0.00" in drift_line(rep)


def _bad_inputs(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    whole = write_video(tmp_path / "whole.mp4", [pattern(), np.roll(pattern(), 3, 0)] * 100, fps=10)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    gif = write_video(tmp_path / "whole.gif", [pattern(), np.roll(pattern(), 3, 0)] * 10, fps=10)
    cut_gif = tmp_path / "cut.gif"
    cut_gif.write_bytes(gif.read_bytes()[: gif.stat().st_size // 2])
    one = write_video(tmp_path / "one.mp4", [pattern()], fps=10)
    short = write_video(tmp_path / "short.mp4", [pattern()] * 5, fps=10)
    folder = tmp_path / "nothing"
    folder.mkdir()
    return [([text], "not a readable video"), ([empty], "is empty"), ([cut], "is truncated"), ([cut_gif], "truncated"),
            ([one], "only 1 frame"), ([short, "--segment-frames", "8"], "longer than"),
            ([short, "--segment", "1"], "longer than"), ([folder], "without PNG frames"),
            ([tmp_path / "missing.mp4"], "does not exist"),
            ([short, "--segment-frames", "1"], "at least 2"),
            ([short, "--segment-frames", "2", "--segment", "1"], "not both"),
            ([whole, text], "not a readable video")]  # the good first video is not reported either


def test_bad_input_exits_2_with_one_sentence_and_writes_nothing(tmp_path):
    cases = _bad_inputs(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    for args, words in cases:
        chart = out / "chart.png"
        r = invoke([*args, "-o", chart, "--json"])
        assert r.exit_code == 2, (args, r.output)
        lines = [x for x in r.output.splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0].endswith("."), r.output
        assert words in lines[0], (words, lines[0])
        assert "{" not in r.stdout and list(out.iterdir()) == []


def test_chart_must_be_a_png(tmp_path):
    video = write_video(tmp_path / "v.mp4", [pattern()] * 4, fps=10)
    r = invoke([video, "-o", tmp_path / "chart.jpg"])
    assert r.exit_code == 2 and "must end in .png" in r.output and not (tmp_path / "chart.jpg").exists()


def _fake_generate(cfg, model=None, progress=None, log=None):
    """Stands in for pipeline.generate (no model): a real video of ``num_frames`` frames, then its sidecar."""
    from pathlib import Path

    from fifo_longvid.io.sidecar import sidecar_path, write_json_atomic
    from fifo_longvid.run.pipeline import GenerationResult

    out, n = Path(cfg.output.path), cfg.fifo.num_frames
    write_video(out, [np.roll(pattern(), 2 * t, axis=1) for t in range(n)], fps=10, overwrite=True)
    side = write_json_atomic(sidecar_path(out), {"prompt": cfg.prompts[0], "complete": True, "frames_written": n})
    return GenerationResult(out, n, cfg.sampling.seed, side, {"total_s": 0.01})


def test_batch_report_beside_each_item(tmp_path, monkeypatch):
    from fifo_longvid.run import pipeline

    monkeypatch.setattr(pipeline, "generate", _fake_generate)
    monkeypatch.setattr("fifo_longvid.backends.videocrafter.load.load_model", lambda *a, **k: None)  # no weights
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt,num_frames\na red fox running,4\na blue car,1\n")
    out = tmp_path / "out"
    args = ["batch", str(prompts), "--config", "tiny", "--out-dir", str(out), "--seed", "5", "--device", "cpu",
            "--report", "fifo.window=4", "fifo.partitions=2", "sampling.height=64", "sampling.width=64"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    recs = {x["prompt"]: x for x in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    fox = recs["a red fox running"]
    js, png = report_paths(fox["output"])
    assert fox["report"] == str(js) and png.stat().st_size > 1000
    rep = json.loads(js.read_text())
    assert rep["frames"] == 4 and rep["segment_frames"] == 2 and rep["label"] == fox["name"]
    assert rep["drift"]["motion"]["first"] > 1 and "drift (last - first segment): L*" in r.output
    car = recs["a blue car"]  # one frame: no report, logged, the item still done
    assert car["status"] == "done" and car["report"] is None and "no drift report" in r.output
    assert not report_paths(car["output"])[0].exists()

    # a re-run skips the complete items and writes a missing report without generating anything
    js.unlink()
    png.unlink()
    monkeypatch.setattr(pipeline, "generate", lambda *a, **k: pytest.fail("nothing should be generated again"))
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert js.is_file() and png.is_file()
    # without --report nothing is measured
    js.unlink()
    r = runner.invoke(app, [a for a in args if a != "--report"])
    assert r.exit_code == 0 and not js.exists()


def test_fifo_gen_report_runs_without_torch(tmp_path):
    """``fifo-gen report`` (entry.py) imports no torch: the report's memory budget is 300 MB, torch takes 500."""
    import subprocess
    import sys
    from pathlib import Path

    video = write_video(tmp_path / "v.mp4", [pattern()] * 20, fps=10)
    code = ("import sys\nfrom fifo_longvid.entry import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    code = e.code\nelse:\n    code = 0\nprint('torch' in sys.modules, code, file=sys.stderr)")
    root = str(Path(__file__).resolve().parents[1])
    for args, rc in (([video, "--json"], 0), ([tmp_path / "missing.mp4"], 2)):
        r = subprocess.run([sys.executable, "-c", code, "report", *map(str, args)], capture_output=True, text=True,
                           cwd=tmp_path, env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"})
        assert r.stderr.strip().endswith(f"False {rc}"), r.stderr
    assert json.loads(subprocess.run([sys.executable, "-m", "fifo_longvid", "report", str(video), "--json"],
                                     capture_output=True, text=True, cwd=tmp_path,
                                     env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"}).stdout)["frames"] == 20

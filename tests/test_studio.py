"""The studio without a browser: inputs <-> the exact CLI argv, validation, history, presets, the run queue,
and the pipeline's frame hook and stop flag on the toy model."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from fifo_longvid.interrupts import StopFlag
from fifo_longvid.run.config import ConfigError, build_run_config, to_dict
from fifo_longvid.studio.cli_command import (
    Settings,
    argv_of_command,
    command_line,
    differing,
    extra_args,
    parse,
    settings_from_config,
    to_argv,
)
from fifo_longvid.studio.history import list_history, technique_summary
from fifo_longvid.studio.jobs import Studio
from fifo_longvid.studio.runner import CANCELLED, DONE, STOPPED, Job, Runner


def _without_output(cfg) -> dict:
    d = to_dict(cfg)
    d.pop("output")
    return d


FULL = Settings(prompt="a red circle bouncing\na blue triangle bouncing", frames_per_prompt="8, 8", num_frames=16,
                seed=0, cfg=4.5, partitions=3, init="uniform", tail="coherent", qcache=0.9, tgate=0.5, cfg_cache=3,
                deepcache=2, attn_reuse=True, extra="--eta 0.5 --tail-cutoff 0.3 sampling.fps=6")


def test_argv_is_what_generate_runs(monkeypatch, tmp_path):
    """The studio's argv, parsed by ``parse_generate_argv``, is the RunConfig ``fifo-gen generate`` builds."""
    from fifo_longvid.cli import main as cli

    argv = to_argv(FULL, "toy", None, tmp_path / "x.mp4")
    got = []
    monkeypatch.setattr(cli, "_run", got.append)
    with pytest.raises(SystemExit) as e:
        cli.main(["generate", *argv])
    assert e.value.code == 0
    assert to_dict(parse(argv)) == to_dict(got[0])
    cfg = got[0]
    assert cfg.prompts == ["a red circle bouncing", "a blue triangle bouncing"]
    assert cfg.fifo.frames_per_prompt == [8, 8] and cfg.fifo.num_frames == 16 and cfg.sampling.seed == 0
    assert (cfg.sampling.cfg, cfg.sampling.eta, cfg.sampling.fps, cfg.fifo.partitions) == (4.5, 0.5, 6, 3)
    assert (cfg.fifo.init, cfg.fifo.tail.mode, cfg.fifo.tail.cutoff_s) == ("uniform", "coherent", 0.3)
    t = cfg.techniques
    assert (t.qcache.v, t.tgate.gate, t.cfg_cache.every, t.deepcache.every, t.attn_reuse.enabled) == (0.9, 0.5, 3, 2,
                                                                                                      True)
    assert cfg.output.path == str(tmp_path / "x.mp4")


def test_command_line_round_trip():
    argv = to_argv(FULL, "toy", None, "out dir/it's.mp4")
    command = command_line(argv, 2)
    assert command.startswith("OMP_NUM_THREADS=2 fifo-gen generate --config toy --prompt ")
    assert argv_of_command(command) == ({"OMP_NUM_THREADS": "2"}, argv)
    assert argv_of_command(command_line(argv, None)) == ({}, argv)
    with pytest.raises(ValueError):
        argv_of_command("ls -l")


@pytest.mark.parametrize("argv", [
    ["--prompt", "a red circle bouncing", "--seed", "3"],
    ["--prompt", "p", "--seed", "1", "--qcache-schedule", "linear:0.9:0.8", "--qcache-targets",
     "temporal_attn1,temporal_attn2", "--tail-window", "6:3", "--cfg-cache", "2", "techniques.cfg_cache.alpha_lf=1.2"],
    ["--prompt", "a", "--prompt", "b", "--frames-per-prompt", "4,5", "--seed", "2", "--no-lookahead", "--eta", "0",
     "--tgate", "--mode", "fifo", "--max-batch", "2", "fifo.scaled_step=true"],
    ["--prompt", "p", "--seed", "1", "--steps", "8", "--block", "2"],
])
def test_sidecar_config_back_to_inputs_reproduces_it(argv, tmp_path):
    """History's "load settings": a resolved config -> inputs -> argv -> the same config."""
    cfg = parse(["--config", "toy", *argv, "-o", str(tmp_path / "a.mp4")])
    s = settings_from_config(to_dict(cfg), "toy", None)
    again = parse(to_argv(s, "toy", None, tmp_path / "a.mp4"))
    assert to_dict(again) == to_dict(cfg)


def test_differing_names_the_settings():
    a = parse(["--config", "toy", "--prompt", "p", "--seed", "1", "-o", "a.mp4"])
    b = parse(["--config", "toy", "--prompt", "p", "--seed", "1", "--qcache", "0.5", "-o", "b.mp4"])
    da, db = differing(a, b)
    default_v = a.techniques.qcache.v
    assert da == ["qcache.enabled=false", f"qcache.v={default_v}"] and db == ["qcache.enabled=true", "qcache.v=0.5"]
    assert differing(a, a) == ([], [])
    c = parse(["--config", "toy", "--prompt", "p", "--seed", "1", "--qcache", str(default_v), "-o", "c.mp4"])
    assert differing(a, c) == (["qcache.enabled=false", f"qcache.v={default_v}"],
                               ["qcache.enabled=true", f"qcache.v={default_v}"])


@pytest.mark.parametrize("extra", ["-o x.mp4", "--resume", "--overwrite", "--config tiny", "--output=x.mp4",
                                   "--dtype fp16", "--compile"])
def test_server_options_are_refused(extra):
    with pytest.raises(ConfigError, match="set by the studio"):
        extra_args(extra)


def _studio(tmp_path, generate=None) -> Studio:
    runner = Runner(model=None, generate=generate or (lambda cfg, **kw: None))
    return Studio(config="toy", checkpoint=None, out_dir=tmp_path, runner=runner, threads=2)


@pytest.mark.parametrize("settings, message", [
    (Settings(prompt="p", num_frames=0), "--num-frames must be >= 1"),
    (Settings(prompt=" "), "empty prompt"),
    (Settings(prompt="a\nb", num_frames=10), "several prompts need --frames-per-prompt"),
    (Settings(prompt="a\nb", frames_per_prompt="4,x"), "comma-separated integers"),
    (Settings(prompt="p", extra="--height 100"), "multiple of"),
    (Settings(prompt="p", qcache=0.5, tgate=0.4, extra="--qcache-targets spatial_attn2"), "tgate"),
    (Settings(prompt="p", qcache=1.5), "qcache"),
    (Settings(prompt="p", extra="--num-frames x"), "Invalid value for '--num-frames'"),
    (Settings(prompt="p", extra="--no-such-option"), "No such option"),
    (Settings(prompt="p", extra="model=tiny"), "serves --config toy"),
])
def test_bad_input_is_refused_before_anything_is_queued_or_written(tmp_path, settings, message):
    studio = _studio(tmp_path)
    with pytest.raises(ConfigError, match=message):
        studio.make_job(settings)
    assert list(tmp_path.iterdir()) == [] and studio.runner.jobs() == []


def test_job_names_are_fresh_and_the_seed_is_chosen(tmp_path):
    studio = _studio(tmp_path)
    s = Settings(prompt="A red circle, bouncing!", num_frames=4)
    job = studio.make_job(s)
    assert s.seed is not None and job.cfg.sampling.seed == s.seed
    assert job.output == (tmp_path / f"a_red_circle__bouncing_{s.seed}.mp4").resolve()
    (tmp_path / f"a_red_circle__bouncing_{s.seed}.mp4.state.pt").write_bytes(b"")  # a stopped run owns the name
    assert studio.make_job(s).output.name == f"a_red_circle__bouncing_{s.seed}-2.mp4"
    assert studio.make_job(s, suffix="_B").output.name == f"a_red_circle__bouncing_{s.seed}_B.mp4"
    with pytest.raises(ConfigError, match="nothing to resume"):
        studio.resume_job(to_argv(s, "toy", None, tmp_path / "other.mp4"))


def _sidecar(folder: Path, name: str, complete: bool = True, **techniques) -> Path:
    from fifo_longvid.run.resolve import resolve

    given = build_run_config(flags={"model": "toy", "prompts": [name], "sampling.seed": 1,
                                    "output.path": str(folder / f"{name}.mp4"), **techniques})
    cfg = to_dict(resolve(given).config)  # a sidecar records the resolved config
    video = folder / (f"{name}.mp4" if complete else f"{name}.partial.mp4")
    video.write_bytes(b"x")
    side = video.with_suffix(".json")
    side.write_text(json.dumps({"seed": 1, "frames_written": 4, "complete": complete, "output": str(video),
                                "config": cfg}))
    return side


def test_history_reads_sidecars_newest_first_and_skips_foreign_files(tmp_path):
    old = _sidecar(tmp_path, "old")
    time.sleep(0.02)
    _sidecar(tmp_path, "stopped", complete=False, **{"techniques.qcache.enabled": True, "techniques.qcache.v": 0.9})
    (tmp_path / "stopped.mp4.state.pt").write_bytes(b"")
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "foreign.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "gone.json").write_text(json.dumps({"config": {}, "output": str(tmp_path / "gone.mp4")}))
    entries = list_history(tmp_path)
    assert [e.video.name for e in entries] == ["stopped.partial.mp4", "old.mp4"]
    row = entries[0].row()
    assert row[:5] == ["stopped.partial.mp4", "stopped", 1, 4, "partial (resumable)"]
    assert "qcache 0.9" in row[5] and entries[1].row()[4] == "complete"
    assert technique_summary(json.loads(old.read_text())["config"]) == "cfg 3.0, n 2"  # toy: guidance 3, 2 partitions
    assert list_history(tmp_path / "missing") == []


def test_presets_are_the_cli_run_files():
    from fifo_longvid.studio.presets import apply_preset, preset_names

    names = preset_names()
    assert {"fifo_fast", "fifo_qcache"} <= set(names) and "fifo_seed" not in names  # fifo_seed changes the model
    assert apply_preset("fifo_fast", "", "", "", "", False, "--eta 0") == ["", "0.4", "3", "3", True, "--eta 0"]
    assert apply_preset("fifo_qcache", "", "", "", "", False, "") == ["0.9", "", "", "", False, ""]
    assert apply_preset("none", "0.9", "0.4", "3", "3", True, "x") == ["", "", "", "", False, "x"]


def test_runs_go_one_at_a_time_in_order_and_stop_works(tmp_path):
    """The queue: one run at a time, in order; places are shown; a waiting run can be cancelled, the running one
    gets its StopFlag set (what SIGTERM sets)."""
    gate, order, active, peak = threading.Event(), [], [0], [0]

    def fake_generate(cfg, model, progress, log, on_frame, stop):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        order.append(cfg.sampling.seed)
        while not gate.is_set() and not stop.requested:
            time.sleep(0.01)
        active[0] -= 1

        class R:
            partial, frames, output, timings = stop.requested, 1, Path("x.mp4"), {}
        return R()

    studio = _studio(tmp_path, fake_generate)
    runner = studio.runner
    jobs = [studio.make_job(Settings(prompt="p", num_frames=2, seed=k)) for k in range(4)]
    for j in jobs:
        runner.submit(j)
    deadline = time.monotonic() + 10
    while order != [0] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [runner.place(j) for j in jobs] == [0, 2, 3, 4]
    runner.stop(jobs[2])
    assert jobs[2].status == CANCELLED and jobs[2].finished.is_set() and runner.place(jobs[3]) == 3
    runner.stop(jobs[0])
    assert jobs[0].finished.wait(10) and jobs[0].status == STOPPED
    gate.set()
    assert jobs[3].finished.wait(10)
    assert order == [0, 1, 3] and peak[0] == 1
    assert jobs[1].status == DONE and jobs[3].status == DONE
    runner.shutdown(5)


def test_job_progress_gives_seconds_per_frame_and_eta(monkeypatch):
    job = Job(argv=[], cfg=build_run_config(), output=Path("x.mp4"))
    clock = iter([0.0, 1.0, 2.0, 3.0])
    monkeypatch.setattr("fifo_longvid.studio.runner.time.perf_counter", lambda: next(clock))
    job.on_progress("base clip", 1, 16)
    job.on_progress("fifo", 1, 24)
    job.on_progress("fifo", 2, 24)
    job.on_progress("fifo", 4, 24)
    assert job.s_per_frame == pytest.approx(2 / 3) and job.eta_s == pytest.approx(20 * 2 / 3)


def test_status_line_shows_place_progress_and_result(tmp_path):
    pytest.importorskip("gradio")
    from fifo_longvid.studio.view import status_text

    job = Job(argv=[], cfg=build_run_config(flags={"fifo.num_frames": 16}), output=tmp_path / "x.mp4")
    assert status_text(job, 3) == "queued: place 3 in the queue (2 runs ahead)"
    job.status = "running"
    job.on_progress("base clip", 4, 16)
    assert status_text(job, 0) == "running: base clip step 4/16"
    job.on_progress("fifo", 10, 24)
    job.on_progress("fifo", 12, 24)
    job.frame_index = 3
    assert re.fullmatch(r"running: iteration 12/24, frame 4/16, [\d.]+ s/frame, ETA \d+ s", status_text(job, 0))
    job.cfg.fifo.window, job.cfg.fifo.partitions, job.cfg.fifo.block, job.cfg.sampling.steps = 8, 2, 2, 8  # resolved
    assert re.fullmatch(r"running \(window 8 x 2 / block 2 = 8 steps\): iteration 12/24, frame 4/16, [\d.]+ s/frame, "
                        r"ETA \d+ s", status_text(job, 0))
    job.status, job.error = "failed", "boom"
    assert status_text(job, 0, "B: ") == "B: failed: boom"


def test_page_inputs_parse_empty_as_default_and_refuse_text():
    pytest.importorskip("gradio")
    from fifo_longvid.studio.view import settings_of

    values = ["p", "", 16, "0", "", " ", "8", "", "first", "noise", "0.9", "", "3", "", False, "", ""]
    s = settings_of(tuple(values))
    assert (s.seed, s.cfg, s.partitions, s.qcache, s.cfg_cache, s.num_frames) == (0, None, None, 0.9, 3, 16)
    assert (s.steps, s.block) == (8, None)
    with pytest.raises(ConfigError, match="seed: 'x' is not a whole number"):
        settings_of(tuple(values[:3] + ["x"] + values[4:]))


def test_loopback_detection():
    from fifo_longvid.studio.server import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")


def test_frame_hook_and_stop_flag_on_the_toy(tmp_path):
    """``generate(on_frame=, stop=)``: every frame reaches the hook after it is written, in order; setting the
    flag from the hook stops the run as SIGTERM does (partial video + state), and --resume finishes it."""
    from fifo_longvid.backends import load_backend
    from fifo_longvid.io.video import read_video
    from fifo_longvid.run.pipeline import generate

    model = load_backend("toy", None, "cpu", "auto", None)
    out = tmp_path / "v.mp4"
    argv = ["--config", "toy", "--prompt", "a red circle bouncing", "--num-frames", "6", "--seed", "5", "-o", str(out)]
    seen: list[int] = []
    stop = StopFlag()

    def hook(frame, k):
        assert frame.shape == (3, 64, 64)
        seen.append(k)
        if k == 2:
            stop.requested = True

    r = generate(parse(argv), model=model, log=lambda m: None, on_frame=hook, stop=stop)
    assert r.partial and r.frames == 3 and seen == [0, 1, 2]
    assert len(read_video(tmp_path / "v.partial.mp4")) == 3 and (tmp_path / "v.mp4.state.pt").exists()
    r = generate(parse([*argv, "--resume"]), model=model, log=lambda m: None, on_frame=hook)
    assert not r.partial and r.frames == 6 and seen == [0, 1, 2, 3, 4, 5]
    assert len(read_video(out)) == 6


def test_serving_beyond_loopback_is_logged_as_a_warning(monkeypatch, tmp_path):
    pytest.importorskip("gradio")
    from fifo_longvid.studio import server

    def no_model(config, checkpoint):
        raise RuntimeError("stop before loading")

    monkeypatch.setattr(server, "load_model", no_model)
    lines: list[str] = []
    for host in ("0.0.0.0", "127.0.0.1"):
        with pytest.raises(RuntimeError, match="stop before loading"):
            server.serve("toy", None, tmp_path / "out", host, 0, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith("warning: --host 0.0.0.0 serves the studio beyond this machine")

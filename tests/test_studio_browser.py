"""``fifo-gen studio`` in a real browser: Debian's chromium driven by playwright (no browser download).

One server for the module (a subprocess in its own process group, on a free port, with a temporary
``--out-dir``), one page per test. On the toy model: a 16-frame video with a preview frame before the end,
the file equal frame for frame to what the page's "Copy as CLI" command writes, Stop then Resume equal to an
uninterrupted run, an A/B compare, a bad input that writes nothing, a closed browser whose run still lands, the
drift chart under a finished video and A and B's lines under the compare.
A screenshot of the finished page goes to ``outputs/test-artifacts/studio.png``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("FIFO_STUDIO_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "outputs" / "test-artifacts"

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
                                     )
pytest.importorskip("gradio", reason="gradio is not installed (pip install -e .[studio])")
if not CHROMIUM.exists():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(threads: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               GRADIO_ANALYTICS_ENABLED="False")
    if threads:
        env["OMP_NUM_THREADS"] = threads
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base url, out dir) of a running ``fifo-gen studio``; stopped by process group at the end."""
    work = tmp_path_factory.mktemp("studio")
    out = work / "out"
    port = _free_port()
    log = open(work / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "fifo_longvid", "studio", "--port", str(port), "--out-dir",
                             str(out)], cwd=work, env=_env("2"), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the studio did not start:\n" + (work / "server.log").read_text())
                time.sleep(0.5)
        yield url, out
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM),
                              args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    pg = browser.new_page(viewport={"width": 1400, "height": 1500})
    pg.goto(server[0])
    pg.wait_for_selector("#generate")
    yield pg
    pg.close()


def _fill(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(value)


def _progress(page) -> str:
    return page.inner_text("#progress").strip()


def _wait_progress(page, pattern: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = _progress(page)
        if re.search(pattern, text):
            return text
        if text.startswith("error") or "failed" in text:
            pytest.fail(f"the page says: {text}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {pattern!r}; progress: {_progress(page)!r}")


def _click_and_wait(page, button: str, pattern: str = r"^done") -> str:
    """Click, see the new run start (the old result text is gone), then wait for ``pattern``."""
    page.click(button)
    _wait_progress(page, r"^(A: )?(queued|running)")
    return _wait_progress(page, pattern)


def _set_inputs(page, prompt: str, frames: int, seed: int) -> None:
    _fill(page, "prompt", prompt)
    _fill(page, "num-frames", str(frames))
    _fill(page, "seed", str(seed))


def _frames(path: Path) -> np.ndarray:
    from fifo_longvid.io.video import read_video

    return read_video(path)


def test_generate_preview_video_and_cli_command(page, server, tmp_path):
    _, out = server
    _set_inputs(page, "a red circle bouncing", 16, 7)
    page.click("#generate")
    preview_while_running = False
    while not re.match(r"done|error|failed", _progress(page)):
        shown = page.evaluate("() => { const i = document.querySelector('#preview img');"
                              " return !!(i && i.complete && i.naturalWidth > 0) }")
        if shown and _progress(page).startswith("running"):
            preview_while_running = True
        time.sleep(0.1)
    assert _progress(page).startswith("done"), _progress(page)
    assert preview_while_running, "no preview frame was shown before the run ended"

    # the video plays in the page
    page.wait_for_function("() => { const v = document.querySelector('#video video');"
                           " return v && v.readyState >= 2 && v.currentTime > 0 }", timeout=30_000)
    video = out / "a_red_circle_bouncing_7.mp4"
    assert video.is_file() and (out / "a_red_circle_bouncing_7.json").is_file()

    # "Copy as CLI" reproduces the frames bit for bit (another output name: the first one is taken)
    from fifo_longvid.studio.cli_command import argv_of_command

    command = page.input_value("#cli-command textarea")
    env, argv = argv_of_command(command)
    assert env == {"OMP_NUM_THREADS": "2"} and argv[argv.index("-o") + 1] == str(video)
    again = tmp_path / "again.mp4"
    argv[argv.index("-o") + 1] = str(again)
    subprocess.run([sys.executable, "-m", "fifo_longvid", "generate", *argv], env=_env(env["OMP_NUM_THREADS"]),
                   cwd=tmp_path, check=True, capture_output=True)
    a, b = _frames(video), _frames(again)
    assert a.shape == (16, 64, 64, 3) and np.array_equal(a, b)
    side_studio = json.loads((out / "a_red_circle_bouncing_7.json").read_text())
    side_cli = json.loads(again.with_suffix(".json").read_text())
    for side in (side_studio, side_cli):
        side["config"]["output"].pop("path")
    assert side_studio["config"] == side_cli["config"]
    assert side_studio["runtime"] == side_cli["runtime"]

    # history lists it; a click loads its settings back into the inputs
    page.click("#history-refresh")
    row = page.locator("#history >> text=a_red_circle_bouncing_7.mp4 >> visible=true").first
    row.wait_for(timeout=30_000)
    _set_inputs(page, "something else", 5, 1)
    row.click()
    _wait_progress(page, r"loaded the settings of a_red_circle_bouncing_7\.mp4", 30)
    assert page.locator("#prompt textarea").input_value() == "a red circle bouncing"
    assert page.locator("#seed textarea, #seed input").first.input_value() == "7"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "studio.png"), full_page=True)


def test_stop_then_resume_equals_an_uninterrupted_run(page, server):
    _, out = server
    _set_inputs(page, "a blue triangle bouncing", 16, 8)
    page.click("#generate")
    _wait_progress(page, r"frame ([3-9]|1[0-2])/16")
    page.click("#stop")
    _wait_progress(page, r"^stopped")
    name = "a_blue_triangle_bouncing_8"
    partial = out / f"{name}.partial.mp4"
    assert partial.is_file() and (out / f"{name}.mp4.state.pt").is_file() and not (out / f"{name}.mp4").exists()
    kept = _frames(partial)
    assert 0 < len(kept) < 16

    _click_and_wait(page, "#resume")
    resumed = _frames(out / f"{name}.mp4")
    assert not partial.exists() and not (out / f"{name}.mp4.state.pt").exists()

    _set_inputs(page, "a blue triangle bouncing", 16, 8)  # the same run, uninterrupted (next free name)
    _click_and_wait(page, "#generate")
    whole = _frames(out / f"{name}-2.mp4")
    assert resumed.shape == whole.shape == (16, 64, 64, 3)
    assert np.array_equal(resumed, whole)
    # the partial is its own H.264 stream (lossy, encoded on its own): close to the same frames, not bitwise
    assert np.abs(kept.astype(int) - whole[: len(kept)].astype(int)).mean() < 3


def test_ab_compare_renders_both(page, server):
    _, out = server
    _set_inputs(page, "a green circle bouncing", 8, 9)
    _fill(page, "compare-b", "--qcache 0.9")
    _click_and_wait(page, "#compare", r"^B: done")
    page.wait_for_function("() => [...document.querySelectorAll('#compare-view video.ab')]"
                           ".filter(v => v.readyState >= 2).length === 2", timeout=30_000)
    # in sync: seeking or pausing one moves the other
    page.evaluate("() => { const [a, b] = document.querySelectorAll('#compare-view video.ab'); a.pause();"
                  " a.currentTime = 0.35; }")
    page.wait_for_function("() => { const [a, b] = document.querySelectorAll('#compare-view video.ab');"
                           " return b.paused && Math.abs(b.currentTime - 0.35) < 0.06 }", timeout=10_000)
    titles = page.inner_text("#compare-view")
    assert "qcache.enabled=false" in titles and "qcache.enabled=true" in titles
    # the drift chart of both, under the pair, loaded by the browser
    page.wait_for_function("() => { const i = document.querySelector('#compare-view img.ab-chart');"
                           " return i && i.complete && i.naturalWidth > 800 }", timeout=30_000)
    assert (out / "a_green_circle_bouncing_9_B.ab.report.png").is_file()
    a, b = _frames(out / "a_green_circle_bouncing_9_A.mp4"), _frames(out / "a_green_circle_bouncing_9_B.mp4")
    assert a.shape == b.shape == (8, 64, 64, 3) and not np.array_equal(a, b)


def test_bad_input_shows_the_error_and_writes_nothing(page, server):
    _, out = server
    before = sorted(p.name for p in out.iterdir()) if out.exists() else []
    _set_inputs(page, "a red circle bouncing", 0, 3)
    page.click("#generate")
    assert "--num-frames must be >= 1" in _wait_progress(page, r"^error", 30)
    _set_inputs(page, "a red circle bouncing", 8, 3)
    _fill(page, "extra", "--qcache 0.5 --qcache-targets spatial_attn2 --tgate")  # a refused combination
    page.click("#generate")
    _wait_progress(page, r"^error: .*tgate", 30)
    _fill(page, "extra", "")
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_closed_browser_does_not_kill_its_run(browser, server):
    url, out = server
    pg = browser.new_page()
    pg.goto(url)
    pg.wait_for_selector("#generate")
    _set_inputs(pg, "a yellow triangle bouncing", 8, 11)
    pg.click("#generate")
    _wait_progress(pg, r"^running")
    pg.close()
    video = out / "a_yellow_triangle_bouncing_11.mp4"
    deadline = time.monotonic() + 120
    while not (video.is_file() and video.with_suffix(".json").is_file()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert video.is_file() and len(_frames(video)) == 8


def _chart_shown(page) -> bool:
    return page.evaluate("() => { const i = document.querySelector('#drift-chart img');"
                         " return !!(i && i.complete && i.naturalWidth > 800) }")


def test_drift_chart_under_a_finished_video(page, server):
    _, out = server
    _set_inputs(page, "a red circle bouncing", 8, 12)
    page.click("#generate")
    _wait_progress(page, r"^(queued|running)")
    assert not _chart_shown(page)  # no chart while the run goes on
    _wait_progress(page, r"^done")
    page.wait_for_function("() => { const i = document.querySelector('#drift-chart img');"
                           " return i && i.complete && i.naturalWidth > 800 }", timeout=30_000)
    chart = out / "a_red_circle_bouncing_12.report.png"
    assert chart.is_file()
    from PIL import Image

    shown = page.evaluate("() => [document.querySelector('#drift-chart img').naturalWidth,"
                          " document.querySelector('#drift-chart img').naturalHeight]")
    with Image.open(chart) as im:
        assert list(im.size) == shown  # the page shows this report's chart
    # the chart sits under the video
    video_box = page.locator("#video").bounding_box()
    chart_box = page.locator("#drift-chart").bounding_box()
    assert chart_box["y"] >= video_box["y"] + video_box["height"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "studio-drift.png"), full_page=True)

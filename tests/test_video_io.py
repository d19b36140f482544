"""Streaming, crash-safe video output: round trips, atomic publish, cleanup and error paths."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fifo_longvid.io import atomic, sinks
from fifo_longvid.io.video import VideoWriter, check_output_path, read_video, write_video

H, W, N = 48, 64, 10


def gradient_frames(n: int = N, h: int = H, w: int = W) -> list[np.ndarray]:
    """Smooth moving gradients: what a lossy codec should reproduce closely."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        r = 255 * xx / max(w - 1, 1)
        g = 255 * yy / max(h - 1, 1)
        b = np.full_like(xx, 40 + 15 * i)
        out.append(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8))
    return out


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize(
    "name, tol",
    [("clip.mp4", 8.0), ("clip.gif", 3.0), ("frames", 0.0), ("frames.png", 0.0), ("frames/", 0.0)],
)
def test_roundtrip(tmp_path: Path, name: str, tol: float) -> None:
    frames = gradient_frames()
    final = write_video(str(tmp_path / "out" / name), frames, fps=10)
    assert final.exists()
    got = read_video(final)
    assert got.shape == (N, H, W, 3) and got.dtype == np.uint8
    if tol == 0:
        np.testing.assert_array_equal(got, np.stack(frames))
    else:
        assert mae(got, np.stack(frames)) < tol
    assert listing(final.parent) == [final.name]  # no temp/partial leftovers


def test_png_suffix_names_a_directory(tmp_path: Path) -> None:
    assert write_video(tmp_path / "fox.png", gradient_frames(2)) == tmp_path / "fox"
    assert listing(tmp_path / "fox") == ["frame_00000.png", "frame_00001.png"]


def test_mp4_size_not_rounded_to_macroblocks(tmp_path: Path) -> None:
    for h, w in [(128, 128), (30, 50)]:
        got = read_video(write_video(tmp_path / f"v{h}x{w}.mp4", gradient_frames(3, h, w)))
        assert got.shape == (3, h, w, 3)


def test_mp4_odd_size_is_edge_padded(tmp_path: Path) -> None:
    frames = gradient_frames(4, 47, 63)
    got = read_video(write_video(tmp_path / "odd.mp4", frames))
    assert got.shape == (4, 48, 64, 3)
    assert mae(got[:, :47, :63], np.stack(frames)) < 8
    assert mae(got[:, 47, :63], np.stack(frames)[:, 46]) < 8  # replicated last row


def test_gif_timing_and_loop(tmp_path: Path) -> None:
    path = write_video(tmp_path / "a.gif", gradient_frames(3), fps=8)
    with Image.open(path) as im:
        assert im.n_frames == 3 and im.info["loop"] == 0
        assert im.info["duration"] == 120  # 1/8 s rounded to the GIF's centisecond resolution


@pytest.mark.parametrize("name", ["live.mp4", "live.gif"])
def test_frames_go_to_hidden_temp_in_same_dir(tmp_path: Path, name: str) -> None:
    final = tmp_path / name
    with VideoWriter(final) as w:
        for f in gradient_frames(3):
            w.append(f)
        assert w.frames_written == 3
        assert w.temp_path.parent == tmp_path
        assert w.temp_path.name.startswith(f".{name}.tmp-") and w.temp_path.suffix == final.suffix
        # gif bytes hit the disk at once; x264 may still hold a few frames in its lookahead
        assert set(listing(tmp_path)) <= {w.temp_path.name}
        assert not final.exists()
    assert listing(tmp_path) == [name]


def test_existing_output_refused_before_writing(tmp_path: Path) -> None:
    old = tmp_path / "fox.mp4"
    old.write_bytes(b"previous result")
    with pytest.raises(FileExistsError, match="--overwrite"):
        VideoWriter(old)
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_output_path(old)
    assert old.read_bytes() == b"previous result"
    assert listing(tmp_path) == ["fox.mp4"]


@pytest.mark.parametrize("name", ["fox.mp4", "fox.gif", "fox"])
def test_overwrite_replaces_only_on_close(tmp_path: Path, name: str) -> None:
    final = write_video(tmp_path / name, gradient_frames(2))
    before = read_video(final)

    w = VideoWriter(tmp_path / name, overwrite=True)
    for f in gradient_frames(5):
        w.append(f)
    w.abort()  # an aborted run keeps the old result
    np.testing.assert_array_equal(read_video(final), before)

    w = VideoWriter(tmp_path / name, overwrite=True)
    for f in gradient_frames(5):
        w.append(f)
    np.testing.assert_array_equal(read_video(final), before)
    assert w.close() == final
    assert read_video(final).shape[0] == 5
    assert listing(tmp_path) == [final.name]


def test_overwrite_refuses_kind_mismatch(tmp_path: Path) -> None:
    (tmp_path / "x.mp4").mkdir()
    with pytest.raises(FileExistsError, match="directory"):
        VideoWriter(tmp_path / "x.mp4", overwrite=True)


@pytest.mark.parametrize("name", ["a.mp4", "a.gif", "a"])
def test_abort_leaves_nothing(tmp_path: Path, name: str) -> None:
    w = VideoWriter(tmp_path / name)
    for f in gradient_frames(3):
        w.append(f)
    w.abort()
    w.abort()  # idempotent
    assert listing(tmp_path) == []
    with pytest.raises(RuntimeError):
        w.append(gradient_frames(1)[0])


@pytest.mark.parametrize("name, partial", [("fox.mp4", "fox.partial.mp4"), ("fox.gif", "fox.partial.gif"),
                                           ("fox", "fox.partial")])
def test_keyboard_interrupt_saves_playable_partial(tmp_path: Path, name: str, partial: str) -> None:
    frames = gradient_frames(4)
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / name) as w:
            for f in frames:
                w.append(f)
            raise KeyboardInterrupt
    assert listing(tmp_path) == [partial]
    got = read_video(tmp_path / partial)
    assert got.shape == (4, H, W, 3)
    assert mae(got, np.stack(frames)) < 8


def test_keyboard_interrupt_before_any_frame_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "fox.mp4"):
            raise KeyboardInterrupt
    assert listing(tmp_path) == []


@pytest.mark.parametrize("name", ["fox.mp4", "fox"])
def test_exception_leaves_nothing(tmp_path: Path, name: str) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(tmp_path / name) as w:
            for f in gradient_frames(3):
                w.append(f)
            raise RuntimeError("boom")
    assert listing(tmp_path) == []


def test_close_without_frames_raises_and_cleans_up(tmp_path: Path) -> None:
    w = VideoWriter(tmp_path / "empty.mp4")
    with pytest.raises(RuntimeError, match="no frames"):
        w.close()
    assert VideoWriter(tmp_path / "empty.mp4").close_partial() is None
    assert listing(tmp_path) == []


@pytest.mark.parametrize("name", ["clip.avi", "notes.txt", "clip.webm"])
def test_unknown_suffix(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"\.mp4.*\.gif"):
        VideoWriter(tmp_path / name)
    assert listing(tmp_path) == []


def test_missing_parent_dirs_are_created(tmp_path: Path) -> None:
    final = check_output_path(tmp_path / "a" / "b" / "c.mp4")
    assert final.parent.is_dir() and not final.exists()


def test_unwritable_dir_chmod(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running with privileges that ignore directory permissions (root?)")
        with pytest.raises(PermissionError, match="locked"):
            VideoWriter(locked / "fox.mp4")
    finally:
        locked.chmod(0o700)


def test_unwritable_dir_reported_before_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ro"
    target.mkdir()
    real_access = os.access
    monkeypatch.setattr(atomic.os, "access", lambda p, mode: Path(p) != target and real_access(p, mode))
    with pytest.raises(PermissionError, match=str(target)):
        check_output_path(target / "fox.mp4")
    with pytest.raises(PermissionError, match="not writable"):
        VideoWriter(target / "fox.gif")
    assert listing(target) == []


def test_output_dir_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        VideoWriter(blocker / "sub" / "fox.mp4")


def test_tensor_frames_match_reference_conversion(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(3, H, W, generator=g) * 0.8 for _ in range(3)]
    tensors[0][:, 0, :8] = torch.tensor([-1.5, -1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 2.0])
    expected = []
    for t in tensors:  # the reference save path, spelled out independently
        x = torch.clamp(t.float(), -1.0, 1.0)
        x = (x + 1.0) / 2.0
        expected.append((x * 255).to(torch.uint8).permute(1, 2, 0).numpy())
    got = read_video(write_video(tmp_path / "t", tensors))
    np.testing.assert_array_equal(got, np.stack(expected))


def test_bad_frames_rejected(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "v.mp4") as w:
        with pytest.raises(ValueError, match="uint8"):
            w.append(np.zeros((H, W, 3), np.float32))
        with pytest.raises(ValueError, match=r"\(3, H, W\)"):
            w.append(torch.zeros(H, W, 3))
        w.append(gradient_frames(1)[0])
        with pytest.raises(ValueError, match="differs"):
            w.append(np.zeros((H + 2, W, 3), np.uint8))
        w.append(gradient_frames(1)[0])  # the writer is still usable
    assert read_video(tmp_path / "v.mp4").shape == (2, H, W, 3)


@pytest.mark.parametrize("name, sink", [("fox.mp4", sinks.Mp4Sink), ("fox.gif", sinks.GifSink),
                                        ("fox", sinks.PngDirSink)])
def test_disk_full_cleans_up_and_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, sink: type
) -> None:
    w = VideoWriter(tmp_path / name)
    for f in gradient_frames(3):
        w.append(f)

    def full(self: object, frame: np.ndarray) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sink, "append", full)
    with pytest.raises(OSError) as info:
        w.append(gradient_frames(1)[0])
    assert info.value.errno == errno.ENOSPC
    assert w.frames_written == 3
    assert listing(tmp_path) == []


def test_ffmpeg_dying_surfaces_as_oserror(tmp_path: Path) -> None:
    w = VideoWriter(tmp_path / "fox.mp4")
    w.append(gradient_frames(1)[0])
    w._sink._proc.kill()  # type: ignore[union-attr]
    w._sink._proc.wait()  # type: ignore[union-attr]
    with pytest.raises(OSError, match="ffmpeg"):
        for f in gradient_frames(5):  # a pipe without a reader fails the next write
            w.append(f)
    assert listing(tmp_path) == []


# -------------------------------------------------------------------------------------------------- cluster


def _top_level_boxes(path: Path) -> list[str]:
    data, boxes, i = path.read_bytes(), [], 0
    while i + 8 <= len(data):
        size, kind = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8].decode("latin-1")
        boxes.append(kind)
        i += size if size >= 8 else len(data)
    return boxes


def test_mp4_is_faststart_and_tagged_bt709_limited_range(tmp_path: Path) -> None:
    out = write_video(tmp_path / "fox.mp4", gradient_frames(3))
    boxes = _top_level_boxes(out)
    assert boxes.index("moov") < boxes.index("mdat")  # browsers can start playing before the end arrives
    data = out.read_bytes()
    colr = data.find(b"colrnclx")
    assert colr > 0, "no colour box"
    primaries, transfer, matrix = (int.from_bytes(data[colr + 8 + 2 * k:colr + 10 + 2 * k], "big") for k in range(3))
    assert (primaries, transfer, matrix) == (1, 1, 1)  # ITU-R BT.709
    assert data[colr + 14] & 0x80 == 0  # limited ("tv") range
    if shutil.which("ffprobe"):  # the same facts as a player reads them
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                                "stream=color_range,color_space,color_primaries,color_transfer", "-of", "json",
                                str(out)], capture_output=True, text=True, check=True)
        (stream,) = json.loads(probe.stdout)["streams"]
        assert stream == {"color_range": "tv", "color_space": "bt709", "color_primaries": "bt709",
                          "color_transfer": "bt709"}


def test_mp4_encoder_survives_sigterm_to_every_process(tmp_path: Path) -> None:
    """SLURM's scancel/preemption signals every process of the job: ffmpeg must keep encoding until it is
    told to finish, so the run can still write its last frames and close a playable file."""
    w = VideoWriter(tmp_path / "fox.mp4")
    frames = gradient_frames(6)
    for f in frames[:3]:
        w.append(f)
    proc = w._sink._proc  # type: ignore[union-attr]
    os.kill(proc.pid, signal.SIGTERM)
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.3)
    assert proc.poll() is None, "ffmpeg died of SIGTERM"
    for f in frames[3:]:
        w.append(f)
    part = w.close_partial()
    assert part is not None and read_video(part).shape[0] == 6

"""Streaming frames out of a finished video for the drift report: one frame in memory at a time.

Inputs: an mp4 (or anything ffmpeg decodes, through imageio-ffmpeg's pipe), a gif (Pillow, frame by frame)
or a folder of PNG frames (``frame_00000.png`` ... as ``fifo-gen`` writes them, else every ``*.png`` by name).
Every way a file can fail to be a usable video is raised as :class:`VideoError`, one sentence naming the file,
so the command can print it and exit 2 before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_FRAME_RE = re.compile(r"frame_(\d+)\.png")
FORMATS = "an mp4, a gif or a folder of PNG frames"


class VideoError(ValueError):
    """A file that is not a readable video (not one, empty, truncated, too short): one sentence."""


@dataclass
class VideoSource:
    """An opened video: its frame rate (None for a PNG folder), size, and the frame count its header states
    (None when unknown); :meth:`frames` streams the frames as (H, W, 3) uint8 arrays."""

    path: Path
    kind: str  # mp4 | gif | png
    fps: float | None
    size: tuple[int, int] | None  # (height, width) from the header, when known
    expected_frames: int | None

    def frames(self) -> Iterator[np.ndarray]:
        if self.kind == "png":
            yield from _png_frames(self.path)
        elif self.kind == "gif":
            yield from _gif_frames(self.path)
        else:
            yield from _ffmpeg_frames(self.path)


def open_video(path: str | Path) -> VideoSource:
    """Open ``path`` and read its header; raise VideoError if it cannot be a video."""
    p = Path(path)
    if p.is_dir():
        files = _png_files(p)
        if not files:
            raise VideoError(f"{p} is a folder without PNG frames; give {FORMATS}")
        return VideoSource(p, "png", None, None, len(files))
    if not p.exists():
        raise VideoError(f"{p} does not exist")
    if not p.is_file():
        raise VideoError(f"{p} is not a file; give {FORMATS}")
    if p.stat().st_size == 0:
        raise VideoError(f"{p} is empty (0 bytes)")
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic in (b"GIF87a", b"GIF89a"):
        return _open_gif(p)
    return _open_ffmpeg(p)


def _png_files(folder: Path) -> list[Path]:
    numbered = [(int(m.group(1)), f) for f in folder.iterdir() if (m := _FRAME_RE.fullmatch(f.name))]
    if numbered:
        return [f for _, f in sorted(numbered)]
    return sorted(f for f in folder.iterdir() if f.suffix.lower() == ".png" and f.is_file())


def _png_frames(folder: Path) -> Iterator[np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    for f in _png_files(folder):
        try:
            with Image.open(f) as im:
                yield np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise VideoError(f"{f} is not a readable PNG frame ({_first_line(e)})") from None


def _open_gif(p: Path) -> VideoSource:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            duration_ms = im.info.get("duration") or 100
            count = getattr(im, "n_frames", None)  # walks the file's blocks, not its pixels
            size = (im.height, im.width)
    except (OSError, UnidentifiedImageError, EOFError, SyntaxError) as e:
        raise VideoError(f"{p} is not a readable gif ({_first_line(e)})") from None
    return VideoSource(p, "gif", 1000.0 / duration_ms, size, count)


def _gif_frames(p: Path) -> Iterator[np.ndarray]:
    from PIL import Image, ImageSequence

    try:
        with Image.open(p) as im:
            for frame in ImageSequence.Iterator(im):
                yield np.asarray(frame.convert("RGB"))
    except (OSError, EOFError, SyntaxError) as e:
        raise VideoError(f"{p} is truncated or damaged ({_first_line(e)})") from None


def _open_ffmpeg(p: Path) -> VideoSource:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(p), pix_fmt="rgb24")
    try:
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as e:
        raise VideoError(f"{p} is not a readable video ({FORMATS}): ffmpeg cannot decode it") from e
    finally:
        reader.close()
    fps = float(meta.get("fps") or 0) or None
    duration = float(meta.get("duration") or 0)
    expected = round(duration * fps) if fps and duration > 0 else None
    width, height = meta["size"]
    return VideoSource(p, "mp4", fps, (height, width), expected)


def _ffmpeg_frames(p: Path) -> Iterator[np.ndarray]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(p), pix_fmt="rgb24")
    try:
        width, height = next(reader)["size"]
        size = width * height * 3
        for buf in reader:
            if len(buf) != size:
                raise VideoError(f"{p} is truncated: its last frame is incomplete")
            yield np.frombuffer(buf, np.uint8).reshape(height, width, 3)
    except (OSError, RuntimeError) as e:
        raise VideoError(f"{p} cannot be decoded to the end ({_first_line(e)})") from None
    finally:
        reader.close()


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(e).__name__

"""Crash-safe streaming video output.

A FIFO long-video run decodes one frame at a time for minutes or hours, so frames are appended to
the output as soon as they exist (memory stays constant in the number of frames) and the file only
appears under its final name once it is complete. Everything is written to a hidden temp path in
the same directory and moved into place with an atomic rename; an interrupted run can be salvaged
as a playable ``<stem>.partial<suffix>`` instead.

Formats, chosen by the output path:

* ``.mp4``  -- H.264/yuv420p through the ffmpeg binary bundled with imageio-ffmpeg.
* ``.gif``  -- streamed frame by frame with Pillow (one adaptive palette per frame, loops forever).
* no suffix, a trailing ``/`` or ``.png`` -- a directory of ``frame_00000.png`` ... (``out/fox.png``
  becomes the directory ``out/fox``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic import (
    GIF,
    MP4,
    PNG_DIR,
    SUPPORTED_FORMATS,
    check_output_path,
    move_into_place,
    partial_path,
    remove_path,
    resolve_output,
    temp_path,
)
from .sinks import GifSink, Mp4Sink, PngDirSink, pad_even, to_hwc_uint8

if TYPE_CHECKING:
    import torch

__all__ = ["SUPPORTED_FORMATS", "VideoWriter", "check_output_path", "read_video", "write_video"]

_logger = logging.getLogger(__name__)
_FRAME_RE = re.compile(r"frame_(\d+)\.png")


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the current frame is completely written.

    A KeyboardInterrupt in the middle of a write would leave a torn frame in the ffmpeg pipe or a
    truncated PNG, and the salvaged ``.partial`` output would be unreadable.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    pending: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if pending:
            raise KeyboardInterrupt


class VideoWriter:
    """Streams uint8 HWC RGB frames to mp4, gif, or a directory of PNGs, chosen by the path suffix.

    Frames go to a hidden temp path next to the final one and are published by an atomic rename in
    :meth:`close`, so a crash never leaves a half-written file at ``path`` (and, with
    ``overwrite=True``, an aborted run keeps the previous result). As a context manager: normal exit
    closes, ``KeyboardInterrupt`` salvages a playable ``<stem>.partial<suffix>``, any other exception
    aborts; the exception is always re-raised.
    """

    def __init__(self, path: str | Path, fps: float = 10.0, overwrite: bool = False, crf: int = 17) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not (isinstance(crf, int) and 0 <= crf <= 51):
            raise ValueError(f"crf must be an int in [0, 51] (lower = better quality), got {crf!r}")
        self.final_path = check_output_path(path, overwrite)
        self.kind, _ = resolve_output(path)
        self.partial_path = partial_path(self.kind, self.final_path)
        self.fps, self.overwrite, self.crf = float(fps), overwrite, crf
        self.frames_written = 0
        self._size: tuple[int, int] | None = None
        self._state = "open"

        final = self.final_path
        suffix = "" if self.kind == PNG_DIR else final.suffix  # keep it: ffmpeg picks the muxer by it
        self.temp_path = temp_path(final, suffix)
        self._sink: Mp4Sink | GifSink | PngDirSink
        if self.kind == MP4:
            self._sink = Mp4Sink(self.temp_path, self.fps, crf)
        elif self.kind == GIF:
            self._sink = GifSink(self.temp_path, self.fps)
        else:
            self._sink = PngDirSink(self.temp_path)

    # ---------------------------------------------------------------------------------------------

    def append(self, frame: np.ndarray | torch.Tensor) -> None:
        """Write one frame now (uint8 (H, W, 3), or float tensor (3, H, W) in [-1, 1]).

        The first frame fixes the size. An OSError from the encoder or filesystem (e.g. ENOSPC)
        aborts the writer, removing the temp output, before it propagates.
        """
        self._require_open()
        img = to_hwc_uint8(frame)
        size = (img.shape[0], img.shape[1])
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise ValueError(f"frame size {size} differs from the first frame's {self._size} (H, W)")
        if self.kind == MP4:
            img = pad_even(img)
        try:
            with _sigint_deferred():
                self._sink.append(img)
                self.frames_written += 1
        except OSError:
            self.abort()
            raise

    def close(self) -> Path:
        """Finish the file and atomically move it to the final path, which is returned."""
        if self._state == "closed":
            return self.final_path
        self._require_open()
        if self.frames_written == 0:
            self.abort()
            raise RuntimeError(f"no frames were appended; nothing was written to {self.final_path}")
        try:
            self._sink.close()
        except BaseException:
            self.abort()
            raise
        final = self.final_path
        if not self.overwrite and (final.exists() or final.is_symlink()):
            self._state = "closed"
            raise FileExistsError(
                f"output {final} was created by something else while writing; "
                f"the finished video was kept at {self.temp_path}"
            )
        try:
            move_into_place(self.temp_path, final, replace=self.overwrite)
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        return final

    def close_partial(self) -> Path | None:
        """Finish what was written so far as a playable ``<stem>.partial<suffix>`` (replacing an older one).

        Returns None (and leaves nothing behind) if no frame was written.
        """
        if self._state != "open":
            return None
        if self.frames_written == 0:
            self.abort()
            return None
        try:
            self._sink.close()
            move_into_place(self.temp_path, self.partial_path, replace=True)
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        return self.partial_path

    def abort(self) -> None:
        """Stop writing and delete the temp output; the final path is left exactly as it was."""
        if self._state != "open":
            return
        self._state = "aborted"
        with contextlib.suppress(Exception):
            self._sink.discard()
        remove_path(self.temp_path)

    # ---------------------------------------------------------------------------------------------

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc_type is None:
            self.close()
        elif issubclass(exc_type, KeyboardInterrupt):
            try:
                saved = self.close_partial()
            except Exception:  # the interrupt matters more than a failed salvage
                _logger.exception("interrupted; could not save the partial video")
            else:
                if saved is not None:
                    _logger.warning("interrupted: %d frames saved to %s", self.frames_written, saved)
        else:
            self.abort()
        return False

    def __del__(self) -> None:
        # A writer dropped without close() must not leave ffmpeg running or a temp file behind.
        with contextlib.suppress(Exception):
            if getattr(self, "_state", None) == "open":
                self.abort()

    def _require_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"VideoWriter for {self.final_path} is already {self._state}")


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray | torch.Tensor],
    fps: float = 10.0,
    overwrite: bool = False,
    crf: int = 17,
) -> Path:
    """Write an iterable of frames with :class:`VideoWriter` semantics; returns the final path."""
    writer = VideoWriter(path, fps=fps, overwrite=overwrite, crf=crf)
    with writer:
        for frame in frames:
            writer.append(frame)
    return writer.final_path


# --------------------------------------------------------------------------------------------------
# Reading (tests and tools; loads everything into memory)


def read_video(path: str | Path) -> np.ndarray:
    """Decode an mp4, gif or PNG directory written by :class:`VideoWriter` to (F, H, W, 3) uint8."""
    kind, p = (PNG_DIR, Path(path)) if Path(path).is_dir() else resolve_output(path)
    if kind == PNG_DIR:
        from PIL import Image

        indexed = [(int(m.group(1)), f) for f in p.iterdir() if (m := _FRAME_RE.fullmatch(f.name))]
        if not indexed:
            raise ValueError(f"no frame_*.png files in {p}")
        frames = []
        for _, f in sorted(indexed):
            with Image.open(f) as im:
                frames.append(np.asarray(im.convert("RGB")))
        return np.stack(frames)
    if kind == GIF:
        from PIL import Image, ImageSequence

        with Image.open(p) as im:
            return np.stack([np.asarray(fr.convert("RGB")) for fr in ImageSequence.Iterator(im)])

    import imageio_ffmpeg

    if not p.is_file():
        raise FileNotFoundError(f"no such video: {p}")
    reader = imageio_ffmpeg.read_frames(str(p), pix_fmt="rgb24")
    try:
        width, height = next(reader)["size"]
        frames = [np.frombuffer(b, np.uint8).reshape(height, width, 3) for b in reader]
    finally:
        reader.close()
    if not frames:
        raise ValueError(f"no frames decoded from {p}")
    return np.stack(frames)

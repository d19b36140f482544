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
import errno
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["SUPPORTED_FORMATS", "VideoWriter", "check_output_path", "read_video", "write_video"]

SUPPORTED_FORMATS = (".mp4", ".gif", "a directory of PNGs (no suffix, trailing '/', or '.png')")

_MP4, _GIF, _PNG_DIR = "mp4", "gif", "png-dir"
_logger = logging.getLogger(__name__)
_FRAME_RE = re.compile(r"frame_(\d+)\.png")


# --------------------------------------------------------------------------------------------------
# Output-path handling


def _resolve(path: str | os.PathLike[str]) -> tuple[str, Path]:
    """Map a user-supplied output path to (format, final path); raise early on unsupported suffixes."""
    raw = os.fspath(path)
    p = Path(raw).expanduser().absolute()
    if raw.endswith(("/", os.sep)) or p.suffix == "":
        return _PNG_DIR, p
    suffix = p.suffix.lower()
    if suffix == ".mp4":
        return _MP4, p
    if suffix == ".gif":
        return _GIF, p
    if suffix == ".png":
        return _PNG_DIR, p.with_suffix("")
    raise ValueError(
        f"unsupported output format {p.suffix!r} for {p.name!r}; supported: " + ", ".join(SUPPORTED_FORMATS)
    )


def check_output_path(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Validate an output path before any expensive work (model loading, sampling) starts.

    Creates missing parent directories. Raises ``ValueError`` for an unsupported format,
    ``FileExistsError`` if the output exists and ``overwrite`` is false, and ``PermissionError`` /
    ``NotADirectoryError`` if the output directory cannot be written. Returns the final path
    (absolute; for PNG output, the directory).
    """
    kind, final = _resolve(path)
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except PermissionError as e:
        raise PermissionError(
            f"cannot create output directory {parent}: permission denied; choose another --output"
        ) from e
    except (FileExistsError, NotADirectoryError) as e:
        raise NotADirectoryError(
            f"cannot use {parent} as output directory: a path component is a file, not a directory; "
            "choose another --output"
        ) from e
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"output directory {parent} is not writable; choose another --output")
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise FileExistsError(f"output {final} exists; pass --overwrite or choose another --output")
        if final.is_dir() != (kind == _PNG_DIR):
            what = "a directory" if final.is_dir() else "a file"
            raise FileExistsError(
                f"output {final} exists and is {what}; refusing to replace it with a {kind} output, "
                "choose another --output"
            )
    return final


def _partial_path(kind: str, final: Path) -> Path:
    if kind == _PNG_DIR:
        return final.with_name(final.name + ".partial")
    return final.with_name(f"{final.stem}.partial{final.suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Persist a rename; best effort because some platforms/filesystems cannot fsync directories."""
    with contextlib.suppress(OSError):
        _fsync_file(path)


def _move_into_place(src: Path, dst: Path, replace: bool) -> None:
    """Atomically publish ``src`` as ``dst`` (a file, or a directory swapped in with two renames)."""
    if not src.is_dir():
        os.replace(src, dst)
    elif not (replace and dst.exists()):
        os.rename(src, dst)  # fails rather than merging if a non-empty dst appeared meanwhile
    else:
        # Directories cannot be os.replace'd over non-empty ones: park the old one, swap, then delete.
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(dst, old)
        try:
            os.rename(src, dst)
        except BaseException:
            os.rename(old, dst)
            raise
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(dst.parent)


# --------------------------------------------------------------------------------------------------
# Frame conversion


def _to_hwc_uint8(frame: np.ndarray | torch.Tensor) -> np.ndarray:
    """Normalise one frame to a contiguous (H, W, 3) uint8 array."""
    torch = sys.modules.get("torch")  # a tensor can only exist if torch is already imported
    if torch is not None and isinstance(frame, torch.Tensor):
        if frame.is_floating_point():
            if frame.ndim != 3 or frame.shape[0] != 3:
                shape = tuple(frame.shape)
                raise ValueError(f"float tensor frames must be (3, H, W) in [-1, 1], got {shape}")
            # Same op order as the FIFO-Diffusion/VideoCrafter save path, so outputs match bit for bit.
            x = torch.clamp(frame.detach().cpu().float(), -1.0, 1.0)
            x = (x + 1.0) / 2.0
            x = (x * 255).to(torch.uint8).permute(1, 2, 0)
            return np.ascontiguousarray(x.numpy())
        if frame.dtype != torch.uint8:
            raise ValueError(f"tensor frames must be float (3, H, W) or uint8 (H, W, 3), got {frame.dtype}")
        frame = frame.detach().cpu().numpy()
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"frame must be a numpy array or torch tensor, got {type(frame).__name__}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(
            f"array frames must be (H, W, 3) uint8 RGB, got shape {frame.shape} dtype {frame.dtype}"
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame has zero size: {frame.shape}")
    return np.ascontiguousarray(frame)


def _pad_even(frame: np.ndarray) -> np.ndarray:
    """yuv420p subsamples chroma 2x2, so H.264 needs even sides; replicate the last row/column."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


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


# --------------------------------------------------------------------------------------------------
# Sinks: each writes one format to a temp path. close() must leave a complete, decodable file.


class _Mp4Sink:
    """Pipes raw RGB frames into the imageio-ffmpeg ffmpeg binary (libx264, yuv420p, CRF).

    ffmpeg is driven directly (rather than through ``imageio_ffmpeg.write_frames``) so its exit
    status can be checked before the file is published, and so it runs in its own process group:
    a terminal Ctrl-C then reaches only Python, which can still ask ffmpeg to finish a playable
    partial file.
    """

    def __init__(self, path: Path, fps: float, crf: int) -> None:
        self.path, self.fps, self.crf = path, fps, crf
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def _start(self, height: int, width: int) -> None:
        import imageio_ffmpeg

        rate = Fraction(self.fps).limit_denominator(1001)
        cmd = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(rate),
            "-i", "pipe:0", "-an",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(self.crf),
            "-f", "mp4", "-y", str(self.path),
        ]  # fmt: skip
        # No scale filter anywhere: the frame size is kept exactly (imageio's macro_block_size=1).
        self._stderr = tempfile.TemporaryFile()
        if os.name == "nt":
            isolate: dict[str, Any] = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        else:
            isolate = {"start_new_session": True}
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr, **isolate
        )

    def _error(self, what: str) -> OSError:
        """Turn an ffmpeg failure into an OSError, keeping ENOSPC recognisable for callers."""
        log = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            log = self._stderr.read().decode(errors="replace").strip()[-2000:]
        code = errno.ENOSPC if "No space left on device" in log else errno.EIO
        return OSError(code, f"{what} while writing {self.path.name}" + (f": {log}" if log else ""))

    def append(self, frame: np.ndarray) -> None:
        if self._proc is None:
            self._start(frame.shape[0], frame.shape[1])
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(memoryview(frame).cast("B"))
            self._proc.stdin.flush()
        except BrokenPipeError as e:
            self._proc.wait()
            raise self._error(f"ffmpeg exited early (code {self._proc.returncode})") from e

    def close(self) -> None:
        if self._proc is None:
            return
        proc = self._proc
        try:
            if proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
            code = proc.wait()
            if code != 0:
                raise self._error(f"ffmpeg failed with exit code {code}")
            _fsync_file(self.path)
        finally:
            self._cleanup()

    def discard(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            with contextlib.suppress(OSError):
                if self._proc.stdin is not None:
                    self._proc.stdin.close()
            self._proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


class _GifSink:
    """Streams an animated GIF with Pillow's per-frame GIF encoder.

    imageio 2.38's ``get_writer(..., mode='I')`` for .gif uses the Pillow v3 plugin, which keeps every
    frame in a Python list until close(); its streaming legacy writer is incompatible with current
    Pillow. So the GIF is assembled here: global header + NETSCAPE loop block from the first frame,
    then one self-contained image block (own palette, full frame) per appended frame.
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        # GIF delays are whole centiseconds; Pillow takes milliseconds.
        self.duration_ms = max(1, round(100.0 / fps)) * 10
        self._fh: IO[bytes] | None = None

    def append(self, frame: np.ndarray) -> None:
        from PIL import GifImagePlugin, Image

        im = Image.fromarray(frame).quantize(256)
        if self._fh is None:
            self._fh = open(self.path, "wb")  # kept open across appends
            header, _ = GifImagePlugin.getheader(im, info={"loop": 0, "duration": self.duration_ms})
            self._fh.write(b"".join(header))
        blocks = GifImagePlugin.getdata(im, duration=self.duration_ms, disposal=1, include_color_table=True)
        self._fh.write(b"".join(blocks))
        self._fh.flush()

    def close(self) -> None:
        if self._fh is None:
            return
        try:
            self._fh.write(b";")  # GIF trailer
            self._fh.flush()
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()
            self._fh = None

    def discard(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None


class _PngDirSink:
    """One PNG per frame in a temp directory; each file is complete before the next one starts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._count = 0

    def append(self, frame: np.ndarray) -> None:
        from PIL import Image

        if self._count == 0:
            self.path.mkdir()
        Image.fromarray(frame).save(self.path / f"frame_{self._count:05d}.png", format="PNG")
        self._count += 1

    def close(self) -> None:
        if self._count == 0:
            return
        for f in self.path.iterdir():
            _fsync_file(f)
        _fsync_dir(self.path)

    def discard(self) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# Public writer


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
        self.kind, _ = _resolve(path)
        self.partial_path = _partial_path(self.kind, self.final_path)
        self.fps, self.overwrite, self.crf = float(fps), overwrite, crf
        self.frames_written = 0
        self._size: tuple[int, int] | None = None
        self._state = "open"

        final = self.final_path
        suffix = "" if self.kind == _PNG_DIR else final.suffix  # keep it: ffmpeg picks the muxer by it
        self.temp_path = final.with_name(f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}")
        self._sink: _Mp4Sink | _GifSink | _PngDirSink
        if self.kind == _MP4:
            self._sink = _Mp4Sink(self.temp_path, self.fps, crf)
        elif self.kind == _GIF:
            self._sink = _GifSink(self.temp_path, self.fps)
        else:
            self._sink = _PngDirSink(self.temp_path)

    # ---------------------------------------------------------------------------------------------

    def append(self, frame: np.ndarray | torch.Tensor) -> None:
        """Write one frame now (uint8 (H, W, 3), or float tensor (3, H, W) in [-1, 1]).

        The first frame fixes the size. An OSError from the encoder or filesystem (e.g. ENOSPC)
        aborts the writer, removing the temp output, before it propagates.
        """
        self._require_open()
        img = _to_hwc_uint8(frame)
        size = (img.shape[0], img.shape[1])
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise ValueError(f"frame size {size} differs from the first frame's {self._size} (H, W)")
        if self.kind == _MP4:
            img = _pad_even(img)
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
            _move_into_place(self.temp_path, final, replace=self.overwrite)
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
            _move_into_place(self.temp_path, self.partial_path, replace=True)
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
        _remove(self.temp_path)

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
    kind, p = (_PNG_DIR, Path(path)) if Path(path).is_dir() else _resolve(path)
    if kind == _PNG_DIR:
        from PIL import Image

        indexed = [(int(m.group(1)), f) for f in p.iterdir() if (m := _FRAME_RE.fullmatch(f.name))]
        if not indexed:
            raise ValueError(f"no frame_*.png files in {p}")
        frames = []
        for _, f in sorted(indexed):
            with Image.open(f) as im:
                frames.append(np.asarray(im.convert("RGB")))
        return np.stack(frames)
    if kind == _GIF:
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

"""Encoders that write one video format to a path, frame by frame. ``close()`` must leave a complete,
decodable file; ``discard()`` stops without caring about the file (the caller deletes it)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from .atomic import fsync_dir, fsync_file

if TYPE_CHECKING:
    import torch


def to_hwc_uint8(frame: np.ndarray | torch.Tensor) -> np.ndarray:
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


def pad_even(frame: np.ndarray) -> np.ndarray:
    """yuv420p subsamples chroma 2x2, so H.264 needs even sides; replicate the last row/column."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


# BT.709, limited ("tv") range: what players assume for HD video, and tagged so that none has to guess.
# The RGB->YUV matrix is chosen explicitly (older ffmpeg builds would use BT.601 and only tag 709).
_COLOUR_FILTER = ("scale=out_color_matrix=bt709:out_range=tv,"
                  "setparams=range=tv:colorspace=bt709:color_primaries=bt709:color_trc=bt709")
_COLOUR_TAGS = ["-color_range", "tv", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"]
_STOP_SIGNALS = {getattr(signal, n) for n in ("SIGINT", "SIGTERM") if hasattr(signal, n)}


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Block SIGINT/SIGTERM in this thread while a child is started; pending ones arrive after."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: the process group flag isolates ffmpeg
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Mp4Sink:
    """Pipes raw RGB frames into the imageio-ffmpeg ffmpeg binary (libx264, yuv420p, CRF, BT.709 tags,
    ``moov`` before ``mdat`` so browsers start playing before the whole file has arrived).

    ffmpeg is driven directly (rather than through ``imageio_ffmpeg.write_frames``) so its exit status can
    be checked before the file is published. It must outlive a stop request, so that Python can finish the
    iteration and close a playable partial file: a terminal's Ctrl-C goes to the foreground process group
    (ffmpeg runs in its own session), but a scheduler (SLURM's ``scancel``, preemption, time limit) sends
    SIGTERM to every process of the job. ffmpeg installs its own SIGTERM/SIGINT handlers, so ``SIG_IGN``
    would not survive ``exec``; the signal *mask* does, and ffmpeg never unblocks them: started with both
    blocked, it keeps encoding until its stdin closes, and the pending signals die with it. (An in-process
    encoder such as PyAV would avoid the child altogether, at the cost of a ~60 MB dependency and a
    different libx264 build; the mask keeps today's encoder and output.)
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
            "-i", "pipe:0", "-an", "-vf", _COLOUR_FILTER,
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(self.crf), *_COLOUR_TAGS,
            "-movflags", "+faststart", "-f", "mp4", "-y", str(self.path),
        ]  # fmt: skip
        # The scale filter only converts colours: the frame size is kept exactly (imageio's macro_block_size=1).
        self._stderr = tempfile.TemporaryFile()
        if os.name == "nt":
            isolate: dict[str, Any] = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        else:
            isolate = {"start_new_session": True}
        with _signals_blocked():  # the child inherits the mask (see the class docstring)
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
            fsync_file(self.path)
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


class GifSink:
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


class PngDirSink:
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
            fsync_file(f)
        fsync_dir(self.path)

    def discard(self) -> None:
        pass

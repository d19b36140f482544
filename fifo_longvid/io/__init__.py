"""Output I/O: crash-safe, streaming video writing (see :mod:`fifo_longvid.io.video`)."""

from fifo_longvid.io.video import SUPPORTED_FORMATS, VideoWriter, check_output_path, read_video, write_video

__all__ = ["SUPPORTED_FORMATS", "VideoWriter", "check_output_path", "read_video", "write_video"]

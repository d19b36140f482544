"""Publishing output files safely: where the output goes, and how a finished temp file replaces it.

Everything is written to a hidden temp path in the same directory and moved into place with an
atomic rename, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path

SUPPORTED_FORMATS = (".mp4", ".gif", "a directory of PNGs (no suffix, trailing '/', or '.png')")

MP4, GIF, PNG_DIR = "mp4", "gif", "png-dir"


def resolve_output(path: str | os.PathLike[str]) -> tuple[str, Path]:
    """Map a user-supplied output path to (format, final path); raise early on unsupported suffixes."""
    raw = os.fspath(path)
    p = Path(raw).expanduser().absolute()
    if raw.endswith(("/", os.sep)) or p.suffix == "":
        return PNG_DIR, p
    suffix = p.suffix.lower()
    if suffix == ".mp4":
        return MP4, p
    if suffix == ".gif":
        return GIF, p
    if suffix == ".png":
        return PNG_DIR, p.with_suffix("")
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
    kind, final = resolve_output(path)
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
        if final.is_dir() != (kind == PNG_DIR):
            what = "a directory" if final.is_dir() else "a file"
            raise FileExistsError(
                f"output {final} exists and is {what}; refusing to replace it with a {kind} output, "
                "choose another --output"
            )
    return final


def partial_path(kind: str, final: Path) -> Path:
    if kind == PNG_DIR:
        return final.with_name(final.name + ".partial")
    return final.with_name(f"{final.stem}.partial{final.suffix}")


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Persist a rename; best effort because some platforms/filesystems cannot fsync directories."""
    with contextlib.suppress(OSError):
        fsync_file(path)


def move_into_place(src: Path, dst: Path, replace: bool) -> None:
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
    fsync_dir(dst.parent)

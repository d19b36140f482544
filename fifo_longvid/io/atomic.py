"""Publishing output files safely: where the output goes, and how a finished temp file replaces it.

Everything is written to a hidden temp path in the same directory and moved into place with an
atomic rename, so a crash never leaves a half-written file under the final name. Temp names carry their
writer (``.NAME.tmp-HOST-PID-RAND``), so a later run can tell a crashed writer's leftovers from a live one's.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterable
from pathlib import Path

SUPPORTED_FORMATS = (".mp4", ".gif", "a directory of PNGs (no suffix, trailing '/', or '.png')")

MP4, GIF, PNG_DIR = "mp4", "gif", "png-dir"

HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname().split(".")[0]) or "host"
_OWNER_RE = re.compile(r"(?:(?P<host>[A-Za-z0-9_.]+)-)?(?P<pid>\d+)-[0-9a-f]+(?:\.[A-Za-z0-9]+)?")


def temp_path(final: Path, suffix: str = "", kind: str = "tmp") -> Path:
    """``.NAME.tmp-HOST-PID-RAND[suffix]`` beside ``final``: hidden, unique, and naming its writer."""
    return final.with_name(f".{final.name}.{kind}-{HOST}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def temp_owner(name: str, bases: Iterable[str]) -> tuple[str, int] | None:
    """(host, pid) of the writer when ``name`` is a temp file of one of the file names ``bases`` (as made by
    :func:`temp_path`, or by older versions without the host), else None."""
    for base in bases:
        for kind in ("tmp", "old"):
            prefix = f".{base}.{kind}-"
            if name.startswith(prefix) and (m := _OWNER_RE.fullmatch(name[len(prefix):])):
                return m["host"] or HOST, int(m["pid"])
    return None


def writer_alive(host: str, pid: int) -> bool:
    """Whether a temp file's writer may still be running: another host's writer is assumed alive."""
    if host != HOST or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


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
    """Where an interrupted run's playable output goes: ``fox.partial.mp4``, or ``fox.partial/`` for PNGs."""
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
        old = temp_path(dst, kind="old")
        os.rename(dst, old)
        try:
            os.rename(src, dst)
        except BaseException:
            os.rename(old, dst)
            raise
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(dst.parent)

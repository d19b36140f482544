"""Prompt files for ``fifo-gen batch``: parsing and validation into ``BatchItem`` records.

Formats, chosen by the file suffix:

* ``.txt``   -- one prompt per line; blank lines and ``#`` comments are ignored. A line
  ``image.png;a prompt`` (the FIFO-Diffusion fork's image-to-video format) sets ``image``.
* ``.csv`` / ``.tsv`` -- a header with a ``prompt`` column plus optional columns ``seed``, ``num_frames``,
  ``qcache``, ``name``, ``image``, ``lora`` (``PATH[:SCALE]``, several separated by ``;``; they replace the
  batch's ``--lora``), and any dotted run-config key (``sampling.cfg``, ``fifo.init`` ...).
  Empty cells mean "not set".
* ``.jsonl`` -- one JSON object per line with the same fields (blank lines and ``#`` lines ignored).

Files are UTF-8 (a BOM is accepted), CRLF line ends are tolerated. The WHOLE file is checked before
anything runs: every bad line is collected and reported together (``PromptFileError``).
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMATS = (".txt", ".csv", ".tsv", ".jsonl")
FIELDS = ("prompt", "seed", "num_frames", "qcache", "name", "image", "lora")
# keys that would change the model shared by the whole batch; they cannot vary per row
NOT_PER_ROW = ("model", "checkpoint", "device", "dtype", "prompts", "mode")
MAX_PROMPT_CHARS = 2000
_IMAGE_LINE = re.compile(r"^\s*([^;]+?\.(?:png|jpe?g|webp|bmp))\s*;(.*)$", re.IGNORECASE)
_OVERRIDE_KEY = re.compile(r"^[a-z_]+(\.[a-z_0-9]+)+$")
NO_I2V = ("image-to-video lines (image;prompt or an image column) need an I2V model; this model has none "
          "(use --config videocrafter1_i2v, or tiny_i2v to try it)")


@dataclass(frozen=True)
class BatchItem:
    """One video of a batch. ``index`` is its 0-based position among the prompts, ``line`` its line in the file."""

    index: int
    line: int
    prompt: str
    seed: int | None = None
    num_frames: int | None = None
    qcache: float | None = None
    name: str | None = None
    image: str | None = None  # image-to-video conditioning (resolved against the prompt file's folder)
    loras: tuple[str, ...] | None = None  # PATH[:SCALE] each (paths resolved like image); None: the batch's
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted run-config keys from extra columns


class PromptFileError(ValueError):
    """A prompt file with problems; ``problems`` lists (line number, reason) for every bad line."""

    def __init__(self, path: str | Path, problems: list[tuple[int, str]]):
        self.path = Path(path)
        self.problems = sorted(problems, key=lambda p: p[0])
        lines = [f"  {self.path.name}:{ln}: {why}" if ln else f"  {self.path.name}: {why}"
                 for ln, why in self.problems]
        n = len(self.problems)
        super().__init__(f"{self.path}: {n} problem{'s' if n != 1 else ''}, nothing was generated:\n"
                         + "\n".join(lines))


def read_prompts(path: str | Path, allow_images: bool = False) -> list[BatchItem]:
    """Parse and validate a prompt file. Raises ``PromptFileError`` listing every bad line.

    ``allow_images``: whether the batch's model can take image conditioning (an I2V model). Without it,
    lines with an image are reported as errors.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise PromptFileError(path, [(0, f"unsupported prompt file type {path.suffix or '(none)'!r}; use "
                                         + ", ".join(FORMATS))])
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PromptFileError(path, [(0, "no such file")]) from None
    except OSError as e:
        raise PromptFileError(path, [(0, f"cannot read: {e.strerror or e}")]) from None
    problems: list[tuple[int, str]] = []
    lines = _decode_lines(data, problems)
    if suffix == ".txt":
        rows = _parse_txt(lines, problems)
    elif suffix == ".jsonl":
        rows = _parse_jsonl(lines, problems)
    else:
        rows = _parse_table(lines, "\t" if suffix == ".tsv" else ",", problems)
    items: list[BatchItem] = []
    seen_names: dict[str, int] = {}
    for ln, raw in rows:
        item = _check_row(ln, raw, len(items), path.parent, allow_images, problems)
        if item is None:
            continue
        if item.name is not None:
            if item.name in seen_names:
                problems.append((ln, f"name {item.name!r} is already used on line {seen_names[item.name]}"))
                continue
            seen_names[item.name] = ln
        items.append(item)
    if not items and not problems:
        problems.append((0, "no prompts in the file (only blank lines or comments)"))
    if problems:
        raise PromptFileError(path, problems)
    return items


def _decode_lines(data: bytes, problems: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Split into (line number, text) with CRLF/CR tolerated; undecodable lines are reported and blanked."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out = []
    for i, raw in enumerate(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append((i, f"not valid UTF-8 (byte {e.start + 1}); save the file as UTF-8"))
            text = ""
        out.append((i, text))
    if out and out[-1][1] == "" and data.endswith(b"\n"):
        out.pop()
    return out


def _skip(text: str) -> bool:
    s = text.strip()
    return not s or s.startswith("#")


def _parse_txt(lines: list[tuple[int, str]], problems: list[tuple[int, str]]) -> list[tuple[int, dict]]:
    rows = []
    for ln, text in lines:
        if _skip(text):
            continue
        m = _IMAGE_LINE.match(text)
        if m:
            rows.append((ln, {"image": m.group(1).strip(), "prompt": m.group(2).strip()}))
        else:
            rows.append((ln, {"prompt": text.strip()}))
    return rows


def _parse_jsonl(lines: list[tuple[int, str]], problems: list[tuple[int, str]]) -> list[tuple[int, dict]]:
    rows = []
    for ln, text in lines:
        if _skip(text):
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            problems.append((ln, f"invalid JSON ({e.msg} at column {e.colno})"))
            continue
        if not isinstance(obj, dict):
            problems.append((ln, f"expected a JSON object {{\"prompt\": ...}}, got {type(obj).__name__}"))
            continue
        rows.append((ln, obj))
    return rows


def _parse_table(lines: list[tuple[int, str]], delim: str, problems: list[tuple[int, str]]) -> list[tuple[int, dict]]:
    body = [(ln, t) for ln, t in lines if not t.lstrip().startswith("#")]
    header_at = next((k for k, (_, t) in enumerate(body) if t.strip()), None)
    if header_at is None:
        return []
    hdr_ln, hdr_text = body[header_at]
    try:
        header = [h.strip() for h in _split_row(hdr_text, delim)]
    except csv.Error as e:
        problems.append((hdr_ln, f"malformed header ({e})"))
        return []
    bad_header = False
    if "prompt" not in header:
        problems.append((hdr_ln, f"the header needs a 'prompt' column (found: {', '.join(header) or 'nothing'})"))
        bad_header = True
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        problems.append((hdr_ln, f"duplicate column {', '.join(dup)}"))
        bad_header = True
    for h in header:
        if h not in FIELDS and not _OVERRIDE_KEY.match(h):
            problems.append((hdr_ln, f"unknown column {h!r}; use {', '.join(FIELDS)} or a dotted run-config key "
                                     "such as sampling.cfg"))
            bad_header = True
    if bad_header:
        return []
    rows = []
    for ln, text in body[header_at + 1 :]:
        if not text.strip():
            continue
        try:
            cells = _split_row(text, delim)
        except csv.Error as e:
            problems.append((ln, f"malformed row ({e})"))
            continue
        if len(cells) != len(header):
            problems.append((ln, f"{len(cells)} fields, the header has {len(header)} ({', '.join(header)}); quote "
                                 "cells that contain the delimiter"))
            continue
        rows.append((ln, {h: c for h, c in zip(header, cells, strict=True) if c.strip() != "" or h == "prompt"}))
    return rows


def _split_row(text: str, delim: str) -> list[str]:
    reader = csv.reader(io.StringIO(text), delimiter=delim, strict=True)
    try:
        return next(reader)
    except StopIteration:
        return []


def _check_row(ln: int, raw: dict[str, Any], index: int, base: Path, allow_images: bool,
               problems: list[tuple[int, str]]) -> BatchItem | None:
    """Type-check one row; report every problem of the line; return None if any."""
    errs: list[str] = []
    prompt = raw.get("prompt")
    if not isinstance(prompt, str):
        errs.append("missing prompt" if prompt is None else f"prompt must be text, got {type(prompt).__name__}")
    else:
        prompt = " ".join(prompt.split())
        if not prompt:
            errs.append("empty prompt")
        elif len(prompt) > MAX_PROMPT_CHARS:
            errs.append(f"prompt is {len(prompt)} characters (at most {MAX_PROMPT_CHARS})")
        elif any(ord(c) < 32 for c in prompt):
            errs.append("prompt contains control characters")
    seed = _int(raw.get("seed"), "seed", 0, 2**63 - 1, errs)
    num_frames = _int(raw.get("num_frames"), "num_frames", 1, None, errs)
    qcache = None
    if raw.get("qcache") is not None:
        try:
            qcache = float(raw["qcache"])
            if not 0.0 <= qcache <= 1.0:
                errs.append(f"qcache must be in [0, 1], got {raw['qcache']}")
        except (TypeError, ValueError):
            errs.append(f"qcache must be a number in [0, 1], got {raw['qcache']!r}")
    name = raw.get("name")
    if name is not None:
        if not isinstance(name, str) or not name.strip():
            errs.append("name must be non-empty text")
        else:
            from .naming import slugify

            if not slugify(name, fallback=""):
                errs.append(f"name {name!r} has no letters or digits to build a file name from")
            name = name.strip()
    image = raw.get("image")
    if image is not None:
        if not isinstance(image, str) or not image.strip():
            errs.append("image must be a path")
        elif not allow_images:
            errs.append(NO_I2V)
        else:
            p = Path(image.strip()).expanduser()
            image = str(p if p.is_absolute() else base / p)
    loras = _loras(raw.get("lora"), base, errs)
    overrides: dict[str, Any] = {}
    for k, v in raw.items():
        if k in FIELDS:
            continue
        if not isinstance(k, str) or not _OVERRIDE_KEY.match(k):
            errs.append(f"unknown field {k!r}; use {', '.join(FIELDS)} or a dotted run-config key such as sampling.cfg")
        elif k.split(".")[0] in NOT_PER_ROW or k.startswith("output."):
            errs.append(f"{k} cannot vary per item (set it for the whole batch)")
        else:
            overrides[k] = v
    if errs:
        problems.extend((ln, e) for e in errs)
        return None
    return BatchItem(index=index, line=ln, prompt=prompt, seed=seed, num_frames=num_frames, qcache=qcache,  # type: ignore[arg-type]
                     name=name, image=image, loras=loras, overrides=overrides)


def _loras(v: Any, base: Path, errs: list[str]) -> tuple[str, ...] | None:
    """A ``lora`` cell: ``PATH[:SCALE]`` specs separated by ``;`` (a JSON list of them in .jsonl); relative paths
    are read against the prompt file's folder, as images are."""
    if v is None:
        return None
    specs = v if isinstance(v, list) else str(v).split(";") if isinstance(v, str) else None
    if specs is None or not all(isinstance(x, str) for x in specs):
        errs.append("lora must be PATH[:SCALE] text (several separated by ;)")
        return None
    out = []
    for spec in (x.strip() for x in specs):
        if spec:
            p = Path(spec).expanduser()
            out.append(str(p if p.is_absolute() else base / p))
    return tuple(out)


def _int(v: Any, what: str, lo: int, hi: int | None, errs: list[str]) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or isinstance(v, float) and not v.is_integer():
        errs.append(f"{what} must be an integer, got {v!r}")
        return None
    try:
        n = int(str(v).strip()) if not isinstance(v, (int, float)) else int(v)
    except ValueError:
        errs.append(f"{what} must be an integer, got {v!r}")
        return None
    if n < lo or (hi is not None and n > hi):
        errs.append(f"{what} must be >= {lo}, got {n}" if hi is None or n < lo else f"{what} is too large: {n}")
        return None
    return n

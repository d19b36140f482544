"""The drift report as plain text: fixed-width columns without box characters, so it reads the same in a
terminal and in a batch job's log file. A long video's table shows an even sample of its segments (always the
first and the last); ``--json`` has them all."""

from __future__ import annotations

import math
from typing import Any

from .metrics import METRICS

HEADS = {"lightness": "L*", "a": "a*", "b": "b*", "saturation": "sat", "contrast": "contrast",
         "sharpness": "sharpness", "motion": "motion", "hist_distance": "hist_dist"}
_DIGITS = {"saturation": 3, "hist_distance": 3, "sharpness": 1}


def _num(metric: str, v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.{_DIGITS.get(metric, 2)}f}"


def _line(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def pick_rows(n: int, rows: int) -> list[int]:
    """Indexes of the segments shown: all when ``rows`` is 0 or enough, else ``rows`` evenly spaced."""
    if rows <= 0 or n <= rows:
        return list(range(n))
    return sorted({round(i * (n - 1) / (rows - 1)) for i in range(rows)})


def format_report(rep: dict[str, Any], rows: int = 20) -> str:
    """One video's table: a heading line, the segments, then the drift (last - first) and largest excursion."""
    fps = rep.get("fps")
    seg = rep["segment_frames"]
    segs = rep["segments"]
    rate = f"{fps:g} fps" if fps else "no frame rate (PNG folder)"
    seg_len = f" ({seg / fps:g} s)" if fps else ""
    lines = [f"drift report: {rep['video']}  [{rep.get('label')}]",
             f"  {rep['frames']} frames, {rep['width']}x{rep['height']}, {rate}; {len(segs)} segments of "
             f"{seg} frames{seg_len}"]
    heads = ["segment", "frames", *(["t (s)"] if fps else []), *(HEADS[m] for m in METRICS)]
    body: list[list[str]] = []
    shown = pick_rows(len(segs), rows)
    for i in shown:
        r = segs[i]
        cells = [str(i), f"{r['start']}-{r['end'] - 1}"]
        if fps:
            cells.append(f"{r['start'] / fps:.1f}")
        body.append(cells + [_num(m, r[m]) for m in METRICS])
    pad = [""] * (len(heads) - len(METRICS) - 1)
    drift = rep["drift"]
    body.append(["last-first", *pad, *(_signed(m, drift[m]["change"]) for m in METRICS)])
    body.append(["max excursion", *pad, *(_signed(m, drift[m]["max_excursion"]) for m in METRICS)])
    widths = [max(len(h), *(len(c[k]) for c in body)) for k, h in enumerate(heads)]
    widths[0] = max(widths[0], 7)
    lines.append(_line(heads, widths))
    for k, cells in enumerate(body):
        if k == len(body) - 2:
            lines.append(_line(["-" * w for w in widths], widths))
        if k >= len(body) - 2:  # the row names span the label columns
            name, rest = cells[0], cells[len(pad) + 1:]
            label_w = sum(widths[: len(pad) + 1]) + 2 * len(pad)
            lines.append((name.ljust(label_w) + "  " + _line(rest, widths[len(pad) + 1:])).rstrip())
        else:
            lines.append(_line(cells, widths))
    if len(shown) < len(segs):
        lines.append(f"  ({len(shown)} of {len(segs)} segments shown; --rows 0 shows all, --json lists all)")
    return "\n".join(lines)


def _signed(metric: str, v: float) -> str:
    s = _num(metric, v)
    if s != "nan" and float(s) == 0:
        s = s.lstrip("-")  # no "-0.00"
    return s if s.startswith("-") or s == "nan" else "+" + s


def drift_line(rep: dict[str, Any]) -> str:
    """The drift in one log line: every metric's last-minus-first change."""
    d = rep["drift"]
    return "drift (last - first segment): " + ", ".join(f"{HEADS[m]} {_signed(m, d[m]['change'])}" for m in METRICS)

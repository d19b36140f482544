"""A/B compare: two videos side by side, playing in sync, each titled by the settings in which it differs, and
under them the drift chart with A and B as two lines.

The page's HTML is inserted without running scripts, so the syncing lives in one script in the page head
(``SYNC_JS``): media events do not bubble, so it listens in the capture phase on the document and pairs the
``video.ab`` elements of the same ``.ab-pair``. Seeking or playing one moves the other; a drift above 0.1 s
is corrected while they play.
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import quote

SYNC_JS = """
<script>
(() => {
  const partner = (v) => {
    const pair = v.closest('.ab-pair');
    return pair ? [...pair.querySelectorAll('video.ab')].find((o) => o !== v) : null;
  };
  let busy = false;
  const follow = (e) => {
    const v = e.target;
    if (!(v instanceof HTMLVideoElement) || !v.classList.contains('ab') || busy) return;
    const o = partner(v);
    if (!o) return;
    busy = true;
    try {
      if (e.type === 'play' && o.paused) { o.currentTime = v.currentTime; o.play().catch(() => {}); }
      if (e.type === 'pause' && !o.paused) o.pause();
      if (e.type === 'seeked' && Math.abs(o.currentTime - v.currentTime) > 0.05) o.currentTime = v.currentTime;
      if (e.type === 'timeupdate' && !v.paused && v.dataset.lead === '1'
          && Math.abs(o.currentTime - v.currentTime) > 0.1) o.currentTime = v.currentTime;
    } finally { busy = false; }
  };
  for (const t of ['play', 'pause', 'seeked', 'timeupdate']) document.addEventListener(t, follow, true);
})();
</script>
"""


def file_url(path: Path) -> str:
    """The server's URL of a file in an allowed folder (Gradio's file route)."""
    return "/gradio_api/file=" + quote(str(path.resolve()))


def side(title: str, differs: list[str], path: Path | None, command: str, lead: bool) -> str:
    names = ", ".join(differs) if differs else "the same settings"
    if path is None:
        body = "<p class='ab-missing'>not rendered</p>"
    else:
        body = (f"<video class='ab' data-lead='{1 if lead else 0}' src='{html.escape(file_url(path))}' "
                "autoplay muted loop playsinline controls style='width:100%;max-width:320px;image-rendering:pixelated'>"
                "</video>")
    return (f"<div class='ab-side' style='flex:1;min-width:0'><h4>{html.escape(title)}: {html.escape(names)}</h4>"
            f"{body}<pre style='white-space:pre-wrap;font-size:11px'>{html.escape(command)}</pre></div>")


def compare_html(a: tuple[list[str], Path | None, str], b: tuple[list[str], Path | None, str],
                 titles: tuple[str, str] = ("A", "B"), chart: Path | None = None) -> str:
    """``a``, ``b``: (differing settings, video or None, reproducing command); ``chart``: both drift lines."""
    pair = ("<div class='ab-pair' style='display:flex;gap:12px'>" + side(titles[0], a[0], a[1], a[2], True)
            + side(titles[1], b[0], b[1], b[2], False) + "</div>")
    if chart is None:
        return pair
    return (pair + "<h4>Drift over time, A and B (fifo-gen report)</h4>"
            f"<img class='ab-chart' alt='drift chart of A and B' src='{html.escape(file_url(chart))}' "
            "style='width:100%;max-width:1400px'>")

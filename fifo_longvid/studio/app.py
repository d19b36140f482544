"""The studio page (Gradio): inputs, live preview, stop/resume, "Copy as CLI", A/B compare, history.

Three parts, one job each: ``layout.py`` places the components, ``handlers.py`` says what each event does
(build a job, queue it, watch it), ``view.py`` turns values into what the page shows and back.
"""

from __future__ import annotations

import gradio as gr

from .handlers import Handlers
from .jobs import Studio
from .layout import build_page

CSS = ("#preview img {width: 256px; height: 256px; object-fit: contain} "
       "#preview img, #video video, video.ab {image-rendering: pixelated}")


def build_app(studio: Studio) -> gr.Blocks:
    """The page over one studio (model, run queue, output folder); ``server.serve`` launches it."""
    with gr.Blocks(title="fifo-gen studio", analytics_enabled=False) as demo:
        page = build_page(studio)
        Handlers(studio, page).wire(demo)
    return demo

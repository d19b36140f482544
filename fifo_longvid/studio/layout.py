"""The studio page's components and where they sit; no behaviour (``handlers.py`` wires them).

Each input is named as its ``Settings`` field, so the inputs' order is ``Settings.names()``, stated once.
Build inside a ``gr.Blocks`` context: components are placed in the order they are created.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from .cli_command import Settings
from .jobs import Studio
from .presets import preset_names
from .view import history_table

# Captions the toy model draws correctly: it follows colour and shape, and "bouncing" (any motion), but not
# direction words. Circles and triangles: shape accuracy 0.99 on the README's grid (squares 0.76).
EXAMPLES = ["a red circle bouncing", "a blue triangle bouncing", "a green circle bouncing",
            "a yellow triangle bouncing"]


@dataclass
class Page:
    """Every component a handler reads or updates."""

    session: Any  # this browser's last run: {"jobs": [ids], "argv": [...], "resumable": bool}
    history_paths: Any  # the sidecar of each History row
    # the settings (Settings' fields)
    prompt: Any
    frames_per_prompt: Any
    num_frames: Any
    seed: Any
    cfg: Any
    partitions: Any
    steps: Any
    block: Any
    init: Any
    tail: Any
    preset: Any
    qcache: Any
    tgate: Any
    cfg_cache: Any
    deepcache: Any
    attn_reuse: Any
    loras: Any
    extra: Any
    generate_btn: Any
    stop_btn: Any
    resume_btn: Any
    # the run's result
    progress: Any
    preview: Any
    video: Any
    cli: Any
    drift_chart: Any
    # A/B and History
    b_extra: Any
    compare_btn: Any
    compare_view: Any
    history: Any
    refresh_btn: Any

    @property
    def inputs(self) -> list[Any]:
        """The settings' components in ``Settings.names()`` order (what ``view.settings_of`` reads)."""
        return [getattr(self, name) for name in Settings.names()]

    @property
    def technique_inputs(self) -> list[Any]:
        """What a technique preset fills in."""
        return [self.qcache, self.tgate, self.cfg_cache, self.deepcache, self.attn_reuse, self.extra]

    @property
    def run_outputs(self) -> list[Any]:
        """Everything a run (Generate, Resume, Compare) may update."""
        return [self.progress, self.preview, self.video, self.cli, self.seed, self.session, self.history,
                self.history_paths, self.compare_view, self.drift_chart]


def build_page(studio: Studio) -> Page:
    """Create the page's components (inside the caller's ``gr.Blocks``)."""
    c: dict[str, Any] = {"session": gr.State({}), "history_paths": gr.State([])}
    gr.Markdown(f"## fifo-gen studio · `--config {studio.config}` · output folder `{studio.out_dir}`")
    with gr.Row():
        with gr.Column(scale=1):
            c.update(_settings_column())
        with gr.Column(scale=1):
            c.update(_result_column())
    c["drift_chart"] = gr.Image(None, label="Drift over time (fifo-gen report): lightness, colour, sharpness, "
                                "motion per segment", interactive=False, format="png", elem_id="drift-chart")
    c.update(_compare_and_history(studio))
    return Page(**c)


def _settings_column() -> dict[str, Any]:
    """The settings, the examples and the Generate / Stop / Resume buttons."""
    c: dict[str, Any] = {}
    c["prompt"] = gr.Textbox(EXAMPLES[0], label="Prompt (one per line: a multi-prompt video)", lines=2,
                             elem_id="prompt")
    c["frames_per_prompt"] = gr.Textbox("", label="Frames per prompt (multi-prompt), e.g. 16,16",
                                        elem_id="frames-per-prompt")
    with gr.Row():
        c["num_frames"] = gr.Number(32, precision=0, label="Frames", elem_id="num-frames")
        c["seed"] = gr.Textbox("", label="Seed (empty: random, then shown)", elem_id="seed")
    with gr.Row():
        c["cfg"] = gr.Textbox("", label="Guidance (empty: the model's)", elem_id="guidance")
        c["partitions"] = gr.Textbox("", label="Partitions (empty: the model's)", elem_id="partitions")
    with gr.Row():
        c["steps"] = gr.Textbox("", label="Steps (empty: window x partitions / block)", elem_id="steps")
        c["block"] = gr.Textbox("", label="Block: frames per noise level (empty: 1)", elem_id="block")
    with gr.Row():
        c["init"] = gr.Dropdown(["first", "uniform", "noise"], value="first", label="--init", elem_id="init")
        c["tail"] = gr.Dropdown(["noise", "coherent", "rescheduled"], value="noise", label="--tail", elem_id="tail")
    with gr.Accordion("Techniques", open=False):
        c["preset"] = gr.Dropdown(["none", *preset_names()], value="none", label="Preset (configs/*.yaml)",
                                  elem_id="preset")
        with gr.Row():
            c["qcache"] = gr.Textbox("", label="Q-cache v (empty: off)", elem_id="qcache")
            c["tgate"] = gr.Textbox("", label="TGATE gate (empty: off; TGATE's is 0.4)", elem_id="tgate")
        with gr.Row():
            c["cfg_cache"] = gr.Textbox("", label="CFG-Cache K (empty: off)", elem_id="cfg-cache")
            c["deepcache"] = gr.Textbox("", label="DeepCache K (empty: off)", elem_id="deepcache")
        c["attn_reuse"] = gr.Checkbox(False, label="Attention reuse", elem_id="attn-reuse")
    c["loras"] = gr.Textbox("", label="LoRAs: one PATH[:SCALE] per line (--lora; a change reloads the model)",
                            lines=2, elem_id="loras")
    c["extra"] = gr.Textbox("", label="More fifo-gen options, e.g. --eta 0.5 sampling.fps=6", elem_id="extra")
    gr.Examples([[e] for e in EXAMPLES], inputs=[c["prompt"]], label="Captions the toy model follows")
    with gr.Row():
        c["generate_btn"] = gr.Button("Generate", variant="primary", elem_id="generate")
        c["stop_btn"] = gr.Button("Stop", variant="stop", elem_id="stop")
        c["resume_btn"] = gr.Button("Resume", elem_id="resume")
    return c


def _result_column() -> dict[str, Any]:
    """Progress, live preview, the video and its command line."""
    return {
        "progress": gr.Markdown("idle", elem_id="progress"),
        "preview": gr.Image(None, label="Live preview (each frame as it leaves the queue)", height=256,
                            interactive=False, format="png", elem_id="preview"),
        "video": gr.Video(None, label="Video", autoplay=True, loop=True, interactive=False, height=320,
                          elem_id="video"),
        "cli": gr.Textbox("", label="Copy as CLI (reproduces the video bit for bit)", interactive=False,
                          buttons=["copy"], elem_id="cli-command"),
    }


def _compare_and_history(studio: Studio) -> dict[str, Any]:
    """The A/B compare box and the History table."""
    c: dict[str, Any] = {}
    with gr.Accordion("A/B compare: the same prompt and seed under two settings", open=True):
        c["b_extra"] = gr.Textbox("--qcache 0.9", label="B = the settings above plus these options",
                                  elem_id="compare-b")
        c["compare_btn"] = gr.Button("Compare A/B", elem_id="compare")
        c["compare_view"] = gr.HTML("", elem_id="compare-view")
    with gr.Accordion("History (click a row: its settings go back into the inputs)", open=True):
        c["history"] = gr.Dataframe(value=history_table(studio.out_dir)[0], interactive=False, wrap=True,
                                    elem_id="history")
        c["refresh_btn"] = gr.Button("Refresh history", size="sm", elem_id="history-refresh")
    return c

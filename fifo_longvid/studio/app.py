"""The studio page (Gradio): inputs, live preview, stop/resume, "Copy as CLI", A/B compare, history.

Handlers never run a generation themselves: they build a job (``jobs.Studio``), hand it to the run queue
and watch it, yielding the latest frame and the progress a few times a second. The frame is encoded for the
browser here, on the web server's thread, not on the generation thread. A browser that goes away only
cancels its watcher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from ..run.config import ConfigError
from .cli_command import Settings, to_argv
from .compare import compare_html
from .drift import ab_chart, existing_chart, video_chart
from .history import COLUMNS, list_history, read_entry
from .jobs import Studio
from .presets import apply_preset, preset_names
from .runner import DONE, FINISHED, QUEUED, STOPPED, Job

POLL_S = 0.15
# Captions the toy model draws correctly: it follows colour and shape, and "bouncing" (any motion), but not
# direction words. Circles and triangles: shape accuracy 0.99 on the README's grid (squares 0.76).
EXAMPLES = ["a red circle bouncing", "a blue triangle bouncing", "a green circle bouncing",
            "a yellow triangle bouncing"]
CSS = ("#preview img {width: 256px; height: 256px; object-fit: contain} "
       "#preview img, #video video, video.ab {image-rendering: pixelated}")
INT_FIELDS = {"num_frames", "seed", "partitions", "steps", "block", "cfg_cache", "deepcache"}
FLOAT_FIELDS = {"cfg", "qcache", "tgate"}


def settings_of(values: tuple[Any, ...]) -> Settings:
    """The inputs' values (in ``Settings.names()`` order) -> Settings. Optional numbers are text boxes, so
    "empty" (the default, or off) is not confused with 0 (a valid seed); a non-number is a ConfigError."""
    d = dict(zip(Settings.names(), values, strict=True))
    for k in INT_FIELDS | FLOAT_FIELDS:
        d[k] = _number(k, d[k], int if k in INT_FIELDS else float)
    d["attn_reuse"] = bool(d["attn_reuse"])
    return Settings(**d)


def _number(name: str, v: Any, kind: type) -> Any:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return kind(v) if kind is float or float(v).is_integer() else _bad(name, v, kind)
    try:
        return kind(str(v).strip())
    except ValueError:
        return _bad(name, v, kind)


def _bad(name: str, v: Any, kind: type) -> Any:
    what = "a whole number" if kind is int else "a number"
    raise ConfigError(f"{name.replace('_', ' ')}: {v!r} is not {what}")


def status_text(job: Job, place: int, prefix: str = "") -> str:
    """One line of progress: place in the queue, base clip, FIFO iterations with s/frame and ETA, or result."""
    if job.status == QUEUED:
        ahead = max(0, place - 1)
        return f"{prefix}queued: place {place} in the queue ({ahead} run{'s' if ahead != 1 else ''} ahead)"
    if job.status in FINISHED:
        r = job.result
        if job.status == DONE:
            return f"{prefix}done: {r.frames} frames -> {r.output.name} ({r.timings.get('total_s', 0):.1f} s)"
        if job.status == STOPPED:
            kept = f"{r.frames} frames kept in {r.output.name}" if r is not None and r.frames else "no frame yet"
            return f"{prefix}stopped: {kept}; the state is saved, Resume continues it"
        return f"{prefix}{job.status}: {job.error or ''}".rstrip(": ")
    if job.task != "fifo":
        step = f" step {job.done_steps}/{job.total_steps}" if job.total_steps else ""
        return f"{prefix}running: {job.task or 'loading'}{step}"
    fc = job.cfg.fifo
    geometry = (f" (window {fc.window} x {fc.partitions} / block {fc.block} = {job.cfg.sampling.steps} steps)"
                if fc.window and fc.block else "")  # resolved by the pipeline once the model is known
    text = (f"{prefix}running{geometry}: iteration {job.done_steps}/{job.total_steps}, frame "
            f"{job.frame_index + 1}/{fc.num_frames}")
    if job.s_per_frame is not None:
        text += f", {job.s_per_frame:.2f} s/frame, ETA {job.eta_s:.0f} s"
    return text + (" (stopping after this iteration)" if job.stop.requested else "")


def shown(name: str, v: Any) -> Any:
    """A setting as its input shows it (optional numbers are text; None is empty)."""
    if name in (INT_FIELDS | FLOAT_FIELDS) - {"num_frames"}:
        return "" if v is None else str(v)
    return v


def history_table(out_dir: Path) -> tuple[dict[str, Any], list[str]]:
    rows, paths = [], []
    for e in list_history(out_dir):
        try:
            rows.append(e.row())
        except OSError:  # deleted while listing
            continue
        paths.append(str(e.sidecar))
    return {"data": rows or [[""] * len(COLUMNS)], "headers": COLUMNS}, paths


def build_app(studio: Studio) -> gr.Blocks:
    jobs: dict[int, Job] = {}
    with gr.Blocks(title="fifo-gen studio", analytics_enabled=False) as demo:
        session = gr.State({})  # this browser's last run: {"jobs": [ids], "argv": [...], "resumable": bool}
        history_paths = gr.State([])
        gr.Markdown(f"## fifo-gen studio · `--config {studio.config}` · output folder `{studio.out_dir}`")
        with gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(EXAMPLES[0], label="Prompt (one per line: a multi-prompt video)", lines=2,
                                    elem_id="prompt")
                fpp = gr.Textbox("", label="Frames per prompt (multi-prompt), e.g. 16,16", elem_id="frames-per-prompt")
                with gr.Row():
                    num_frames = gr.Number(32, precision=0, label="Frames", elem_id="num-frames")
                    seed = gr.Textbox("", label="Seed (empty: random, then shown)", elem_id="seed")
                with gr.Row():
                    cfg = gr.Textbox("", label="Guidance (empty: the model's)", elem_id="guidance")
                    partitions = gr.Textbox("", label="Partitions (empty: the model's)", elem_id="partitions")
                with gr.Row():
                    steps = gr.Textbox("", label="Steps (empty: window x partitions / block)", elem_id="steps")
                    block = gr.Textbox("", label="Block: frames per noise level (empty: 1)", elem_id="block")
                with gr.Row():
                    init = gr.Dropdown(["first", "uniform", "noise"], value="first", label="--init", elem_id="init")
                    tail = gr.Dropdown(["noise", "coherent", "rescheduled"], value="noise", label="--tail",
                                       elem_id="tail")
                with gr.Accordion("Techniques", open=False):
                    preset = gr.Dropdown(["none", *preset_names()], value="none", label="Preset (configs/*.yaml)",
                                         elem_id="preset")
                    with gr.Row():
                        qcache = gr.Textbox("", label="Q-cache v (empty: off)", elem_id="qcache")
                        tgate = gr.Textbox("", label="TGATE gate (empty: off; TGATE's is 0.4)", elem_id="tgate")
                    with gr.Row():
                        cfg_cache = gr.Textbox("", label="CFG-Cache K (empty: off)", elem_id="cfg-cache")
                        deepcache = gr.Textbox("", label="DeepCache K (empty: off)", elem_id="deepcache")
                    attn_reuse = gr.Checkbox(False, label="Attention reuse", elem_id="attn-reuse")
                extra = gr.Textbox("", label="More fifo-gen options, e.g. --eta 0.5 sampling.fps=6", elem_id="extra")
                gr.Examples([[e] for e in EXAMPLES], inputs=[prompt], label="Captions the toy model follows")
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop")
                    resume_btn = gr.Button("Resume", elem_id="resume")
            with gr.Column(scale=1):
                progress = gr.Markdown("idle", elem_id="progress")
                preview = gr.Image(None, label="Live preview (each frame as it leaves the queue)", height=256,
                                   interactive=False, format="png", elem_id="preview")
                video = gr.Video(None, label="Video", autoplay=True, loop=True, interactive=False, height=320,
                                 elem_id="video")
                cli = gr.Textbox("", label="Copy as CLI (reproduces the video bit for bit)", interactive=False,
                                 buttons=["copy"], elem_id="cli-command")
        drift_chart = gr.Image(None, label="Drift over time (fifo-gen report): lightness, colour, sharpness, motion "
                               "per segment", interactive=False, format="png", elem_id="drift-chart")
        with gr.Accordion("A/B compare: the same prompt and seed under two settings", open=True):
            b_extra = gr.Textbox("--qcache 0.9", label="B = the settings above plus these options",
                                 elem_id="compare-b")
            compare_btn = gr.Button("Compare A/B", elem_id="compare")
            compare_view = gr.HTML("", elem_id="compare-view")
        with gr.Accordion("History (click a row: its settings go back into the inputs)", open=True):
            history = gr.Dataframe(value=history_table(studio.out_dir)[0], interactive=False, wrap=True,
                                   elem_id="history")
            refresh_btn = gr.Button("Refresh history", size="sm", elem_id="history-refresh")

        inputs = [prompt, fpp, num_frames, seed, cfg, partitions, steps, block, init, tail, qcache, tgate, cfg_cache,
                  deepcache, attn_reuse, extra]
        run_outputs = [progress, preview, video, cli, seed, session, history, history_paths, compare_view, drift_chart]

        def remember(job: Job) -> None:
            """Jobs a Stop button may name; the oldest finished ones are forgotten (a long-running server)."""
            jobs[job.id] = job
            for old in [i for i, j in jobs.items() if j.finished.is_set()][:-100]:
                del jobs[old]

        def watch(job: Job, prefix: str = "") -> Any:
            last = -2
            while True:
                finished = job.finished.wait(POLL_S)
                upd: dict[Any, Any] = {progress: status_text(job, studio.runner.place(job), prefix)}
                if job.frame is not None and job.frame_index != last:
                    upd[preview], last = job.frame, job.frame_index
                yield upd
                if finished:
                    return

        def finish(job: Job, sess: dict[str, Any]) -> dict[Any, Any]:
            table, paths = history_table(studio.out_dir)
            r = job.result
            upd: dict[Any, Any] = {history: table, history_paths: paths,
                                   session: {**sess, "resumable": job.status == STOPPED}}
            if r is not None and r.frames and Path(r.output).is_file():
                upd[video] = str(r.output)
                if job.status == DONE:
                    chart = video_chart(Path(r.output))
                    upd[drift_chart] = str(chart) if chart else None
            return upd

        def start(job: Job, sess: dict[str, Any]) -> dict[Any, Any]:
            remember(job)
            studio.runner.submit(job)
            prefix = f"{job.label}: " if job.label in ("A", "B") else ""
            return {cli: studio.command(job.shown_argv or job.argv), video: None, preview: None, drift_chart: None,
                    progress: status_text(job, studio.runner.place(job), prefix),
                    session: {**sess, "jobs": [job.id], "argv": job.shown_argv, "resumable": False}}

        def on_generate(*values: Any) -> Any:
            try:
                settings = settings_of(values)
                job = studio.make_job(settings)
            except (ConfigError, ValueError) as e:
                yield {progress: f"error: {e}"}
                return
            sess = {"argv": job.shown_argv}
            yield {**start(job, sess), seed: str(settings.seed)}
            yield from watch(job)
            yield finish(job, {"jobs": [job.id], "argv": job.shown_argv})

        def on_resume(sess: dict[str, Any]) -> Any:
            if not sess or not sess.get("argv"):
                yield {progress: "error: nothing to resume (stop a run first, or pick a partial run in History)"}
                return
            try:
                job = studio.resume_job(sess["argv"])
            except (ConfigError, ValueError) as e:
                yield {progress: f"error: {e}"}
                return
            yield start(job, sess)
            yield from watch(job)
            yield finish(job, {"jobs": [job.id], "argv": job.shown_argv})

        def on_stop(sess: dict[str, Any]) -> Any:
            targets = [jobs[i] for i in (sess or {}).get("jobs", []) if i in jobs]
            for job in reversed(targets):  # a waiting B first, so it does not start when A stops
                studio.runner.stop(job)
            return {progress: "stopping after the current iteration..."} if targets else {progress: "nothing to stop"}

        def on_compare(*values: Any) -> Any:
            *vals, more = values
            try:
                a = settings_of(tuple(vals))
                job_a = studio.make_job(a, suffix="_A", label="A")
                b = a.with_extra(more)
                job_b = studio.make_job(b, suffix="_B", label="B")
            except (ConfigError, ValueError) as e:
                yield {progress: f"error: {e}"}
                return
            from .cli_command import differing

            da, db = differing(job_a.cfg, job_b.cfg)
            ids = [job_a.id, job_b.id]
            yield {**start(job_a, {}), seed: str(a.seed), compare_view: "",
                   session: {"jobs": ids, "argv": job_a.argv, "resumable": False}}
            remember(job_b)
            studio.runner.submit(job_b)
            yield from watch(job_a, "A: ")
            yield from watch(job_b, "B: ")
            paths = [j.result.output if j.status == DONE else None for j in (job_a, job_b)]
            titles = ("A", f"B (A + {more.strip()})")
            chart = ab_chart(Path(paths[0]), Path(paths[1]), titles) if paths[0] and paths[1] else None
            view = compare_html((da, paths[0], studio.command(job_a.argv)), (db, paths[1], studio.command(job_b.argv)),
                                titles, chart)
            yield {**finish(job_b, {"jobs": ids, "argv": job_b.argv}), compare_view: view,
                   cli: studio.command(job_b.argv)}

        def on_history(paths: list[str], evt: gr.SelectData) -> Any:
            row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
            entry = read_entry(Path(paths[row])) if 0 <= row < len(paths) else None
            if entry is None:
                return {progress: "that output is gone; refresh the history"}
            s = studio.settings_of(entry.config)
            argv = to_argv(s, studio.config, studio.checkpoint, entry.config["output"]["path"])
            upd = {comp: shown(name, getattr(s, name)) for comp, name in zip(inputs, Settings.names(), strict=True)}
            chart = existing_chart(entry.video)
            return {**upd, video: str(entry.video), cli: studio.command(argv), preset: "none",
                    drift_chart: str(chart) if chart else None,
                    session: {"jobs": [], "argv": argv, "resumable": entry.resumable()},
                    progress: f"loaded the settings of {entry.video.name}"}

        def on_refresh() -> Any:
            table, paths = history_table(studio.out_dir)
            return {history: table, history_paths: paths}

        technique_inputs = [qcache, tgate, cfg_cache, deepcache, attn_reuse, extra]
        generate_btn.click(on_generate, inputs, run_outputs, concurrency_limit=None)
        resume_btn.click(on_resume, [session], run_outputs, concurrency_limit=None)
        stop_btn.click(on_stop, [session], [progress], concurrency_limit=None)
        compare_btn.click(on_compare, [*inputs, b_extra], run_outputs, concurrency_limit=None)
        history.select(on_history, [history_paths], [*inputs, video, cli, preset, session, progress, drift_chart],
                       concurrency_limit=None)
        refresh_btn.click(on_refresh, None, [history, history_paths], concurrency_limit=None)
        preset.change(lambda name, *cur: apply_preset(name, *cur), [preset, *technique_inputs], technique_inputs)
        demo.load(on_refresh, None, [history, history_paths])
    return demo

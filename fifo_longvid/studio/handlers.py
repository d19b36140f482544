"""What the studio page's buttons do: build a job, queue it, watch it; never run a generation here.

Each ``on_*`` method is one event of the page (``wire`` connects them). The watchers yield the latest frame
and the progress a few times a second; the frame is encoded for the browser on the web server's thread, not
on the generation thread. A browser that goes away only cancels its watcher.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import ConfigError
from .cli_command import Settings, differing, to_argv
from .compare import compare_html
from .drift import ab_chart, existing_chart, video_chart
from .history import read_entry
from .jobs import Studio
from .layout import Page
from .presets import apply_preset
from .runner import DONE, STOPPED, Job
from .view import history_table, settings_of, shown, status_text

POLL_S = 0.15
Update = dict[Any, Any]  # component -> new value


class Handlers:
    """The page's events, over one studio (model, run queue, output folder) and one page's components."""

    def __init__(self, studio: Studio, page: Page) -> None:
        self.studio, self.page = studio, page
        self.jobs: dict[int, Job] = {}  # the jobs a Stop button may name

    def wire(self, demo: gr.Blocks) -> None:
        """Connect every event of the page, and fill the History when a browser opens it (inside ``demo``)."""
        p = self.page
        p.generate_btn.click(self.on_generate, p.inputs, p.run_outputs, concurrency_limit=None)
        p.resume_btn.click(self.on_resume, [p.session], p.run_outputs, concurrency_limit=None)
        p.stop_btn.click(self.on_stop, [p.session], [p.progress], concurrency_limit=None)
        p.compare_btn.click(self.on_compare, [*p.inputs, p.b_extra], p.run_outputs, concurrency_limit=None)
        p.history.select(self.on_history, [p.history_paths], [*p.inputs, p.video, p.cli, p.preset, p.session,
                                                               p.progress, p.drift_chart], concurrency_limit=None)
        p.refresh_btn.click(self.on_refresh, None, [p.history, p.history_paths], concurrency_limit=None)
        p.preset.change(lambda name, *cur: apply_preset(name, *cur), [p.preset, *p.technique_inputs],
                        p.technique_inputs)
        demo.load(self.on_refresh, None, [p.history, p.history_paths])

    # -- the steps every run goes through -------------------------------------------------------------

    def remember(self, job: Job) -> None:
        """Jobs a Stop button may name; the oldest finished ones are forgotten (a long-running server)."""
        self.jobs[job.id] = job
        for old in [i for i, j in self.jobs.items() if j.finished.is_set()][:-100]:
            del self.jobs[old]

    def start(self, job: Job, sess: dict[str, Any]) -> Update:
        """Queue the job; clear the last result and show the command line and place in the queue."""
        p, studio = self.page, self.studio
        self.remember(job)
        studio.runner.submit(job)
        prefix = f"{job.label}: " if job.label in ("A", "B") else ""
        return {p.cli: studio.command(job.shown_argv or job.argv), p.video: None, p.preview: None,
                p.drift_chart: None, p.progress: status_text(job, studio.runner.place(job), prefix),
                p.session: {**sess, "jobs": [job.id], "argv": job.shown_argv, "resumable": False}}

    def watch(self, job: Job, prefix: str = "") -> Iterator[Update]:
        """The progress line and each new frame, until the job finishes."""
        p, last = self.page, -2
        while True:
            finished = job.finished.wait(POLL_S)
            upd: Update = {p.progress: status_text(job, self.studio.runner.place(job), prefix)}
            if job.frame is not None and job.frame_index != last:
                upd[p.preview], last = job.frame, job.frame_index
            yield upd
            if finished:
                return

    def finish(self, job: Job, sess: dict[str, Any]) -> Update:
        """The video, its drift chart (a finished run) and the refreshed history."""
        p = self.page
        table, paths = history_table(self.studio.out_dir)
        r = job.result
        upd: Update = {p.history: table, p.history_paths: paths,
                       p.session: {**sess, "resumable": job.status == STOPPED}}
        if r is not None and r.frames and Path(r.output).is_file():
            upd[p.video] = str(r.output)
            if job.status == DONE:
                chart = video_chart(Path(r.output))
                upd[p.drift_chart] = str(chart) if chart else None
        return upd

    # -- the events ---------------------------------------------------------------------------------

    def on_generate(self, *values: Any) -> Iterator[Update]:
        p = self.page
        try:
            settings = settings_of(values)
            job = self.studio.make_job(settings)
        except (ConfigError, ValueError) as e:
            yield {p.progress: f"error: {e}"}
            return
        sess = {"argv": job.shown_argv}
        yield {**self.start(job, sess), p.seed: str(settings.seed)}
        yield from self.watch(job)
        yield self.finish(job, {"jobs": [job.id], "argv": job.shown_argv})

    def on_resume(self, sess: dict[str, Any]) -> Iterator[Update]:
        p = self.page
        if not sess or not sess.get("argv"):
            yield {p.progress: "error: nothing to resume (stop a run first, or pick a partial run in History)"}
            return
        try:
            job = self.studio.resume_job(sess["argv"])
        except (ConfigError, ValueError) as e:
            yield {p.progress: f"error: {e}"}
            return
        yield self.start(job, sess)
        yield from self.watch(job)
        yield self.finish(job, {"jobs": [job.id], "argv": job.shown_argv})

    def on_stop(self, sess: dict[str, Any]) -> Update:
        targets = [self.jobs[i] for i in (sess or {}).get("jobs", []) if i in self.jobs]
        for job in reversed(targets):  # a waiting B first, so it does not start when A stops
            self.studio.runner.stop(job)
        text = "stopping after the current iteration..." if targets else "nothing to stop"
        return {self.page.progress: text}

    def on_compare(self, *values: Any) -> Iterator[Update]:
        p, studio = self.page, self.studio
        *vals, more = values
        try:
            a = settings_of(tuple(vals))
            job_a = studio.make_job(a, suffix="_A", label="A")
            b = a.with_extra(more)
            job_b = studio.make_job(b, suffix="_B", label="B")
        except (ConfigError, ValueError) as e:
            yield {p.progress: f"error: {e}"}
            return
        da, db = differing(job_a.cfg, job_b.cfg)
        ids = [job_a.id, job_b.id]
        yield {**self.start(job_a, {}), p.seed: str(a.seed), p.compare_view: "",
               p.session: {"jobs": ids, "argv": job_a.argv, "resumable": False}}
        self.remember(job_b)
        studio.runner.submit(job_b)
        yield from self.watch(job_a, "A: ")
        yield from self.watch(job_b, "B: ")
        paths = [j.result.output if j.status == DONE else None for j in (job_a, job_b)]
        titles = ("A", f"B (A + {more.strip()})")
        chart = ab_chart(Path(paths[0]), Path(paths[1]), titles) if paths[0] and paths[1] else None
        view = compare_html((da, paths[0], studio.command(job_a.argv)), (db, paths[1], studio.command(job_b.argv)),
                            titles, chart)
        yield {**self.finish(job_b, {"jobs": ids, "argv": job_b.argv}), p.compare_view: view,
               p.cli: studio.command(job_b.argv)}

    def on_history(self, paths: list[str], evt: gr.SelectData) -> Update:
        p, studio = self.page, self.studio
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        entry = read_entry(Path(paths[row])) if 0 <= row < len(paths) else None
        if entry is None:
            return {p.progress: "that output is gone; refresh the history"}
        s = studio.settings_of(entry.config)
        argv = to_argv(s, studio.config, studio.checkpoint, entry.config["output"]["path"])
        upd = {comp: shown(name, getattr(s, name)) for comp, name in zip(p.inputs, Settings.names(), strict=True)}
        chart = existing_chart(entry.video)
        return {**upd, p.video: str(entry.video), p.cli: studio.command(argv), p.preset: "none",
                p.drift_chart: str(chart) if chart else None,
                p.session: {"jobs": [], "argv": argv, "resumable": entry.resumable()},
                p.progress: f"loaded the settings of {entry.video.name}"}

    def on_refresh(self) -> Update:
        table, paths = history_table(self.studio.out_dir)
        return {self.page.history: table, self.page.history_paths: paths}

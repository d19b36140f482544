"""From the page's inputs to a queued run: output naming, the CLI checks, and the server's fixed model.

Everything a job runs goes through ``Studio.make_job``: inputs -> argv -> the CLI's parser -> the CLI's
validation. A bad input raises ``ConfigError`` here, before anything is queued or written.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..run.config import ConfigError, RunConfig
from ..run.outputs import OutputFiles
from ..run.resolve import resolve
from .cli_command import Settings, command_line, parse, to_argv
from .runner import Job, Runner


def slug(text: str) -> str:
    """The CLI's default output name stem (``pipeline.default_output``), from a prompt."""
    return "".join(c if c.isalnum() else "_" for c in text.lower())[:48].strip("_") or "video"


@dataclass
class Studio:
    """The server's fixed parts (model preset, weights, output folder, thread count) and its run queue."""

    config: str
    checkpoint: str | None
    out_dir: Path
    runner: Runner
    threads: int | None  # CPU threads of the runs (None on a GPU): part of the reproducing command

    def output_for(self, settings: Settings, suffix: str = "") -> Path:
        """A fresh name in the output folder: prompt slug, seed, and a counter if taken (by any file of that
        output: video, partial, state)."""
        stem = f"{slug(settings.prompts()[0])}_{settings.seed}{suffix}"
        for k in range(1, 10_000):
            path = (self.out_dir / (stem if k == 1 else f"{stem}-{k}")).with_suffix(".mp4")
            files = OutputFiles.of(path)
            taken = [p for p in (files.final, files.sidecar, files.partial, files.state, files.latent_log)
                     if p.exists()]
            if not taken and not self.runner_has(path):
                return path.resolve()
        raise ConfigError(f"no free output name for {stem} in {self.out_dir}")

    def runner_has(self, path: Path) -> bool:
        """A queued run already owns this name (its files do not exist yet)."""
        return any(j.output.resolve() == path.resolve() for j in self.runner.jobs())

    def check(self, cfg: RunConfig, output: Path) -> None:
        """The CLI's checks, plus the server's: one loaded model, and the output is the studio's to name."""
        resolve(cfg)  # every check generate makes before loading (cfg is left as it is)
        if cfg.model != self.config or (self.checkpoint and cfg.checkpoint != self.checkpoint):
            raise ConfigError(f"this studio serves --config {self.config}; a run-config file may not change the model")
        if Path(cfg.output.path or "").resolve() != output.resolve():
            raise ConfigError("the output name is chosen by the studio")

    def make_job(self, settings: Settings, suffix: str = "", label: str = "") -> Job:
        """Validate and build a run (not queued yet). Picks a random seed if none is set (shown on the page)."""
        if settings.seed is None:
            settings.seed = random.randrange(2**31)
        output = self.output_for(settings, suffix)
        argv = to_argv(settings, self.config, self.checkpoint, output)
        cfg = parse(argv)
        self.check(cfg, output)
        return Job(argv=argv, cfg=cfg, output=output, label=label, shown_argv=argv)

    def resume_job(self, argv: list[str]) -> Job:
        """The same command plus ``--resume``: it continues the saved state, bit for bit."""
        cfg = parse([*argv, "--resume"])
        output = Path(cfg.output.path or "")
        if not OutputFiles.of(output).state.exists():
            raise ConfigError(f"nothing to resume: {output.name} has no saved state")
        resolve(cfg)  # every check generate makes before loading (cfg is left as it is)
        return Job(argv=[*argv, "--resume"], cfg=cfg, output=output, label="resume", shown_argv=list(argv))

    def command(self, argv: list[str]) -> str:
        return command_line(argv, self.threads)

    def settings_of(self, config: dict[str, Any]) -> Settings:
        from .cli_command import settings_from_config

        return settings_from_config(config, self.config, self.checkpoint)

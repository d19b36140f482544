"""The ``fifo-gen`` entry point. ``fifo-gen report`` runs without importing torch or the generation code (the
report's memory budget is 300 MB for any video length, and importing torch alone takes about 500 MB of RSS);
every other command goes to ``cli.main``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["report"]:
        import typer

        from .cli.report import report_command

        app = typer.Typer(add_completion=False)
        app.command("report")(report_command)  # the only command: it runs without naming it
        app(args=args[1:], prog_name="fifo-gen report")
        return
    from .cli.main import main as cli_main

    cli_main(args)

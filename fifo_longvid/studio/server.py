"""``fifo-gen studio``: load the model once, start the run queue, serve the page.

Safety defaults: loopback only unless ``--host`` says otherwise (with a warning in the log), never a public
share link, and Gradio's analytics off (nothing leaves the machine). On Ctrl-C or SIGTERM the running job
stops as a CLI run would (partial video + resumable state) before the process exits.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cli_command import parse


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_model(config: str, checkpoint: str | None) -> tuple[Any, Any]:
    """The model the CLI would load for ``--config`` (same defaults: device auto, dtype auto, checkpoint)."""
    from ..backends import load_backend

    argv = ["--config", config, "--prompt", "-"] + (["--checkpoint", checkpoint] if checkpoint else [])
    run = parse(argv)
    return run, load_backend(run.model, run.checkpoint, run.device, run.dtype, run.motion_adapter)


def serve(config: str, checkpoint: str | None, out_dir: Path, host: str, port: int,
          log: Callable[[str], None] = print, block: bool = True) -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio  # noqa: F401 - fail early, before loading weights, if the extra is missing
    import torch

    from ..backends import load_backend
    from .app import CSS, build_app
    from .compare import SYNC_JS
    from .jobs import Studio
    from .runner import Runner

    if not is_loopback(host):
        log(f"warning: --host {host} serves the studio beyond this machine: anyone who reaches it can run "
            "generations and read the output folder's videos (no login)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run, model = load_model(config, checkpoint)
    threads = torch.get_num_threads() if model.device.type == "cpu" else None
    log(f"model {run.model} loaded on {model.device}" + (f" ({threads} CPU threads)" if threads else ""))
    runner = Runner(model, log=log, load=lambda loras: load_backend(run.model, run.checkpoint, run.device, run.dtype,
                                                                    run.motion_adapter, loras=loras))
    studio = Studio(config=config, checkpoint=run.checkpoint if checkpoint else None, out_dir=out_dir,
                    runner=runner, threads=threads)
    demo = build_app(studio)
    demo.queue(default_concurrency_limit=None)
    previous = None
    if block and threading.current_thread() is threading.main_thread():
        # SIGTERM like Ctrl-C: the launch loop ends, then the running job is stopped cleanly below.
        previous = signal.signal(signal.SIGTERM, lambda s, f: signal.default_int_handler(s, f))
    log(f"studio: http://{host}:{port}/  (output folder {out_dir})")
    try:
        demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=True,
                    allowed_paths=[str(out_dir.resolve())], head=SYNC_JS, css=CSS, ssr_mode=False,
                    prevent_thread_lock=not block, quiet=False)
        if not block:
            return demo, runner
    except KeyboardInterrupt:
        pass
    finally:
        if block:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if runner.current is not None:
                log("stopping the running job (partial video + resumable state)...")
            runner.shutdown()
            demo.close()
    return None

"""What the studio's live preview costs a generation: the same toy run with and without it.

"With preview" is what the studio adds to a run: the frame hook (``generate(on_frame=...)``, a uint8 copy of
each frame on the generation thread) plus a watcher thread that, like a page's handler, wakes every 0.15 s and
encodes the newest frame as the page does (Gradio's ``Image.postprocess`` to a PNG in its cache; a Pillow PNG if
Gradio is missing). The browser and the websocket are not included.

Runs alternate (plain, preview, plain, ...) so a change in machine load hits both alike; the table gives
each pair's FIFO seconds per frame (``timings.fifo_s``: the loop only, no model load, no base clip) and the
median ratio preview / plain. Goal: at most 1.05.

    python scripts/bench_studio.py --frames 32 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
from pathlib import Path
from typing import Any


def png_encoder() -> Any:
    try:
        import gradio as gr

        image = gr.Image(format="png")
        return lambda arr: image.postprocess(arr)
    except ImportError:
        import io

        from PIL import Image

        def encode(arr: Any) -> bytes:
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            return buf.getvalue()

        return encode


def run_once(model: Any, folder: Path, name: str, frames: int, seed: int, preview: bool) -> tuple[float, int]:
    """(FIFO seconds per frame, frames the watcher encoded)."""
    from fifo_longvid.run.pipeline import generate
    from fifo_longvid.studio.cli_command import parse
    from fifo_longvid.studio.runner import Job

    argv = ["--config", "toy", "--prompt", "a red circle bouncing", "--num-frames", str(frames), "--seed", str(seed),
            "-o", str(folder / f"{name}.mp4")]
    cfg = parse(argv)
    if not preview:
        r = generate(cfg, model=model, log=lambda m: None)
        return r.timings["fifo_s"] / r.frames, 0
    job = Job(argv=argv, cfg=cfg, output=folder / f"{name}.mp4")
    done, encode, encoded = threading.Event(), png_encoder(), [0]

    def watch() -> None:
        last = -1
        while not done.wait(0.15):
            if job.frame is not None and job.frame_index != last:
                last = job.frame_index
                encode(job.frame)
                encoded[0] += 1

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        r = generate(cfg, model=model, log=lambda m: None, progress=job.on_progress, on_frame=job.on_frame)
    finally:
        done.set()
        watcher.join()
    return r.timings["fifo_s"] / r.frames, encoded[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from fifo_longvid.backends import load_backend

    model = load_backend("toy", None, "cpu", "auto", None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run_once(model, folder, "warmup", 4, args.seed, True)
        for k in range(args.repeats):
            plain, _ = run_once(model, folder, f"plain{k}", args.frames, args.seed, False)
            prev, encoded = run_once(model, folder, f"preview{k}", args.frames, args.seed, True)
            rows.append((plain, prev, encoded))
    load = os.getloadavg()
    print(f"toy, {args.frames} frames, {torch.get_num_threads()} torch threads, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min, at the end)")
    print("| pair | plain s/frame | preview s/frame | ratio | frames encoded by the watcher |")
    print("| --- | --- | --- | --- | --- |")
    for k, (plain, prev, encoded) in enumerate(rows):
        print(f"| {k + 1} | {plain:.3f} | {prev:.3f} | {prev / plain:.3f} | {encoded} / {args.frames} |")
    ratio = statistics.median(prev / plain for plain, prev, _ in rows)
    print(f"median ratio preview / plain: {ratio:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()

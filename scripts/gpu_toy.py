"""The GPU check's toy step: train the toy model if its weights are not shipped, else measure its quality rows.

    python scripts/gpu_toy.py --device cuda --out OUT          # (scripts/gpu_check.sh runs this)
    python scripts/gpu_toy.py --device cpu --out OUT --smoke   # seconds: checks that the step runs

Training exports ``toy.safetensors`` into OUT (it comes back from the device machine); then copy it to
``fifo_longvid/backends/videocrafter/data/`` and update the sha256 in ``backends/videocrafter/shipped.py``
(README "The toy model").
With the weights shipped, it runs ``bench_quality.py``'s FIFO and fifo_fast rows on the device.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--smoke", action="store_true", help="a few steps / frames only")
    p.add_argument("--minutes", type=float, default=1.5, help="U-Net training time when training (0: no limit)")
    args = p.parse_args()
    from fifo_longvid.backends.videocrafter.shipped import SHIPPED

    args.out.mkdir(parents=True, exist_ok=True)
    if not SHIPPED["toy"].path.exists():
        with tempfile.TemporaryDirectory() as td:
            run = Path(td) / "toy"
            sizes = (["--vae-steps", "3", "--unet-steps", "3", "--pool-clips", "8", "--ckpt-every", "2"] if args.smoke
                     else ["--unet-steps", "20000", "--unet-minutes", str(args.minutes), "--unet-batch", "64"])
            cmd = [sys.executable, str(HERE / "train_toy.py"), "--out", str(run), "--threads", "8",
                   "--accelerator", "gpu" if args.device.startswith("cuda") else "cpu", *sizes]
            print("toy weights not shipped: training -> " + " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            shutil.copy(run / "toy.safetensors", args.out / "toy.safetensors")
        print(f"exported {args.out / 'toy.safetensors'}")
        return
    n, frames = ("1", "8") if args.smoke else ("4", "64")
    cmd = [sys.executable, str(HERE / "bench_quality.py"), "--device", args.device, "--only", "FIFO,fifo_fast",
           "--prompts", n, "--frames", frames, "--drift-frames", "0"]
    print("toy weights shipped: quality rows -> " + " ".join(cmd), flush=True)
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    print(res.stdout)
    (args.out / "toy_quality.md").write_text(res.stdout)


if __name__ == "__main__":
    main()

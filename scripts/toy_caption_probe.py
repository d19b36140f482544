"""Does the toy U-Net read each caption word? Its epsilon loss on training clips under altered captions.

    python scripts/toy_caption_probe.py [--weights W] [--pool runs/toy2/pool.pt] [--uniform]

For clips of straight motion from a trainer pool (or freshly rendered ones), the U-Net's epsilon MSE at several t
under: the clip's own caption, the same with the opposite direction, the same with another colour, and the empty
caption. A word the model uses costs loss when it is wrong; equal columns mean the word is ignored. By default the
first frame sits at t=50 (nearly clean) and the rest at t, so that the rest can only be placed by the direction;
``--uniform`` puts every frame at t. Also prints how far apart the text tower puts captions that differ in one word.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toy_grid import use_weights  # noqa: E402

from fifo_longvid.toy.data import (  # noqa: E402
    MOTIONS,
    PALETTE,
    SHAPES,
    VideoSpec,
    caption_of,
    parse_caption,
    render,
    sample_shape,
)

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
TRAIN_FPS = 8  # toy/training.py FPS (that module needs Lightning)


def clips(model, pool: Path | None, n: int, frames: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    if pool is not None:
        data = torch.load(pool, weights_only=True)
        idx = [i for i, c in enumerate(data["captions"]) if parse_caption(c).motion in OPPOSITE][:n]
        return data["latents"][idx, :, :frames], [data["captions"][i] for i in idx]
    rng = random.Random(seed)
    specs = [VideoSpec((sample_shape(rng, motion=rng.choice(list(OPPOSITE))),)) for _ in range(n)]
    with torch.no_grad():
        lat = [model.encode_frames(render(s, frames)[None]) for s in specs]
    return torch.cat(lat), [s.caption for s in specs]


def altered(caption: str, what: str) -> str:
    s = parse_caption(caption)
    if what == "direction":
        return caption_of(s.colour, s.shape, OPPOSITE[s.motion])
    other = next(c for c in PALETTE if c != s.colour)
    return caption_of(other, s.shape, s.motion)


def separation(model) -> None:
    """Mean relative L2 between contexts of captions that differ only in one attribute."""
    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).norm() / a.norm())

    bases = [("red", "circle", "right"), ("blue", "square", "left"), ("yellow", "triangle", "up")]
    for attr, values in (("colour", PALETTE), ("shape", SHAPES), ("motion", MOTIONS)):
        gaps = []
        for base in bases:
            parts = dict(zip(("colour", "shape", "motion"), base, strict=True))
            for v in values:
                if v != parts[attr]:
                    with torch.no_grad():
                        a, b = model.cond_stage_model([caption_of(*base), caption_of(**{**parts, attr: v})])
                    gaps.append(rel(a.float(), b.float()))
        print(f"text contexts differing only in {attr}: relative L2 mean {statistics.mean(gaps):.3f}, "
              f"min {min(gaps):.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=None, help="an export of scripts/train_toy.py (default: shipped)")
    p.add_argument("--pool", type=Path, default=None, help="a trainer's pool.pt (default: render clips)")
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--uniform", action="store_true", help="every frame at t (default: the first frame at t=50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.weights:
        use_weights(args.weights)
    from fifo_longvid.backends.videocrafter.load import load_model

    model = load_model("toy", device="cpu").eval()
    separation(model)
    x0, captions = clips(model, args.pool, args.clips, model.temporal_length, args.seed)
    b, f = x0.shape[0], x0.shape[2]
    variants = {"right caption": captions, "opposite direction": [altered(c, "direction") for c in captions],
                "other colour": [altered(c, "colour") for c in captions], "empty": [""] * b}
    with torch.no_grad():
        ctx = {k: model.cond_stage_model(v) for k, v in variants.items()}
    ac = model.alphas_cumprod.float()
    g = torch.Generator().manual_seed(args.seed)
    print(f"{b} clips, {'every frame at t' if args.uniform else 'first frame at t=50, the rest at t'}")
    print("| t | " + " | ".join(variants) + " |")
    print("| --- " * (len(variants) + 1) + "|")
    for t in (100, 300, 500, 700, 900):
        eps = torch.randn(x0.shape, generator=g)
        tt = torch.full((b, f), t, dtype=torch.long)
        if not args.uniform:
            tt[:, 0] = 50
        a = ac[tt].view(b, 1, f, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        with torch.no_grad():
            mse = [float(((model.unet(xt, tt, c, fps=TRAIN_FPS) - eps) ** 2).mean()) for c in ctx.values()]
        print(f"| {t} | " + " | ".join(f"{m:.5f}" for m in mse) + " |")


if __name__ == "__main__":
    main()

"""A PNG frame strip (contact sheet) of a video: rows of evenly spaced frames, nearest-neighbour upscaled.

    python scripts/contact_sheet.py circle.mp4 docs/toy_circle.png --frames 0:200:10 --cols 10 --zoom 2
"""

from __future__ import annotations

import argparse

import imageio.v3 as iio
import numpy as np


def contact_sheet(frames: np.ndarray, indices: list[int], cols: int, zoom: int, gap: int = 2) -> np.ndarray:
    """(rows*H', cols*W', 3) uint8 tiles of ``frames[indices]`` with ``gap`` white pixels between them."""
    tiles = [frames[i].repeat(zoom, 0).repeat(zoom, 1) for i in indices]
    h, w, _ = tiles[0].shape
    rows = -(-len(tiles) // cols)
    sheet = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        sheet[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = t
    return sheet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video")
    p.add_argument("png")
    p.add_argument("--frames", default="0::10", help="start:stop:step of the frames to show")
    p.add_argument("--cols", type=int, default=10)
    p.add_argument("--zoom", type=int, default=2)
    args = p.parse_args()
    frames = iio.imread(args.video)
    start, stop, step = (int(x) if x else None for x in (args.frames.split(":") + ["", ""])[:3])
    indices = list(range(len(frames)))[slice(start, stop, step)]
    if not indices:
        raise SystemExit(f"--frames {args.frames} selects no frame of the {len(frames)} in {args.video}")
    iio.imwrite(args.png, contact_sheet(frames, indices, args.cols, args.zoom))
    print(f"wrote {args.png}: {len(indices)} frames")


if __name__ == "__main__":
    main()

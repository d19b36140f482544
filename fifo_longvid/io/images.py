"""Reading a user's conditioning image into the model's frame size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_image(path: str | Path, height: int, width: int) -> torch.Tensor:
    """(1, 3, height, width) in [-1, 1]. Grayscale/RGBA/palette images are converted to RGB.

    The image is centre-cropped to the video's aspect ratio, then resized (bicubic, antialiased), so it
    is never distorted; the reference squashed it to the frame size instead.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--image {path}: no such file")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"--image {path}: unsupported type {path.suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P", "PA"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            img = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"--image {path}: cannot read it as an image ({e}); is the file complete?") from None
    w0, h0 = img.size
    target = width / height
    if w0 / h0 > target:  # too wide: crop the sides
        new_w = round(h0 * target)
        left = (w0 - new_w) // 2
        img = img.crop((left, 0, left + new_w, h0))
    elif w0 / h0 < target:
        new_h = round(w0 / target)
        top = (h0 - new_h) // 2
        img = img.crop((0, top, w0, top + new_h))
    img = img.resize((width, height), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None] * 2 - 1

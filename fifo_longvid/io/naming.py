"""Deterministic, filesystem-safe output names for batch items: ``<index>_<slug>_<hash>``.

The hash covers the prompt, the seed and every setting that changes the video, so a result made with
other settings is never mistaken for the one asked for; the index keeps names unique and sorted.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

SLUG_CHARS = 40
HASH_CHARS = 10


def slugify(text: str, max_len: int = SLUG_CHARS, fallback: str = "video") -> str:
    """Lowercase ASCII letters, digits and single dashes; accents folded, everything else dropped."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")
    slug = slug[:max_len].rstrip("-")
    return slug or fallback


def item_hash(prompt: str, seed: int, settings: dict[str, Any], image_sha256: str | None = None) -> str:
    """Short sha256 of (prompt, seed, settings[, image content]) in canonical JSON."""
    payload = {"prompt": prompt, "seed": int(seed), "settings": settings}
    if image_sha256:
        payload["image"] = image_sha256
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:HASH_CHARS]


def prompt_seed(prompt: str) -> int:
    """A deterministic seed for a prompt without one (31 bits, like the random default)."""
    return int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:4], "big") % (2**31)


def output_name(index: int, label: str, digest: str, suffix: str = ".mp4") -> str:
    """``00042_a-red-fox-running_1a2b3c4d5e.mp4``; ``label`` is the prompt or the row's ``name``."""
    return f"{index:05d}_{slugify(label)}_{digest}{suffix}"

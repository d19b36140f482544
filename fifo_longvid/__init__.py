"""fifo_longvid: arbitrarily long text-to-video with FIFO-Diffusion on VideoCrafter2."""

from __future__ import annotations

__version__ = "0.1.0"


def load_model(config="videocrafter2", checkpoint=None, device=None, dtype=None):  # noqa: ANN001, ANN201
    """Build a model from a preset name or YAML and load its weights (see models.load.load_model)."""
    from .models.load import load_model as _load

    return _load(config, checkpoint, device, dtype)


__all__ = ["load_model", "__version__"]

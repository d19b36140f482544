"""fifo_longvid: arbitrarily long text-to-video with FIFO-Diffusion on VideoCrafter2 and AnimateDiff."""

from __future__ import annotations

__version__ = "0.1.0"


def load_model(config="videocrafter2", checkpoint=None, device=None, dtype=None,  # noqa: ANN001, ANN201
               motion_adapter=None):  # noqa: ANN001
    """Build a model (any family: backends.load_backend) from a preset name or YAML and load its weights."""
    from .backends import load_backend as _load

    return _load(config, checkpoint, device, dtype, motion_adapter)


__all__ = ["load_model", "__version__"]

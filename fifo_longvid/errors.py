"""The error types every floor of the package may raise, on the ground floor so that no floor imports one above it
to raise (``fifo/`` raises ``ConfigError`` without importing ``run/``). Each message says what to do instead; the
CLI turns them into one line and an exit code (``cli/support.py``)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration the user must fix; the message says which key and how."""


class GeometryError(ValueError):
    """Settings that fit no queue geometry; the message names values that do."""


class CheckpointError(RuntimeError):
    """Weights that cannot be used; the message says why and what to do."""


class NonFiniteError(FloatingPointError):
    """NaN/inf appeared in the latents; the message names the step."""


class StateMismatch(ValueError):
    """A saved FIFO state that does not belong to this run (another config, seed or model)."""


class OutOfMemory(RuntimeError):
    """The GPU ran out of memory; the message names the setting to lower."""



class FrozenConfigError(AttributeError):
    """An assignment to a run config after it was resolved (``run/resolve.py``): a bug, not a user's mistake."""

"""Fake CUDA for CI: run the package's CUDA path at full size on a CPU-only machine (issue 25).

``FakeCuda`` drives the real code on fake ``cuda`` tensors (shapes, devices, dtypes, no data), records every
host sync with its file:line and counts device memory as the caching allocator would. It relies on torch's
private fake-tensor API; ``SKIP_REASON`` is set (and the tests skip, saying why) when that API moved.
"""

from __future__ import annotations

SKIP_REASON: str | None = None
try:
    from .cuda import FakeCuda
    from .mode import Sync
except (ImportError, AttributeError) as e:  # torch's private API moved: skip, and say which name
    SKIP_REASON = f"torch's private fake-tensor API moved ({type(e).__name__}: {e}); fake CUDA tests cannot run"
    FakeCuda = Sync = None  # type: ignore[assignment,misc]

__all__ = ["SKIP_REASON", "FakeCuda", "Sync"]

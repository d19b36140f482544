"""The dispatch mode that makes a CPU-only machine run the CUDA path at full size on fake tensors.

It sits above ``FakeTensorMode(allow_non_fake_inputs=True)`` and decides, op by op:

* no CUDA tensor involved (host bookkeeping, the seeded CPU generator, a schedule built with numpy): run it for
  real on the CPU. Plain fake mode would fake these too and then fail on data it does not have.
* a CUDA tensor involved: hand it to the fake mode (shapes, devices, dtypes; no data), then count the new device
  storages (the allocator's live bytes and their peak).
* a host sync (``.item()``, a device->host copy, a blocking host->device copy from pageable memory): record it
  with the package's file:line and return something plausible instead of raising, so one run lists them all.
  A device tensor read back unchanged (a schedule sent to the card) returns the host data it came from; anything
  computed on the card comes back as zeros.

Also: ``mm``/``bmm``/``addmm`` check their dtypes (their meta kernels do not; conv does). ``flash_sdpa`` below is
the attention that ``FakeCuda`` puts in place of ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensor, unset_fake_temporarily
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

aten = torch.ops.aten
REPO = Path(__file__).resolve().parents[2]
TESTS = str(REPO / "tests")


def repo_code(filename: str) -> bool:
    """Whether a frame's file is this repository's own code: a virtual environment inside the clone (CI makes
    ``.venv`` there) holds torch's files under the same prefix, and those are not ours."""
    return filename.startswith(str(REPO)) and "site-packages" not in filename and \
        not filename.startswith(str(REPO / ".venv"))
ROUND = 512  # the CUDA caching allocator's granularity for what memory_allocated reports
MATMULS = {aten.mm.default, aten.bmm.default, aten.addmm.default, aten.baddbmm.default}
DATA_DEPENDENT = {aten.nonzero.default, aten.masked_select.default, aten._unique2.default, aten.equal.default}


@dataclass
class Sync:
    kind: str  # item | device->host copy | pageable host->device copy | synchronize | ...
    where: str  # package file:line (function) that caused it

    def __str__(self) -> str:
        return f"{self.kind} at {self.where}"


@dataclass
class Memory:
    """Live bytes of fake device storages, as the caching allocator would count them."""

    current: int = 0
    peak: int = 0
    _live: dict[int, int] = field(default_factory=dict)

    def track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = id(st)
        if key in self._live:
            return
        n = -(-st.nbytes() // ROUND) * ROUND
        self._live[key] = n
        self.current += n
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)

    def reset_peak(self) -> None:
        self.peak = self.current


def caller() -> str:
    """The innermost frame of this repository outside the test tree: where a sync comes from."""
    f = sys._getframe(1)
    while f is not None:
        name = f.f_code.co_filename
        if repo_code(name) and not name.startswith(TESTS):
            return f"{Path(name).relative_to(REPO).as_posix()}:{f.f_lineno} ({f.f_code.co_name})"
        f = f.f_back
    return "<the tests or torch>"


def _is_cuda(x: object) -> bool:
    return (isinstance(x, FakeTensor) and x.fake_device.type == "cuda") or \
        (isinstance(x, torch.device) and x.type == "cuda") or (isinstance(x, str) and x.startswith("cuda"))


class HostMode(TorchDispatchMode):
    """Real ops on the host, fake ops on the device, syncs recorded (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[Sync] = []
        self.memory = Memory()
        self._shadow: dict[int, tuple[weakref.ref, torch.Tensor]] = {}  # fake copy -> the host data it came from
        self._pinned: dict[int, weakref.ref] = {}  # id -> tensor (a WeakSet would compare tensors with ==)
        self._passthrough = False

    @contextlib.contextmanager
    def passthrough(self) -> Iterator[None]:
        """Every op goes to the fake mode (fake CPU tensors: a checkpoint's contents without the data)."""
        self._passthrough = True
        try:
            yield
        finally:
            self._passthrough = False

    def pin(self, t: torch.Tensor) -> None:
        self._pinned[id(t)] = weakref.ref(t)

    def is_pinned(self, t: torch.Tensor) -> bool:
        ref = self._pinned.get(id(t))
        return ref is not None and ref() is t

    def sync(self, kind: str) -> None:
        self.syncs.append(Sync(kind, caller()))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        kwargs = dict(kwargs or {})
        if self._passthrough:
            return func(*args, **kwargs)
        leaves = tree_leaves((args, kwargs))
        device_side = any(_is_cuda(x) for x in leaves)
        if not device_side and not any(isinstance(x, FakeTensor) for x in leaves):
            return self._host(func, args, kwargs)
        special = self._special(func, args, kwargs)
        if special is not NotImplemented:
            return special
        out = func(*args, **kwargs)
        if func == aten._to_copy.default and not isinstance(args[0], FakeTensor) and args[0].device.type == "cpu":
            self._shadow[id(out)] = (weakref.ref(out), args[0])  # read back later: the real values (a schedule)
        for t in tree_leaves(out):
            if isinstance(t, FakeTensor) and t.fake_device.type == "cuda":
                self.memory.track(t)
        return out

    def _host(self, func, args, kwargs):  # noqa: ANN001
        if func in (aten._pin_memory.default, aten.pin_memory.default):
            with unset_fake_temporarily():
                out = args[0].clone()
            self.pin(out)
            return out
        if func == aten.is_pinned.default:
            return self.is_pinned(args[0])
        pin = kwargs.pop("pin_memory", None)
        with unset_fake_temporarily():
            out = func(*args, **kwargs)
        if pin and isinstance(out, torch.Tensor):
            self.pin(out)
        return out

    def _special(self, func, args, kwargs):  # noqa: ANN001
        """Syncs, the SDPA choice and the matmul dtype check; NotImplemented: let the fake mode run it."""
        if func in (aten._pin_memory.default, aten.pin_memory.default) and isinstance(args[0], FakeTensor) \
                and args[0].fake_device.type == "cpu":  # a checkpoint's fake host tensor, pinned in place
            self.pin(args[0])
            return args[0]
        if func == aten.is_pinned.default and isinstance(args[0], FakeTensor):
            return self.is_pinned(args[0])
        if func == aten._local_scalar_dense.default:
            self.sync("item")
            return {torch.bool: True}.get(args[0].dtype, 0 if not args[0].is_floating_point() else 1.0)
        if func in DATA_DEPENDENT:
            self.sync(f"data-dependent {func.__name__}")
            raise RuntimeError(f"fake CUDA: {func} has a data-dependent result (a host sync) at {caller()}")
        if func in MATMULS:
            dtypes = {a.dtype for a in args if isinstance(a, torch.Tensor)}
            if len(dtypes) > 1:
                raise RuntimeError(f"expected mat1 and mat2 to have the same dtype, got {sorted(map(str, dtypes))} "
                                   f"({func}) at {caller()}")
            return NotImplemented
        if func in (aten._to_copy.default, aten.copy_.default):
            return self._copy(func, args, kwargs)
        return NotImplemented

    def _copy(self, func, args, kwargs):  # noqa: ANN001
        src = args[1] if func == aten.copy_.default else args[0]
        dst_dev = args[0].device if func == aten.copy_.default else kwargs.get("device", src.device)
        src_cuda = isinstance(src, FakeTensor) and src.fake_device.type == "cuda"
        if src_cuda and torch.device(dst_dev).type == "cpu":  # the host waits for the data: a real zero tensor
            self.sync("device->host copy")
            if func == aten.copy_.default:
                return args[0]
            dtype = kwargs.get("dtype") or src.dtype
            ref, data = self._shadow.get(id(src), (None, None))
            with unset_fake_temporarily():
                if ref is not None and ref() is src:  # a plain round trip: the host data it was made from
                    return data.to(dtype=dtype, copy=True)
                return torch.zeros(src.shape, dtype=dtype)  # computed on the card: no data, zeros
        if not src_cuda and isinstance(src, torch.Tensor) and torch.device(dst_dev).type == "cuda":
            blocking = not (kwargs.get("non_blocking") or (len(args) > 2 and args[2]))
            if blocking or not self.is_pinned(src):
                self.sync("pageable host->device copy")
        return NotImplemented



def flash_sdpa(real: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Unmasked fp16/bf16 attention on fake CUDA takes the flash kernel's shapes. Fake SDPA cannot ask the card and
    picks the math path (full LxL scores, fp16 upcast to fp32): 75 GiB where the flash kernel needs 16."""
    def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
             dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None, **kw: object) -> torch.Tensor:
        if (_is_cuda(q) and attn_mask is None and dropout_p == 0.0 and not kw and q.dim() == 4
                and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256 and q.shape[-1] == v.shape[-1]):
            return aten._scaled_dot_product_flash_attention(q, k, v, 0.0, is_causal, scale=scale)[0]
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kw)

    return sdpa

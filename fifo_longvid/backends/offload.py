"""Run a module that lives in host memory on the GPU, one weight-owning submodule at a time.

Wan's text encoder (UMT5-XXL's, 21.2 GiB in float32) is 88 % of Wan2.1-1.3B's weights yet runs once per prompt.
Kept on the card it sets the run's peak; offloaded, each submodule that owns parameters gets device copies of
them just before its forward and drops them just after, so the card holds at most one submodule's weights (the
token embedding, 3.9 GiB) beside the activations. The arithmetic runs on the same device, in the same dtype, with
the same kernels as with the whole encoder on the card, so the output is the same. The host copies are never
replaced: nothing travels back, and the tied embedding stays tied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_HANDLES = "_fifo_offload_handles"
_PINNED = "_fifo_offload_pinned"  # name -> the pinned host tensor a module owns (``stream_from_host(pin=True)``)


@dataclass(frozen=True)
class ExecutionDevice:
    """Where a streamed module computes (the one field of accelerate's hook that diffusers reads)."""

    execution_device: torch.device


def _owns_tensors(module: nn.Module) -> bool:
    return any(t is not None for t in (*module._parameters.values(), *module._buffers.values()))


def _pin_owned(sub: nn.Module) -> dict[tuple[str, str], torch.Tensor]:
    """Move ``sub``'s own host tensors into pinned (page-locked) memory, once: the parameters keep their objects
    (their ``.data`` is the pinned copy), and the pinned tensors are returned as the sources of later copies."""
    pinned: dict[tuple[str, str], torch.Tensor] = {}
    for kind in ("_parameters", "_buffers"):
        table = getattr(sub, kind)
        for name, t in list(table.items()):
            if t is None or t.device.type != "cpu":
                continue
            host = t.detach().pin_memory()
            if kind == "_parameters":
                t.data = host
            else:
                table[name] = host
            pinned[kind, name] = host
    object.__setattr__(sub, _PINNED, {name: t for (_, name), t in pinned.items()})
    return pinned


def stream_from_host(module: nn.Module, device: torch.device | str, pin: bool = False) -> nn.Module:
    """Hook ``module`` (left in host memory) so that its forward computes on ``device``; idempotent.

    ``pin``: keep the host weights in pinned memory and copy them without blocking the host, for a module that
    computes inside the FIFO iterations (a streamed expert), where a pageable copy would be a host sync per
    submodule. (UMT5 runs once per prompt and stays pageable: pinning 21 GiB would only cost host memory.)"""
    unstream(module)
    device = torch.device(device)
    handles = []
    for sub in module.modules():
        if not _owns_tensors(sub):
            continue
        held: dict[tuple[str, str], torch.Tensor] = {}
        sources = _pin_owned(sub) if pin and device.type == "cuda" else {}

        def visit(mod: nn.Module, args: Any, held: dict[tuple[str, str], torch.Tensor] = held,
                  sources: dict[tuple[str, str], torch.Tensor] = sources) -> None:
            for kind in ("_parameters", "_buffers"):
                table = getattr(mod, kind)
                for name, t in list(table.items()):
                    if t is None or t.device == device:
                        continue
                    held[kind, name] = t
                    src = sources.get((kind, name))
                    copy = t.detach().to(device) if src is None else src.to(device, non_blocking=True)
                    table[name] = nn.Parameter(copy, requires_grad=False) if kind == "_parameters" else copy

        def leave(mod: nn.Module, args: Any, out: Any, held: dict[tuple[str, str], torch.Tensor] = held) -> None:
            for (kind, name), t in held.items():
                getattr(mod, kind)[name] = t
            held.clear()

        handles += [sub.register_forward_pre_hook(visit), sub.register_forward_hook(leave, always_call=True)]
    object.__setattr__(module, _HANDLES, handles)
    # accelerate's hooks carry the device a module computes on as ``_hf_hook.execution_device``; diffusers'
    # pipelines read it to place their inputs (``get_module_execution_device``, e.g. in WanPipeline.encode_prompt)
    object.__setattr__(module, "_hf_hook", ExecutionDevice(device))
    return module


def on_device(module: nn.Module, name: str, device: torch.device) -> torch.Tensor:
    """A tensor ``module`` owns, on ``device``, for code that reads it without calling the module's forward (so no
    streaming hook fires): from its pinned host copy without blocking when streamed with ``pin``, else ``.to``
    (a no-op when it already lives there)."""
    src = getattr(module, _PINNED, {}).get(name)
    t = getattr(module, name)
    if src is not None and t.device != device:
        return src.to(device, non_blocking=True)
    return t.to(device)


def unstream(module: nn.Module) -> nn.Module:
    """Remove ``stream_from_host``'s hooks (the weights never left the host)."""
    for h in getattr(module, _HANDLES, ()):
        h.remove()
    object.__setattr__(module, _HANDLES, [])
    if isinstance(getattr(module, "_hf_hook", None), ExecutionDevice):
        object.__delattr__(module, "_hf_hook")
    return module


def is_streamed(module: nn.Module) -> bool:
    return bool(getattr(module, _HANDLES, None))

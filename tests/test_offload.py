"""``backends.offload``: a module left in host memory computes where it is told, and its weights stay put.

The device round trip itself needs a GPU (``tests/test_cuda.py``) or fake CUDA (``tests/test_fake_cuda.py``,
Wan's UMT5-XXL at full size); here the hooks' bookkeeping is checked on the CPU, with ``meta`` as the far device.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fifo_longvid.backends.offload import is_streamed, stream_from_host, unstream


class Tied(nn.Module):
    """An embedding tied to an output projection, a buffer, and a failing mode (like a tied T5 encoder)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
        self.norm = nn.LayerNorm(4)
        self.register_buffer("scale", torch.full((4,), 2.0))
        self.fail = False

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.embed(ids)) * self.scale.to(ids.device)
        if self.fail:
            raise RuntimeError("boom")
        return self.head(h)


def test_the_forward_computes_on_the_far_device_and_the_weights_stay():
    torch.manual_seed(0)
    m = Tied().eval()
    before = {n: p for n, p in m.named_parameters(remove_duplicate=False)}
    ids = torch.tensor([[1, 2, 3]])
    want = m(ids)
    stream_from_host(m, "meta")
    assert is_streamed(m) and m._hf_hook.execution_device == torch.device("meta")
    out = m(ids.to("meta"))
    assert out.device.type == "meta" and out.shape == want.shape  # every piece's weights met its input there
    assert {n: p for n, p in m.named_parameters(remove_duplicate=False)} == before  # the same host objects
    assert m.head.weight is m.embed.weight and m.scale.device.type == "cpu"
    unstream(m)
    assert not is_streamed(m) and not hasattr(m, "_hf_hook")
    assert torch.equal(m(ids), want)


def test_a_failing_forward_still_puts_the_host_weights_back():
    m = Tied().eval()
    stream_from_host(m, "meta")
    m.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        m(torch.tensor([[1]]).to("meta"))
    assert all(p.device.type == "cpu" for p in m.parameters())


def test_streaming_twice_hooks_once():
    m = Tied().eval()
    stream_from_host(m, "meta")
    stream_from_host(m, "meta")
    assert len(m.embed._forward_pre_hooks) == 1 and len(m.norm._forward_hooks) == 1


def test_tiny_wan_on_the_cpu_keeps_its_encoder_in_place():
    """On the CPU there is nothing to offload: the encoder is placed with the rest, unhooked."""
    from fifo_longvid.backends import load_backend

    model = load_backend("tiny_wan", None, "cpu", "fp32")
    assert not model.text_offload and not is_streamed(model.text_encoder)

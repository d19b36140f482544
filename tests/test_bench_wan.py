"""``scripts/bench_gpu.py --config wan`` (``scripts/benchwan.py``): the full-size path, run on the CPU with the
published configs swapped for tiny ones, so that what only a lent GPU runs cannot rot."""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fifo_longvid.backends.wan import full
from fifo_longvid.backends.wan.tiny import TINY_TEXT, TINY_TRANSFORMER, TINY_VAE
from fifo_longvid.run.config import FifoConfig

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
CPU = torch.device("cpu")


def benchwan():
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module("benchwan")
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture()
def small_full(monkeypatch):
    """backends/wan/full.py's configs at tiny sizes: build_wan(full=True) builds the full-size code path."""
    monkeypatch.setattr(full, "FULL_TRANSFORMER", dict(TINY_TRANSFORMER))
    monkeypatch.setattr(full, "FULL_VAE", dict(TINY_VAE))
    monkeypatch.setattr(full, "FULL_MAX_LENGTH", 16)
    monkeypatch.setattr(full, "FULL_TEXT", dict(TINY_TEXT))
    bw = benchwan()
    setup = bw.WanSetup(True, {"fifo.init": "noise", "sampling.seed": 0, "prompts": [bw.PROMPT],
                               "fifo.max_batch": "auto", "model": "wan", "sampling.height": 32,
                               "sampling.width": 32, "fifo.window": 4, "fifo.partitions": 2, "fifo.num_frames": 9},
                        warm=1, timed=2, decode_frames=1)
    return bw, setup


def test_full_path_times_fifo_through_generate_with_plan_beside(small_full):
    bw, setup = small_full
    model = bw.build_wan(True, CPU, "fp32")
    assert model.text_encoder.config.num_layers == 1 and model.context_shape == (16, TINY_TRANSFORMER["text_dim"])
    d_s, d_peak = bw.decode_time(model, setup, CPU)
    assert d_s > 0 and d_peak is None
    row = bw.run_fifo(model, setup, bw.wan_modes(4)[0], CPU, (d_s, d_peak), 80.0)
    s = float(row["s per output frame, median [min-max]"].split()[0])
    it = float(row["s per FIFO iteration (DiT step, no decode), median; floor"].split(";")[0])
    assert s == pytest.approx((it + d_s) / 4, rel=1e-2, abs=2e-3)  # one latent frame = 4 output frames
    assert row["peak device memory (GiB)"] == bw.NO_GPU and row["host syncs in one FIFO step (sync debug mode)"] == \
        bw.NO_GPU
    floor = row["floor: plan's FLOPs / the card's dense peak (s per output frame)"]  # 32x32: rounds to 0.000
    assert float(floor.split()[0]) >= 0 and floor.endswith("TFLOP)")
    assert "iterating" in row["plan: predicted peak (GiB)"]


def test_block_columns_pass_the_run_config_or_say_why_not(small_full):
    bw, setup = small_full
    assert {m.key: m for m in bw.wan_modes(3)}["w3"].flags == {"fifo.lookahead": False, "fifo.partitions": None,
                                                                 "fifo.block": 3, "sampling.steps": 50}
    modes = {m.key: m for m in bw.wan_modes()}  # the default: --steps resolves the block and the partitions
    assert modes["w3"].flags == {"fifo.lookahead": False, "fifo.partitions": None, "sampling.steps": 50}
    assert modes["w4"].flags["sampling.steps"] == 4 and modes["w4"].flags["sampling.cfg"] == 1.0
    assert bw.has_block() and "block" in {f.name for f in dataclasses.fields(FifoConfig)}  # the columns run


def test_umt5_is_materialised_tensor_by_tensor_with_seeded_values(small_full):
    bw, _ = small_full
    a, b = bw.full_umt5(CPU), bw.full_umt5(CPU)
    assert a.encoder.embed_tokens.weight is a.shared.weight  # tied, as a loaded encoder: one copy visits the card
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert p.device.type == "cpu" and torch.isfinite(p).all() and torch.equal(p, q), name
        if p.ndim == 1:
            assert torch.equal(p, torch.ones_like(p)), name
    q = a.encoder.block[0].layer[0].SelfAttention.q.weight
    assert abs(float(q.std()) - q.shape[1] ** -0.5) < 0.05
    out = a(input_ids=torch.tensor([[5, 6, 1]])).last_hidden_state
    assert torch.isfinite(out).all()


def test_cli_on_the_cpu_prints_every_column_and_writes_json(tmp_path):
    """The issue's done-when: ``bench_gpu.py --config wan --quick`` on the CPU prints the table, "no GPU" where a
    value needs one; the JSON has every column."""
    js = tmp_path / "wan.json"
    res = subprocess.run([sys.executable, str(SCRIPTS / "bench_gpu.py"), "--device", "cpu", "--config", "wan",
                          "--quick", "--json", str(js)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    table = res.stdout[res.stdout.index("| metric |"):]
    for col in ("(w1) plain FIFO, bf16", "(w2) plain FIFO, fp16", "(w3) --steps 50, no lookahead",
                "(u) UMT5-XXL visit"):
        assert col in table
    for metric in ("s per output frame", "floor: plan's FLOPs", "peak device memory", "plan: predicted peak",
                   "host syncs", "streamed decode", "UMT5: s per encode call"):
        assert metric in table, metric
    assert "no GPU" in table
    data = json.loads(js.read_text())
    assert data["config"] == "wan-tiny" and len(data["rows"]) == len(data["columns"]) == 5
    assert not any("error" in r for r in data["rows"]), data["rows"]

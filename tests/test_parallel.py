"""Window executors: split math, and one video on 2 gloo processes equals the single-process video bit for bit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fifo_longvid.fifo.parallel import LocalExecutor, split_sizes
from fifo_longvid.io.video import read_video


@pytest.mark.parametrize("n,parts,unit,expect", [
    (8, 2, 2, [4, 4]), (8, 3, 2, [4, 2, 2]), (4, 4, 2, [2, 2, 0, 0]), (6, 1, 2, [6]), (7, 2, 2, [4, 3]),
    (16, 4, 2, [4, 4, 4, 4]),
])
def test_split_sizes(n, parts, unit, expect):
    got = split_sizes(n, parts, unit)
    assert got == expect and sum(got) == n


def test_local_executor_equals_plain_chunking():
    net = lambda x, t, c: x * 2 + c.mean()  # noqa: E731
    x, t, c = torch.randn(6, 4, 2, 3, 3), torch.zeros(6, 2, dtype=torch.long), torch.randn(6, 5, 8)
    assert torch.equal(LocalExecutor().wrap(net, 4)(x, t, c), torch.cat([net(x[:4], t, c[:4]), net(x[4:], t, c[4:])]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _generate_cmd(out, config="tiny", px=64):
    return [sys.executable, "-m", "fifo_longvid", "generate", "--prompt", "a red fox running", "--config", config,
            "--num-frames", "2", "--seed", "11", "--device", "cpu", "--max-batch", "4", "--save-latents",
            "-o", str(out), "fifo.window=4", "fifo.partitions=2", f"sampling.height={px}", f"sampling.width={px}"]


@pytest.mark.parametrize("config,px,latent,channels,extra,calls", [
    ("tiny", 64, 8, 4, [], 6), ("tiny_animatediff", 32, 16, 4, [], 6), ("tiny_wan", 32, 4, 16, [], 6),
    ("tiny", 64, 8, 4, ["fifo.block=2"], 3),  # blocks of 2: warm-up 4 frames + 2 frames = 3 iterations
])
def test_gloo_two_processes_equal_one_process(tmp_path, config, px, latent, channels, extra, calls):
    """Lookahead, f=4, n=2: 4 windows x (cond, uncond) = 8 samples per iteration; each rank denoises 2 windows.
    The reference runs the same chunks in one process (--max-batch 4 = the samples per rank). Every family (Wan:
    2 output frames = 2 latent frames, float timesteps), and the rolling schedule (--block 2: 4 steps)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    single = tmp_path / "single.mp4"
    ref = subprocess.Popen(_generate_cmd(single, config, px) + extra, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
    dist_out = tmp_path / "dist.mp4"
    port = str(_free_port())
    procs = []
    for rank in range(2):
        e = {**env, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": port}
        procs.append(subprocess.Popen(_generate_cmd(dist_out, config, px) + extra, env=e, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT))
    outs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in [ref, *procs]]
    for p, o in zip([ref, *procs], outs, strict=True):
        assert p.returncode == 0, o
    assert "distributed: 2 ranks (gloo)" in outs[1]
    assert f"rank 1: served {calls} U-Net calls" in outs[2]  # warm-up 4 + 2 frames: one call per FIFO iteration
    a = load_file(str(single.with_suffix(".latents.safetensors")))["latents"]
    b = load_file(str(dist_out.with_suffix(".latents.safetensors")))["latents"]
    assert a.shape == (1, channels, 2, latent, latent) and torch.equal(a, b)
    assert np.array_equal(read_video(single), read_video(dist_out))


def _failing_rank(rank: int, port: int, fail_rank: int, results) -> None:
    """One of two gloo ranks; ``fail_rank``'s network raises on the second call (an OOM in its slice, say)."""
    import torch.distributed as dist

    from fifo_longvid.fifo.parallel import DistributedExecutor, serve

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    calls = {"n": 0}

    def net(x, t, c):
        calls["n"] += 1
        if rank == fail_rank and calls["n"] == 2:
            raise MemoryError(f"simulated OOM on rank {rank}")
        return x * 2

    x, t, c = torch.randn(4, 4, 2, 3, 3), torch.zeros(4, 2, dtype=torch.long), torch.randn(4, 5, 8)
    try:
        if rank == 0:
            ex = DistributedExecutor("cpu", unit=2)
            run = ex.wrap(net, None)
            first = run(x, t, c)
            try:
                run(x, t, c)
                results.put((rank, "no error"))
            except Exception as e:  # noqa: BLE001
                results.put((rank, f"{type(e).__name__}: {e}", bool(torch.equal(first, x * 2))))
            finally:
                ex.close()
        else:
            results.put((rank, "served", serve(net, "cpu", None)))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("fail_rank", [0, 1])
def test_a_failure_on_any_rank_ends_every_rank_promptly(fail_rank):
    """Rank 0 raises (its own error, or RankFailed naming the worker), sends STOP, and every rank returns:
    before, rank 0's STOP met workers blocked in all_gather and the collectives hung."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_failing_rank, args=(r, port, fail_rank, results)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
    assert not hung, "a rank hung after the failure"
    got = {r[0]: r[1:] for r in (results.get(timeout=5) for _ in range(2))}
    if fail_rank == 0:
        assert got[0][0] == "MemoryError: simulated OOM on rank 0"
    else:
        assert got[0][0].startswith("RankFailed: rank 1 failed")
    assert got[0][1] is True  # the call before the failure was computed normally
    assert got[1] == ("served", 2)

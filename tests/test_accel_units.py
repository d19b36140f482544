"""Acceleration techniques: the maths and the per-frame store, as small pure pieces."""

from __future__ import annotations

import pytest
import torch

from fifo_longvid.fifo.queue import FifoPlan, FrameQueue
from fifo_longvid.techniques.attn_reuse import computes, extrapolate
from fifo_longvid.techniques.cfg_cache import (
    lowpass_mask,
    rebuild_uncond,
    split_bands,
    step_weights,
    uncond_turn,
)
from fifo_longvid.techniques.deepcache import split_levels
from fifo_longvid.techniques.store import FrameStore
from fifo_longvid.techniques.tgate import cond_only_rows, gate_index, gate_steps


def fastercache_split(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FasterCache's own formulation, written out independently: fftshift-ed spectrum, disc around the centre."""
    spec = torch.fft.fftshift(torch.fft.fft2(t), dim=(-2, -1))
    h, w = t.shape[-2:]
    r = min(h, w) // 5
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    low = ((x - w // 2) ** 2 + (y - h // 2) ** 2 <= r**2).to(spec.dtype)
    return spec * low, spec * (1 - low)


@pytest.mark.parametrize("h,w", [(40, 64), (16, 16), (15, 11), (4, 4)])
def test_band_split_and_rebuild_match_fastercache_formula(h, w):
    g = torch.Generator().manual_seed(0)
    c, u = torch.randn(3, 4, h, w, generator=g), torch.randn(3, 4, h, w, generator=g)
    low, high = split_bands(u - c)
    torch.testing.assert_close(low + high, u - c)
    # the disc is the same set of frequencies as FasterCache's shifted mask
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    disc = (x - w // 2) ** 2 + (y - h // 2) ** 2 <= (min(h, w) // 5) ** 2
    assert torch.equal(torch.fft.fftshift(lowpass_mask(h, w), dim=(-2, -1)), disc)
    # eps_u ~ IFFT(LF(c) + w1 dLF + HF(c) + w2 dHF), FasterCache's formula, for several weights
    lc, hc = fastercache_split(c)
    lu, hu = fastercache_split(u)
    for w1, w2 in ((1.0, 1.0), (1.21, 1.0), (1.0, 1.331), (0.5, 2.0)):
        spec = lc + w1 * (lu - lc) + hc + w2 * (hu - hc)
        ref = torch.fft.ifft2(torch.fft.ifftshift(spec, dim=(-2, -1))).real
        ours = rebuild_uncond(c, low, high, torch.full((3,), w1), torch.full((3,), w2))
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # with w1 = w2 = 1 the rebuild is exactly the recorded uncond output
    torch.testing.assert_close(rebuild_uncond(c, low, high, torch.ones(3), torch.ones(3)), u, atol=1e-5, rtol=1e-5)


def test_low_band_is_smooth_and_real():
    x = torch.zeros(1, 1, 40, 64)
    x[..., ::2, :] = 1.0  # the highest vertical frequency only (plus DC)
    low, high = split_bands(x)
    torch.testing.assert_close(low, torch.full_like(x, 0.5))  # DC survives, the stripes go to HF
    assert high.abs().max() == 0.5


def test_band_weights_follow_fastercache_ranges():
    ts = torch.tensor([0, 50, 200, 300, 301, 500, 900, 901, 999])
    lf = step_weights(ts, 1.1, [99, 901])
    hf = step_weights(ts, 1.1, [-1, 301])
    assert lf.tolist() == pytest.approx([1, 1, 1.1, 1.1, 1.1, 1.1, 1.1, 1, 1])
    assert hf.tolist() == pytest.approx([1.1, 1.1, 1.1, 1.1, 1, 1, 1, 1, 1])


@pytest.mark.parametrize("windows,every", [(8, 2), (8, 3), (4, 2), (8, 4), (6, 5)])
def test_staggered_uncond_turns_keep_the_count_per_iteration_constant(windows, every):
    counts = []
    for it in range(4 * every):
        turns = [uncond_turn(it, w, every) for w in range(windows)]
        counts.append(sum(turns))
    assert max(counts) - min(counts) <= 1  # about windows / every, every iteration
    assert sum(counts[:every]) == windows  # over K iterations, every window exactly once
    for w in range(windows):  # and each window exactly every K iterations
        assert [it for it in range(3 * every) if uncond_turn(it, w, every)] == \
            [it for it in range(3 * every) if (it + w) % every == 0]


def test_tgate_gate_maps_steps_to_schedule_indices():
    assert gate_steps(25, 0.4) == 10  # TGATE's default: 10 of 25 steps compute cross-attention
    s = 16
    g = gate_steps(s, 0.4)
    at = gate_index(s, 0.4)
    # a frame at index i has taken S - i steps: computing while S - i <= g, i.e. i >= S - g
    assert [i for i in range(s) if s - i > g] == list(range(at))
    idx = torch.tensor([[0, 1, 2, 3], [at - 1, at, at + 1, at + 2], [0, 0, 1, at - 1]])
    assert cond_only_rows(idx, at) == [True, False, True]
    assert gate_steps(16, 1.0) == 16 and gate_index(16, 1.0) == 0  # gate 1: never past the gate


def test_attention_extrapolation_and_alternation():
    c0, c1 = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0])
    assert torch.equal(extrapolate(c0, c1, 0.5), torch.tensor([2.5, 5.0]))
    assert torch.equal(extrapolate(c0, c1, 0.0), c1)
    # half of the frames compute each iteration, each frame every other iteration
    for it in range(4):
        assert sum(computes(it, i) for i in range(10)) == 5
    assert [computes(it, 7) for it in range(4)] == [False, True, False, True]


def _iterate(store: FrameStore, plan: FifoPlan, q: FrameQueue, it: int) -> int:
    """One sampler-like iteration: each committed frame writes 100*id + it; returns the emitted frame id."""
    ids = q.frame_ids
    for w in plan.windows():
        committed = ids[w.commit_start : w.commit_end].tolist()
        store.put("x", committed, torch.tensor(committed, dtype=torch.float32) * 100 + it)
    _, emitted = q.pop_push(plan.head, torch.zeros(1, 1, 1, 1, 1))
    store.end_iteration(int(q.frame_ids[0]))
    return emitted


@pytest.mark.parametrize("lookahead", [True, False])
def test_store_entries_follow_frame_ids_through_pop_push_and_leave_with_the_frame(lookahead):
    plan = FifoPlan(4, 2, lookahead)
    store = FrameStore()
    q = FrameQueue.create(torch.zeros(1, 1, plan.length, 1, 1), plan)
    emitted = {}
    for it in range(12):
        emitted[it] = _iterate(store, plan, q, it)
        in_queue = set(q.frame_ids.tolist())
        assert set(store.ids("x")) <= in_queue  # nothing kept for a frame that left the queue
        for i in store.ids("x"):  # each entry is its own frame's latest committed value, wherever it moved
            assert int(store.get("x", i)) // 100 == i
        for w in plan.windows():  # every committed frame has an entry after the first iteration
            assert all(store.has("x", q.frame_ids[w.commit_start : w.commit_end - 1].tolist()))
    last = emitted[11]
    h = plan.num_lookahead
    # an emitted frame stays as lookahead context for f/2 iterations with its entry, then both leave
    assert (last in store.ids("x")) == lookahead
    if lookahead:
        assert emitted[11 - h] not in store.ids("x") and emitted[12 - h] in store.ids("x")
        assert int(store.get("x", last)) % 100 == 11  # frozen at its last committed step


def test_store_writes_are_staged_until_the_iteration_ends():
    store = FrameStore()
    store.put("a", [3, 4], torch.ones(2, 2))
    assert store.get("a", 3) is None and store.has("a", [3]) == [False]
    store.end_iteration()
    assert torch.equal(store.gather("a", [4, 3]), torch.ones(2, 2))
    store.put("a", [3], torch.zeros(1, 2))
    assert torch.equal(store.get("a", 3), torch.ones(2))  # readers of this iteration still see the old entry
    with pytest.raises(RuntimeError, match="mid-iteration"):
        store.state_dict()
    store.end_iteration(first_id=4)
    assert store.ids() == {4}
    with pytest.raises(KeyError, match="frame 3"):
        store.gather("a", [3])


def test_store_state_dict_round_trip_is_exact():
    store = FrameStore()
    g = torch.Generator().manual_seed(0)
    store.put("a/b", [7, 5], torch.randn(2, 3, 4, generator=g))
    store.put("c", [5], torch.randn(1, 2, generator=g, dtype=torch.float64))
    store.end_iteration()
    other = FrameStore()
    other.load_state_dict(store.state_dict())
    assert other.namespaces() == store.namespaces()
    for ns in store.namespaces():
        for i in store.ids(ns):
            assert torch.equal(other.get(ns, i), store.get(ns, i))


def test_deep_and_shallow_levels_are_derived_from_the_architecture(tiny_model):
    from fifo_longvid.backends.videocrafter.load import build_model
    from fifo_longvid.backends.videocrafter.presets import videocrafter2

    full = build_model(videocrafter2(), "meta").unet
    for unet in (full, tiny_model.unet):
        deep, last = split_levels(unet)
        n_in, n_out = len(unet.input_blocks), len(unet.output_blocks)
        shallow_in = n_in + 1 + n_out - len(deep) - (n_out - list(unet.output_blocks).index(last) - 1)
        assert deep[0] is unet.input_blocks[shallow_in]
        assert last is unet.output_blocks[n_out - 1 - shallow_in]
    deep, last = split_levels(full)
    assert deep[0] is full.input_blocks[3] and last is full.output_blocks[8]  # VideoCrafter2: 3 + 3 shallow blocks


class _Policy:
    """Stand-in for TGATE / CFG-Cache at the guidance level: fixed per-row decisions, a known rebuild."""

    def __init__(self, cond_only=None, skip=None):
        self._cond_only, self._skip = cond_only, skip
        self.recorded: list[int] = []

    def cond_only(self, facts):
        return self._cond_only

    def skip_uncond(self, facts):
        return self._skip

    def record(self, facts, rows, e_c, e_u):
        self.recorded += rows

    def rebuild(self, facts, rows, e_c):
        return e_c - 1.0  # a recognisable "rebuilt" uncond output


@pytest.mark.parametrize("uncond_len", [77, 93])  # 93: an I2V-like context of another length (two calls)
def test_guidance_hook_runs_only_the_needed_rows_and_combines_each_mode(uncond_len):
    from fifo_longvid.diffusion.context import StepContext, publish
    from fifo_longvid.techniques.guided import mixed_cfg_denoiser

    seen = []

    def net(x, t, ctx):  # eps depends on the row's context, so cond and uncond differ
        seen.append(x.shape[0])
        return x * ctx.mean(dim=(1, 2)).reshape(-1, 1, 1, 1, 1) + ctx.shape[1]

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 4, 5, 5, generator=g)
    t = torch.zeros(3, 4, dtype=torch.long)
    cond, uncond = torch.randn(1, uncond_len, 8, generator=g) + 1, torch.randn(1, uncond_len, 8, generator=g)
    cond = cond[:, :77] if uncond_len == 93 else cond
    tg, cc = _Policy(cond_only=[True, False, False]), _Policy(skip=[False, True, False])
    den = mixed_cfg_denoiser(net, cond, uncond, 7.5, None, tg, cc)
    step = StepContext(phase="fifo", iteration=0, step_idx=t, frame_ids=torch.arange(12).view(3, 4),
                       commit=torch.ones(3, 4, dtype=torch.bool), window=torch.arange(3))
    with publish(step):
        eps = den(x, t)
    e_c, e_u = net(x, t, cond.expand(3, -1, -1)), net(x, t, uncond.expand(3, -1, -1))
    torch.testing.assert_close(eps[0], e_c[0])  # TGATE: guidance off
    torch.testing.assert_close(eps[1], (e_c[1] - 1) + 7.5 * (e_c[1] - (e_c[1] - 1)))  # CFG-Cache: rebuilt uncond
    torch.testing.assert_close(eps[2], e_u[2] + 7.5 * (e_c[2] - e_u[2]))  # both computed
    assert cc.recorded == [2]
    assert sum(seen[:-2]) == 4  # 3 cond rows + 1 uncond row went through the network (then the two checks)

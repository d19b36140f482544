"""The toy trainer's objectives that run without Lightning: the text tower's caption classifier and the LR schedule."""

from __future__ import annotations

import math

import torch

from fifo_longvid.backends.videocrafter.presets import TOY_TEXT_SEED, toy
from fifo_longvid.backends.videocrafter.recipe import recipe_for_model
from fifo_longvid.backends.videocrafter.text import OpenCLIPTextEncoder
from fifo_longvid.toy.data import MOTIONS, caption_of
from fifo_longvid.toy.objectives import CaptionHead, anchored_timesteps, cosine_lr


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


def test_caption_head_loss_is_low_only_for_separated_contexts():
    torch.manual_seed(0)
    head = CaptionHead(width=16)
    captions = [caption_of("red", "circle", m) for m in MOTIONS]
    same = torch.randn(1, 4, 16).expand(len(captions), 4, 16)
    chance = head.loss(same, captions)
    # contexts that point where each class's weight points: one direction per (colour, shape, motion) sum
    w = {k: torch.nn.functional.normalize(v.detach(), dim=-1) for k, v in head.weights.items()}
    aligned = torch.stack([(w["colour"][0] + w["shape"][0] + w["motion"][i]).expand(4, 16)
                           for i in range(len(MOTIONS))])
    assert head.loss(aligned, captions) < chance - 0.2
    # identical contexts cannot name the motion: the motion term alone stays at or above chance (log 5)
    assert chance > math.log(len(MOTIONS)) / 3 - 1e-3


def test_caption_head_pulls_motion_captions_apart_in_the_text_tower():
    """What the head is for: the seeded text tower's contexts for captions that differ only in the motion word
    move apart when the tower trains against the head (the diffusion loss alone had pushed them to 0.7 %)."""
    torch.manual_seed(0)
    text = OpenCLIPTextEncoder(toy().text)
    text.load_state_dict(recipe_for_model(text, TOY_TEXT_SEED))
    text.requires_grad_(True)
    text.model.token_embedding.requires_grad_(False)
    head = CaptionHead(width=text.model.ln_final.normalized_shape[0])
    captions = [caption_of(c, "circle", m) for c in ("red", "blue") for m in MOTIONS]
    left, right = caption_of("red", "circle", "left"), caption_of("red", "circle", "right")
    with torch.no_grad():
        before = _rel(*text([left, right]))
        first = float(head.loss(text(captions), captions))
    params = [p for p in text.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3)
    for _ in range(25):
        opt.zero_grad()
        head.loss(text(captions), captions).backward()
        opt.step()
    with torch.no_grad():
        after = _rel(*text([left, right]))
        last = float(head.loss(text(captions), captions))
    assert last < 0.5 * first
    assert after > 2 * before, (before, after)


def test_cosine_lr_warms_up_then_decays_to_the_floor():
    assert cosine_lr(0, warmup=10) == 0.1
    assert cosine_lr(50, warmup=10) == 1.0  # no decay asked: constant after warm-up
    f = [cosine_lr(s, warmup=10, decay_steps=100, floor=0.1) for s in range(0, 130)]
    assert f[0] == 0.1 and f[9] > 0.95  # the warm-up ramps to the (already decaying) cosine
    assert all(a >= b for a, b in zip(f[10:-1], f[11:], strict=True))  # never rises after the warm-up
    assert math.isclose(f[100], 0.1) and math.isclose(f[129], 0.1)
    assert math.isclose(f[55], 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.55)))


def test_anchored_timesteps_leave_one_or_two_clean_frames_at_one_end():
    torch.manual_seed(0)
    t = anchored_timesteps(256, 8, clean_max=100, noisy_min=300)
    clean = t < 100
    assert ((t < 100) | (t >= 300)).all() and (t < 1000).all()
    counts = clean.sum(1)
    assert set(counts.tolist()) == {1, 2}
    front = clean[:, 0]
    back = clean[:, -1]
    assert (front ^ back).all()  # exactly one end holds the clean frames
    assert 0.3 < front.float().mean() < 0.7
    for row, c in zip(t, counts, strict=True):  # the clean frames are contiguous from that end
        ends = row[: int(c)] if row[0] < 100 else row[-int(c):]
        assert (ends < 100).all() and len(set(ends.tolist())) == 1

"""The Wan2.1 / SkyReels-V2 DF backend on tiny random weights: loading, per-frame timesteps, text, VAE, handles."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from fifo_longvid.backends.base import CheckpointError
from fifo_longvid.backends.wan.download import HUB_REPOS, download_wan
from fifo_longvid.backends.wan.load import (
    is_wan,
    load_wan,
    pipeline_kind,
    preset_config,
)
from fifo_longvid.backends.wan.network import WanNetwork, token_table
from fifo_longvid.backends.wan.tiny import TINY_TRANSFORMER, tiny_components

B, C, F, H, W = 2, 16, 4, 4, 4
S = (H // 2) * (W // 2)  # tokens per frame with the (1, 2, 2) patch


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def model():
    return load_wan("tiny_wan")


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, C, F, H, W, generator=g)
    ctx = torch.randn(B, 16, TINY_TRANSFORMER["text_dim"], generator=g)
    table = torch.tensor([[999.0, 750.5, 401.25, 12.75], [640.0, 333.3, 90.0, 980.0]])
    return x, ctx, table


def raw_transformer(kind: str = "wan"):
    """A fresh tiny transformer with diffusers' own processors (no handles installed)."""
    return tiny_components(kind)["transformer"]


# -- loading -------------------------------------------------------------------------------------------
def test_presets_and_sizes(model):
    assert is_wan("wan") and is_wan("tiny_wan") and not is_wan("videocrafter2") and not is_wan(None)
    real = preset_config("wan")
    assert (real.latent_size, real.default_window, real.default_partitions, real.default_num_frames,
            real.default_cfg, real.use_scale, real.default_negative_prompt) == ((60, 104), 20, 4, 81, 5.0, False, "")
    assert model.cfg.name == "tiny_wan" and model.cfg.channels == 16 and model.cfg.latent_size == (4, 4)
    assert (model.latent_factor, model.temporal_factor, model.size_multiple) == (8, 4, 16)
    assert model.context_shape == (16, 32) and model.model_channels == 24
    assert model.temporal_length == 6 and model.max_window is None and not model.has_image_encoder
    assert (model.family, model.variant, model.flow_shift) == ("wan", "wan", 3.0)
    assert [model.latent_frames(n) for n in (1, 2, 5, 6, 81, 82)] == [1, 2, 2, 3, 21, 22]
    assert model.output_frames(21) == 81 and model.output_frames(1) == 1
    with pytest.raises(ValueError, match="--eta"):
        model.schedule(10, eta=0.5)
    d = model.describe()
    assert d["family"] == "wan" and d["variant"] == "wan" and d["scheduler"]["flow_shift"] == 3.0
    assert d["scheduler"]["num_train_timesteps"] == 1000 and d["transformer"]["layers"] == 2


def test_folders_load_by_model_index(wan_folders):
    for kind, cls in (("wan", "WanTransformer3DModel"), ("skyreels-df", "SkyReelsV2Transformer3DModel")):
        assert pipeline_kind(wan_folders[kind]) == kind
        m = load_wan("wan", wan_folders[kind])
        assert m.variant == kind and type(m.unet.transformer).__name__ == cls
        index = json.loads((wan_folders[kind] / "model_index.json").read_text())
        assert m.describe()["pipeline"] == index["_class_name"]
        want = tiny_components(kind)["transformer"].state_dict()
        got = m.unet.transformer.state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert load_wan("wan", wan_folders["skyreels-df"]).flow_shift == 8.0


def test_bad_folders_are_refused_clearly(wan_folders, tmp_path, monkeypatch):
    other = tmp_path / "i2v"
    shutil.copytree(wan_folders["wan"], other)
    index = json.loads((other / "model_index.json").read_text())
    index["_class_name"] = "WanImageToVideoPipeline"
    (other / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="(?s)WanImageToVideoPipeline folder.*WanPipeline or SkyReelsV2"):
        load_wan("wan", other)
    with pytest.raises(CheckpointError, match="(?s)not found.*fifo-gen download --model wan"):
        load_wan("wan", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model_index.json"):
        load_wan("wan", tmp_path / "empty")
    monkeypatch.chdir(tmp_path)  # no checkpoints/wan here
    with pytest.raises(CheckpointError, match="--model wan.*--model skyreels-df"):
        load_wan("wan", None)


def test_model_index_that_is_not_an_object_is_named(wan_folders, tmp_path):
    """A new user's folder whose model_index.json holds ``[]``: the CLI says what is wrong (exit 2, no file)."""
    from typer.testing import CliRunner

    from fifo_longvid.cli.main import app

    bad = tmp_path / "bad"
    shutil.copytree(wan_folders["wan"], bad)
    (bad / "model_index.json").write_text("[]")
    with pytest.raises(CheckpointError, match="is JSON but not an object with _class_name \\(it holds a list\\)"):
        pipeline_kind(bad)
    r = CliRunner().invoke(app, ["generate", "--config", "wan", "--checkpoint", str(bad), "--prompt", "a cat",
                                 "--num-frames", "9", "--height", "32", "--width", "32", "--partitions", "2",
                                 "--device", "cpu", "-o", str(tmp_path / "v.mp4"), "fifo.window=4"])
    text = r.output.replace("\n", "")
    assert r.exit_code == 2 and "is JSON but not an object with _class_name" in text and "not valid JSON" not in text
    assert not (tmp_path / "v.mp4").exists()
    (bad / "model_index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="names no pipeline"):
        pipeline_kind(bad)


def test_missing_transformer_weights_show_only_our_error(wan_folders, tmp_path):
    """diffusers logs "An error occurred while trying to fetch ..." before raising; the user sees our error only.

    In-process, diffusers' log handler holds the stderr of the moment it was imported (pytest's), so capsys/capfd
    cannot see its lines: a handler on diffusers' logger checks that nothing is emitted, and the CLI run in a
    subprocess checks what a user's terminal shows.
    """
    import logging

    from fifo_longvid.backends import load_backend

    bad = tmp_path / "bad"
    shutil.copytree(wan_folders["wan"], bad)
    for f in (bad / "transformer").glob("*.safetensors"):
        f.unlink()
    records: list[logging.LogRecord] = []
    listener = logging.Handler()
    listener.emit = records.append
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).addHandler(listener)
    try:
        with pytest.raises(CheckpointError, match="could not load the wan pipeline's components.*transformer"):
            load_backend("wan", bad, "cpu", "fp32")
    finally:
        for name in ("diffusers", "transformers"):
            logging.getLogger(name).removeHandler(listener)
    assert [r.getMessage() for r in records] == []
    r = subprocess.run([sys.executable, "-m", "fifo_longvid", "generate", "--config", "wan", "--checkpoint", str(bad),
                        "--prompt", "a cat", "--num-frames", "9", "--height", "32", "--width", "32", "--partitions",
                        "2", "--device", "cpu", "-o", str(tmp_path / "v.mp4"), "fifo.window=4"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith(f"error: {bad}: could not load the wan pipeline"), r.stderr
    assert "An error occurred" not in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "v.mp4").exists()


def test_download_offline_advice(monkeypatch, tmp_path):
    import huggingface_hub

    def offline(**kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    for kind, repo in HUB_REPOS.items():
        with pytest.raises(RuntimeError, match=f"(?s)could not download {repo}.*Without network.*{repo}"):
            download_wan(kind, tmp_path / kind, log=lambda s: None)
    assert HUB_REPOS == {"wan": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
                         "skyreels-df": "Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers",
                         "wan2.2-ti2v-5b": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
                         "wan2.2-t2v-a14b": "Wan-AI/Wan2.2-T2V-A14B-Diffusers"}
    with pytest.raises(ValueError, match="unknown Wan model"):
        download_wan("wan2.2", tmp_path)


def test_tiny_is_bitwise_reproducible(model, inputs):
    other = load_wan("tiny_wan")
    for a, b in ((model, other),):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x, ctx, table = inputs
    with torch.no_grad():
        assert torch.equal(model.unet(x, table, ctx), other.unet(x, table, ctx))


# -- the network -----------------------------------------------------------------------------------------
def test_uniform_table_equals_scalar_call(model, inputs):
    x, ctx, _ = inputs
    t = torch.tensor([700.5, 123.25])
    ref_tr = raw_transformer()
    with torch.no_grad():
        ref = ref_tr(hidden_states=x, timestep=t, encoder_hidden_states=ctx, return_dict=False)[0]
        uniform = model.unet(x, t[:, None].expand(B, F), ctx)
        scalar = model.unet(x, t, ctx)
        shared = model.unet(x[:1], torch.full((F,), 700.5), ctx[:1], per_frame=True)
    assert uniform.shape == x.shape and uniform.dtype == x.dtype
    assert rel(uniform, ref) < 1e-5 and rel(scalar, ref) < 1e-5 and rel(shared, ref[:1]) < 1e-5


def test_token_table_is_frame_major_and_order_matters(model, inputs):
    x, ctx, table = inputs
    ref_tr = raw_transformer()
    explicit = torch.stack([torch.tensor([float(table[b, k // S]) for k in range(F * S)]) for b in range(B)])
    assert torch.equal(token_table(table, S), explicit)
    with torch.no_grad():
        got = model.unet(x, table, ctx)
        want = ref_tr(hidden_states=x, timestep=explicit, encoder_hidden_states=ctx, return_dict=False)[0]
        token_major = ref_tr(hidden_states=x, timestep=table.repeat(1, S), encoder_hidden_states=ctx,
                             return_dict=False)[0]
        flipped = model.unet(x, table.flip(1), ctx)  # frames' timesteps permuted
    assert rel(got, want) < 1e-5
    assert rel(token_major, want) > 1e-2 and rel(flipped, got) > 1e-2  # the wrong order is caught
    assert rel(got, model.unet(x, table[:, :1].expand(B, F), ctx)) > 1e-2  # per-frame values are used


def test_wan_per_token_equals_skyreels_per_frame(inputs):
    """diffusers' own per-token path (``WanTransformer3DModel.forward`` with a (B, F*h'*w') timestep table, as
    Wan2.2 TI2V's ``expand_timesteps`` feeds it) equals our per-frame forward on the SkyReels class, same weights.

    Tolerance 1e-5: both sides run float32 and differ only in how the modulation broadcasts (one row per token
    against one per frame); measured 7.6e-7 (each side is within that of a float64 run), while a wrong token
    order (frames interleaved) gives 0.18 and one mean timestep per sample 0.22.
    """
    x, ctx, table = inputs
    wan = raw_transformer("wan")  # diffusers' processors, no handles: nothing of ours runs on this side
    sky = raw_transformer("skyreels-df")
    sky.load_state_dict(wan.state_dict(), strict=True)
    seq_lens = []
    wan.condition_embedder.register_forward_hook(
        lambda mod, args, kwargs, out: seq_lens.append(kwargs.get("timestep_seq_len")), with_kwargs=True)
    with torch.no_grad():
        per_token = wan(hidden_states=x, timestep=token_table(table, S), encoder_hidden_states=ctx,
                        return_dict=False)[0]
        per_frame = WanNetwork(sky)(x, table, ctx)
        one_level = wan(hidden_states=x, timestep=table.mean(1), encoder_hidden_states=ctx, return_dict=False)[0]
    assert seq_lens == [F * S, None]  # diffusers took its per-token branch, then the scalar one
    assert per_token.shape == per_frame.shape == x.shape
    assert rel(per_frame, per_token) < 1e-5
    assert rel(one_level, per_token) > 0.05  # the frames' timesteps matter: the comparison is not vacuous


def test_frame_modulation_equals_diffusers_forward(model, inputs):
    """The per-frame modulation forward equals diffusers' per-token (Wan) and diffusion-forcing (SkyReels) paths."""
    x, ctx, table = inputs
    sky = WanNetwork(raw_transformer("skyreels-df"))
    with torch.no_grad():
        for net in (model.unet, sky):
            assert rel(net(x, table, ctx), net.forward_diffusers(x, table, ctx)) < 1e-6
            assert rel(net(x, 321.0, ctx), net.forward_diffusers(x, 321.0, ctx)) < 1e-6


def test_skyreels_fps_embedding_and_batches():
    from diffusers import SkyReelsV2Transformer3DModel

    torch.manual_seed(0)
    net = WanNetwork(SkyReelsV2Transformer3DModel(**TINY_TRANSFORMER, inject_sample_info=True,
                                                  num_frame_per_block=2))
    assert net.transformer.config.num_frame_per_block == 1  # bidirectional windows
    g = torch.Generator().manual_seed(4)
    x, ctx, t = torch.randn(2, C, 2, H, W, generator=g), torch.randn(2, 16, 32, generator=g), \
        torch.tensor([[500.0, 200.0], [10.0, 900.0]])
    with torch.no_grad():
        one = [net.forward_diffusers(x[i : i + 1], t[i : i + 1], ctx[i : i + 1], fps=16 if i else 24)
               for i in range(2)]  # diffusers' own forward: one sample at a time
        with pytest.raises(RuntimeError):  # diffusers repeats the fps table by frames: batches > 1 fail
            net.forward_diffusers(x, t, ctx)
        both = net(x, t, ctx, fps=torch.tensor([24, 16]))
        assert rel(both, torch.cat(one)) < 1e-6
        assert torch.equal(net(x[:1], t[:1], ctx[:1]), net(x[:1], t[:1], ctx[:1], fps=24))  # 24 fps by default
        assert rel(net(x[:1], t[:1], ctx[:1], fps=16), net(x[:1], t[:1], ctx[:1])) > 1e-4


# -- text and VAE ----------------------------------------------------------------------------------------
def test_encode_text_equals_pipeline(model):
    from diffusers import WanPipeline

    prompts = ["a red cat runs on the beach", "  the   Blue dog&amp;  ", ""]
    got = model.encode_text(prompts)
    pipe = WanPipeline(tokenizer=model.tokenizer, text_encoder=model.text_encoder, vae=model.vae,
                       scheduler=None, transformer=None)
    want, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, max_sequence_length=16,
                                 device=torch.device("cpu"), dtype=torch.float32)
    assert got.shape == (3, 16, 32) and torch.equal(got, want)
    assert got[0, 8:].abs().sum() == 0 and got[0, :8].abs().sum() > 0  # 7 words + </s>, then zeros
    assert got[2, 1:].abs().sum() == 0  # the empty prompt is </s> alone


def pipeline_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """What WanPipeline.__call__ does at its end before post-processing."""
    latents = latents.to(vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(latents.device, latents.dtype)
    std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(latents.device,
                                                                                           latents.dtype)
    return vae.decode(latents / std + mean, return_dict=False)[0]


def test_decode_latents_equals_pipeline(model):
    z = torch.randn(1, C, 3, H, W, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        video = model.decode_latents(z)
        want = pipeline_decode(model.vae, z)
    assert video.shape == (1, 3, 9, 32, 32) and torch.equal(video, want)
    assert video.min() >= -1 and video.max() <= 1
    latents = model.encode_frames(video)
    assert latents.shape == (1, C, 3, H, W)


def test_streamed_decode_equals_one_shot_in_constant_memory(model):
    z = torch.randn(1, C, 10, H, W, generator=torch.Generator().manual_seed(3))
    dec = model.frame_decoder()
    parts, sizes = [], {}
    for i in range(10):
        parts.append(dec.decode(z[:, :, i : i + 1]))
        sizes[i + 1] = dec.cache_bytes()
    assert [p.shape[2] for p in parts] == [1] + [4] * 9
    with torch.no_grad():
        one_shot = model.decode_latents(z[:, :, :6])
    assert rel(torch.cat(parts[:6], dim=2), one_shot) <= 1e-5
    assert sizes[3] == sizes[10] > 0
    dec.reset()
    assert torch.equal(dec.decode(z[:, :, :1]), parts[0])


# -- attention handles -----------------------------------------------------------------------------------
class PassThrough:
    def __init__(self, inner, seen):
        self.inner, self.seen = inner, seen

    def __call__(self, attn, x, context):
        self.seen.append(tuple(x.shape))
        return self.inner(attn, x, context)


def test_handles_reproduce_diffusers_and_pass_through(model, inputs):
    from fifo_longvid.techniques.hooks import ProcessorSwap

    x, ctx, table = inputs
    sites = model.unet.attention_sites()
    assert [(s.path, s.target, s.stage, s.level, s.block, s.depth, s.skip) for s, _ in sites] == [
        (f"blocks.{i}.{r}", f"spatial_{r}", "middle", 0, i, 0, -1) for i in range(2) for r in ("attn1", "attn2")]
    assert all((s.heads, s.dim_head) == (2, 12) for s, _ in sites)
    ref_tr = raw_transformer()
    token = token_table(table, S)
    with torch.no_grad():
        want = ref_tr(hidden_states=x, timestep=token, encoder_hidden_states=ctx, return_dict=False)[0]
        plain = model.unet(x, table, ctx)
        seen: list = []
        swap = ProcessorSwap()
        for target in ("spatial_attn1", "spatial_attn2"):
            swap.wrap(model.unet, target, lambda site, inner: PassThrough(inner, seen))
        wrapped = model.unet(x, table, ctx)
        swap.restore()
        again = model.unet(x, table, ctx)
    assert rel(plain, want) < 1e-5
    assert torch.equal(wrapped, plain) and torch.equal(again, plain)
    assert seen == [(B * F, S, 24)] * 4  # frame rows: one per (sample, frame)


class SubsetRows:
    """Computes rows 0, 2, 4... only and fills the rest from a full call: what a per-frame cache does."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, attn, x, context):
        full = self.inner(attn, x, context)
        rows = torch.arange(0, x.shape[0], 2)
        part = self.inner(attn, x[rows], None if context is None else context[rows])
        out = full.clone()
        out[rows] = part
        return out


class SelectedRows:
    """Computes the chosen frame rows through ``select_rows`` and fills the rest from a full call: what attention
    reuse does on a DiT (the chosen rows' queries attend to every frame of their sample)."""

    def __init__(self, inner, rows):
        self.inner, self.rows = inner, rows

    def __call__(self, attn, x, context):
        full = self.inner(attn, x, context)
        idx = torch.tensor(self.rows)
        part = self.inner(attn, attn.select_rows(x, self.rows, idx), None if context is None else context[idx])
        out = full.clone()
        out[idx] = part
        return out


def test_cross_attention_rows_are_independent_and_self_attention_subsets_see_every_frame(model, inputs):
    from fifo_longvid.techniques.hooks import ProcessorSwap

    x, ctx, table = inputs
    swap = ProcessorSwap()
    with torch.no_grad():
        plain = model.unet(x, table, ctx)
        swap.wrap(model.unet, "spatial_attn2", lambda site, inner: SubsetRows(inner))
        subset = model.unet(x, table, ctx)
        swap.restore()
        swap.wrap(model.unet, "spatial_attn1", lambda site, inner: SubsetRows(inner))
        with pytest.raises(RuntimeError, match="without select_rows"):  # rows alone cannot see the other frames
            model.unet(x, table, ctx)
        swap.restore()
        chosen = {}
        for rows in ([0, 2, 3, 5, 6, 7], [1, 2], [4, 7]):  # uneven per sample; one sample only
            swap.wrap(model.unet, "spatial_attn1", lambda site, inner, rows=rows: SelectedRows(inner, rows))
            chosen[tuple(rows)] = model.unet(x, table, ctx)
            swap.restore()
    assert rel(subset, plain) < 1e-6
    assert all(rel(out, plain) < 1e-6 for out in chosen.values()), {k: rel(v, plain) for k, v in chosen.items()}


def test_deep_split_is_refused(model):
    with pytest.raises(ValueError, match="--deepcache needs a U-Net with resolution levels; Wan is a DiT"):
        model.unet.deep_split()


def test_cast_keeps_diffusers_float32_modules(inputs):
    m = load_wan("tiny_wan")
    rope_dtype = m.unet.transformer.rope.freqs_cos.dtype
    m.cast(torch.bfloat16, vae_dtype=torch.float32)
    tr = m.unet.transformer
    assert m.dtype == torch.bfloat16 and tr.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert tr.scale_shift_table.dtype == tr.blocks[0].scale_shift_table.dtype == torch.float32
    assert next(tr.condition_embedder.time_embedder.parameters()).dtype == torch.float32
    assert tr.rope.freqs_cos.dtype == rope_dtype  # rotary tables untouched
    assert m.vae.dtype == torch.float32 and m.text_encoder.dtype == torch.float32
    x, ctx, table = inputs
    with torch.no_grad():
        y = m.unet(x, table, ctx)
        assert y.dtype == torch.float32 and rel(y, m.unet.forward_diffusers(x, table, ctx)) < 1e-6
    assert m.encode_text(["a cat"]).dtype == torch.bfloat16


class Counting:
    """Innermost processor that counts the frame rows it computes."""

    def __init__(self, inner, rows):
        self.inner, self.rows = inner, rows

    def __call__(self, attn, x, context):
        self.rows.append(x.shape[0])
        return self.inner(attn, x, context)


def test_tgate_caches_wan_cross_attention_per_frame(inputs):
    """TGATE, unchanged, drives Wan's attn2 sites in frame rows: records at the gate, reuses past it, per frame."""
    from types import SimpleNamespace

    from fifo_longvid.diffusion.context import StepContext, publish
    from fifo_longvid.techniques.hooks import ProcessorSwap, forget
    from fifo_longvid.techniques.store import FrameStore
    from fifo_longvid.techniques.tgate import TGate, TGateConfig

    x, ctx, _ = inputs
    m = load_wan("tiny_wan")
    rows: list[int] = []
    counter = ProcessorSwap()
    counter.wrap(m.unet, "spatial_attn2", lambda site, inner: Counting(inner, rows))
    store = FrameStore()
    tgate = TGate(m.unet, TGateConfig(enabled=True, gate=0.5), store)
    assert [s.path for s in tgate.sites] == ["blocks.0.attn2", "blocks.1.attn2"]
    tgate.bind(SimpleNamespace(num_steps=4))  # gate at schedule index 2
    tgate.set_phase("fifo")
    ids = torch.arange(B * F).reshape(B, F)

    def step(iteration: int, idx: list[list[int]]) -> torch.Tensor:
        c = StepContext("fifo", iteration, torch.tensor(idx), frame_ids=ids, commit=torch.ones(B, F, dtype=torch.bool),
                        window=torch.arange(B), branch=torch.zeros(B, dtype=torch.long))
        rows.clear()
        with publish(c), torch.no_grad():
            out = m.unet(x, torch.tensor(idx, dtype=torch.float32) * 250.0, ctx)
        store.end_iteration()
        forget()
        return out

    at_gate = step(0, [[2] * F] * B)  # every frame computes and records
    assert rows == [B * F] * 2 and len(store.ids("tgate/blocks.0.attn2/cond")) == B * F
    past = step(1, [[1] * F] * B)  # every frame past the gate: cross-attention read from the records
    assert rows == []
    mixed = step(2, [[1] * F, [3] * F])  # sample 1 not yet at the gate: only its 4 frame rows compute
    assert rows == [F, F]
    tgate.remove()
    counter.restore()
    with torch.no_grad():
        plain = m.unet(x, torch.tensor([[1.0] * F] * B) * 250.0, ctx)
    assert torch.isfinite(past).all() and torch.isfinite(mixed).all() and at_gate.shape == x.shape
    assert rel(past, plain) > 1e-4  # the records (from t=500) replaced this step's cross-attention
    assert torch.equal(mixed[:1], past[:1])  # sample 0 reuses the same records in both steps

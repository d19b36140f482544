"""--lora / --lora-2 (issue #31): LoRAs on tiny Wan2.1 folders written by diffusers' save_pretrained and on
tiny_animatediff; the diffusers peer check, the refusals (nothing written), the record and the hashes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from fifo_longvid.backends.lora import parse_lora_spec
from fifo_longvid.cli.main import app
from fifo_longvid.run import pipeline
from fifo_longvid.run.config import build_run_config, numerics_hash

RANK = 4
# (diffusers name, original Wan name, in, out) of the tiny transformer's layers the test LoRA touches
LAYERS = [("attn1.to_q", "self_attn.q", 24, 24), ("attn1.to_v", "self_attn.v", 24, 24),
          ("attn2.to_k", "cross_attn.k", 24, 24), ("ffn.net.0.proj", "ffn.0", 24, 32)]
TINY = ["fifo.window=4", "fifo.partitions=2", "sampling.height=32", "sampling.width=32", "fifo.num_frames=9",
        "sampling.seed=3", "output.save_latents=true"]


def _factors(seed: int = 0) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {(b, d): (torch.randn(RANK, i, generator=g) * 0.3, torch.randn(o, RANK, generator=g) * 0.3)
            for b in range(2) for d, _, i, o in LAYERS}


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    """The same LoRA in diffusers' layout and in the original Wan layout (alpha = rank / 2: the alpha fold is a
    power of two, so both give the same bits), and one with foreign keys."""
    root = tmp_path_factory.mktemp("loras")
    f = _factors()
    diff = {}
    orig = {}
    for (b, d), (a, up) in f.items():
        o = next(o for dd, o, _, _ in LAYERS if dd == d)
        diff[f"transformer.blocks.{b}.{d}.lora_A.weight"] = a
        diff[f"transformer.blocks.{b}.{d}.lora_B.weight"] = up * 0.5  # alpha / rank folded in
        orig[f"diffusion_model.blocks.{b}.{o}.lora_down.weight"] = a
        orig[f"diffusion_model.blocks.{b}.{o}.lora_up.weight"] = up
        orig[f"diffusion_model.blocks.{b}.{o}.alpha"] = torch.tensor(RANK / 2)
    foreign = dict(diff)
    for k in range(5):
        foreign[f"transformer.blocks.{k + 7}.attn1.to_q.lora_A.weight"] = torch.zeros(RANK, 24)
    paths = {"diff": root / "d.safetensors", "orig": root / "o.safetensors", "foreign": root / "f.safetensors"}
    for name, sd in (("diff", diff), ("orig", orig), ("foreign", foreign)):
        save_file({k: v.contiguous() for k, v in sd.items()}, str(paths[name]))
    return paths


def _gen(folder, out, *extra: str, loras=(), model="wan"):
    flags = {"model": model, "prompts": ["a red circle bouncing"], "output.path": str(out)}
    if folder is not None:
        flags["checkpoint"] = str(folder)
    if loras:
        flags["loras"] = [{"path": p, "scale": s, "target": "main"} for p, s in map(parse_lora_spec, loras)]
    cfg = build_run_config(flags=flags, overrides=TINY + list(extra))
    return pipeline.generate(cfg, log=lambda m: None)


def latents_of(res) -> torch.Tensor:
    return load_file(str(res.output.with_suffix(".latents.safetensors")))["latents"]


def test_parse_lora_spec():
    assert parse_lora_spec("a.safetensors") == ("a.safetensors", 1.0)
    assert parse_lora_spec("a.safetensors:0.5") == ("a.safetensors", 0.5)
    assert parse_lora_spec("C:\\l\\a.safetensors") == ("C:\\l\\a.safetensors", 1.0)  # the rest is no number
    assert parse_lora_spec("odd:dir/a.safetensors:-1") == ("odd:dir/a.safetensors", -1.0)


def test_wan_lora_scale_zero_layouts_sidecar_and_hash(wan_folders, loras, tmp_path):
    folder = wan_folders["wan"]
    plain = _gen(folder, tmp_path / "plain.mp4")
    zero = _gen(folder, tmp_path / "zero.mp4", loras=[f"{loras['diff']}:0"])
    on = _gen(folder, tmp_path / "on.mp4", loras=[str(loras["diff"])])
    orig = _gen(folder, tmp_path / "orig.mp4", loras=[str(loras["orig"])])
    z = {k: latents_of(r) for k, r in (("plain", plain), ("zero", zero), ("on", on), ("orig", orig))}
    assert torch.equal(z["zero"], z["plain"])  # scale 0: checked and hashed, not loaded
    assert not torch.equal(z["on"], z["plain"]) and torch.isfinite(z["on"]).all()
    assert torch.equal(z["orig"], z["on"])  # the original Wan layout, converted by diffusers, is the same LoRA
    side = json.loads(on.sidecar.read_text())
    (rec,) = side["loras"]
    from fifo_longvid.io.sidecar import file_sha256

    assert rec == {"path": str(loras["diff"]), "sha256": file_sha256(loras["diff"]), "scale": 1.0,
                   "target": "transformer"}
    assert side["config"]["loras"][0]["target"] == "transformer"
    assert "loras" not in json.loads(plain.sidecar.read_text())
    # the numerics hash (resume) sees the scale and the content; none leaves it as before --lora
    cfgs = [on.config, zero.config, plain.config]
    hashes = [numerics_hash(c, "x") for c in cfgs]
    assert len(set(hashes)) == 3


def test_no_lora_hashes_are_unchanged():
    """The resume hash and a batch item's name of a run without LoRAs equal those from before --lora existed."""
    from fifo_longvid.batch.runner import settings_of
    from fifo_longvid.io.naming import item_hash

    cfg = build_run_config(flags={"model": "tiny_wan", "prompts": ["a cat"]},
                           overrides=["sampling.seed=1", "fifo.window=4"])
    assert numerics_hash(cfg, "recipe:tiny_wan") == "194fa92f047bf293"
    assert item_hash("a cat", 1, settings_of(cfg, "recipe:tiny_wan"), None) == "a8a3f0dc64"


def test_base_clip_with_lora_equals_diffusers_load_lora_weights(wan_folders, loras):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    from fifo_longvid.backends import load_backend
    from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
    from fifo_longvid.diffusion.sampling import sample_clip
    from fifo_longvid.run.config import LoraConfig

    folder = wan_folders["wan"]
    model = load_backend("wan", folder, "cpu", "fp32",
                         loras=[LoraConfig(str(loras["orig"]), 0.75, "transformer")])
    steps, scale = 4, 5.0
    shift = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["flow_shift"]
    pipe = WanPipeline.from_pretrained(folder)
    pipe.load_lora_weights(str(loras["orig"]), adapter_name="x")
    pipe.set_adapters(["x"], [0.75])
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    pipe.set_progress_bar_config(disable=True)
    x_T = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    prompt = "a red circle bouncing"
    want = pipe(prompt, negative_prompt="", height=32, width=32, num_frames=9, num_inference_steps=steps,
                guidance_scale=scale, latents=x_T.clone(), output_type="latent",
                max_sequence_length=model.context_shape[0]).frames
    den = cfg_denoiser(unet_network(model.unet, 8), model.encode_text([prompt]), model.encode_text([""]), scale)
    got = sample_clip(den, x_T, model.schedule(steps))
    plain = WanPipeline.from_pretrained(folder)
    plain.scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    plain.set_progress_bar_config(disable=True)
    without = plain(prompt, negative_prompt="", height=32, width=32, num_frames=9, num_inference_steps=steps,
                    guidance_scale=scale, latents=x_T.clone(), output_type="latent",
                    max_sequence_length=model.context_shape[0]).frames
    rel = float((got.double() - want.double()).norm() / want.double().norm())
    assert rel < 1e-4
    assert float((without.double() - want.double()).norm() / want.double().norm()) > 1e-3  # the LoRA mattered


def _cli(*args: str):
    return CliRunner().invoke(app, ["generate", "--prompt", "a red circle bouncing", *args])


def test_foreign_keys_exit_2_naming_three_and_write_nothing(wan_folders, loras, tmp_path):
    out = tmp_path / "v.mp4"
    r = _cli("--config", "wan", "--checkpoint", str(wan_folders["wan"]), "--lora", str(loras["foreign"]),
             "--num-frames", "9", "--height", "32", "--width", "32", "--checkpoint-every", "1", "-o", str(out),
             "fifo.window=4", "--partitions", "2")
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    assert "5 of its" in text and "match no module" in text
    named = [k for k in (f"transformer.blocks.{i}.attn1.to_q.lora_A.weight" for i in range(7, 12)) if k in text]
    assert len(named) == 3
    assert list(tmp_path.iterdir()) == []  # no video, no sidecar, no state


def test_refusals_before_loading(loras, wan_folders, tmp_path):
    out = tmp_path / "v.mp4"
    r = _cli("--config", "tiny", "--lora", str(loras["diff"]), "-o", str(out))
    assert r.exit_code == 2 and "--lora needs a model that takes LoRAs" in r.output, r.output
    r = _cli("--config", "wan", "--checkpoint", str(wan_folders["wan"]), "--lora-2", str(loras["diff"]),
             "-o", str(out))
    assert r.exit_code == 2 and "--lora-2 loads into the second" in r.output, r.output
    r = _cli("--config", "tiny_wan", "--lora", str(tmp_path / "missing.safetensors"), "-o", str(out))
    assert r.exit_code == 2 and "no such file" in r.output
    pickle_file = tmp_path / "p.safetensors"
    torch.save({"a": torch.zeros(1)}, pickle_file)
    r = _cli("--config", "tiny_wan", "--lora", str(pickle_file), "--num-frames", "9", "-o", str(out))
    assert r.exit_code == 2 and "safetensors only" in " ".join(r.output.split()), r.output
    assert not out.exists() and not out.with_suffix(".json").exists()


def _sd15_lora(path, model, seed=1):
    g = torch.Generator().manual_seed(seed)
    unet = model.lora_modules()["unet"]
    sd = {}
    for name, mod in unet.named_modules():
        if name.endswith(("attn1.to_q", "attn2.to_v")) and ".attentions." in name:
            sd[f"unet.{name}.lora_A.weight"] = torch.randn(RANK, mod.in_features, generator=g) * 0.5
            sd[f"unet.{name}.lora_B.weight"] = torch.randn(mod.out_features, RANK, generator=g) * 0.5
    save_file(sd, str(path))
    return path


def test_animatediff_lora_changes_output_and_scale_zero_is_none(tmp_path):
    from fifo_longvid.backends import load_backend

    lora = _sd15_lora(tmp_path / "sd.safetensors", load_backend("tiny_animatediff", device="cpu", dtype="fp32"))
    extra = ("fifo.num_frames=4", "sampling.eta=1.0")
    plain = latents_of(_gen(None, tmp_path / "a.mp4", *extra, model="tiny_animatediff"))
    zero = latents_of(_gen(None, tmp_path / "b.mp4", *extra, model="tiny_animatediff", loras=[f"{lora}:0"]))
    on = _gen(None, tmp_path / "c.mp4", *extra, model="tiny_animatediff", loras=[f"{lora}:0.8"])
    assert torch.equal(zero, plain) and not torch.equal(latents_of(on), plain)
    assert json.loads(on.sidecar.read_text())["loras"][0]["target"] == "unet"


def test_batch_item_and_studio_accept_loras(tmp_path, loras):
    from fifo_longvid.batch.runner import plan_batch
    from fifo_longvid.io.prompts import read_prompts
    from fifo_longvid.studio.cli_command import Settings, parse, settings_from_config, to_argv

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "a cat", "lora": [f"{loras['diff']}:0.5"]}) + "\n"
                       + json.dumps({"prompt": "a dog"}) + "\n" + json.dumps({"prompt": "a cow", "lora": 3}) + "\n")
    from fifo_longvid.io.prompts import PromptFileError

    with pytest.raises(PromptFileError, match="lora must be"):
        read_prompts(prompts)
    prompts.write_text("\n".join(prompts.read_text().splitlines()[:2]) + "\n")
    a, b = plan_batch(read_prompts(prompts), tmp_path / "out", {"model": "tiny_wan"}, TINY[:4])
    assert [(lo.path, lo.scale, lo.target) for lo in a.cfg.loras] == [(str(loras["diff"]), 0.5, "transformer")]
    assert b.cfg.loras == [] and a.digest != b.digest
    # the studio: a "LoRAs" box, one PATH[:SCALE] per line -> --lora flags, parsed by the CLI's own parser
    s = Settings(prompt="a cat", loras=f"{loras['diff']}:0.25\n\n{loras['orig']}")
    argv = to_argv(s, "tiny_wan", None, tmp_path / "x.mp4")
    cfg = parse(argv)
    assert [(lo.path, lo.scale) for lo in cfg.loras] == [(str(loras["diff"]), 0.25), (str(loras["orig"]), 1.0)]
    back = settings_from_config({"prompts": ["a cat"], "loras": [{"path": str(loras["diff"]), "scale": 0.25,
                                                                  "target": "transformer"}]}, "tiny_wan", None)
    assert back.loras == f"{loras['diff']}:0.25" and "loras" not in back.extra


def test_a14b_lora_and_lora_2_land_in_their_own_expert_and_equal_diffusers(wan_folders, loras, tmp_path):
    """--lora loads into the high-noise ``transformer``, --lora-2 into the low-noise ``transformer_2``, as diffusers'
    ``load_lora_weights(..., load_into_transformer_2=True)``; the base clip equals that pipeline's."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    from fifo_longvid.backends import load_backend
    from fifo_longvid.diffusion.guidance import cfg_denoiser, unet_network
    from fifo_longvid.diffusion.sampling import sample_clip
    from fifo_longvid.run.config import LoraConfig

    folder = wan_folders["wan2.2-a14b"]
    second = tmp_path / "second.safetensors"
    other = {k: (v.flip(0) if v.ndim == 2 else v).contiguous() * 1.5 for k, v in load_file(str(loras["diff"])).items()}
    save_file(other, str(second))
    model = load_backend("wan", folder, "cpu", "fp32", loras=[LoraConfig(str(loras["diff"]), 1.0, "transformer"),
                                                              LoraConfig(str(second), 1.0, "transformer_2")])

    def adapters(tr) -> set[str]:
        return {a for m in tr.modules() if hasattr(m, "lora_A") for a in m.lora_A.keys()}

    assert adapters(model.unet.high.transformer) == {"lora0"} and adapters(model.unet.low.transformer) == {"lora1"}
    steps = 8  # shift 3: the boundary (875) splits the steps 3 / 5
    shift = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["flow_shift"]
    pipe = WanPipeline.from_pretrained(folder)
    pipe.load_lora_weights(str(loras["diff"]), adapter_name="high")
    pipe.load_lora_weights(str(second), adapter_name="low", load_into_transformer_2=True)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    pipe.set_progress_bar_config(disable=True)
    x_T = torch.randn(1, 16, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    prompt = "a red circle bouncing"
    want = pipe(prompt, negative_prompt="", height=32, width=32, num_frames=13, num_inference_steps=steps,
                guidance_scale=4.0, guidance_scale_2=3.0, latents=x_T.clone(), output_type="latent",
                max_sequence_length=model.context_shape[0]).frames
    den = cfg_denoiser(unet_network(model.unet, 8), model.encode_text([prompt]), model.encode_text([""]),
                       model.guidance(4.0, 3.0))
    with torch.no_grad():
        got = sample_clip(den, x_T, model.schedule(steps))
    assert float((got.double() - want.double()).norm() / want.double().norm()) < 1e-4
    plain = load_backend("wan", folder, "cpu", "fp32")
    den0 = cfg_denoiser(unet_network(plain.unet, 8), plain.encode_text([prompt]), plain.encode_text([""]),
                        plain.guidance(4.0, 3.0))
    with torch.no_grad():
        assert float((sample_clip(den0, x_T, plain.schedule(steps)) - got).norm() / got.norm()) > 1e-3

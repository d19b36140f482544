"""The floor below every family (``backends/hub.py``, ``placement.py``, ``checkpoint.py``): downloads in one shape
through the registry, ``_class_name`` read with clear errors, one quiet loading, one ``--motion-adapter`` refusal,
and families that import no other family."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fifo_longvid
from fifo_longvid.backends import FAMILIES, download, downloadable, family_for, load_backend
from fifo_longvid.backends.base import CheckpointError
from fifo_longvid.backends.family import motion_adapter_refusal
from fifo_longvid.backends.hub import class_name, quiet_loading
from fifo_longvid.cli.main import app

BACKENDS = Path(fifo_longvid.__file__).parent / "backends"


def flat(text: str) -> str:
    return text.replace("\n", "")


@pytest.fixture
def hub_calls(monkeypatch):
    """huggingface_hub without a network: every call is recorded and lands nowhere."""
    import huggingface_hub

    calls: list[tuple[str, dict]] = []

    def snapshot(**kw):
        calls.append(("snapshot", kw))
        return kw["local_dir"]

    def one_file(**kw):
        calls.append(("file", kw))
        return str(Path(kw["local_dir"]) / kw["filename"])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", one_file)
    return calls


# -- downloads: one shape, asked of the registry ------------------------------------------------------------------
def test_every_family_offers_its_downloads_the_same_way():
    offered = [m for f in FAMILIES for m in f.download.models]
    assert sorted(offered) == sorted(["videocrafter2", "videocrafter1_i2v", "animatediff", "wan", "skyreels-df",
                                      "wan2.2-ti2v-5b", "wan2.2-t2v-a14b"])
    assert len(set(offered)) == len(offered) and downloadable() == offered


@pytest.mark.parametrize("model,repos,lands", [
    ("videocrafter2", ["VideoCrafter/VideoCrafter2"], "videocrafter2/model.ckpt"),
    ("videocrafter1_i2v", ["VideoCrafter/Image2Video-512"], "videocrafter1_i2v/model.ckpt"),
    ("animatediff", ["stable-diffusion-v1-5/stable-diffusion-v1-5", "guoyww/animatediff-motion-adapter-v1-5-2"],
     "animatediff"),
    ("wan", ["Wan-AI/Wan2.1-T2V-1.3B-Diffusers"], "wan"),
    ("skyreels-df", ["Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers"], "wan"),
    ("wan2.2-ti2v-5b", ["Wan-AI/Wan2.2-TI2V-5B-Diffusers"], "wan2.2-ti2v-5b"),
    ("wan2.2-t2v-a14b", ["Wan-AI/Wan2.2-T2V-A14B-Diffusers"], "wan2.2-t2v-a14b"),
])
def test_cli_download_fetches_each_model_where_its_config_reads_it(hub_calls, tmp_path, model, repos, lands):
    r = CliRunner().invoke(app, ["download", "--model", model, "--dest", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert [kw["repo_id"] for _, kw in hub_calls] == repos
    assert f"ok: {tmp_path / lands}" in flat(r.output)


def test_cli_download_of_an_unknown_model_lists_the_known_ones(hub_calls, tmp_path):
    r = CliRunner().invoke(app, ["download", "--model", "sora", "--dest", str(tmp_path)])
    assert r.exit_code == 1 and not hub_calls and not any(tmp_path.iterdir())
    assert f"unknown model 'sora'; downloadable: {', '.join(downloadable())}" in flat(r.output)
    with pytest.raises(ValueError, match="unknown model"):
        download("sora", tmp_path)


# -- model_index.json / config.json ------------------------------------------------------------------------------
@pytest.mark.parametrize("text,says", [
    ("[]", "is JSON but not an object with _class_name (it holds a list)"),
    ('"WanPipeline"', "is JSON but not an object with _class_name (it holds a str)"),
    ("{not json", "is not valid JSON"),
])
def test_class_name_says_what_is_wrong(tmp_path, text, says):
    (tmp_path / "model_index.json").write_text(text)
    with pytest.raises(CheckpointError, match="re-download the folder") as e:
        class_name(tmp_path / "model_index.json")
    assert str(e.value).startswith(f"{tmp_path / 'model_index.json'} {says}")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
    assert class_name(tmp_path / "model_index.json") == "WanPipeline"
    (tmp_path / "model_index.json").write_text("{}")
    assert class_name(tmp_path / "model_index.json") is None


def test_a_motion_adapter_folder_with_a_list_for_a_config_is_named(tmp_path):
    from fifo_longvid.backends.animatediff.load import load_motion_adapter

    (tmp_path / "config.json").write_text("[]")
    with pytest.raises(CheckpointError, match="config.json is JSON but not an object with _class_name"):
        load_motion_adapter(tmp_path)


# -- quiet loading ------------------------------------------------------------------------------------------------
def test_quiet_loading_silences_diffusers_and_transformers_then_restores_them():
    from diffusers.utils import logging as d_log
    from transformers.utils import logging as t_log

    records: list[logging.LogRecord] = []
    listener = logging.Handler()  # diffusers' own handler writes to the stderr of its import: listen beside it
    listener.emit = records.append
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).addHandler(listener)
    before = d_log.get_verbosity(), t_log.get_verbosity(), d_log.is_progress_bar_enabled()
    try:
        with quiet_loading():
            d_log.get_logger("diffusers.models.modeling_utils").error("An error occurred while trying to fetch x")
            t_log.get_logger("transformers.modeling_utils").warning("some weights were not used")
            assert not d_log.is_progress_bar_enabled() and not t_log.is_progress_bar_enabled()
        assert records == []
        assert (d_log.get_verbosity(), t_log.get_verbosity(), d_log.is_progress_bar_enabled()) == before
        d_log.get_logger("diffusers.models.modeling_utils").error("outside a load, diffusers still speaks")
        assert [r.getMessage() for r in records] == ["outside a load, diffusers still speaks"]
    finally:
        for name in ("diffusers", "transformers"):
            logging.getLogger(name).removeHandler(listener)


# -- one --motion-adapter refusal -----------------------------------------------------------------------------------
@pytest.mark.parametrize("config", ["tiny", "tiny_wan"])
def test_motion_adapter_is_refused_in_one_wording(tmp_path, config):
    family = family_for(config)
    assert "motion_adapter" not in family.provides
    want = motion_adapter_refusal(config, family)
    assert want == (f"--motion-adapter is for AnimateDiff (--config animatediff); --config {config} is a "
                    f"{family.name} model")
    with pytest.raises(CheckpointError) as e:
        load_backend(config, device="cpu", motion_adapter=tmp_path / "adapter")
    assert str(e.value) == want


# -- checkpoint reading and placement ------------------------------------------------------------------------------
def test_read_checkpoint_gives_the_family_s_advice_when_missing(tmp_path):
    from fifo_longvid.backends.checkpoint import read_checkpoint
    from fifo_longvid.backends.videocrafter.load import read_checkpoint as read_videocrafter

    with pytest.raises(CheckpointError, match=r"(?s)checkpoint not found: .*pass --checkpoint PATH, or fetch"):
        read_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match=r"(?s)checkpoint not found: .*Download VideoCrafter2"):
        read_videocrafter(tmp_path / "nope.ckpt")


def test_placement_resolves_auto_and_names():
    import torch

    from fifo_longvid.backends.placement import resolve_device, resolve_dtype

    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu and resolve_dtype(None, cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16 and resolve_dtype(torch.float16, cpu) == torch.float16
    with pytest.raises(ValueError, match="choose fp32, fp16 or bf16"):
        resolve_dtype("fp8", cpu)


# -- the import graph below backends/ ------------------------------------------------------------------------------
def _backend_imports() -> dict[str, set[str]]:
    """Module -> the backends modules it imports (relative imports resolved, lazy ones included)."""
    pkg = BACKENDS.parent
    mods = {}
    for p in BACKENDS.rglob("*.py"):
        parts = list(p.relative_to(pkg.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = (p, parts)
    graph: dict[str, set[str]] = {}
    for name, (p, parts) in mods.items():
        out = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = parts[: len(parts) - node.level] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                out |= {f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names}
            elif isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
        graph[name] = {m for m in out if m in mods and m != name}
    return graph


def test_no_family_imports_another_and_backends_has_no_import_circle():
    graph = _backend_imports()
    families = {f"fifo_longvid.backends.{f.name}" for f in FAMILIES}

    def family(m: str) -> str | None:
        return next((f for f in families if m == f or m.startswith(f + ".")), None)

    crossing = {f"{m} -> {d}" for m, deps in graph.items() for d in deps
                if family(m) and family(d) and family(m) != family(d)}
    assert not crossing, sorted(crossing)
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        seen[m] = 1
        for d in sorted(graph[m]):
            assert seen.get(d) != 1, " -> ".join([*path, m, d])
            if d not in seen:
                visit(d, [*path, m])
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m, [])

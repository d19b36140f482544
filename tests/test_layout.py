"""The house is easy to change: imports flow down the floors, no module imports itself back through others, family
facts stay in backends/, and one run asks the registry once and cannot change its config once resolved."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

import fifo_longvid
from fifo_longvid.backends import FAMILIES

PACKAGE = Path(fifo_longvid.__file__).parent

# top to bottom: a room may import the rooms below it (STYLE_ANCHORS section 5)
FLOORS = ["__main__", "entry", "cli", "studio", "batch", "plan", "run", "toy", "fifo", "techniques", "backends",
          "diffusion", "report", "io", "devices", "interrupts", "errors"]
# the one import that runs back up: the studio parses its argv with the generate command's own parser, so a
# command line it shows means exactly what it ran
ALLOWED_UP = {("studio", "cli")}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """Package modules imported by ``path``, lazy imports inside functions included, relative ones resolved."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        out |= {n for n in names if n in MODULES}
    return out


GRAPH = nx.DiGraph()
for _name, _path in MODULES.items():
    GRAPH.add_node(_name)
    GRAPH.add_edges_from((_name, dep) for dep in _imports(_path) if dep != _name)


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_circle():
    circles = [sorted(c) for c in nx.strongly_connected_components(GRAPH) if len(c) > 1]
    assert not circles, circles


def test_every_room_has_a_floor_and_at_most_one_import_runs_back_up():
    rooms = {_room(m) for m in MODULES} - {"__init__"}
    assert rooms <= set(FLOORS), sorted(rooms - set(FLOORS))
    up = {(_room(a), _room(b)) for a, b in GRAPH.edges
          if _room(a) != "__init__" and _room(b) in FLOORS and FLOORS.index(_room(b)) < FLOORS.index(_room(a))}
    assert up <= ALLOWED_UP, sorted(up - ALLOWED_UP)


def test_the_lower_floors_import_nothing_of_a_run_a_command_a_batch_or_the_studio():
    above = ("fifo_longvid.run", "fifo_longvid.cli", "fifo_longvid.batch", "fifo_longvid.studio")
    bad = sorted(f"{a} -> {b}" for a, b in GRAPH.edges
                 if _room(a) in ("fifo", "diffusion", "techniques", "io") and b.startswith(above))
    assert not bad, bad


def test_no_file_outside_backends_compares_or_keys_a_family_or_preset_name():
    names = {f.name for f in FAMILIES} | {p for f in FAMILIES for p in f.presets}
    bad = []
    for p in PACKAGE.rglob("*.py"):
        rel = p.relative_to(PACKAGE).as_posix()
        if rel.startswith("backends/"):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                consts = [c for o in operands for c in ([o] if isinstance(o, ast.Constant)
                                                          else getattr(o, "elts", []))]
            elif isinstance(node, ast.Dict):
                consts = [k for k in node.keys if k is not None]
            else:
                continue
            if any(isinstance(c, ast.Constant) and c.value in names for c in consts):
                bad.append(f"{rel}:{node.lineno}")
    assert not bad, bad


def test_one_generate_asks_the_registry_once(tmp_path, monkeypatch):
    """From the command line to the written video: one look-up, carried from there (load, sizes, costs)."""
    from fifo_longvid import backends
    from fifo_longvid.cli.main import main

    calls = []
    original = backends.family_for

    def counted(config, checkpoint=None):
        calls.append(config)
        return original(config, checkpoint)

    for module in ("fifo_longvid.backends", "fifo_longvid.run.resolve", "fifo_longvid.run.validation"):
        monkeypatch.setattr(f"{module}.family_for", counted)
    out = tmp_path / "v.mp4"
    with pytest.raises(SystemExit) as e:
        main(["generate", "--config", "tiny", "--prompt", "a red ball", "--num-frames", "2", "--seed", "0",
              "-o", str(out)])
    assert e.value.code in (None, 0) and out.is_file()
    assert calls == ["tiny"]


def test_a_resolved_config_is_read_only_and_the_given_one_is_left_as_it_was():
    from fifo_longvid.errors import FrozenConfigError
    from fifo_longvid.run.config import build_run_config, to_dict
    from fifo_longvid.run.resolve import resolve

    given = build_run_config(flags={"model": "tiny", "prompts": ["x"]})
    before = to_dict(given)
    run = resolve(given)
    assert to_dict(given) == before  # nothing filled into the caller's object
    cfg = run.config
    assert (cfg.fifo.window, cfg.fifo.partitions, cfg.sampling.steps, cfg.sampling.cfg) == (8, 2, 16, 12.0)
    assert (run.height, run.width) == (128, 128) and cfg.sampling.seed is not None and cfg.output.path
    for assign in (lambda: setattr(cfg, "model", "toy"), lambda: setattr(cfg.fifo, "window", 4),
                   lambda: setattr(cfg.fifo.tail, "mode", "coherent"),
                   lambda: setattr(cfg.techniques.qcache, "v", 0.5)):
        with pytest.raises(FrozenConfigError, match="read-only"):
            assign()


@pytest.mark.parametrize("preset", ["tiny", "tiny_i2v", "toy", "tiny_animatediff", "tiny_wan"])
def test_family_sizes_are_the_loaded_models(preset):
    """A family states its sizes without weights (the run is resolved from them); the model it loads agrees."""
    from fifo_longvid.backends import family_for, load_backend

    family = family_for(preset)
    sizes = family.sizes(preset, None)
    model = load_backend(preset, device="cpu")
    assert (sizes.latent_factor, sizes.size_multiple, sizes.temporal_factor) == (
        model.latent_factor, model.size_multiple, getattr(model, "temporal_factor", 1))
    assert sizes.latent_size == tuple(model.cfg.latent_size)
    assert sizes.window == (model.cfg.default_window or model.temporal_length)
    assert (sizes.partitions, sizes.num_frames) == (model.cfg.default_partitions, model.cfg.default_num_frames)
    assert sizes.default_block == getattr(model, "default_block", 1)

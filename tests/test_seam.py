"""The backend seam holds: FIFO, the samplers, the techniques and the CLI never import a model family, and every
technique is registered once."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import fifo_longvid
from fifo_longvid.techniques import REGISTRY, TechniquesConfig

PACKAGE = Path(fifo_longvid.__file__).parent
FAMILIES = ("fifo_longvid.backends.videocrafter", "fifo_longvid.backends.animatediff", "fifo_longvid.backends.wan")


def _imports(path: Path) -> list[str]:
    """Absolute module names imported by ``path`` (relative imports resolved), lazy imports included."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out += [mod] + [f"{mod}.{a.name}" for a in node.names]
    return out


def test_fifo_diffusion_techniques_and_cli_import_no_model_family():
    files = [*PACKAGE.glob("fifo/*.py"), *PACKAGE.glob("diffusion/*.py"), *PACKAGE.glob("techniques/*.py"),
             *PACKAGE.glob("cli/*.py")]
    assert len(files) > 20
    bad = {f"{p.relative_to(PACKAGE)}: {m}" for p in files for m in _imports(p) if m.startswith(FAMILIES)}
    assert not bad, sorted(bad)


def test_every_technique_is_registered_once():
    names = [spec.name for spec in REGISTRY]
    assert sorted(names) == sorted(f.name for f in fields(TechniquesConfig)) and len(set(names)) == len(names)
    assert len({spec.flag for spec in REGISTRY}) == len(REGISTRY)


def test_three_families_side_by_side_behind_one_registry():
    from fifo_longvid.backends import FAMILIES as REG
    from fifo_longvid.backends import family_for

    assert [f.name for f in REG] == ["animatediff", "wan", "videocrafter"]
    for f in REG:
        assert (PACKAGE / "backends" / f.name / "family.py").is_file()
        assert all(family_for(p) is f for p in f.presets), f.name
    assert family_for("some/model.yaml").name == "videocrafter"  # the catch-all: any YAML is VideoCrafter's
    assert not (PACKAGE / "models").exists()  # no second home of one family
    assert {f.schedule for f in REG} == {"ddim", "flow"}

"""The layering of DESIGN.md: a package never imports one above it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mmrace"

# What each layer may import (besides itself and the standard library).
ALLOWED: dict[str, set[str]] = {
    "engine": set(),
    "sync": {"engine"},
    "arch": {"engine", "sync"},
    "fixes": set(),
    "mm": {"engine", "sync", "arch", "fixes"},
    "oracles": {"engine", "sync", "arch", "mm", "fixes"},
    "user": {"engine", "sync", "arch", "mm", "fixes", "oracles"},
    "kapi": {"engine", "sync", "arch", "mm", "fixes"},
    "scenarios": {"engine", "sync", "arch", "mm", "fixes", "user", "oracles", "kapi"},
    "report": {"engine"},
    "clikit": {"engine"},
    "pytest_plugin": {"engine", "scenarios", "report"},
    "cli": {
        "engine", "sync", "arch", "mm", "fixes", "user", "oracles", "kapi", "scenarios",
        "report", "clikit",
    },
}


def _layer_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def _imported_layers(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "mmrace" and len(parts) > 1:
                out.add(parts[1])
    return out


def test_no_layer_imports_one_above_it() -> None:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        if path.parent == SRC and path.name in ("__init__.py", "__main__.py"):
            continue
        layer = _layer_of(path)
        assert layer in ALLOWED, f"{path}: unknown layer {layer!r}; add it to DESIGN order"
        for used in _imported_layers(path) - {layer}:
            if used not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(SRC)} imports mmrace.{used}")
    assert not bad, "layering broken:\n" + "\n".join(bad)


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    # The checker itself must be able to fail.
    f = tmp_path / "x.py"
    f.write_text("from mmrace.mm import memory\nimport mmrace.cli\n")
    assert _imported_layers(f) == {"mm", "cli"}

"""Every module can be the first one a script imports.

The kernel model's modules import each other in cycles (as the kernel's
files call each other); `mmrace/mm/__init__.py` fixes the load order. A
script, a notebook or a benchmark may start from any module, so each is
imported first, in a fresh interpreter state, here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

_PROBE = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "mmrace" or m.startswith("mmrace.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as e:  # report every module, not just the first
        failed.append(f"{name}: {type(e).__name__}: {e}")
print("\\n".join(failed))
"""


def _modules() -> list[str]:
    names = []
    for path in sorted((SRC / "mmrace").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # running it is the CLI, not an import
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


def test_every_module_imports_first() -> None:
    modules = _modules()
    assert "mmrace.mm.memory" in modules and "mmrace.kapi" in modules
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules],
        capture_output=True, text=True, timeout=600, check=True,
    )
    assert out.stdout.strip() == "", out.stdout


# Function-level imports of mmrace modules that are deliberate, with why.
# Anything else breaks a cycle in the wrong place: use the module's bottom
# seam (or the package's load order) instead.
LAZY_IMPORTS: dict[str, str] = {
    "mmrace/__init__.py": "the scenario API is loaded on first use, so "
                          "`import mmrace.engine` stays light",
    "mmrace/pytest_plugin.py": "a pytest11 entry point is loaded into every pytest "
                               "session of the environment; the model only when used",
    "mmrace/scenarios/__init__.py": "the catalog is built on first use: scenario modules "
                                    "import the scenarios package",
    "mmrace/scenarios/run.py": "a worker process looks its scenario up in the catalog",
}


def _is_model_import(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and (node.module or "").startswith("mmrace")
    if isinstance(node, ast.Import):
        return any(a.name.startswith("mmrace") for a in node.names)
    return False


def _function_level_imports(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return sorted({
        node.lineno
        for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(fn) if _is_model_import(node)
    })


def test_no_function_level_imports_of_the_model() -> None:
    offenders = []
    for path in sorted((SRC / "mmrace").rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in LAZY_IMPORTS:
            continue
        offenders += [f"{rel}:{n}" for n in _function_level_imports(path)]
    assert offenders == [], offenders

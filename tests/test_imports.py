"""Every module can be the first one a script imports.

The kernel model's modules import each other in cycles (as the kernel's
files call each other); `mmrace/mm/__init__.py` fixes the load order. A
script, a notebook or a benchmark may start from any module, so each is
imported first, in a fresh interpreter state, here.
"""

from __future__ import annotations

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

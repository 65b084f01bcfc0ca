"""ruff and mypy stay clean (mypy --strict on engine and sync, per pyproject).

Both are in the ``test`` extra, so a missing one fails these tests rather
than skipping them silently; set ``MMRACE_SKIP_LINT=1`` to skip them on
purpose (e.g. a packager's build without the linters)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        if os.environ.get("MMRACE_SKIP_LINT"):
            pytest.skip(f"{name} is not installed and MMRACE_SKIP_LINT is set")
        pytest.fail(f"{name} is not installed: pip install -e '.[test]' "
                    "(or set MMRACE_SKIP_LINT=1 to skip the lint tests)")
    return found


def test_a_missing_linter_fails_unless_skipping_is_asked_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("MMRACE_SKIP_LINT", raising=False)
    with pytest.raises(pytest.fail.Exception, match="ruff is not installed"):
        _tool("ruff")
    monkeypatch.setenv("MMRACE_SKIP_LINT", "1")
    with pytest.raises(pytest.skip.Exception):
        _tool("ruff")


def test_ruff_clean() -> None:
    proc = subprocess.run(
        [_tool("ruff"), "check", "src", "tests", "bench"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_clean() -> None:
    proc = subprocess.run(
        [_tool("mypy")], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

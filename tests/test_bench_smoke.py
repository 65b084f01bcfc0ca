"""The model benchmarks keep running (small sizes; their figures are not
checked: speed is measured by benchmarks, never by tests). Both broke once
without a test noticing: a set-up larger than the default step bound."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("argv", [
    ["mm.py", "--sizes", "1000", "--pairs", "20", "--lookups", "200",
     "--mremap-pages", "16", "--moves", "2"],
    ["pagefault.py", "--pages", "30"],
])
def test_benchmark_runs(argv: list[str]) -> None:
    out = subprocess.run([sys.executable, str(BENCH / argv[0]), *argv[1:]],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

"""bench/scale.py keeps working (its small mode; the figures are not checked:
speed is measured by benchmarks, never by tests)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "scale.py"


def test_scale_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_scale", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_scale"] = mod
    spec.loader.exec_module(mod)
    assert mod.main(["--quick", "--json", "--workers", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["catalog"]["as_expected"] == out["catalog"]["total"] == 5
    assert out["speedup"]["same_executions"]
    rows = {r["variant"]: r for r in out["per_trace"]}
    assert rows["current"]["traces"] == 26
    assert rows["current"]["executions"] == 57
    assert "frontrun" in out["peer"]

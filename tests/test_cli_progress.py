"""Progress without a terminal, and what check shows for violating variants
(issue 12: "nothing at all printed until the end when stderr is not a
terminal")."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmrace.cli import main
from mmrace.clikit import EXPLORE_EVERY, explore_progress
from mmrace.engine import ProgressInfo

ROOT = Path(__file__).resolve().parents[1]
ARGV = ["check", "wp-pinned-page-cow", "--variant", "base", "--variant", "current"]


def test_check_prints_one_line_per_finished_variant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(ARGV) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    # in the order the variants are decided (they share the workers)
    assert {line[:len("mmrace: [1/2]")] for line in err} == {"mmrace: [1/2]", "mmrace: [2/2]"}
    (current,) = [line for line in err if " wp-pinned-page-cow current: " in line]
    (base,) = [line for line in err if " wp-pinned-page-cow base: " in line]
    assert current.split("] ", 1)[1].startswith("wp-pinned-page-cow current: clean as expected (")
    assert "complete" in current
    assert base.split("] ", 1)[1].startswith("wp-pinned-page-cow base: wrong-data as expected")
    assert "found" in base and "token mmr1-" in base


def test_quiet_silences_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ARGV, "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*ARGV, "--json", "-q"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and len(json.loads(out)) == 2


def test_check_lines_reach_a_pipe_as_they_happen() -> None:
    # A real process with stderr on a pipe (a CI log): the lines are there.
    proc = subprocess.run([sys.executable, "-m", "mmrace", *ARGV], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0
    assert [line.split("]")[0] for line in proc.stderr.splitlines()] == [
        "mmrace: [1/2", "mmrace: [2/2"]


def test_check_traces_prints_each_violation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ARGV, "--traces", "-q"]) == 0
    out = capsys.readouterr().out
    tail = out.split("violations (", 1)[1]
    assert "wp-pinned-page-cow / base: WRONG-DATA" in tail
    assert "wp-pinned-page-cow / base (as of 5.10)" in tail  # the trace's header
    assert "cpu0" in tail and "replay token: mmr1-" in tail


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def test_explore_prints_a_line_every_few_seconds_without_a_terminal() -> None:
    out = _Pipe()
    show = explore_progress(False, out)
    assert show is not None
    for t in range(0, 21):  # called about twice a second, here once a second
        show(ProgressInfo(executions=100 * t, seconds=float(t), depth=7 + t % 3,
                          steps=1000 * t))
    lines = out.getvalue().splitlines()
    assert len(lines) == 20 // int(EXPLORE_EVERY)
    assert lines[0] == "mmrace: 500 executions, 100/s, depth 9, 5s"
    assert explore_progress(True, out) is None

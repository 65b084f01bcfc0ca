"""``mmrace`` at scale: workers, Dask, checkpoints, saved check results,
Ctrl-C (a real process and a real SIGINT), and the bad inputs of those
options."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mmrace import __version__
from mmrace.cli import main
from mmrace.engine.pools import LocalPool
from mmrace.scenarios import get
from mmrace.scenarios.run import run_all

ROOT = Path(__file__).resolve().parents[1]

# 6 threads incrementing a counter: 518,400 traces, far more than a test runs
BIG = """\
from mmrace.engine import Var, spawn


def program():
    x = Var(0, name="x")

    def inc():
        x.store(x.load() + 1)

    for i in range(6):
        spawn(inc, name=f"inc{i}")
"""


def _mmrace(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen([sys.executable, "-m", "mmrace", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _wait_for(path: Path, proc: subprocess.Popen[str], seconds: float = 60.0) -> None:
    """Until *path* exists (the run is exploring), or fail."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            _out, err = proc.communicate()
            pytest.fail(f"mmrace ended early ({proc.returncode}): {err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} never appeared")
        time.sleep(0.05)


def _wait_for_decided(path: Path, prefix: str, proc: subprocess.Popen[str],
                      seconds: float = 60.0) -> None:
    """Until the check record at *path* holds a decided variant whose key
    starts with *prefix* (on a loaded machine that takes longer than the
    first checkpoint), or fail."""
    deadline = time.monotonic() + seconds
    while True:
        _wait_for(path, proc, seconds)
        try:
            variants = json.loads(path.read_text()).get("variants") or {}
        except ValueError:
            variants = {}
        if any(k.startswith(prefix) for k in variants):
            return
        if proc.poll() is not None:
            _out, err = proc.communicate()
            pytest.fail(f"mmrace ended early ({proc.returncode}): {err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{prefix} was never decided")
        time.sleep(0.05)


def _interrupt(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """SIGINT, then the exit status and output (bounded wait)."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("mmrace did not stop after SIGINT")
    took = time.monotonic() - sent
    assert took < 10, f"stopping took {took:.1f}s"
    return proc.returncode, out, err


def test_explore_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path: Path) -> None:
    prog = tmp_path / "big.py"
    prog.write_text(BIG)
    ck = tmp_path / "ck.json"
    proc = _mmrace("explore", f"{prog}:program", "--workers", "2", "--json",
                   "--checkpoint", str(ck), "--checkpoint-every", "0.2")
    _wait_for(ck, proc)
    code, out, err = _interrupt(proc)
    assert code == 130, err
    first = json.loads(out)
    assert first["outcome"] == "interrupted" and not first["complete"]
    assert first["executions"] > 0
    saved = json.loads(ck.read_text())
    assert saved["program"] == f"program {prog}:program" and saved["frontier"]
    # continue for a few hundred more executions
    proc = _mmrace("explore", f"{prog}:program", "--workers", "2", "--json",
                   "--resume", str(ck), "--executions", str(first["executions"] + 300))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    again = json.loads(out)
    assert again["outcome"] == "budget-exhausted"
    assert again["executions"] >= first["executions"] + 300


def test_check_ctrl_c_prints_results_so_far_and_saves_frontiers(tmp_path: Path) -> None:
    rec = tmp_path / "check.json"
    proc = _mmrace("check", "wp-pinned-page-cow", "uffd-wp-protect-unprotect",
                   "--variant", "current", "--jobs", "2", "--json", "--save", str(rec),
                   "--checkpoint-every", "0.3")
    _wait_for_decided(rec, "wp-pinned-page-cow/current", proc)
    code, out, err = _interrupt(proc)
    assert code == 130, err
    rows = {r["scenario"]: r for r in json.loads(out)}
    # the small one is decided, the 4-CPU one interrupted
    assert rows["wp-pinned-page-cow"]["outcome"] == "clean"
    assert rows["uffd-wp-protect-unprotect"]["outcome"] == "interrupted"
    assert rows["uffd-wp-protect-unprotect"]["search"] == "interrupted"
    # stderr is not a terminal: a line per variant, the interrupted one too
    assert "wp-pinned-page-cow current: clean as expected" in err
    assert "uffd-wp-protect-unprotect current: interrupted (not decided)" in err
    saved = json.loads(rec.read_text())
    assert saved["format"] == "mmrace-check"
    assert any(k.startswith("wp-pinned-page-cow/current") for k in saved["variants"])
    (key,) = saved["frontiers"]
    assert key.startswith("uffd-wp-protect-unprotect/current")
    before = saved["frontiers"][key]["frontier"]["performed"][0]
    # resume: the decided variant is not run again, the other continues
    proc = _mmrace("check", "wp-pinned-page-cow", "uffd-wp-protect-unprotect",
                   "--variant", "current", "--workers", "2", "--json", "--resume", str(rec),
                   "--checkpoint-every", "0.3")
    deadline = time.monotonic() + 60
    while True:
        time.sleep(0.2)
        now = json.loads(rec.read_text())["frontiers"].get(key)
        if now is not None and now["frontier"]["performed"][0] > before:
            break
        if time.monotonic() > deadline or proc.poll() is not None:
            break
    if proc.poll() is None:
        code, out, err = _interrupt(proc)
    else:
        out, err = proc.communicate()
        code = proc.returncode
    rows = {r["scenario"]: r for r in json.loads(out)}
    assert rows["wp-pinned-page-cow"]["outcome"] == "clean"
    if code == 130:
        assert rows["uffd-wp-protect-unprotect"]["outcome"] == "interrupted"
        assert rows["uffd-wp-protect-unprotect"]["executions"] > before
    else:
        assert rows["uffd-wp-protect-unprotect"]["outcome"] == "clean"


def test_check_resume_skips_decided_variants(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "check.json"
    assert main(["check", "wp-pinned-page-cow", "--json", "--save", str(rec)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["check", "wp-pinned-page-cow", "--json", "--resume", str(rec)]) == 0
    again = json.loads(capsys.readouterr().out)
    for a, b in zip(first, again, strict=True):
        assert {k: a[k] for k in a if k != "seconds"} == {k: b[k] for k in b if k != "seconds"}


def test_more_jobs_than_variants_starts_no_more_processes() -> None:
    """Processes start only as work appears: two variants decided in their
    first slice (one execution each: nothing to split) start two, not 64.
    (A longer variant is split over idle workers: more processes.)"""
    sc = get("wp-pinned-page-cow")
    pool = LocalPool(64)
    try:
        runs = run_all([(sc, sc.variant("base")), (sc, sc.variant("cow-reuse=page_count"))],
                       pool=pool)
    finally:
        started = pool.started
        pool.close()
    assert [r.outcome for r in runs] == ["wrong-data", "wrong-data"]
    assert [r.result.executions for r in runs] == [1, 1]
    assert started <= 2


def test_workers_give_the_serial_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "softdirty-clear-refs-cow", "--variant", "base", "--variant",
                 "base+soft-dirty-tlb-flush", "--json", "--workers", "1"]) == 0
    serial = json.loads(capsys.readouterr().out)
    assert main(["check", "softdirty-clear-refs-cow", "--variant", "base", "--variant",
                 "base+soft-dirty-tlb-flush", "--json", "--workers", "2"]) == 0
    par = json.loads(capsys.readouterr().out)
    strip = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in par] == \
        [{k: v for k, v in r.items() if k not in strip} for r in serial]


def test_check_on_a_dask_cluster_gives_the_local_table(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    distributed = pytest.importorskip("distributed")
    assert main(["check", "wp-pinned-page-cow", "--json", "--workers", "1"]) == 0
    local = json.loads(capsys.readouterr().out)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        assert main(["check", "wp-pinned-page-cow", "--json", "--dask",
                     cluster.scheduler_address]) == 0
    remote = json.loads(capsys.readouterr().out)
    strip = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in remote] == \
        [{k: v for k, v in r.items() if k not in strip} for r in local]


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mmrace: error: "), err
    return err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["check", "wp-pinned-page-cow", "--workers", "0"], "must be > 0"),
        (["check", "wp-pinned-page-cow", "--jobs", "0"], "must be > 0"),
        (["check", "wp-pinned-page-cow", "--workers", "10000000"], "cannot start 10000000"),
        (["check", "wp-pinned-page-cow", "--jobs", "2", "--workers", "3"], "say different"),
        (["check", "wp-pinned-page-cow", "--workers", "2", "--dask", "tcp://x:1"],
         "do not go together"),
        (["check", "wp-pinned-page-cow", "--resume", "/nonexistent/r.json"], "cannot read"),
        (["check", "wp-pinned-page-cow", "--save", "/nonexistent/dir/r.json"], "no directory"),
        (["check", "wp-pinned-page-cow", "--checkpoint-every", "nan"], "finite number"),
        (["check", "wp-pinned-page-cow", "--checkpoint-every", "-1"], "must be > 0"),
    ],
)
def test_bad_scale_options(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
                           ) -> None:
    assert says in _error(argv, capsys)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:9", "127.0.0.1:9", "banana",
                                     "tcp://127.0.0.1"])
def test_unreachable_dask_scheduler(address: str, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(["check", "wp-pinned-page-cow", "--dask", address], capsys)
    assert "Dask" in err


def test_explore_bad_scale_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prog = tmp_path / "p.py"
    prog.write_text(BIG.replace("range(6)", "range(2)"))
    other = tmp_path / "q.py"
    other.write_text(BIG.replace("range(6)", "range(3)"))
    ck = tmp_path / "ck.json"
    assert main(["explore", f"{prog}:program", "--checkpoint", str(ck), "--json"]) == 0
    capsys.readouterr()
    assert "not of program" in _error(["explore", f"{other}:program", "--resume", str(ck)],
                                      capsys)
    assert "explored with dpor" in _error(
        ["explore", f"{prog}:program", "--resume", str(ck), "--strategy", "bounded"], capsys)
    assert "not to random" in _error(
        ["explore", f"{prog}:program", "--strategy", "random", "--workers", "2"], capsys)
    assert "not to replay" in _error(
        ["explore", f"{prog}:program", "--strategy", "replay", "--token", "mmr1-x",
         "--checkpoint", str(ck)], capsys)
    ck.write_text("[1, 2]")
    assert "not an mmrace checkpoint" in _error(
        ["explore", f"{prog}:program", "--resume", str(ck)], capsys)
    for corrupt in (b"{\"format\": \"mmrace-che", b"\xff\xfe\x00binary"):
        ck.write_bytes(corrupt)
        assert "not JSON" in _error(["explore", f"{prog}:program", "--resume", str(ck)],
                                    capsys)
    assert "cannot read" in _error(["explore", f"{prog}:program", "--resume", str(tmp_path)],
                                   capsys)
    data: dict[str, Any] = {"format": "mmrace-checkpoint", "version": 7}
    ck.write_text(json.dumps(data))
    assert "format 7" in _error(["explore", f"{prog}:program", "--resume", str(ck)], capsys)


def test_explore_on_a_dask_cluster_gives_the_local_result(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    """The workers rebuild FILE.py:FUNC from the file's text."""
    distributed = pytest.importorskip("distributed")
    prog = tmp_path / "p.py"
    prog.write_text(BIG.replace("range(6)", "range(3)") + "\n    return lambda: None\n")
    assert main(["explore", f"{prog}:program", "--json", "--workers", "1"]) == 0
    local = json.loads(capsys.readouterr().out)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        assert main(["explore", f"{prog}:program", "--json", "--dask",
                     cluster.scheduler_address]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in remote.items() if k != "seconds"} == \
        {k: v for k, v in local.items() if k != "seconds"}


def test_check_resume_refuses_other_files(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "r.json"
    rec.write_text(json.dumps({"format": "mmrace-check", "version": 1, "mmrace": "0.0.1",
                               "variants": {}, "frontiers": {}}))
    assert "written by mmrace 0.0.1" in _error(
        ["check", "wp-pinned-page-cow", "--resume", str(rec)], capsys)
    rec.write_text(json.dumps({"format": "mmrace-checkpoint", "version": 1}))
    assert "not a file of mmrace check --save" in _error(
        ["check", "wp-pinned-page-cow", "--resume", str(rec)], capsys)
    rec.write_text(json.dumps({"format": "mmrace-check", "version": 3}))
    assert "format 3" in _error(["check", "wp-pinned-page-cow", "--resume", str(rec)], capsys)
    rec.write_text(json.dumps({"format": "mmrace-check", "version": 1, "mmrace": __version__,
                               "variants": {"wp-pinned-page-cow/current [x]": 5},
                               "frontiers": {}}))
    assert "damaged" in _error(["check", "wp-pinned-page-cow", "--resume", str(rec)], capsys)
    rec.write_bytes(b"\x80\x81")
    assert "not JSON" in _error(["check", "wp-pinned-page-cow", "--resume", str(rec)], capsys)

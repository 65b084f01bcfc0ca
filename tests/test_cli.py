"""The command line: exit codes, JSON, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmrace.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples" / "lost_update.py")


def run(*argv: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mmrace", *argv], capture_output=True, text=True, cwd=ROOT
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "mmrace" in capsys.readouterr().out


def test_violation_exits_1_with_columns_and_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", f"{EXAMPLE}:program"]) == 1
    out = capsys.readouterr().out
    assert "ASSERTION" in out and "replay token: mmr1-" in out
    header = out.splitlines()[0].split()
    assert header == ["A", "B"]


def test_clean_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", f"{EXAMPLE}:fixed", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {
        "outcome": "clean",
        "executions": data["executions"],
        "complete": True,
        "seconds": data["seconds"],
        "violation": None,
        "token": None,
        "quick_pass": None,  # dpor: no bound, no quick pass
    }
    assert data["executions"] >= 1


def test_bounded_explore_reports_its_quick_pass(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explore", f"{EXAMPLE}:fixed", "--strategy", "bounded", "--preemptions", "1"]
    assert main([*argv, "-q"]) == 0
    out = capsys.readouterr().out
    assert "of them in the quick pass" in out
    assert main([*argv, "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert both["quick_pass"]["complete"] and not both["quick_pass"]["found"]
    assert main([*argv, "--json", "--no-quick-pass"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["quick_pass"] is None
    assert both["executions"] == alone["executions"] + both["quick_pass"]["executions"]


def test_replay_token_roundtrip(capsys: pytest.CaptureFixture[str]) -> None:
    main(["explore", f"{EXAMPLE}:program", "--json"])
    token = json.loads(capsys.readouterr().out)["token"]
    assert main(["explore", f"{EXAMPLE}:program", "--token", token, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["violation"]["kind"] == "assertion"
    assert data["token"] == token


@pytest.mark.parametrize(
    "argv",
    [
        ["explore", "missing.py:program"],
        ["explore", f"{EXAMPLE}:nosuch"],
        ["explore", f"{EXAMPLE}"],
        ["explore", f"{EXAMPLE}:program", "--strategy", "bogus"],
        ["explore", f"{EXAMPLE}:program", "--executions", "-3"],
        ["explore", f"{EXAMPLE}:program", "--token", "mmr9-abc"],
        ["explore", f"{EXAMPLE}:program", "--token", "mmr1-aaaaaaaa"],
        ["explore", f"{EXAMPLE}:program", "--token", "garbage"],
        ["explore", f"{EXAMPLE}:fixed", "--token", "mmr1-33fqaaabae"],
        ["explore", f"{EXAMPLE}:program", "--strategy", "replay"],
        ["explore", f"{EXAMPLE}:program", "--bogus-option"],
        ["frobnicate"],
        ["rules", "no_such_field"],
        ["rules", "vm_start", "--kernel", "6.x"],
        ["doc", "-o", "/nonexistent-dir/x.md"],
        ["doc", "--kernel", "latest"],
        ["doc", "--format", "pdf"],
    ],
)
def test_bad_input_is_one_line_exit_2(argv: list[str]) -> None:
    code, out, err = run(*argv)
    assert code == 2, (out, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("mmrace: error: ")


def test_broken_program_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def program(:\n")
    code, _, err = run("explore", f"{bad}:program")
    assert code == 2 and "SyntaxError" in err and len(err.strip().splitlines()) == 1


def test_rules_json_lists_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    from mmrace.mm.rules import rules_table

    assert main(["rules", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == rules_table()
    assert {"field", "read", "write", "note"} <= set(rows[0])
    assert main(["rules", "vm_start", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert [r["field"] for r in one] == ["vm_start"]


def test_rules_text_and_doc_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "vm_flags"]) == 0
    assert "vm_flags" in capsys.readouterr().out
    out = tmp_path / "locking.md"
    assert main(["doc", "-o", str(out)]) == 0
    text = out.read_text()
    assert "vm_start" in text and "|" in text
    rst = tmp_path / "locking.rst"
    assert main(["doc", "--kernel", "6.1", "-o", str(rst)]) == 0
    text = rst.read_text()
    assert ".. list-table::" in text and "Linux 6.1" in text
    assert main(["doc", "--format", "rst"]) == 0
    assert capsys.readouterr().out.startswith("=====")


# --- the scenario catalog: check, list, fixes, replay, explore of scenario files --------

SCENARIO_FILE = '''
from mmrace.mm.mm_types import PAGE_SIZE
from mmrace.user import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, CLEAR_REFS_SOFT_DIRTY
from mmrace.scenarios import Kernel, scenario


def pinned(kernel):
    """A write after clear_refs copies a pinned page away under page_count."""
    s = kernel.system(cpus=1)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    p.poke(a, 1)
    pin = p.pin(a, write=True)
    p.clear_refs(CLEAR_REFS_SOFT_DIRTY)
    p.thread(lambda t: t.store(a, 2), cpu=0, name="writer")

    def check():
        from mmrace.mm.page_alloc import folio_read_word
        from mmrace.oracles.memory import wrong_data
        if folio_read_word(pin[0], 0, 0) != p.peek(a):
            raise wrong_data("the pin and the process disagree")
    return check


meta = scenario(name="pinned", summary="pinned page COW", references=("test",),
                policies=(("cow-reuse", "page_count"),),
                expect={"current": "clean", "base": "clean",
                        "cow-reuse=page_count": "wrong-data"})(pinned)


def plain():
    return None
'''


@pytest.fixture()
def scenario_file(tmp_path: Path) -> str:
    f = tmp_path / "mine.py"
    f.write_text(SCENARIO_FILE)
    return str(f)


def test_list_and_fixes_json(capsys: pytest.CaptureFixture[str]) -> None:
    from mmrace.fixes import FIXES, POLICIES
    from mmrace.scenarios import all_scenarios

    assert main(["list", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in entries] == [sc.name for sc in all_scenarios()]
    assert all(e["references"] and e["variants"] for e in entries)
    assert main(["fixes", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["slug"] for r in rows} == set(FIXES) | set(POLICIES)
    for r in rows:
        assert {"slug", "title", "release", "status"} <= set(r)
        assert r["status"] in ("merged", "proposed", "policy")
    assert next(r for r in rows if r["slug"] == "wp-fault-flush-pending")["status"] == "proposed"
    assert main(["list"]) == 0 and "uffd-wp-unprotect-cow" in capsys.readouterr().out
    assert main(["fixes"]) == 0 and "soft-dirty-tlb-flush" in capsys.readouterr().out


def test_check_json_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check", "wp-pinned-page-cow"]
    assert main([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["variant"] for r in rows][:2] == ["current", "base"]
    for r in rows:
        assert {"scenario", "variant", "expected", "outcome", "violation", "executions",
                "complete", "seconds", "token"} <= set(r)
        assert r["outcome"] == r["expected"]
        if r["violation"] is not None:
            assert set(r["violation"]) == {"kind", "title"}
            assert r["violation"]["kind"] == "wrong-data" and r["token"]
        else:
            assert r["complete"] is True
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["scenario", "variant", "expected", "outcome",
                                           "executions", "search", "seconds"]
    assert "variants as expected" in out
    # a buggy variant that behaved as expected: its search "found" the
    # violation (not "complete = no"), and its token is printed
    base = next(line for line in out.splitlines() if line.split()[1:2] == ["base"])
    assert base.split()[2:6] == ["wrong-data", "wrong-data", "1", "found"]
    current = next(line for line in out.splitlines() if line.split()[1:2] == ["current"])
    assert current.split()[5] == "complete"
    assert "wp-pinned-page-cow / base: WRONG-DATA: wrong data:" in out
    tokens = [r["token"] for r in rows if r["token"]]
    assert tokens and all(f"replay token: {t}" in out for t in tokens)


def test_check_kernel_release_reports_vulnerable(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "wp-pinned-page-cow", "--kernel", "5.10", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["variant"], r["outcome"]) for r in rows] == [("custom", "wrong-data")]
    assert main(["check", "wp-pinned-page-cow", "--kernel", "5.19"]) == 0
    assert "vulnerable on 5.19: none" in capsys.readouterr().out


def test_check_jobs_matches_serial(capsys: pytest.CaptureFixture[str]) -> None:
    def verdicts(*extra: str) -> list[tuple[object, ...]]:
        assert main(["check", "wp-pinned-page-cow", "softdirty-clear-refs-cow", "--variant",
                     "base", "--variant", "cow-reuse=page_count", "--variant", "cow-reuse=mapcount",
                     "--json", "-q", *extra]) == 0
        rows = json.loads(capsys.readouterr().out)
        return [(r["scenario"], r["variant"], r["expected"], r["outcome"], r["executions"],
                 r["complete"], r["search"], r["token"],
                 r["violation"] and r["violation"]["title"]) for r in rows]

    serial = verdicts()
    parallel = verdicts("--jobs", "2")
    assert len(serial) == 4
    assert parallel == serial


def test_replay_catalog_token(capsys: pytest.CaptureFixture[str]) -> None:
    main(["check", "wp-pinned-page-cow", "--variant", "base", "--json"])
    token = json.loads(capsys.readouterr().out)[0]["token"]
    assert main(["replay", token]) == 1
    out = capsys.readouterr().out
    assert out.startswith("wp-pinned-page-cow / base (as of 5.10)")
    assert "WRONG-DATA" in out and f"replay token: {token}" in out
    assert main(["replay", token, "--format", "json", "--all-ops"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert main(["replay", token, "--json", "--all-ops"]) == 1  # like every other command
    again = json.loads(capsys.readouterr().out)
    # the same document, but for the wall-clock time the replay took
    assert {**again, "seconds": 0} == {**data, "seconds": 0}
    assert data["scenario"] == "wp-pinned-page-cow" and data["variant"] == "base"
    assert data["violation"]["kind"] == "wrong-data" and data["trace"]
    assert {"step", "thread", "where", "op", "object"} <= set(data["trace"][0])


def test_explore_scenario_file_with_switches(scenario_file: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", f"{scenario_file}:meta", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "clean"
    assert main(["explore", f"{scenario_file}:meta", "--kernel", "5.10", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["violation"]["kind"] == "wrong-data"
    # a plain one-argument function works too, and its token replays
    assert main(["explore", f"{scenario_file}:pinned", "--kernel", "5.10", "--json"]) == 1
    token = json.loads(capsys.readouterr().out)["token"]
    assert main(["explore", f"{scenario_file}:pinned", "--kernel", "5.10",
                 "--strategy", "replay", "--token", token, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["token"] == token
    assert main(["explore", f"{scenario_file}:pinned", "--kernel", "5.10"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("pinned: as of 5.10") and "WRONG-DATA" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["check", "no-such-scenario"], "unknown scenario"),
        (["check", "wp-pinned-page-cow", "--variant", "nope"], "no selected scenario"),
        (["check", "--kernel", "banana"], "not a kernel release"),
        (["replay", "mmr1-aaaa"], "token"),
        (["replay", "garbage"], "not a replay token"),
    ],
)
def test_catalog_bad_input(argv: list[str], message: str) -> None:
    code, out, err = run(*argv)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_scenario_file_bad_input(scenario_file: str, tmp_path: Path) -> None:
    cases = [
        (["explore", f"{scenario_file}:meta", "--without", "no-such-fix"], "unknown switch"),
        (["explore", f"{scenario_file}:meta", "--with", "uffd-wp-resolve-skip"],
         "does not exercise"),
        (["explore", f"{scenario_file}:plain", "--kernel", "5.10"], "no Kernel argument"),
    ]
    bad = tmp_path / "bad.py"
    bad.write_text("from mmrace.scenarios import scenario\n"
                   "x = scenario(name='x', summary='s', fixes=('nope',), expect={})"
                   "(lambda kernel: None)\n")
    cases.append((["explore", f"{bad}:x"], "unknown switch"))
    for argv, message in cases:
        code, out, err = run(*argv)
        assert code == 2, (argv, out, err)
        assert len(err.strip().splitlines()) == 1 and message in err, (argv, err)


def test_closed_pipe_is_not_a_traceback() -> None:
    # mmrace list | head -1: the reader leaves early.
    proc = subprocess.Popen([sys.executable, "-m", "mmrace", "list"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err, err

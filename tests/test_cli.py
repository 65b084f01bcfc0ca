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
    }
    assert data["executions"] >= 1


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
        ["doc", "-o", "/nonexistent-dir/x.md"],
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

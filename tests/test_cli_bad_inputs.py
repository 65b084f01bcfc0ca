"""Every bad input we can think of, through the real entry point: exit 2,
exactly one line on stderr ("mmrace: error: ..."), no traceback, no hang
(issue 12: "151 bad inputs tried"). In-process ``main(argv)`` for argument
handling; subprocesses where the exit status, the output encoding or the
interpreter's own behaviour is the point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmrace.cli import main
from mmrace.engine.token import encode

ROOT = Path(__file__).resolve().parents[1]
EX = str(ROOT / "examples" / "lost_update.py")

# Files the table refers to as {name}; written once per module.
FILES = {
    "syntax": "def program(:\n",
    "raises": "raise RuntimeError('broken at import')\n",
    "exit_at_import": "import sys\nsys.exit(4)\n",
    "notcallable": "X = 5\n",
    "kwonly": "def scen(*, kernel):\n    pass\n\ndef mixed(a, *, b):\n    pass\n",
    "twoargs": "def f(a, b):\n    pass\n",
    "spawn_at_import": "from mmrace.engine import spawn\nspawn(lambda: None)\n",
    "scenario": (
        "from mmrace.scenarios import scenario\n"
        "def pinned(kernel):\n    return None\n"
        "meta = scenario(name='pinned', summary='s', policies=(('cow-reuse', 'page_count'),),\n"
        "                expect={'current': 'clean', 'base': 'clean',\n"
        "                        'cow-reuse=page_count': 'clean'})(pinned)\n"
    ),
    "bad_meta": ("from mmrace.scenarios import scenario\n"
                 "x = scenario(name='x', summary='s', fixes=('nope',), expect={})"
                 "(lambda kernel: None)\n"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("bad")
    out = {"dir": str(d), "ex": EX}
    for name, text in FILES.items():
        p = d / f"{name}.py"
        p.write_text(text)
        out[name] = str(p)
    (d / "nul.py").write_bytes(b"x = 1\x00\n")
    out["nul"] = str(d / "nul.py")
    (d / "binary.py").write_bytes(bytes(range(256)) * 4)
    out["binary"] = str(d / "binary.py")
    (d / "plain.txt").write_text("not a directory\n")
    out["file"] = str(d / "plain.txt")
    return out


def tok(context: str, decisions: tuple[int, ...] = ()) -> str:
    return encode(list(decisions), context)


LONG = "x" * 300
DIGITS = "9" * 5000
GOOD = "mmr1-33fqaaabae"  # lost_update.py:program's violation

BAD: list[tuple[str, list[str], str]] = [
    # (id, argv with {file} placeholders, a word the error line must contain)
    ("bare", [], "a command is required"),
    ("unknown-command", ["frobnicate"], "invalid choice"),
    ("unknown-top-option", ["--bogus"], "unrecognized"),
    # explore: FILE.py:FUNC
    ("explore-no-program", ["explore"], "required"),
    ("explore-missing-file", ["explore", "missing.py:program"], "no such file"),
    ("explore-no-func", ["explore", "{ex}:nosuch"], "no function"),
    ("explore-no-colon", ["explore", "{ex}"], "FILE.py:FUNC"),
    ("explore-empty-path", ["explore", ":program"], "FILE.py:FUNC"),
    ("explore-empty-func", ["explore", "{ex}:"], "FILE.py:FUNC"),
    ("explore-300-char-path", ["explore", LONG + ".py:program"], "File name too long"),
    ("explore-300-char-dir", ["explore", "/tmp/" + LONG + "/x.py:program"], "too long"),
    ("explore-directory", ["explore", "{dir}:program"], "no such file"),
    ("explore-syntax-error", ["explore", "{syntax}:program"], "SyntaxError"),
    ("explore-nul-bytes", ["explore", "{nul}:program"], "cannot load"),
    ("explore-binary-file", ["explore", "{binary}:program"], "cannot load"),
    ("explore-raises-at-import", ["explore", "{raises}:program"], "RuntimeError"),
    ("explore-sys-exit-at-import", ["explore", "{exit_at_import}:program"], "SystemExit"),
    ("explore-spawn-at-import", ["explore", "{spawn_at_import}:program"], "cannot load"),
    ("explore-not-callable", ["explore", "{notcallable}:X"], "not callable"),
    ("explore-keyword-only", ["explore", "{kwonly}:scen"], "keyword-only"),
    ("explore-keyword-only-mixed", ["explore", "{kwonly}:mixed"], "keyword-only"),
    ("explore-two-args", ["explore", "{twoargs}:f"], "takes no argument"),
    ("explore-bad-metadata", ["explore", "{bad_meta}:x"], "unknown switch"),
    ("explore-newline-path", ["explore", "a\nb.py:f"], "no such file"),
    ("explore-surrogate-path", ["explore", "\udcff.py:f"], "no such file"),
    ("explore-huge-arg", ["explore", "y" * 100_000 + ":f"], "mmrace: error"),
    ("explore-extra-arg", ["explore", "{ex}:program", "extra"], "unrecognized"),
    ("explore-unknown-option", ["explore", "{ex}:program", "--bogus-option"], "unrecognized"),
    # switches
    ("program-with-kernel", ["explore", "{ex}:program", "--kernel", "5.10"], "no Kernel"),
    ("program-with-without", ["explore", "{ex}:program", "--without", "x"], "no Kernel"),
    ("program-with-with", ["explore", "{ex}:program", "--with", "x"], "no Kernel"),
    ("scenario-bad-release", ["explore", "{scenario}:meta", "--kernel", "banana"],
     "not a kernel release"),
    ("scenario-release-4-parts", ["explore", "{scenario}:meta", "--kernel", "5.10.1.2"],
     "not a kernel release"),
    ("scenario-release-digits", ["explore", "{scenario}:meta", "--kernel", DIGITS],
     "not a kernel release"),
    ("scenario-empty-release", ["explore", "{scenario}:meta", "--kernel", ""],
     "not a kernel release"),
    ("scenario-unknown-without", ["explore", "{scenario}:meta", "--without", "no-such"],
     "unknown switch"),
    ("scenario-unexercised-with", ["explore", "{scenario}:meta", "--with",
                                   "uffd-wp-resolve-skip"], "does not exercise"),
    ("function-unknown-with", ["explore", "{scenario}:pinned", "--with", "no-such"],
     "unknown switch"),
    ("function-with-and-without", ["explore", "{scenario}:pinned", "--with",
                                   "uffd-wp-flush-pending", "--without",
                                   "uffd-wp-flush-pending"], "both"),
    # explore options
    ("strategy-bogus", ["explore", "{ex}:program", "--strategy", "bogus"], "invalid choice"),
    ("strategy-empty", ["explore", "{ex}:program", "--strategy", ""], "invalid choice"),
    ("executions-negative", ["explore", "{ex}:program", "--executions", "-3"], "> 0"),
    ("executions-zero", ["explore", "{ex}:program", "--executions", "0"], "> 0"),
    ("executions-word", ["explore", "{ex}:program", "--executions", "abc"], "integer"),
    ("executions-float", ["explore", "{ex}:program", "--executions", "1.5"], "integer"),
    ("executions-exp", ["explore", "{ex}:program", "--executions", "1e3"], "integer"),
    ("executions-empty", ["explore", "{ex}:program", "--executions", ""], "integer"),
    ("executions-5000-digits", ["explore", "{ex}:program", "--executions", DIGITS], "digits"),
    ("executions-missing-value", ["explore", "{ex}:program", "--executions"], "expected"),
    ("preemptions-negative", ["explore", "{ex}:program", "--preemptions", "-1"], ">= 0"),
    ("preemptions-word", ["explore", "{ex}:program", "--preemptions", "k"], "integer"),
    ("preemptions-digits", ["explore", "{ex}:program", "--preemptions", DIGITS], "digits"),
    ("depth-zero", ["explore", "{ex}:program", "--strategy", "pct", "--depth", "0"],
     "between 1 and"),
    ("depth-negative", ["explore", "{ex}:program", "--depth", "-1"], "between 1 and"),
    ("depth-10-400", ["explore", "{ex}:program", "--strategy", "pct", "--depth",
                      str(10**400)], "digits"),
    ("depth-10-50", ["explore", "{ex}:program", "--strategy", "pct", "--depth",
                     str(10**50)], "between 1 and"),
    ("depth-word", ["explore", "{ex}:program", "--depth", "deep"], "integer"),
    ("seed-negative", ["explore", "{ex}:program", "--seed", "-1"], ">= 0"),
    ("seed-word", ["explore", "{ex}:program", "--seed", "s"], "integer"),
    ("seconds-nan", ["explore", "{ex}:program", "--strategy", "random", "--seconds", "nan"],
     "finite"),
    ("seconds-NaN", ["explore", "{ex}:program", "--seconds", "NaN"], "finite"),
    ("seconds-inf", ["explore", "{ex}:program", "--strategy", "random", "--seconds", "inf"],
     "finite"),
    ("seconds-minus-inf", ["explore", "{ex}:program", "--seconds=-inf"], "finite"),
    ("seconds-1e400", ["explore", "{ex}:program", "--seconds", "1e400"], "finite"),
    ("seconds-zero", ["explore", "{ex}:program", "--seconds", "0"], "> 0"),
    ("seconds-negative", ["explore", "{ex}:program", "--seconds", "-1"], "> 0"),
    ("seconds-word", ["explore", "{ex}:program", "--seconds", "soon"], "not a number"),
    ("seconds-too-small", ["explore", "{ex}:program", "--strategy", "random", "--seconds",
                           "1e-12"], "no execution ran"),
    ("max-steps-zero", ["explore", "{ex}:program", "--max-steps", "0"], "> 0"),
    ("max-steps-negative", ["explore", "{ex}:program", "--max-steps", "-5"], "> 0"),
    ("max-steps-word", ["explore", "{ex}:program", "--max-steps", "many"], "integer"),
    # explore --token
    ("token-format-9", ["explore", "{ex}:program", "--token", "mmr9-abc"], "format 9"),
    ("token-5000-digit-format", ["explore", "{ex}:program", "--token",
                                 "mmr" + DIGITS + "-abc"], "5000 digits"),
    ("token-checksum", ["explore", "{ex}:program", "--token", "mmr1-aaaaaaaa"], "corrupted"),
    ("token-too-short", ["explore", "{ex}:program", "--token", "mmr1-aa"], "corrupted"),
    ("token-garbage", ["explore", "{ex}:program", "--token", "garbage"], "not a replay token"),
    ("token-empty", ["explore", "{ex}:program", "--token", ""], "not a replay token"),
    ("token-uppercase", ["explore", "{ex}:program", "--token", GOOD.upper()],
     "not a replay token"),
    ("token-bad-chars", ["explore", "{ex}:program", "--token", "mmr1-!!!!"],
     "not a replay token"),
    ("token-100k", ["explore", "{ex}:program", "--token", "mmr1-" + "a" * 100_000],
     "corrupted"),
    ("token-other-program", ["explore", "{ex}:fixed", "--token", GOOD], "does not match"),
    ("token-too-long-for-program", ["explore", "{ex}:program", "--token",
                                    tok("", (0,) * 50)], "does not match"),
    ("token-option-out-of-range", ["explore", "{ex}:program", "--token", tok("", (7,))],
     "does not match"),
    ("replay-strategy-no-token", ["explore", "{ex}:program", "--strategy", "replay"],
     "needs --token"),
    ("token-with-dpor", ["explore", "{ex}:program", "--strategy", "dpor", "--token", GOOD],
     "goes with --strategy replay"),
    # check
    ("check-unknown-scenario", ["check", "no-such-scenario"], "unknown scenario"),
    ("check-empty-name", ["check", ""], "unknown scenario"),
    ("check-newline-name", ["check", "a\nb"], "unknown scenario"),
    ("check-unknown-variant", ["check", "wp-pinned-page-cow", "--variant", "nope"],
     "no selected scenario"),
    ("check-bad-kernel", ["check", "--kernel", "banana"], "not a kernel release"),
    ("check-empty-kernel", ["check", "--kernel", ""], "not a kernel release"),
    ("check-kernel-and-variant", ["check", "--kernel", "5.10", "--variant", "base"],
     "does not go with"),
    ("check-jobs-zero", ["check", "--jobs", "0"], "> 0"),
    ("check-jobs-negative", ["check", "--jobs", "-2"], "> 0"),
    ("check-jobs-word", ["check", "--jobs", "x"], "integer"),
    ("check-jobs-digits", ["check", "--jobs", DIGITS], "digits"),
    ("check-html-under-a-file", ["check", "wp-pinned-page-cow", "--html", "{file}/sub"],
     "cannot create"),
    ("check-html-is-a-file", ["check", "wp-pinned-page-cow", "--html", "{file}"],
     "cannot create"),
    ("check-html-in-proc", ["check", "wp-pinned-page-cow", "--html", "/proc/mmrace-nope"],
     "cannot create"),
    ("check-unknown-option", ["check", "--bogus"], "unrecognized"),
    # list, fixes, rules, doc
    ("list-extra", ["list", "extra"], "unrecognized"),
    ("list-bad-option", ["list", "--bogus"], "unrecognized"),
    ("fixes-extra", ["fixes", "x"], "unrecognized"),
    ("rules-unknown-field", ["rules", "no_such_field"], "no rule for field"),
    ("rules-two-fields", ["rules", "vm_start", "vm_end"], "unrecognized"),
    ("rules-nul-field", ["rules", "\x00"], "no rule for field"),
    ("doc-bad-dir", ["doc", "-o", "/nonexistent-dir/x.md"], "cannot write"),
    ("doc-to-directory", ["doc", "-o", "{dir}"], "cannot write"),
    ("doc-empty-name", ["doc", "-o", ""], "cannot write"),
    ("doc-long-name", ["doc", "-o", "/tmp/" + LONG], "cannot write"),
    ("doc-missing-value", ["doc", "-o"], "expected"),
    # replay
    ("replay-no-token", ["replay"], "required"),
    ("replay-short", ["replay", "mmr1-aaaa"], "token"),
    ("replay-garbage", ["replay", "garbage"], "not a replay token"),
    ("replay-empty", ["replay", ""], "not a replay token"),
    ("replay-newline", ["replay", "mmr1-\naa"], "not a replay token"),
    ("replay-5000-digit-format", ["replay", "mmr" + DIGITS + "-abc"], "5000 digits"),
    ("replay-plain-program-token", ["replay", GOOD], "does not name a scenario"),
    ("replay-unknown-scenario", ["replay", tok("no-such/base")], "unknown scenario"),
    ("replay-unknown-variant", ["replay", tok("wp-pinned-page-cow/nope")], "no variant"),
    ("replay-empty-variant", ["replay", tok("wp-pinned-page-cow/")], "does not name"),
    ("replay-malformed-policy", ["replay", tok("wp-pinned-page-cow/custom;policies=cow-reuse")],
     "malformed policy"),
    ("replay-malformed-policy-empty", ["replay",
                                       tok("wp-pinned-page-cow/custom;policies=:x")],
     "malformed policy"),
    ("replay-unknown-policy", ["replay", tok("wp-pinned-page-cow/custom;policies=nope:x")],
     "unknown policy"),
    ("replay-unknown-policy-value", ["replay",
                                     tok("wp-pinned-page-cow/custom;policies=cow-reuse:x")],
     "has no value"),
    ("replay-unknown-release", ["replay", tok("wp-pinned-page-cow/custom;release=banana")],
     "not a kernel release"),
    ("replay-digit-release", ["replay", tok("wp-pinned-page-cow/custom;release=" + DIGITS)],
     "not a kernel release"),
    ("replay-unknown-with", ["replay", tok("wp-pinned-page-cow/custom;with=nope")],
     "unknown switch"),
    ("replay-unknown-without", ["replay", tok("wp-pinned-page-cow/custom;without=nope")],
     "unknown switch"),
    ("replay-contradiction", ["replay", tok("wp-pinned-page-cow/custom;with=soft-dirty-tlb-"
                                            "flush;without=soft-dirty-tlb-flush")], "both"),
    ("replay-unknown-field", ["replay", tok("wp-pinned-page-cow/custom;color=red")],
     "malformed"),
    ("replay-field-no-equals", ["replay", tok("wp-pinned-page-cow/custom;release")],
     "malformed"),
    ("replay-decisions-left-over", ["replay", tok("wp-pinned-page-cow/current", (0,) * 1000)],
     "does not match"),
    ("replay-option-out-of-range", ["replay", tok("wp-pinned-page-cow/base", (9,))],
     "does not match"),
    ("replay-bad-format", ["replay", GOOD, "--format", "bogus"], "invalid choice"),
    ("replay-json-and-html", ["replay", tok("wp-pinned-page-cow/base"), "--json", "--format",
                              "html"], "two formats"),
    ("replay-output-bad-dir", ["replay", "{pinned_token}", "-o", "/nonexistent/x.txt"],
     "cannot write"),
    ("replay-output-directory", ["replay", "{pinned_token}", "--format", "perfetto", "-o",
                                 "{dir}"], "cannot write"),
]


@pytest.fixture(scope="module")
def pinned_token() -> str:
    from mmrace.scenarios import get
    from mmrace.scenarios.run import run_variant

    sc = get("wp-pinned-page-cow")
    run = run_variant(sc, sc.variant("base"))
    assert run.result.token
    return run.result.token


def test_the_table_is_large() -> None:
    assert len(BAD) >= 100
    assert len({name for name, _, _ in BAD}) == len(BAD)


@pytest.mark.parametrize("argv, word", [pytest.param(a, w, id=n) for n, a, w in BAD])
def test_bad_input(argv: list[str], word: str, files: dict[str, str], pinned_token: str,
                   capsys: pytest.CaptureFixture[str]) -> None:
    subst = {**files, "pinned_token": pinned_token}
    real = [a.format(**subst) if "{" in a and "}" in a else a for a in argv]
    code = main(real)
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mmrace: error: "), err
    assert len(lines[0]) <= 420, len(lines[0])
    assert word in lines[0], lines[0]


# --- through a real process: exit statuses, encodings, the interpreter ------------------------


def run(*argv: str, env: dict[str, str] | None = None, **kw: object) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "mmrace", *argv], capture_output=True,
                          text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **(env or {})}, **kw)  # type: ignore[call-overload]
    return proc.returncode, proc.stdout, proc.stderr


def test_bare_mmrace_is_usage_on_stderr_exit_2() -> None:
    code, out, err = run()
    assert (code, out) == (2, "")
    assert err.startswith("mmrace: error: a command is required (usage: mmrace")
    assert len(err.splitlines()) == 1


def test_stdout_that_cannot_encode_the_ellipsis(pinned_token: str) -> None:
    # The trace clips long cells with "…": an ASCII-only stdout gets "...".
    for enc in ("ascii", "latin-1"):
        code, out, err = run("replay", pinned_token, env={"PYTHONIOENCODING": enc})
        assert code == 1 and "Traceback" not in err, err
        assert "WRONG-DATA" in out and "..." in out and "\u2026" not in out
    code, out, err = run("replay", pinned_token, env={"PYTHONIOENCODING": "utf-8"})
    assert code == 1 and "\u2026" in out


def test_a_thread_calling_sys_exit_is_a_crash_not_an_exit_status(tmp_path: Path) -> None:
    prog = tmp_path / "exits.py"
    prog.write_text("import sys\nfrom mmrace.engine import Var, spawn\n\n"
                    "def program():\n    v = Var(0, name='v')\n"
                    "    def body():\n        v.store(1)\n        sys.exit(3)\n"
                    "    spawn(body, name='T')\n")
    code, out, err = run("explore", f"{prog}:program")
    assert code == 1, (out, err)
    assert "CRASH (in T): SystemExit: 3" in out


def test_executions_zero_is_refused_even_on_a_buggy_program() -> None:
    code, out, err = run("explore", f"{EX}:program", "--executions", "0")
    assert (code, out) == (2, "") and "must be > 0" in err


def test_output_to_a_full_device() -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "mmrace", "rules"], stdout=full,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.stderr.splitlines() == [
        "mmrace: error: cannot write the output: No space left on device"]

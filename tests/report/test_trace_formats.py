"""Traces you can look at (issue 12): Perfetto/Chrome trace-event JSON and a
self-contained HTML page, from `mmrace replay TOKEN --format ...` and
`mmrace check --html DIR`. The HTML is loaded in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mmrace.cli import main
from mmrace.report.explain import short_name
from mmrace.scenarios import get
from mmrace.scenarios.run import replay_token, run_variant

SCENARIO, VARIANT = "softdirty-clear-refs-cow", "base"  # a lost write in ~34 executions


@pytest.fixture(scope="module")
def token() -> str:
    sc = get(SCENARIO)
    run = run_variant(sc, sc.variant(VARIANT))
    assert run.outcome == "lost-write" and run.result.token
    return run.result.token


def _replay_to(tmp_path: Path, token: str, fmt: str, *extra: str) -> Path:
    out = tmp_path / f"trace.{'html' if fmt == 'html' else 'json'}"
    assert main(["replay", token, "--format", fmt, "-o", str(out), *extra]) == 1
    return out


# --- Perfetto -----------------------------------------------------------------------------


def check_trace_events(data: dict[str, Any]) -> None:
    """The trace-event format: every event has ph, ts, pid, tid; B/E pairs
    balance and nest per thread with non-decreasing timestamps; every flow
    start has its finish."""
    events = data["traceEvents"]
    assert isinstance(events, list) and events
    stacks: dict[tuple[int, int], list[str]] = {}
    last_ts: dict[tuple[int, int], float] = {}
    flows: dict[int, list[str]] = {}
    for e in events:
        for key in ("ph", "ts", "pid", "tid"):
            assert key in e, f"{key} missing in {e}"
        assert isinstance(e["ts"], int | float) and e["ts"] >= 0
        track = (e["pid"], e["tid"])
        if e["ph"] in "BE":
            assert e["ts"] >= last_ts.get(track, 0), f"time goes back on {track}: {e}"
            last_ts[track] = e["ts"]
        if e["ph"] == "B":
            stacks.setdefault(track, []).append(e["name"])
        elif e["ph"] == "E":
            open_ = stacks.get(track)
            assert open_, f"E without B: {e}"
            assert open_.pop() == e["name"], f"E closes another slice: {e}"
        elif e["ph"] in "sf":
            flows.setdefault(e["id"], []).append(e["ph"])
        else:
            assert e["ph"] in ("i", "M"), e
    assert all(not s for s in stacks.values()), f"unclosed slices: {stacks}"
    assert all(sorted(v) == ["f", "s"] for v in flows.values()), flows


def test_perfetto_json_is_valid_trace_event_format(tmp_path: Path, token: str) -> None:
    data = json.loads(_replay_to(tmp_path, token, "perfetto").read_text())
    check_trace_events(data)
    events = data["traceEvents"]
    _sc, _variant, result = replay_token(token, get)
    v = result.violation
    assert v is not None
    names = {e["tid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "thread_name"}
    assert sorted(names.values()) == sorted(v.threads)  # one track per CPU
    slices = {e["name"] for e in events if e["ph"] == "B"}
    assert {"clear_refs_write", "do_user_addr_fault", "wp_page_copy"} <= slices
    assert sum(1 for e in events if e["ph"] == "s") >= 1  # racing pairs as flows
    marks = [e for e in events if e.get("cat") == "violation"]
    assert len(marks) == 1 and marks[0]["name"].startswith("LOST-WRITE")
    assert marks[0]["args"]["token"] == token
    ops = [e for e in events if e["ph"] == "i" and e.get("cat") == "op"]
    every = json.loads(_replay_to(tmp_path, token, "perfetto", "--all-ops").read_text())
    check_trace_events(every)
    all_ops = [e for e in every["traceEvents"] if e["ph"] == "i" and e.get("cat") == "op"]
    assert len(ops) < len(all_ops) == len(v.trace)


def test_the_format_checker_can_fail() -> None:
    good = {"ph": "B", "name": "f", "ts": 1, "pid": 1, "tid": 0}
    for bad in ([good],  # unclosed
                [{**good, "ph": "E"}],  # E without B
                [{"ph": "i", "ts": 1, "pid": 1}],  # no tid
                [{"ph": "s", "id": 1, "ts": 1, "pid": 1, "tid": 0}]):  # flow without end
        with pytest.raises(AssertionError):
            check_trace_events({"traceEvents": bad})


# --- HTML in a headless browser --------------------------------------------------------------

BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--enable-logging=stderr", "--v=0"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("MMRACE_REQUIRE_BROWSER"):
        pytest.fail("MMRACE_REQUIRE_BROWSER is set but no chromium is installed")
    pytest.skip("no chromium (install it, or set MMRACE_REQUIRE_BROWSER to require it)")


def load_in_browser(page: Path, tmp_path: Path, fragment: str = "") -> tuple[str, list[str]]:
    """(the DOM after the page's scripts ran, the console messages)."""
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"
    proc = subprocess.run(
        [_chromium(), *BROWSER_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
         page.resolve().as_uri() + fragment],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


def test_console_errors_are_detected(tmp_path: Path) -> None:
    # The check below must be able to fail: a page with a script error.
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>nope();</script></body></html>")
    _dom, console = load_in_browser(bad, tmp_path)
    assert any("Uncaught ReferenceError" in line for line in console), console


def _rows(dom: str) -> list[str]:
    body = dom.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr [^>]*>", body)


def test_html_report_in_a_browser(tmp_path: Path, token: str) -> None:
    page = _replay_to(tmp_path, token, "html")
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing from the network
    _sc, _variant, result = replay_token(token, get)
    v = result.violation
    assert v is not None
    dom, console = load_in_browser(page, tmp_path)
    assert console == [], console
    assert 'data-ready="1"' in dom  # the script ran to its end
    assert dom.count('<th class="cpu">') == len(v.threads)  # one column per CPU
    assert "LOST-WRITE" in dom and token in dom
    section = dom.split('id="violation"', 1)[1].split("</section>", 1)[0]
    assert "hidden" not in section and v.title.split(":")[0] in section
    rows = _rows(dom)
    assert len(rows) == len(v.trace)
    shown = [r for r in rows if "hidden" not in r]
    assert 0 < len(shown) < len(rows)  # only the operations that explain it, by default
    assert f"{len(shown)} of {len(rows)} operations shown" in dom
    assert "race" in dom  # racing operations are highlighted


def test_html_report_filters_by_object(tmp_path: Path, token: str) -> None:
    page = _replay_to(tmp_path, token, "html")
    _sc, _variant, result = replay_token(token, get)
    v = result.violation
    assert v is not None
    pte = next(o for ev in v.trace for o, _ in ev.accesses() if short_name(o.name) == "pte[511]")
    touching = sum(1 for ev in v.trace if any(o is pte for o, _ in ev.accesses()))
    dom, console = load_in_browser(page, tmp_path, "#obj=pte[511]")
    assert console == [], console
    shown = [r for r in _rows(dom) if "hidden" not in r]
    assert len(shown) == touching
    assert all(str(pte.serial) in r.split('data-objs="')[1].split('"')[0].split() for r in shown)


def test_check_html_writes_a_page_per_violating_variant_and_an_index(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    code = main(["check", "wp-pinned-page-cow", "--html", str(out), "--json", "-q"])
    assert code == 0
    pages = sorted(p.name for p in out.iterdir())
    assert "index.html" in pages
    violating = [p for p in pages if p != "index.html"]
    assert violating == ["wp-pinned-page-cow--base.html",
                         "wp-pinned-page-cow--cow-reuse=page_count.html"]
    index = (out / "index.html").read_text()
    for name in violating:
        assert f'href="{name}"' in index
    dom, console = load_in_browser(out / violating[0], tmp_path)
    assert console == [] and "WRONG-DATA" in dom and 'data-ready="1"' in dom
    idom, iconsole = load_in_browser(out / "index.html", tmp_path)
    assert iconsole == [] and idom.count("<tr>") == 1 + 5  # header + every variant

"""A violating execution as one self-contained HTML page (no network, no
external file: the styles and the script are inline), and an index page
for ``mmrace check --html DIR``.

The page shows the violation and its replay token, then the execution as
one column per CPU (thread), one visible operation per row, each cell the
kernel function and the operation (the whole kernel stack in its tooltip).
Operations of racing pairs (:mod:`mmrace.report.races`) are highlighted and
name their partner; the violating operation is marked. Two controls filter
the rows: an object (every operation touching it) and "only the operations
that explain the violation" (the text trace's selection, on by default).
The URL fragment presets them: ``report.html#obj=pte[511]`` and ``#all``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from mmrace.engine import Event, Result, kind_name
from mmrace.report.explain import relevant_events, short_name
from mmrace.report.races import racing_pairs

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}
.violation{border:2px solid #b00;background:#fff3f3;padding:.6em 1em;margin:1em 0}
.violation h2{color:#b00;font-size:1.1em;margin:.2em 0}
.violation pre{white-space:pre-wrap;margin:.4em 0}
code{word-break:break-all}
.controls{margin:.8em 0;display:flex;gap:1.5em;flex-wrap:wrap;align-items:center}
table{border-collapse:collapse;font:12px/1.35 ui-monospace,monospace}
th,td{border:1px solid #ddd;padding:2px 6px;vertical-align:top;text-align:left}
th{background:#f3f3f3;position:sticky;top:0}
td.step{color:#888;text-align:right}
td.op .fn{color:#555}
td.race{background:#fff2b3}
td.violating{background:#ffc9c9;font-weight:bold}
tr.gap td{border-top:3px double #bbb}
.legend span{padding:0 .4em;margin-right:.6em}
"""

_SCRIPT = """
(function () {
  var select = document.getElementById("obj");
  var only = document.getElementById("relevant");
  var rows = Array.prototype.slice.call(document.querySelectorAll("#trace tbody tr"));
  var count = document.getElementById("count");
  function apply() {
    var obj = select.value, shown = 0;
    rows.forEach(function (row) {
      var objs = row.getAttribute("data-objs").split(" ");
      var show = (!obj || objs.indexOf(obj) >= 0) &&
                 (!only.checked || row.getAttribute("data-rel") === "1");
      row.hidden = !show;
      if (show) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + " operations shown";
  }
  var hash = decodeURIComponent(window.location.hash || "");
  var m = /[#&]obj=([^&]*)/.exec(hash);
  if (m) {
    Array.prototype.forEach.call(select.options, function (opt) {
      if (opt.getAttribute("data-name") === m[1] || opt.textContent === m[1]) {
        select.value = opt.value;
        only.checked = false;
      }
    });
  }
  if (/[#&]all(&|$)/.test(hash)) { only.checked = false; }
  select.addEventListener("change", apply);
  only.addEventListener("change", apply);
  apply();
  document.body.setAttribute("data-ready", "1");
})();
"""


def _natural(name: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _op_text(ev: Event) -> str:
    text = f"{ev.label or kind_name(ev.kind)} {short_name(ev.obj.name)}"
    return text if ev.detail is None else f"{text} = {ev.detail}"


def render_html(result: Result, *, title: str) -> str:
    """The report page of *result* (its violating execution)."""
    v = result.violation
    trace: list[Event] = list(v.trace) if v is not None else []
    threads = list(v.threads) if v is not None else []
    stacks: list[tuple[str, ...]] = list(result.extra.get("stacks") or [])
    if len(stacks) != len(trace):
        stacks = [(ev.where,) if ev.where else () for ev in trace]
    relevant = set(relevant_events(v)) if v is not None else set()
    races = racing_pairs(trace)
    partners: dict[int, list[str]] = {}
    for r in races:
        partners.setdefault(r.later, []).append(f"#{r.earlier} on {short_name(r.name)}")
        partners.setdefault(r.earlier, []).append(f"#{r.later} on {short_name(r.name)}")
    used = sorted({ev.tid for ev in trace} or set(range(len(threads))),
                  key=lambda t: _natural(threads[t]))
    violating = len(trace) - 1 if v is not None and v.thread is not None and trace else -1
    objects: dict[int, str] = {}
    for ev in trace:
        for obj, _ in ev.accesses():
            objects.setdefault(obj.serial, obj.name)

    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>mmrace: {escape(title)}</title>", f"<style>{_STYLE}</style></head><body>",
           f"<h1>{escape(title)}</h1>"]
    if v is not None:
        where = f" (in {v.thread})" if v.thread else ""
        out.append('<section class="violation" id="violation">')
        out.append(f"<h2>{escape(v.kind.upper() + where)}: {escape(v.title)}</h2>")
        if v.message and v.message != v.title:
            out.append(f"<pre>{escape(v.message)}</pre>")
        out.append(f'<p>replay token: <code id="token">{escape(result.token or "")}</code></p>')
        out.append("</section>")
    else:
        out.append('<p id="violation">no violation in this execution</p>')
    out.append('<div class="controls"><label>object <select id="obj">'
               '<option value="">all objects</option>')
    for serial, name in sorted(objects.items(), key=lambda kv: _natural(short_name(kv[1]))):
        out.append(f'<option value="{serial}" data-name="{escape(short_name(name))}">'
                   f"{escape(short_name(name))}</option>")
    out.append("</select></label>")
    checked = " checked" if relevant else ""
    out.append(f'<label><input type="checkbox" id="relevant"{checked}> only the operations '
               "that explain the violation</label>")
    out.append('<span id="count"></span>')
    out.append('<span class="legend"><span style="background:#fff2b3">racing</span>'
               '<span style="background:#ffc9c9">violating</span></span></div>')
    out.append('<table id="trace"><thead><tr><th>#</th>')
    for t in used:
        out.append(f'<th class="cpu">{escape(threads[t])}</th>')
    out.append("</tr></thead><tbody>")
    for i, ev in enumerate(trace):
        objs = " ".join(str(o.serial) for o, _ in ev.accesses())
        rel = "1" if i in relevant or not relevant else "0"
        out.append(f'<tr data-objs="{objs}" data-rel="{rel}"><td class="step">{i}</td>')
        for t in used:
            if t != ev.tid:
                out.append("<td></td>")
                continue
            classes = ["op"]
            tip = " \u2190 ".join(reversed(stacks[i])) or "user space"
            if i in partners:
                classes.append("race")
                tip += "\nraces with " + ", ".join(partners[i])
            if i == violating:
                classes.append("violating")
            fn = f'<span class="fn">{escape(ev.where)}:</span> ' if ev.where else ""
            out.append(f'<td class="{" ".join(classes)}" title="{escape(tip)}">'
                       f"{fn}{escape(_op_text(ev))}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    out.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(out)


@dataclass(frozen=True)
class IndexRow:
    """One variant of ``mmrace check --html``'s index."""

    scenario: str
    variant: str
    expected: str
    outcome: str
    ok: bool
    executions: int
    search: str
    seconds: float
    page: str | None  # the report page of a violating variant


def render_index(rows: Sequence[IndexRow]) -> str:
    """The index page: every variant, its verdict, a link to each report."""
    good = sum(1 for r in rows if r.ok)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>mmrace check</title>", f"<style>{_STYLE}</style></head><body>",
           "<h1>mmrace check</h1>", f"<p>{good} of {len(rows)} variants as expected</p>",
           '<table id="index"><thead><tr><th>scenario</th><th>variant</th><th>expected</th>'
           "<th>outcome</th><th>executions</th><th>search</th><th>seconds</th><th>report</th>"
           "</tr></thead><tbody>"]
    for r in rows:
        mark = "" if r.ok else ' class="violating"'
        link = f'<a href="{escape(r.page)}">trace</a>' if r.page else ""
        out.append(f"<tr><td>{escape(r.scenario)}</td><td>{escape(r.variant)}</td>"
                   f"<td>{escape(r.expected)}</td><td{mark}>{escape(r.outcome)}</td>"
                   f"<td>{r.executions:,}</td><td>{escape(r.search)}</td>"
                   f"<td>{r.seconds:.1f}</td><td>{link}</td></tr>")
    out.append("</tbody></table></body></html>")
    return "\n".join(out)


__all__ = ["IndexRow", "render_html", "render_index"]

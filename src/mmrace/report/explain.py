"""Traces that explain: the operations that matter to a violation, in one
column per CPU (thread), the way races are drawn on the mailing list.

Which operations matter (default; ``all_ops`` shows every one):

* those on the *objects involved*: the objects of the violating operation
  and of every operation the violation's message cites (``event N``: the
  oracles cite when the TLB entry was filled, when the page was copied, when
  the PTE changed), or, when nothing is cited (a final-check violation), the
  leaf PTEs, page contents and TLB entries of the trace;
* the locks around them: lock and unlock operations (``mmap_lock``, page
  table locks, other sleeping locks and spinlocks; not RCU) of a thread that
  also touches an involved object;
* the TLB-flush bookkeeping: ``tlb_flush_pending`` (a deferred flush starts
  and ends there), flushes and shootdown IPIs.

Every line is the kernel function (the event's ``where``) and the operation.
This module knows only engine events; the object-name patterns it matches
are those the mm model gives its objects.
"""

from __future__ import annotations

import re
from typing import Any

from mmrace.engine import Event, Result, SharedObject, Violation, kind_name

_CITED = re.compile(r"\bevent (\d+)")
_LOCK_LABELS = (
    "lock", "unlock", "down_read", "up_read", "down_write", "up_write", "downgrade",
)
_LOCK_TYPES = ("Spinlock", "RwSemaphore", "Mutex", "RawSpinlock")
_FALLBACK = re.compile(r"\.pte@.*\[\d+\]$|\.data$|\.tlb\[")
_FLUSH = re.compile(r"tlb_flush_pending(\.adds\(.*\))?$|\.ipi$")


def _objs(ev: Event) -> list[SharedObject]:
    return [o for o, _ in ev.accesses()]


def _is_lock(ev: Event) -> bool:
    if type(ev.obj).__name__ in _LOCK_TYPES:
        return True
    label = ev.label or ""
    return label.startswith(_LOCK_LABELS) and "rcu" not in label


def involved_objects(v: Violation) -> set[int]:
    """Serials of the objects the violation is about."""
    trace = v.trace
    cited = {int(m) for m in _CITED.findall(v.message)}
    if trace and v.thread is not None:
        cited.add(len(trace) - 1)
    out: set[int] = set()
    for i in sorted(cited):
        if 0 <= i < len(trace):
            out.update(o.serial for o in _objs(trace[i]))
    if not out:
        for ev in trace:
            out.update(o.serial for o in _objs(ev) if _FALLBACK.search(o.name))
    return out


def relevant_events(v: Violation) -> list[int]:
    """Indices of the events worth showing for *v* (every event when none
    touches an object the violation is about: a program of plain shared
    variables, say)."""
    trace = v.trace
    involved = involved_objects(v)
    keep = [False] * len(trace)
    threads: set[int] = set()
    for i, ev in enumerate(trace):
        if any(o.serial in involved for o in _objs(ev)):
            keep[i] = True
            threads.add(ev.tid)
    for i, ev in enumerate(trace):
        if keep[i]:
            continue
        flush = _FLUSH.search(ev.obj.name) or "flush" in (ev.label or "")
        if flush or (ev.tid in threads and _is_lock(ev)):
            keep[i] = True
    if not threads:
        return list(range(len(trace)))
    return [i for i, k in enumerate(keep) if k]


_SHORT = re.compile(r"\bmm\d+[.:]|@0x[0-9a-f]+(?=[.\[])")


def short_name(name: str) -> str:
    """``mm1.pte@0x7effffe00000[511]`` -> ``pte[511]``."""
    return _SHORT.sub("", name)


def describe(ev: Event) -> str:
    """``function: operation object [= value]`` (user accesses: ``operation``)."""
    text = ev.label or kind_name(ev.kind)
    text = f"{text} {short_name(ev.obj.name)}"
    if ev.detail is not None:
        text = f"{text} = {ev.detail}"
    return f"{ev.where}: {text}" if ev.where else text


def _natural(name: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def render_trace(v: Violation, *, all_ops: bool = False, width: int = 60) -> str:
    """Per-thread columns of the violation's trace (relevant events only,
    unless *all_ops*)."""
    trace = v.trace
    if not trace:
        return "(no trace recorded; replay the token to see it)"
    rows = list(range(len(trace))) if all_ops else relevant_events(v)
    used = sorted({trace[i].tid for i in rows}, key=lambda t: _natural(v.threads[t]))
    texts = {i: describe(trace[i]) for i in rows}
    col = {t: min(width, max([len(v.threads[t])] +
                             [len(texts[i]) for i in rows if trace[i].tid == t]))
           for t in used}
    step_w = len(str(len(trace)))
    pad = " " * (step_w + 2)
    lines = [(pad + "  ".join(v.threads[t].ljust(col[t]) for t in used)).rstrip(),
             pad + "  ".join("-" * col[t] for t in used)]
    prev = -1
    for i in rows:
        if not all_ops and i > prev + 1 and prev >= 0:
            lines.append(f"{'':>{step_w}}  ...")
        prev = i
        ev = trace[i]
        cells = []
        for t in used:
            if ev.tid == t:
                txt = texts[i]
                txt = txt if len(txt) <= col[t] else txt[: col[t] - 1] + "…"
                cells.append(txt.ljust(col[t]))
            else:
                cells.append(" " * col[t])
        lines.append(f"{i:>{step_w}}  " + "  ".join(cells).rstrip())
    hidden = len(trace) - len(rows)
    if hidden:
        lines.append(f"({hidden} of {len(trace)} operations not shown; --all-ops shows them)")
    return "\n".join(lines)


def render_explained(r: Result, *, all_ops: bool = False, header: str = "") -> str:
    """The trace, then the violation, then the replay token."""
    out = []
    if header:
        out.append(header)
    v = r.violation
    if v is not None:
        out.append(render_trace(v, all_ops=all_ops))
        out.append("")
        where = f" (in {v.thread})" if v.thread else ""
        out.append(f"{v.kind.upper()}{where}: {v.title}")
        if v.message and v.message != v.title:
            out.append(v.message)
        out.append("")
        out.append(f"replay token: {r.token}")
    return "\n".join(out)


def trace_json(v: Violation, *, all_ops: bool = False) -> list[dict[str, Any]]:
    """The shown events as JSON objects."""
    rows = list(range(len(v.trace))) if all_ops else relevant_events(v)
    out = []
    for i in rows:
        ev = v.trace[i]
        out.append({
            "step": i,
            "thread": v.threads[ev.tid],
            "where": ev.where,
            "op": ev.label or kind_name(ev.kind),
            "object": ev.obj.name,
            "value": None if ev.detail is None else str(ev.detail),
        })
    return out


__all__ = ["describe", "involved_objects", "relevant_events", "render_explained",
           "render_trace", "trace_json"]

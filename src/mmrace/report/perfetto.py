"""A violating execution as Chrome trace-event JSON, for Perfetto
(ui.perfetto.dev opens the file locally; nothing is uploaded) or
chrome://tracing.

The layout:

* one process (the execution), one track (thread) per CPU, named after it;
* event *i* of the trace sits at ``ts = 10 * i + 5`` microseconds: a
  **visible operation** is an instant event (``ph: "i"``) with its object,
  access kind, value and kernel function in ``args``;
* **kernel functions** are nested slices (``B``/``E``): a function is open
  from the first operation its thread performs inside it to that thread's
  next operation outside it (the stacks come from the replay, which records
  each event's whole ``where`` stack);
* each **racing pair** (:mod:`mmrace.report.races`) is a flow arrow
  (``s`` -> ``f``) from the earlier operation to the later one;
* the **violation** is a global instant event after the last operation,
  named after its kind, with the message and the replay token in ``args``.

By default only the operations that explain the violation are drawn (as in
the text trace); ``all_ops`` draws every one.
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import Event, Result, kind_name
from mmrace.report.explain import relevant_events, short_name
from mmrace.report.races import racing_pairs

PID = 1
STEP_US = 10


def _ts(i: int) -> int:
    return STEP_US * i + STEP_US // 2


def _op_name(ev: Event) -> str:
    text = f"{ev.label or kind_name(ev.kind)} {short_name(ev.obj.name)}"
    return text if ev.detail is None else f"{text} = {ev.detail}"


def perfetto_trace(result: Result, *, title: str = "", all_ops: bool = False) -> dict[str, Any]:
    """The trace-event JSON object (``{"traceEvents": [...], ...}``) of
    *result*'s violating execution (empty tracks if there is none)."""
    v = result.violation
    threads = list(v.threads) if v is not None else []
    trace: list[Event] = list(v.trace) if v is not None else []
    stacks: list[tuple[str, ...]] = list(result.extra.get("stacks") or [])
    if len(stacks) != len(trace):  # not a replay: only the innermost function is known
        stacks = [(ev.where,) if ev.where else () for ev in trace]
    shown = set(range(len(trace))) if all_ops or v is None else set(relevant_events(v))
    events: list[dict[str, Any]] = [
        {"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "ts": 0,
         "args": {"name": title or "mmrace execution"}},
    ]
    for tid, name in enumerate(threads):
        events.append({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "ts": 0,
                       "args": {"name": name}})
        events.append({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid,
                       "ts": 0, "args": {"sort_index": tid}})
    events += _slices(trace, stacks, len(threads))
    for i, ev in enumerate(trace):
        if i not in shown:
            continue
        events.append({
            "ph": "i", "s": "t", "name": _op_name(ev), "cat": "op", "pid": PID,
            "tid": ev.tid, "ts": _ts(i),
            "args": {"step": i, "object": ev.obj.name, "kind": kind_name(ev.kind),
                     "value": None if ev.detail is None else str(ev.detail),
                     "function": ev.where, "stack": list(stacks[i])},
        })
    for n, race in enumerate(racing_pairs(trace, shown)):
        a, b = trace[race.earlier], trace[race.later]
        name = f"race on {short_name(race.name)}"
        events.append({"ph": "s", "id": n + 1, "name": name, "cat": "race", "pid": PID,
                       "tid": a.tid, "ts": _ts(race.earlier)})
        events.append({"ph": "f", "bp": "e", "id": n + 1, "name": name, "cat": "race",
                       "pid": PID, "tid": b.tid, "ts": _ts(race.later)})
    if v is not None:
        tid = threads.index(v.thread) if v.thread in threads else 0
        events.append({
            "ph": "i", "s": "g", "name": f"{v.kind.upper()}: {v.title}", "cat": "violation",
            "pid": PID, "tid": tid, "ts": STEP_US * len(trace) + STEP_US,
            "args": {"kind": v.kind, "thread": v.thread, "message": v.message,
                     "token": result.token},
        })
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"title": title, "token": result.token,
                          "violation": v.title if v is not None else None}}


def _slices(trace: list[Event], stacks: list[tuple[str, ...]], nthreads: int
            ) -> list[dict[str, Any]]:
    """Balanced B/E events: per thread, a frame opens at the first event
    whose stack has it and closes at the thread's next event whose stack
    does not (or just after the thread's last event)."""
    out: list[dict[str, Any]] = []
    open_: dict[int, tuple[str, ...]] = {t: () for t in range(nthreads)}
    last: dict[int, int] = {}
    for i, ev in enumerate(trace):
        t = ev.tid
        cur = open_.get(t, ())
        new = stacks[i]
        keep = 0
        while keep < min(len(cur), len(new)) and cur[keep] == new[keep]:
            keep += 1
        ts = STEP_US * i
        for name in reversed(cur[keep:]):
            out.append({"ph": "E", "name": name, "cat": "kernel", "pid": PID, "tid": t,
                        "ts": ts})
        for name in new[keep:]:
            out.append({"ph": "B", "name": name, "cat": "kernel", "pid": PID, "tid": t,
                        "ts": ts})
        open_[t] = new
        last[t] = i
    for t, cur in open_.items():
        end = STEP_US * last.get(t, 0) + STEP_US - 1
        for name in reversed(cur):
            out.append({"ph": "E", "name": name, "cat": "kernel", "pid": PID, "tid": t,
                        "ts": end})
    return out


__all__ = ["perfetto_trace"]

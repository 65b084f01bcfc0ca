"""Per-thread column traces, the way races are drawn on the mailing list.

One column per thread (or CPU), time going down, one visible operation per
line, then the violation and the replay token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mmrace.engine import Event, Result, Violation

MAX_COL = 44
DEFAULT_LIMIT = 80


def describe_event(ev: Event) -> str:
    """``function: label object = value`` for one event."""
    text = ev.describe()
    if ev.where:
        text = f"{ev.where}: {text}"
    return text


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render_columns(
    events: Sequence[Event],
    threads: Sequence[str],
    *,
    keep: Callable[[Event], bool] | None = None,
    limit: int | None = DEFAULT_LIMIT,
) -> str:
    """Lay *events* out in one column per thread. *keep* filters the events
    worth showing; *limit* keeps only the last that many (None: all)."""
    rows = [(i, ev) for i, ev in enumerate(events) if keep is None or keep(ev)]
    omitted = 0
    if limit is not None and len(rows) > limit:
        omitted = len(rows) - limit
        rows = rows[-limit:]
    used = sorted({ev.tid for _, ev in rows}) or list(range(len(threads)))
    texts = {i: describe_event(ev) for i, ev in rows}
    width = {
        t: min(MAX_COL, max([len(threads[t])] + [len(texts[i]) for i, ev in rows if ev.tid == t]))
        for t in used
    }
    step_w = len(str(len(events)))
    lines = []
    header = " " * (step_w + 2) + "  ".join(threads[t].ljust(width[t]) for t in used)
    lines.append(header.rstrip())
    lines.append(" " * (step_w + 2) + "  ".join("-" * width[t] for t in used))
    if omitted:
        lines.append(f"{'':>{step_w}}  ... {omitted} earlier operations not shown")
    for i, ev in rows:
        cells = [
            _clip(texts[i], width[t]).ljust(width[t]) if ev.tid == t else " " * width[t]
            for t in used
        ]
        lines.append(f"{i:>{step_w}}  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def render_violation(v: Violation, *, all_ops: bool = False) -> str:
    body = render_columns(v.trace, v.threads, limit=None if all_ops else DEFAULT_LIMIT)
    where = f" (in {v.thread})" if v.thread else ""
    text = f"{body}\n\n{v.kind.upper()}{where}: {v.title}"
    if v.message and v.message != v.title:
        text += f"\n{v.message}"
    return text


def render_result(r: Result, *, all_ops: bool = False) -> str:
    lines = []
    if r.violation is not None:
        lines.append(render_violation(r.violation, all_ops=all_ops))
        lines.append("")
        if r.shrunk_from is not None:
            lines.append(
                f"(shrunk from {r.shrunk_from} to {r.violation.preemptions} preemptions)"
            )
        lines.append(f"replay token: {r.token}")
    summary = (
        f"{r.outcome}: {r.executions} executions"
        + (f" (+{r.blocked} cut by sleep sets)" if r.blocked else "")
        + _quick_pass_text(r)
        + f", {'complete' if r.complete else 'not complete'}, {r.seconds:.2f}s"
        + f", strategy {r.strategy}"
    )
    lines.append(summary)
    return "\n".join(lines)


def _quick_pass_text(r: Result) -> str:
    """How much of a bounded search was its quick pass."""
    qp = r.extra.get("quick_pass")
    if not qp:
        return ""
    if qp.get("found"):
        return ", found by the quick pass"
    return f", {qp['executions']} of them in the quick pass"

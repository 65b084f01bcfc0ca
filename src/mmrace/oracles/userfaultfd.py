"""The non-cooperative monitor's view of a userfaultfd (``uffd-view``).

A monitor that asked for events (fork, mremap, munmap, ``MADV_DONTNEED``)
keeps a model of the process's memory: which pages it filled, which the
process dropped, which moved. That model is only right if every fill or
move ioctl is ordered against every event the monitor reads: the ioctl took
effect entirely *before* the event was raised (the event's change applies
on top of it), or it *started after* the monitor read the event (it sees the
change). ``mmap_changing`` exists to make the kernel keep that promise: an
ioctl that would cross an event fails with ``-EAGAIN``.

The oracle follows what the model reports for a context whose monitor
called ``expect_consistent_view()`` (:mod:`mmrace.mm.fs_userfaultfd`):

* ``uffd-event-raise`` (ctx, ewq): the event's ``mmap_changing`` raise point
  (before 4.18, where there is no counter, the same place);
* ``uffd-event-read`` (ctx, ewq): ``read()`` returned it;
* ``uffd-ioctl-begin`` (ctx, op): the ioctl passed its ``mmap_changing``
  check (the last one: a retry begins again);
* ``uffd-ioctl-effect`` (ctx, op, addr): the ioctl changed the PTE of
  *addr* (installed a page, or moved one away or in).

A violation is an effect at an address inside an event's range, after the
event was raised, by an ioctl that began before the monitor read the event:
the ioctl took effect while the event was pending (not read), or after the
monitor read it though it started before -- either way no monitor can order
the two. The report names the event, the ioctl and both threads.
"""

from __future__ import annotations

from typing import Any

from mmrace.arch import add_hook
from mmrace.engine import ViolationError, current_execution, current_thread, execution_local
from mmrace.mm.userfaultfd_k import UFFD_EVENT_REMOVE, UserfaultfdCtx, UserfaultfdWaitQueue


class UffdViewOracle:
    """Per-execution record: the events raised on each context (by its
    name, unique in an execution), in raise order, each with the thread that raised it."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[UserfaultfdWaitQueue, str]]] = {}


def uffd_view_oracle() -> UffdViewOracle:
    o: UffdViewOracle = execution_local("oracles.uffd_view", UffdViewOracle)
    return o


def _now() -> int:
    return len(current_execution().events) - 1


def _who() -> str:
    th = current_thread()
    if th is None:
        return "set-up"
    where = f" in {th.where[-1]}" if th.where else ""
    return f"{th.name}{where}"


def _event_str(i: int) -> str:
    if i < 0:
        return "in set-up"
    return f"event {i}"


def _counter_op(ctx: UserfaultfdCtx, marker: int) -> str:
    """The ``mmap_changing`` access the thread of *marker* made just before
    it (the raise, or the ioctl's check), cited so the trace shows it."""
    events = current_execution().events
    if marker < 0:
        return ""
    tid = events[marker].tid
    for i in range(marker - 1, -1, -1):
        ev = events[i]
        if ev.tid != tid:
            continue
        if ev.obj is ctx.mmap_changing:
            return f" (mmap_changing: event {i}, {ev.label} {ev.detail})"
        if ev.obj is ctx.view:
            break
    return " (this kernel has no mmap_changing)"


def _off(ctx: UserfaultfdCtx) -> bool:
    """Whether the ``System`` of *ctx*'s mm switched the oracle off (its
    markers may still run: a test that dates events by them)."""
    return "uffd-view" in ctx.mm.oracles_off


def on_raise(ctx: UserfaultfdCtx, ewq: UserfaultfdWaitQueue) -> None:
    if _off(ctx):
        return
    ewq.raised_at = _now()
    uffd_view_oracle().events.setdefault(ctx.name, []).append((ewq, _who()))


def on_read(ctx: UserfaultfdCtx, ewq: UserfaultfdWaitQueue) -> None:
    ewq.read_at = _now()


def on_begin(ctx: UserfaultfdCtx, op: Any) -> None:
    op.began_at = _now()


def on_effect(ctx: UserfaultfdCtx, op: Any, addr: int) -> None:
    if _off(ctx):
        return
    now = _now()
    for ewq, raiser in uffd_view_oracle().events.get(ctx.name, ()):
        if not any(s <= addr < e for s, e in ewq.msg.ranges(ctx)):
            continue
        unread = ewq.read_at < 0
        if not unread and op.began_at > ewq.read_at:
            continue  # the monitor issued it after reading the event
        msg = ewq.msg
        lines = [
            f"{op.name} changed {addr:#x} at {_event_str(now)} ({_who()}), but "
            f"UFFD_EVENT_{msg.name} {_range_str(ewq, ctx)} had been raised at "
            f"{_event_str(ewq.raised_at)} (by {raiser}){_counter_op(ctx, ewq.raised_at)}",
            f"the ioctl passed its mmap_changing check at {_event_str(op.began_at)}"
            f"{_counter_op(ctx, op.began_at)}, "
            + ("before the event was raised" if op.began_at < ewq.raised_at
               else "after the event was raised"),
        ]
        if unread:
            lines.append("the monitor had not read the event yet: the ioctl took effect "
                         "while the event was pending")
        else:
            lines.append(f"the monitor read the event at {_event_str(ewq.read_at)}, after "
                         "the ioctl started and before it took effect")
            if msg.event == UFFD_EVENT_REMOVE:
                lines.append("the page can outlive the MADV_DONTNEED the monitor was "
                             "told about")
        lines.append("no order of the two fits what the monitor saw: the ioctl should "
                     "have completed before the event was raised or failed with EAGAIN")
        raise ViolationError(
            "uffd-view",
            f"uffd-view: {op.name} at {addr:#x} crossed UFFD_EVENT_{msg.name}",
            "\n".join(lines))


def _range_str(ewq: UserfaultfdWaitQueue, ctx: UserfaultfdCtx) -> str:
    return ", ".join(f"[{s:#x}, {e:#x})" for s, e in ewq.msg.ranges(ctx))


def install() -> None:
    """Subscribe the monitor-view oracle to the model's facts (idempotent)."""
    add_hook("uffd-event-raise", on_raise)
    add_hook("uffd-event-read", on_read)
    add_hook("uffd-ioctl-begin", on_begin)
    add_hook("uffd-ioctl-effect", on_effect)


__all__ = ["UffdViewOracle", "install", "uffd_view_oracle"]

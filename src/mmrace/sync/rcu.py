"""RCU: read-side critical sections, grace periods and callbacks.

Each task's read-side state is its own shared object (an :class:`RcuReader`),
so readers are independent of each other for DPOR. The outermost
``rcu_read_lock`` / ``rcu_read_unlock`` is one visible write of the task's
reader object; nested ones cost nothing. ``synchronize_rcu`` reads every
other task's reader object (one visible read each) and, for each reader
found inside a critical section, waits (a visible WAIT) until that reader
has left it -- the outermost unlock bumps the reader's generation. So it
waits for every reader that started before it, and for no other.

``call_rcu``/``kfree_rcu`` queue a callback on a per-execution callback
object; the first one lazily spawns an ``rcu_gp`` thread that takes the
queued batch, waits a grace period with ``synchronize_rcu`` and runs the
batch, until the queue is empty. In set-up code (no simulated thread runs)
a grace period is immediate: ``synchronize_rcu`` returns and ``call_rcu``
runs its callback at once.

Left out: tasks spawned by another thread after a grace period started are
not seen by it (they cannot be inside a read section that started before
it); expedited grace periods, SRCU, ``rcu_barrier``, and lockdep's RCU map
(a ``synchronize_rcu`` inside a read section is reported by the
sleeping-in-atomic check instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from mmrace.engine import (
    READ,
    RMW,
    WAIT,
    WRITE,
    SharedObject,
    SimThread,
    Var,
    current_execution,
    spawn,
    visible,
)
from mmrace.sync._task import TaskState, might_sleep, misuse, state_of, task
from mmrace.sync.slab import KObject, kfree

T = TypeVar("T")


class RcuReader(SharedObject):
    """One task's RCU read-side state."""

    __slots__ = ("inside", "gen")

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.inside = False
        self.gen = 0

    def wait_info(self, thread: SimThread) -> str:
        return "reader inside a read-side critical section" if self.inside else ""


class RcuCallbacks(SharedObject):
    """The per-execution queue of RCU callbacks."""

    __slots__ = ("pending", "gp_running")

    def __init__(self) -> None:
        super().__init__("rcu_callbacks")
        self.pending: list[tuple[Callable[[Any], None], Any]] = []
        self.gp_running = False


def _reader(ts: TaskState) -> RcuReader:
    r = ts.rcu_reader
    if r is None:
        r = ts.rcu_reader = RcuReader(f"rcu_reader({ts.name})")
    return r


def rcu_read_lock() -> None:
    """``rcu_read_lock()``: enter a read-side critical section (nests). The
    outermost one is one visible write of the task's reader object."""
    ts = task()
    depth = ts.rcu_depth
    ts.rcu_depth = depth + 1
    if depth == 0 and ts.thread is not None:
        r = ts.rcu_reader or _reader(ts)
        visible(r, WRITE, "rcu_read_lock")
        r.inside = True


def rcu_read_unlock() -> None:
    """``rcu_read_unlock()``: leave a read-side critical section; the
    outermost unlock is one visible write that ends the reader's section.
    Unbalanced unlock is a ``lock-misuse`` violation."""
    ts = task()
    depth = ts.rcu_depth
    if depth <= 0:
        raise misuse(ts, "rcu_read_unlock() without rcu_read_lock()")
    ts.rcu_depth = depth - 1
    if depth == 1 and ts.thread is not None:
        r = ts.rcu_reader or _reader(ts)
        visible(r, WRITE, "rcu_read_unlock")
        r.inside = False
        r.gen += 1


def rcu_read_lock_held() -> bool:
    """``rcu_read_lock_held()``: whether the current task is in a read-side
    critical section."""
    return task().rcu_depth > 0


def _grace_period(ts: TaskState) -> None:
    me = ts.thread
    if me is None:
        return
    sync = ts.sync
    for th in current_execution().threads:
        if th is me or th.finished or th.tid in sync.gp_tids:
            continue
        r = _reader(state_of(th))
        visible(r, READ, "synchronize_rcu")
        if r.inside:
            gen = r.gen

            def left(r: RcuReader = r, gen: int = gen) -> bool:
                return r.gen != gen

            visible(r, WAIT, "synchronize_rcu", left)


def synchronize_rcu() -> None:
    """``synchronize_rcu()``: wait until every reader that was inside a
    read-side critical section when it started has left it. Sleeps, so it is
    an ``invalid-context`` violation under a spinlock, with interrupts off
    or inside a read section."""
    ts = task()
    might_sleep(ts, "synchronize_rcu")
    _grace_period(ts)


def _rcu_gp(cbs: RcuCallbacks) -> None:
    ts = task()
    assert ts.thread is not None
    ts.sync.gp_tids.add(ts.thread.tid)
    while True:
        visible(cbs, RMW, "rcu_gp: start grace period")
        batch = cbs.pending
        cbs.pending = []
        if not batch:
            cbs.gp_running = False
            return
        _grace_period(ts)
        for fn, arg in batch:
            fn(arg)


def call_rcu(head: T, func: Callable[[T], None]) -> None:
    """``call_rcu(head, func)``: run ``func(head)`` after a grace period, in
    the ``rcu_gp`` thread. One visible RMW of the callback queue."""
    ts = task()
    if ts.thread is None:
        func(head)
        return
    sync = ts.sync
    cbs = sync.rcu_cbs
    if cbs is None:
        cbs = sync.rcu_cbs = RcuCallbacks()
    ev = visible(cbs, RMW, "call_rcu")
    cbs.pending.append((func, head))
    if ev is not None:
        ev.detail = getattr(func, "__name__", "callback")
    if not cbs.gp_running:
        cbs.gp_running = True
        spawn(_rcu_gp, cbs, name="rcu_gp")


def kfree_rcu(obj: KObject) -> None:
    """``kfree_rcu(obj, rcu)`` / ``kfree_rcu_mightsleep(obj)``: free *obj*
    after a grace period."""
    call_rcu(obj, kfree)


def rcu_dereference(p: Var[T]) -> T:
    """``rcu_dereference(p)``: one visible read of pointer *p*; outside a
    read-side critical section (and outside set-up) it is a ``lock-misuse``
    violation ("suspicious RCU usage")."""
    ts = task()
    if ts.rcu_depth == 0 and ts.thread is not None:
        raise misuse(
            ts,
            "suspicious rcu_dereference_check() usage",
            f"rcu_dereference({p.name}) outside rcu_read_lock()",
        )
    return p.load()


def rcu_dereference_protected(p: Var[T]) -> T:
    """``rcu_dereference_protected(p, c)``: one visible read; the caller
    holds the update-side lock (check it with a lockdep assertion)."""
    return p.load()


def rcu_assign_pointer(p: Var[T], v: T) -> None:
    """``rcu_assign_pointer(p, v)``: one visible write (publication)."""
    p.store(v)


def rcu_access_pointer(p: Var[T]) -> T:
    """``rcu_access_pointer(p)``: one visible read, no dereference allowed."""
    return p.load()

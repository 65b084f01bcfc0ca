"""RCU: read-side critical sections, grace periods and callbacks.

The model keeps exactly the guarantee RCU gives: a callback queued with
``call_rcu`` (and the return of ``synchronize_rcu``) comes after every
read-side critical section that was open when it was queued (when it was
called), and after nothing else.

Each task's read-side state is two shared objects of its own
(:class:`RcuReader`): its *entry* side, written by the outermost
``rcu_read_lock`` (it counts the task's read sections), and its *exit* side,
written by the outermost ``rcu_read_unlock`` (it counts the sections that
ended); nested ones cost nothing. A grace period starts with one visible
read of every task's entry side -- so it is ordered against each
``rcu_read_lock`` either way, which is the race that matters -- and then
waits (one visible WAIT per task that ever entered a section) until that
task's exit count has caught up with the entry count it saw. A WAIT happens
after the write that enabled it and commutes with every later one, and the
grace period never reads the exit side: "saw the reader inside and waited
for its unlock" and "looked after the unlock" are one Mazurkiewicz trace.
Readers never touch each other's objects, so they are independent.

``call_rcu`` has no shared callback queue and no batching thread: it takes
the grace-period snapshot itself and spawns one thread for the callback,
which waits for the readers it saw and then runs the callback. Independent
``call_rcu``\\s are independent operations (they only read entry sides), and
their callbacks run in any order.

*When* a callback runs: as early as RCU allows (the moment the last reader
it waits for leaves) and at any later point -- the callback thread is an
ordinary thread the explorer schedules like any other. For the
use-after-free oracle the earliest moment is the adversarial one (a free
only shrinks the set of later accesses that are legal), so the earliest
moment alone would find every use-after-free. Later moments are kept
because a callback does more than free: it takes locks, drops references,
returns a SLAB_TYPESAFE_BY_RCU object to its cache for reuse; which of those
happen before or after another thread's operation changes what that thread
sees (a reuse before or after a lookup, say). The kernel gives no upper
bound on the delay, so neither does the model; the cost is only the
callback's own operations, which DPOR orders only against the operations
they conflict with.

In set-up code (no simulated thread runs) a grace period is immediate:
``synchronize_rcu`` returns and ``call_rcu`` runs its callback at once.

Left out: the kernel's per-CPU in-order callback invocation (the model
lets callbacks of one CPU run in any order, a superset), tasks spawned by
another thread after a grace period started are not seen by it (they
cannot be inside a read section that started before it), expedited grace
periods, SRCU, ``rcu_barrier``, and lockdep's RCU map (a
``synchronize_rcu`` inside a read section is reported by the
sleeping-in-atomic check instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from mmrace.engine import (
    READ,
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


class RcuReaderExit(SharedObject):
    """The exit side of one task's RCU read-side state: how many of its
    read sections have ended (written by the outermost ``rcu_read_unlock``)."""

    __slots__ = ("ended", "entry")

    def __init__(self, name: str, entry: RcuReader) -> None:
        super().__init__(name)
        self.ended = 0
        self.entry = entry

    def wait_info(self, thread: SimThread) -> str:
        if self.entry.inside:
            return "the reader is inside a read-side critical section"
        return ""


class RcuReader(SharedObject):
    """The entry side of one task's RCU read-side state (``current->
    rcu_read_lock_nesting`` as a grace period sees it): how many read
    sections it has entered, and its exit side."""

    __slots__ = ("sections", "exit")

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sections = 0
        self.exit = RcuReaderExit(f"{name}.exit", self)

    @property
    def inside(self) -> bool:
        """Whether the task is inside a read section now (for reports)."""
        return self.sections > self.exit.ended

    def wait_info(self, thread: SimThread) -> str:
        return "reader inside a read-side critical section" if self.inside else ""


def _reader(ts: TaskState) -> RcuReader:
    r = ts.rcu_reader
    if r is None:
        r = ts.rcu_reader = RcuReader(f"rcu_reader({ts.name})")
    return r


def rcu_read_lock() -> None:
    """``rcu_read_lock()``: enter a read-side critical section (nests). The
    outermost one is one visible write of the task's reader entry side."""
    ts = task()
    depth = ts.rcu_depth
    ts.rcu_depth = depth + 1
    if depth == 0 and ts.thread is not None:
        r = ts.rcu_reader or _reader(ts)
        visible(r, WRITE, "rcu_read_lock")
        r.sections += 1


def rcu_read_unlock() -> None:
    """``rcu_read_unlock()``: leave a read-side critical section; the
    outermost unlock is one visible write of the task's reader exit side.
    Unbalanced unlock is a ``lock-misuse`` violation."""
    ts = task()
    depth = ts.rcu_depth
    if depth <= 0:
        raise misuse(ts, "rcu_read_unlock() without rcu_read_lock()")
    ts.rcu_depth = depth - 1
    if depth == 1 and ts.thread is not None:
        r = ts.rcu_reader or _reader(ts)
        ex = r.exit
        visible(ex, WRITE, "rcu_read_unlock")
        ex.ended += 1


def rcu_read_lock_held() -> bool:
    """``rcu_read_lock_held()``: whether the current task is in a read-side
    critical section."""
    return task().rcu_depth > 0


Snapshot = list[tuple[RcuReaderExit, int]]
"""What a grace period waits for: (exit side, entry count seen) per task."""


def _gp_snapshot(ts: TaskState, label: str) -> Snapshot:
    """The start of a grace period by *ts* (a simulated thread): one visible
    read of every other task's reader entry side. Returns the readers to
    wait for: every task that has entered a read section, with the number
    of sections it had entered. *ts*'s own open section (``call_rcu``
    inside ``rcu_read_lock``) is known without an operation.

    Every task is read, including finished ones and those that never used
    RCU: whether a task has a reader object yet, or has finished, is not
    something the footprint may depend on."""
    me = ts.thread
    threads = current_execution().threads
    readers: list[RcuReader] = []
    seen = 0
    # A footprint is fixed when the operation is announced: a thread spawned
    # between the announcement and the operation is read by one more
    # operation (the grace period then starts over two operations, which
    # waits for every section open at the first one).
    while seen < len(threads):
        new = [_reader(state_of(th)) for th in threads[seen:] if th is not me]
        seen = len(threads)
        if new:
            also = tuple((r, READ) for r in new[1:]) or None
            visible(new[0], READ, label if not readers else f"{label} (new tasks)", also=also)
            readers += new
    waits: Snapshot = [(r.exit, r.sections) for r in readers if r.sections]
    if ts.rcu_depth:
        own = _reader(ts)
        waits.append((own.exit, own.sections))
    return waits


def _wait_readers(waits: Snapshot, label: str) -> None:
    """Wait until every reader in *waits* has left the sections it had
    entered when the grace period started: one visible WAIT each, enabled
    by that reader's unlock (at once if it already left)."""
    for exit_side, entered in waits:

        def left(e: RcuReaderExit = exit_side, n: int = entered) -> bool:
            return e.ended >= n

        visible(exit_side, WAIT, label, left)


def synchronize_rcu() -> None:
    """``synchronize_rcu()``: wait until every reader that was inside a
    read-side critical section when it started has left it. Sleeps, so it is
    an ``invalid-context`` violation under a spinlock, with interrupts off
    or inside a read section."""
    ts = task()
    might_sleep(ts, "synchronize_rcu")
    if ts.thread is None:
        return
    _wait_readers(_gp_snapshot(ts, "synchronize_rcu"), "synchronize_rcu")


def _invoke(waits: Snapshot, func: Callable[[T], None], head: T) -> None:
    """The body of an RCU callback's thread (``rcu_do_batch`` for one
    callback): wait for the grace period, then run the callback."""
    _wait_readers(waits, "rcu: wait for grace period")
    func(head)


def call_rcu(head: T, func: Callable[[T], None]) -> None:
    """``call_rcu(head, func)``: run ``func(head)`` once every read section
    open now has ended, in a thread of its own (``rcu_cb:FUNC``). One visible
    read of every task's reader entry side; no shared queue."""
    ts = task()
    if ts.thread is None:
        func(head)
        return
    waits = _gp_snapshot(ts, "call_rcu")
    name = getattr(func, "__name__", "callback")
    spawn(_invoke, waits, func, head, name=f"rcu_cb:{name}")


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

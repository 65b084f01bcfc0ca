"""Lockdep: lock classes, held-lock stacks and the dependency graph.

Mirrors kernel/locking/lockdep.c at the level the mm model needs:

- a *lock class* is a name string (``"&mm->mmap_lock"``); a ``_nested``
  acquisition with subclass *n* uses the class ``"name/n"``;
- every blocking acquisition adds an edge from the held locks (from the top
  of the stack down to, and including, the first lock not taken by a
  trylock, as ``check_prevs_add`` does) to the new lock's class; an edge that
  closes a cycle is reported as ``lock-order`` with the kernel's "possible
  circular locking dependency detected" report;
- acquiring a class already held is "possible recursive locking detected",
  read after read included: ``down_read`` is a non-recursive read for
  lockdep (``read == 1``; only ``read == 2``, the recursive rwlock read, may
  nest), because a writer queued in between deadlocks it. The report does not
  depend on whether this exploration has seen a writer yet;
- trylocks add no dependency (but, once held, are the source of later ones);
- the graph persists across all executions of one exploration;
- a *documented order* (the mm layer's lock hierarchy, installed per
  execution with :func:`set_documented_order`) is checked on every blocking
  acquisition before any edge is added: taking a lock that the hierarchy
  puts before one already held is ``lock-order`` at once, naming both
  levels, even though no cycle has closed yet. :func:`lock_order_point`
  applies the same check where the model takes a lock lockdep does not see
  (the VMA write lock, the folio lock).

Left out: irq-safety state (``{+.+.}`` usage bits and irq inversion), the
recursive-read path strength rules (no lock here is a recursive reader),
lock chains caching, and ``nest_lock``.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from mmrace.engine import SharedObject, ViolationError, current_execution
from mmrace.sync._task import HeldLock, TaskState, fmt_where, sync_state, task

SINGLE_DEPTH_NESTING = 1
"""Subclass for ``*_nested`` acquisitions of a second lock of one class."""


class Dep:
    """A dependency edge ``prev -> next`` and where it was first seen."""

    __slots__ = ("prev", "next", "prev_held", "thread", "next_name", "next_read", "fn", "ev")

    def __init__(
        self,
        prev: str,
        next_: str,
        prev_held: str,
        thread: str,
        next_name: str,
        next_read: bool,
        fn: str | None,
        ev: int,
    ) -> None:
        self.prev = prev
        self.next = next_
        self.prev_held = prev_held
        self.thread = thread
        self.next_name = next_name
        self.next_read = next_read
        self.fn = fn
        self.ev = ev

    def describe(self) -> str:
        mode = "lock (read)" if self.next_read else "lock"
        return (
            f"{self.thread}: {mode} {self.next_name} {fmt_where(self.fn, self.ev, True)} "
            f"while holding {self.prev_held}"
        )


class LockdepGraph:
    """The dependency graph of one exploration."""

    __slots__ = ("edges",)

    def __init__(self) -> None:
        self.edges: dict[str, dict[str, Dep]] = {}

    def path(self, src: str, dst: str) -> list[Dep] | None:
        """Edges of a shortest path src -> ... -> dst, or None."""
        if src not in self.edges:
            return None
        back: dict[str, Dep] = {}
        seen = {src}
        todo: deque[str] = deque([src])
        while todo:
            cur = todo.popleft()
            for nxt, dep in self.edges.get(cur, {}).items():
                if nxt in seen:
                    continue
                seen.add(nxt)
                back[nxt] = dep
                if nxt == dst:
                    out: list[Dep] = []
                    node = dst
                    while node != src:
                        d = back[node]
                        out.append(d)
                        node = d.prev
                    out.reverse()
                    return out
                todo.append(nxt)
        return None


def _held_name(h: HeldLock) -> str:
    return h.lock.name + (" (read)" if h.read else "")


class DocumentedOrder(Protocol):
    """A lock hierarchy to check acquisitions against (see the module doc)."""

    def level(self, lock: SharedObject | None, key: str) -> str | None:
        """The hierarchy level of *lock* (class *key*), or None if it has none."""

    def must_precede(self, first: str, then: str) -> bool:
        """Whether level *first* must be taken before level *then*."""

    def consulted(self, held: str, new: str) -> None:
        """Record that a nesting of level *new* inside *held* was checked."""


_ORDER_KEY = "lockdep.documented_order"


def set_documented_order(order: DocumentedOrder) -> None:
    """Check every blocking acquisition of this execution against *order*."""
    current_execution().locals[_ORDER_KEY] = order


def _check_documented(
    ts: TaskState, order: DocumentedOrder, lock: SharedObject | None, name: str, key: str
) -> None:
    new = order.level(lock, key)
    if new is None:
        return
    for h in ts.held:
        old = order.level(h.lock, h.key)
        if old is None:
            continue
        order.consulted(old, new)
        if old != new and order.must_precede(new, old):
            raise _against_order(ts, h, name, key, new, old)


def lock_order_point(name: str) -> None:
    """The documented-order check for a lock lockdep does not track (class
    *name*, e.g. ``vma_start_write``), at the point the model takes it."""
    ts = task()
    if not ts.held or not ts.sync.lockdep_on:
        return
    order = ts.sync.ex.locals.get(_ORDER_KEY)
    if order is not None:
        _check_documented(ts, order, None, name, name)


def _against_order(
    ts: TaskState, held: HeldLock, name: str, key: str, new: str, old: str
) -> ViolationError:
    fn, ev = ts.where()
    lines = [
        "======================================================",
        "WARNING: lock taken against the documented lock order",
        "------------------------------------------------------",
        f"{ts.name} is trying to acquire lock:",
        f" ({key}) {name} {fmt_where(fn, ev, True)}  [level: {new}]",
        "",
        "but task is already holding lock:",
        f" ({held.key}) {held.lock.name} {fmt_where(held.fn, held.ev)}  [level: {old}]",
        "",
        f"the documented lock order (mm/rmap.c, mm/filemap.c) takes {new} before {old}.",
        "",
        ts.held_report(),
    ]
    title = f"lock order: {new} ({name}) taken while holding {old} ({held.lock.name})"
    return ViolationError("lock-order", title, "\n".join(lines))


def check_acquire(ts: TaskState, lock: SharedObject, key: str, read: bool) -> None:
    """lockdep's ``lock_acquire`` checks for a blocking acquisition of *lock*
    (class *key*) by *ts*, before it may block. Raises ``lock-order``."""
    graph = ts.sync.graph
    held = ts.held
    if not held:
        return
    for h in held:
        if h.key == key:
            raise _recursive(ts, lock, key, read, h)
    order = ts.sync.ex.locals.get(_ORDER_KEY)
    if order is not None:
        _check_documented(ts, order, lock, lock.name, key)
    for h in reversed(held):
        _add_edge(ts, graph, h, lock, key, read)
        if not h.trylock:
            break


def _add_edge(
    ts: TaskState, graph: LockdepGraph, h: HeldLock, lock: SharedObject, key: str, read: bool
) -> None:
    prev = h.key
    if prev == key:
        return
    deps = graph.edges.get(prev)
    if deps is not None and key in deps:
        return
    chain = graph.path(key, prev)
    if chain is not None:
        raise _circular(ts, h, lock, key, read, chain)
    fn, ev = ts.where()
    dep = Dep(prev, key, _held_name(h), ts.name, lock.name, read, fn, ev)
    if deps is None:
        graph.edges[prev] = {key: dep}
    else:
        deps[key] = dep


def _lock_line(name: str, key: str, read: bool) -> str:
    cls = "" if name == key else f" [class {key}]"
    return f" ({key}){'{read}' if read else ''}{cls}"


def _circular(
    ts: TaskState, held: HeldLock, lock: SharedObject, key: str, read: bool, chain: list[Dep]
) -> ViolationError:
    fn, ev = ts.where()
    at = fmt_where(fn, ev, True)
    lines = [
        "======================================================",
        "WARNING: possible circular locking dependency detected",
        "------------------------------------------------------",
        f"{ts.name} is trying to acquire lock:",
        f"{_lock_line(lock.name, key, read)} {at}",
        "",
        "but task is already holding lock:",
        f"{_lock_line(held.lock.name, held.key, held.read)} {fmt_where(held.fn, held.ev)}",
        "",
        "which lock already depends on the new lock.",
        "",
        "",
        "the existing dependency chain (in reverse order) is:",
        "",
    ]
    # chain: key -> ... -> held.key. Print it last-first, then the new edge.
    n = len(chain)
    for i, dep in enumerate(reversed(chain)):
        lines.append(f"-> #{n - i} ({dep.next}):")
        lines.append(f"       {dep.describe()}")
        lines.append("")
    lines.append(f"-> #0 ({key}):")
    lines.append(
        f"       {ts.name}: {'lock (read)' if read else 'lock'} {lock.name} {at} "
        f"while holding {_held_name(held)}"
    )
    lines.append("")
    lines.append("other info that might help us debug this:")
    lines.append("")
    src = held.key
    tgt = key
    parent = chain[-1].prev  # the lock before *src* in the chain
    if n > 1:
        names = [chain[0].prev] + [d.next for d in chain]
        lines.append("Chain exists of:")
        lines.append("  " + " --> ".join([*names[:-1], names[-1]]) + f" --> {tgt}")
        lines.append("")
    w = 32
    lines += [
        " Possible unsafe locking scenario:",
        "",
        "       " + "CPU0".ljust(w) + "CPU1",
        "       " + "----".ljust(w) + "----",
        f"  lock({src});",
        " " * (7 + w) + f"lock({tgt if n == 1 else parent});",
        " " * (7 + w) + f"lock({src});",
        f"  lock({tgt});",
        "",
        " *** DEADLOCK ***",
        "",
        ts.held_report(),
    ]
    title = f"possible circular locking dependency detected: {src} -> {tgt}"
    return ViolationError("lock-order", title, "\n".join(lines))


def _recursive(
    ts: TaskState, lock: SharedObject, key: str, read: bool, held: HeldLock
) -> ViolationError:
    fn, ev = ts.where()
    at = fmt_where(fn, ev, True)
    lines = [
        "============================================",
        "WARNING: possible recursive locking detected",
        "--------------------------------------------",
        f"{ts.name} is trying to acquire lock:",
        f"{_lock_line(lock.name, key, read)} {at}",
        "",
        "but task is already holding lock:",
        f"{_lock_line(held.lock.name, held.key, held.read)} {fmt_where(held.fn, held.ev)}",
        "",
        "other info that might help us debug this:",
        " Possible unsafe locking scenario:",
        "",
        "       CPU0",
        "       ----",
        f"  lock({key});",
        f"  lock({key});",
        "",
        " *** DEADLOCK ***",
        "",
    ]
    if read and held.read:
        lines.insert(
            -1,
            f" (a read lock of {key} taken again for read deadlocks when a writer "
            "queues in between)\n",
        )
    lines.append(" May be due to missing lock nesting notation")
    lines.append("")
    lines.append(ts.held_report())
    return ViolationError(
        "lock-order", f"possible recursive locking detected: {key}", "\n".join(lines)
    )


# -- assertions ------------------------------------------------------------


def _assert_fail(ts: TaskState, what: str, lock: SharedObject) -> ViolationError:
    title = f"{what}({lock.name}) failed"
    return ViolationError(
        "lock-misuse",
        title,
        f"WARNING: {title} in {ts.name}\n{ts.held_report()}",
    )


def _find(ts: TaskState, lock: SharedObject) -> HeldLock | None:
    for h in ts.held:
        if h.lock is lock:
            return h
    return None


def lockdep_assert_held(lock: SharedObject) -> None:
    """``lockdep_assert_held(l)``: the current task holds *lock* (any mode).
    A no-op after :func:`debug_locks_off`, as in the kernel."""
    ts = task()
    if ts.sync.lockdep_on and _find(ts, lock) is None:
        raise _assert_fail(ts, "lockdep_assert_held", lock)


def lockdep_assert_held_read(lock: SharedObject) -> None:
    """``lockdep_assert_held_read(l)``: held for read by the current task."""
    ts = task()
    if ts.sync.lockdep_on:
        h = _find(ts, lock)
        if h is None or not h.read:
            raise _assert_fail(ts, "lockdep_assert_held_read", lock)


def lockdep_assert_held_write(lock: SharedObject) -> None:
    """``lockdep_assert_held_write(l)``: held exclusively by the current task
    (a mutex or spinlock held counts as write)."""
    ts = task()
    if ts.sync.lockdep_on:
        h = _find(ts, lock)
        if h is None or h.read:
            raise _assert_fail(ts, "lockdep_assert_held_write", lock)


def lockdep_assert_not_held(lock: SharedObject) -> None:
    """``lockdep_assert_not_held(l)``: the current task does not hold *lock*."""
    ts = task()
    if ts.sync.lockdep_on and _find(ts, lock) is not None:
        raise _assert_fail(ts, "lockdep_assert_not_held", lock)


def lockdep_is_held(lock: SharedObject) -> bool:
    """``lockdep_is_held(l)``: whether the current task holds *lock*."""
    return _find(task(), lock) is not None


def debug_locks_off() -> None:
    """``debug_locks_off()``: turn lockdep's checks (dependency graph,
    recursion, assertions) off for the rest of this execution. Held-lock
    stacks, bad-unlock and sleeping-in-atomic checks stay on. Call it in the
    program's set-up to see the deadlock a lockdep report predicts."""
    sync_state().lockdep_on = False


def held_locks() -> list[tuple[str, bool]]:
    """The current task's held locks as (lock name, read) pairs, outermost
    first (for model code and tests)."""
    return [(h.lock.name, h.read) for h in task().held]

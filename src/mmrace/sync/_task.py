"""Per-task and per-execution state shared by every primitive in mmrace.sync.

A *task* is a simulated thread (or the program's set-up context, which has
no simulated thread). Its state -- the held-lock stack, preemption count
(spinlocks held), the interrupts-disabled flag, RCU nesting, its RCU reader
object and its signal object -- is thread-local, so it lives in
``SimThread.locals`` and is never a visible operation by itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmrace.engine import (
    SharedObject,
    SimThread,
    ViolationError,
    add_thread_describer,
    add_thread_exit_check,
    current_execution,
    current_thread,
    exploration_local,
)

if TYPE_CHECKING:
    from mmrace.engine import Execution
    from mmrace.sync.rcu import RcuReader

_KEY = "sync"


class HeldLock:
    """One entry of a task's held-lock stack (lockdep's ``struct held_lock``)."""

    __slots__ = ("lock", "key", "read", "trylock", "fn", "ev")

    def __init__(
        self, lock: SharedObject, key: str, read: bool, trylock: bool, fn: str | None, ev: int
    ) -> None:
        self.lock = lock
        self.key = key
        self.read = read
        self.trylock = trylock
        self.fn = fn
        self.ev = ev

    def describe(self) -> str:
        mode = " (read)" if self.read else ""
        name = self.lock.name
        cls = "" if name == self.key else f" [{self.key}]"
        return f"{name}{cls}{mode} {fmt_where(self.fn, self.ev)}"


def fmt_where(fn: str | None, ev: int, after: bool = False) -> str:
    """ "in do_fault (event 7)"; *after*: the operation has not happened yet,
    it follows event *ev*."""
    if ev < 0:
        return "in set-up"
    at = f"in {fn} " if fn else ""
    return f"{at}({'after ' if after else ''}event {ev})"


class SyncState:
    """Per-execution state of the sync layer."""

    __slots__ = ("ex", "setup", "lockdep_on", "graph", "slab_free")

    def __init__(self, ex: Execution) -> None:
        self.ex = ex
        self.lockdep_on = True
        self.graph: LockdepGraph = exploration_local("sync.lockdep", LockdepGraph)
        self.setup = TaskState(None, self)
        self.slab_free: dict[type[Any], Any] = {}
        add_thread_describer(describe_thread)
        add_thread_exit_check(check_thread_exit)


class TaskState:
    """What a task knows about itself: held locks and atomic context."""

    __slots__ = (
        "thread",
        "name",
        "sync",
        "held",
        "atomic",
        "irqs_off",
        "rcu_depth",
        "rcu_reader",
        "signal",
    )

    def __init__(self, thread: SimThread | None, sync: SyncState) -> None:
        self.thread = thread
        self.name = thread.name if thread is not None else "set-up"
        self.sync = sync
        self.held: list[HeldLock] = []
        self.atomic = 0  # spinlocks held (preempt_count)
        self.irqs_off = False
        self.rcu_depth = 0
        self.rcu_reader: RcuReader | None = None
        self.signal: TaskSignal | None = None

    def where(self) -> tuple[str | None, int]:
        """(model function, index of the current event) for records."""
        th = self.thread
        if th is None:
            return None, -1
        return (th.where[-1] if th.where else None), len(self.sync.ex.events) - 1

    def held_lines(self) -> list[str]:
        return [f" #{i}: {h.describe()}" for i, h in enumerate(self.held)]

    def held_report(self) -> str:
        n = len(self.held)
        if n == 0:
            return f"no locks held by {self.name}."
        head = f"{n} lock{'s' if n != 1 else ''} held by {self.name}:"
        return "\n".join([head, *self.held_lines()])


class TaskSignal(SharedObject):
    """A task's pending fatal signal (SIGKILL), as a shared object so that
    sending it and testing it are visible operations."""

    __slots__ = ("pending",)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.pending = False


def sync_state() -> SyncState:
    ex = current_execution()
    st: SyncState | None = ex.locals.get(_KEY)
    if st is None:
        st = ex.locals[_KEY] = SyncState(ex)
    return st


def state_of(th: SimThread) -> TaskState:
    """The task state of simulated thread *th* (created on first use)."""
    ts: TaskState | None = th.locals.get(_KEY)
    if ts is None:
        ts = th.locals[_KEY] = TaskState(th, sync_state())
    return ts


def task() -> TaskState:
    """The current task's state (the set-up context's outside threads)."""
    th = current_thread()
    if th is None:
        return sync_state().setup
    ts: TaskState | None = th.locals.get(_KEY)
    if ts is None:
        ts = th.locals[_KEY] = TaskState(th, sync_state())
    return ts


def describe_thread(th: SimThread) -> str:
    """Deadlock-report detail: the locks *th* holds."""
    ts: TaskState | None = th.locals.get(_KEY)
    if ts is None or not ts.held:
        return f"    {th.name} holds no locks"
    return "\n".join(f"    held by {th.name}: {h.describe()}" for h in ts.held)


def check_thread_exit(th: SimThread) -> None:
    """lockdep's ``lockdep_sys_exit`` (and ``do_exit``'s preempt-count
    note): a task that returns to user space (a thread whose function
    returns) must hold no lock, be outside every RCU read section and have
    interrupts and preemption enabled; else a ``lock-held-at-exit``
    violation naming what it still holds. A lock left held would deadlock
    its next taker; lockdep reports it at once. Locks and RCU are lockdep's
    check (off after :func:`~mmrace.sync.debug_locks_off`); preemption and
    interrupt state are checked always."""
    ts: TaskState | None = th.locals.get(_KEY)
    if ts is None:
        return
    leaked: list[str] = []
    if ts.sync.lockdep_on:  # debug_locks_off() silences lockdep's part
        leaked += [h.describe() for h in ts.held]
        if ts.rcu_depth:
            leaked.append(f"rcu_read_lock (nesting depth {ts.rcu_depth})")
    spin_held = sum(1 for h in ts.held if getattr(h.lock, "disables_preemption", False))
    if ts.atomic > spin_held:
        leaked.append(f"preempt_count {ts.atomic - spin_held} (preempt_disable)")
    if ts.irqs_off:
        leaked.append("interrupts disabled (irqs_disabled() == 1)")
    if not leaked:
        return
    first = ts.held[0].lock.name if ts.held else leaked[0].split(" ")[0]
    raise ViolationError(
        "lock-held-at-exit",
        f"lock held when returning to user space: {first} held by {ts.name}",
        "================================================\n"
        "WARNING: lock held when returning to user space!\n"
        "------------------------------------------------\n"
        f"{ts.name} is leaving the kernel with locks still held!\n"
        + "\n".join(f" #{i}: {what}" for i, what in enumerate(leaked)),
    )


def might_sleep(ts: TaskState, what: str) -> None:
    """The kernel's ``might_sleep()`` check: raise ``invalid-context`` when
    *ts* holds a spinlock, has interrupts disabled or is in an RCU read-side
    critical section."""
    if ts.atomic or ts.irqs_off or ts.rcu_depth:
        raise ViolationError(
            "invalid-context",
            "BUG: sleeping function called from invalid context",
            f"BUG: sleeping function called from invalid context in {what}\n"
            f"in_atomic(): {1 if ts.atomic else 0}, irqs_disabled(): "
            f"{1 if ts.irqs_off else 0}, non_block: 0, name: {ts.name}\n"
            f"preempt_count: {ts.atomic}, expected: 0\n"
            f"RCU nest depth: {ts.rcu_depth}, expected: 0\n" + ts.held_report(),
        )


def misuse(ts: TaskState, title: str, detail: str = "") -> ViolationError:
    """A ``lock-misuse`` violation with the task's held locks."""
    text = f"{title}\n{detail + chr(10) if detail else ''}{ts.name} is the culprit.\n"
    return ViolationError("lock-misuse", title, text + ts.held_report())


def holders_text(owners: list[TaskState], mode: str) -> str:
    return ", ".join(f"{o.name} ({mode})" for o in owners)


def push_held(ts: TaskState, lock: SharedObject, key: str, read: bool, trylock: bool) -> None:
    th = ts.thread
    if th is None:
        ts.held.append(HeldLock(lock, key, read, trylock, None, -1))
    else:
        fn = th.where[-1] if th.where else None
        ts.held.append(HeldLock(lock, key, read, trylock, fn, len(ts.sync.ex.events) - 1))


def pop_held(ts: TaskState, lock: SharedObject) -> None:
    held = ts.held
    for i in range(len(held) - 1, -1, -1):
        if held[i].lock is lock:
            del held[i]
            return


def find_held(ts: TaskState, lock: SharedObject) -> HeldLock | None:
    held = ts.held
    for i in range(len(held) - 1, -1, -1):
        if held[i].lock is lock:
            return held[i]
    return None


class Waiter:
    """A task queued on a lock; *granted* is set by the releasing task in the
    same visible operation that hands the lock over."""

    __slots__ = ("ts", "write", "granted")

    def __init__(self, ts: TaskState, write: bool) -> None:
        self.ts = ts
        self.write = write
        self.granted = False

    def is_granted(self) -> bool:
        return self.granted


class OwnedLock(SharedObject):
    """An exclusive lock with an owner (mutex, spinlock), taken with one
    ACQUIRE that is blocked while the lock is owned. *name* names the
    instance; *key* is the lockdep class (defaults to *name*)."""

    __slots__ = ("key", "owner")

    def __init__(self, name: str, key: str | None = None) -> None:
        super().__init__(name)
        self.key = key or name
        self.owner: TaskState | None = None

    def is_free(self) -> bool:
        """The guard of an acquisition: nobody owns the lock."""
        return self.owner is None

    def wait_info(self, thread: SimThread) -> str:
        return self.state_text()

    def state_text(self) -> str:
        """Who owns it, for reports."""
        if self.owner is None:
            return "not locked"
        return f"owned by {self.owner.name}"


# lockdep keeps its held-lock records in the task state defined here: it is
# imported once this module is complete (the seam of the cycle).
from mmrace.sync.lockdep import LockdepGraph  # noqa: E402

"""Reader/writer semaphores (kernel/locking/rwsem.c).

Every state change is one visible RMW on the semaphore: "take it, or queue
myself". A task that queued then waits (a visible WAIT whose guard is set
only by the RMW that hands the lock over). Release hands the lock to the
queue: a writer at the head gets it alone; a reader at the head brings every
queued reader with it (``rwsem_mark_wake`` wakes all readers in the queue,
skipping writers). A reader arriving while the semaphore is held for write,
or while anyone is queued, queues too -- the kernel's writer-waiting rule
(``rwsem_read_trylock`` fails when ``RWSEM_FLAG_WAITERS`` is set, and the
slow path does not steal a reader-owned lock): a task that holds the lock for
read and asks again while a writer waits deadlocks.

Uncontended ``down_*``/``up_*`` cost one visible operation each.

Left out: optimistic spinning, lock stealing in the window between a release
and the woken waiter's acquisition (the model hands the lock over directly),
the handoff bit, and the reader wake-up limit of 256.
"""

from __future__ import annotations

from mmrace.engine import READ, RMW, WAIT, SharedObject, SimThread, visible
from mmrace.sync import lockdep
from mmrace.sync._task import (
    TaskState,
    Waiter,
    find_held,
    might_sleep,
    misuse,
    pop_held,
    push_held,
    task,
)
from mmrace.sync.signal import EINTR, pending


class RwSemaphore(SharedObject):
    """``struct rw_semaphore``. *name* names this instance in traces; *key*
    is its lockdep class (defaults to *name*), e.g. ``"&mm->mmap_lock"``."""

    __slots__ = ("key", "writer", "readers", "queue")

    def __init__(self, name: str, key: str | None = None) -> None:
        super().__init__(name)
        self.key = key or name
        self.writer: TaskState | None = None
        self.readers: list[TaskState] = []
        self.queue: list[Waiter] = []

    def wait_info(self, thread: SimThread) -> str:
        return self.state_text()

    def state_text(self) -> str:
        """Holders and queue, for reports."""
        parts = []
        if self.writer is not None:
            parts.append(f"held for write by {self.writer.name}")
        if self.readers:
            parts.append("held for read by " + ", ".join(r.name for r in self.readers))
        if self.queue:
            parts.append(
                "queue: "
                + ", ".join(f"{w.ts.name} ({'write' if w.write else 'read'})" for w in self.queue)
            )
        return "; ".join(parts) or "not locked"

    def is_locked(self) -> bool:
        """``rwsem_is_locked``: held in any mode (not a visible operation)."""
        return self.writer is not None or bool(self.readers)


def init_rwsem(name: str, key: str | None = None) -> RwSemaphore:
    """``init_rwsem(sem)``: a new, unlocked rw_semaphore (lockdep class *key*,
    default *name*)."""
    return RwSemaphore(name, key)


def _wake(sem: RwSemaphore) -> None:
    """Hand the semaphore to the queue after a release (``rwsem_wake``)."""
    queue = sem.queue
    if not queue or sem.writer is not None:
        return
    head = queue[0]
    if head.write:
        if not sem.readers:
            del queue[0]
            sem.writer = head.ts
            head.granted = True
        return
    keep: list[Waiter] = []
    for w in queue:
        if w.write:
            keep.append(w)
        else:
            sem.readers.append(w.ts)
            w.granted = True
    sem.queue = keep


def _dequeue(sem: RwSemaphore, w: Waiter) -> None:
    sem.queue.remove(w)
    _wake(sem)


def _down_read(sem: RwSemaphore, label: str, subclass: int, killable: bool) -> int:
    ts = task()
    might_sleep(ts, f"{label}({sem.name})")
    key = sem.key if subclass == 0 else f"{sem.key}/{subclass}"
    if ts.sync.lockdep_on:
        lockdep.check_acquire(ts, sem, key, True)
    ev = visible(sem, RMW, label)
    if sem.writer is None and not sem.queue:
        sem.readers.append(ts)
    else:
        w = Waiter(ts, False)
        sem.queue.append(w)
        if ev is not None:
            ev.detail = "queued"
        if killable and pending(ts):
            visible(sem, RMW, label + " (interrupted)")
            if not w.granted:
                _dequeue(sem, w)
                return -EINTR
        else:
            visible(sem, WAIT, label, w.is_granted)
    push_held(ts, sem, key, True, False)
    return 0


def _down_write(sem: RwSemaphore, label: str, subclass: int, killable: bool) -> int:
    ts = task()
    might_sleep(ts, f"{label}({sem.name})")
    key = sem.key if subclass == 0 else f"{sem.key}/{subclass}"
    if ts.sync.lockdep_on:
        lockdep.check_acquire(ts, sem, key, False)
    ev = visible(sem, RMW, label)
    if sem.writer is None and not sem.readers and not sem.queue:
        sem.writer = ts
    else:
        w = Waiter(ts, True)
        sem.queue.append(w)
        if ev is not None:
            ev.detail = "queued"
        if killable and pending(ts):
            visible(sem, RMW, label + " (interrupted)")
            if not w.granted:
                _dequeue(sem, w)
                return -EINTR
        else:
            visible(sem, WAIT, label, w.is_granted)
    push_held(ts, sem, key, False, False)
    return 0


def down_read(sem: RwSemaphore) -> None:
    """``down_read(sem)``: take *sem* for read, sleeping while it is held for
    write or anyone is queued. Sleeping in atomic context is a violation."""
    _down_read(sem, "down_read", 0, False)


def down_read_nested(sem: RwSemaphore, subclass: int) -> None:
    """``down_read_nested(sem, subclass)``: as :func:`down_read`, in lockdep
    class ``key/subclass``."""
    _down_read(sem, "down_read", subclass, False)


def down_read_killable(sem: RwSemaphore) -> int:
    """``down_read_killable(sem)``: as :func:`down_read` but returns
    ``-EINTR`` instead of sleeping when the task has a fatal signal pending
    (an uncontended acquisition succeeds even then, as in the kernel's fast
    path). Returns 0 on success. Left out: a signal arriving while already
    asleep does not wake the task."""
    return _down_read(sem, "down_read_killable", 0, True)


def down_write(sem: RwSemaphore) -> None:
    """``down_write(sem)``: take *sem* exclusively, sleeping until every
    holder has released it and earlier waiters have been served (FIFO)."""
    _down_write(sem, "down_write", 0, False)


def down_write_nested(sem: RwSemaphore, subclass: int) -> None:
    """``down_write_nested(sem, subclass)``: as :func:`down_write`, in lockdep
    class ``key/subclass`` (use :data:`SINGLE_DEPTH_NESTING` for a second
    lock of one class)."""
    _down_write(sem, "down_write", subclass, False)


def down_write_killable(sem: RwSemaphore) -> int:
    """``down_write_killable(sem)``: as :func:`down_write`, returning
    ``-EINTR`` instead of sleeping when a fatal signal is pending; 0 on
    success. Same omissions as :func:`down_read_killable`."""
    return _down_write(sem, "down_write_killable", 0, True)


def down_read_trylock(sem: RwSemaphore) -> bool:
    """``down_read_trylock(sem)``: one visible RMW that never blocks; fails
    when the semaphore is held for write or anyone is queued. Adds no lockdep
    dependency."""
    ts = task()
    ev = visible(sem, RMW, "down_read_trylock")
    if sem.writer is None and not sem.queue:
        sem.readers.append(ts)
        push_held(ts, sem, sem.key, True, True)
        return True
    if ev is not None:
        ev.detail = "failed"
    return False


def down_write_trylock(sem: RwSemaphore) -> bool:
    """``down_write_trylock(sem)``: one visible RMW that never blocks;
    succeeds only on a free semaphore. Adds no lockdep dependency."""
    ts = task()
    ev = visible(sem, RMW, "down_write_trylock")
    if sem.writer is None and not sem.readers and not sem.queue:
        sem.writer = ts
        push_held(ts, sem, sem.key, False, True)
        return True
    if ev is not None:
        ev.detail = "failed"
    return False


def up_read(sem: RwSemaphore) -> None:
    """``up_read(sem)``: release a read hold; the last reader hands the
    semaphore to the queue. Releasing a semaphore the task does not hold for
    read is a ``lock-misuse`` violation."""
    ts = task()
    h = find_held(ts, sem)
    if h is None or not h.read or ts not in sem.readers:
        raise misuse(
            ts,
            f"up_read({sem.name}) without holding it for read",
            f"lock state: {sem.state_text()}",
        )
    visible(sem, RMW, "up_read")
    sem.readers.remove(ts)
    if not sem.readers and sem.queue:
        _wake(sem)
    pop_held(ts, sem)


def up_write(sem: RwSemaphore) -> None:
    """``up_write(sem)``: release the write hold and hand the semaphore to
    the queue. Releasing a semaphore the task does not hold for write is a
    ``lock-misuse`` violation."""
    ts = task()
    if sem.writer is not ts:
        raise misuse(
            ts,
            f"up_write({sem.name}) without holding it for write",
            f"lock state: {sem.state_text()}",
        )
    visible(sem, RMW, "up_write")
    sem.writer = None
    if sem.queue:
        _wake(sem)
    pop_held(ts, sem)


def downgrade_write(sem: RwSemaphore) -> None:
    """``downgrade_write(sem)``: turn the write hold into a read hold
    atomically and let queued readers in (if a reader is at the head of the
    queue); a queued writer keeps waiting."""
    ts = task()
    h = find_held(ts, sem)
    if sem.writer is not ts or h is None:
        raise misuse(
            ts,
            f"downgrade_write({sem.name}) without holding it for write",
            f"lock state: {sem.state_text()}",
        )
    visible(sem, RMW, "downgrade_write")
    sem.writer = None
    sem.readers.append(ts)
    if sem.queue and not sem.queue[0].write:
        _wake(sem)
    h.read = True


def rwsem_is_locked(sem: RwSemaphore) -> bool:
    """``rwsem_is_locked(sem)``: one visible read; True when held in any mode."""
    visible(sem, READ, "rwsem_is_locked")
    return sem.is_locked()

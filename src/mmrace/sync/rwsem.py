"""Reader/writer semaphores (kernel/locking/rwsem.c).

Footprints follow what commutes in the kernel: readers' counts commute, so
readers never conflict with each other. The semaphore is two kinds of
shared object:

* the semaphore itself (:class:`RwSemaphore`), the writer state: the
  writer owner, the wait queue, and the readers the queue handed the lock
  to (``rwsem_mark_wake``) or that downgraded a write hold;
* one read-hold slot per task (:class:`RwsemReader`), its share of the
  reader count, written only by that task.

A reader's fast path (``down_read``, ``down_read_trylock``) is one visible
operation that reads the semaphore (no writer, nobody queued: the
writer-waiting rule of ``rwsem_read_trylock``) and writes the task's own
slot; ``up_read`` of such a hold writes the slot only. So two readers, or
a reader's ``up_read`` and another's ``down_read``, are independent. A
writer's acquisition is one RMW of the semaphore that also reads every
slot; if it is free it becomes the owner at once (later readers queue
behind it) and then waits (one visible WAIT each) for the slots it saw held
to be released -- each WAIT happens after the ``up_read`` that enabled it,
so an ``up_read`` that lets a writer in stays ordered before that writer.

A reader that finds a writer or waiters takes the slow path: one RMW of
the semaphore (and its slot) that takes the lock if it became free, or
queues; a queued task waits (a visible WAIT whose guard is set only by the
RMW that hands the lock over). Release hands the lock to the queue: a
writer at the head gets it alone; a reader at the head brings every queued
reader with it (``rwsem_mark_wake`` wakes all readers in the queue,
skipping writers). A task that holds the lock for read and asks again
while a writer waits deadlocks, as in the kernel.

Uncontended ``down_*``/``up_*`` cost one visible operation each (plus a
WAIT per reader a writer has to wait for).

Left out: optimistic spinning, lock stealing in the window between a release
and the woken waiter's acquisition (the model hands the lock over directly),
the handoff bit, and the reader wake-up limit of 256.
"""

from __future__ import annotations

from mmrace.engine import READ, RMW, WAIT, WRITE, Event, SharedObject, SimThread, visible
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
from mmrace.sync.slots import Slot, Slots, wait_released


class RwSemaphore(SharedObject):
    """``struct rw_semaphore``. *name* names this instance in traces; *key*
    is its lockdep class (defaults to *name*), e.g. ``"&mm->mmap_lock"``.

    The object itself is the writer state; :attr:`slots` are the per-task
    read holds taken through the fast path (``sem.reader(TASK)``)."""

    __slots__ = ("key", "writer", "readers", "queue", "slots", "draining", "read_it")

    def __init__(self, name: str, key: str | None = None) -> None:
        super().__init__(name)
        self.key = key or name
        self.writer: TaskState | None = None
        # readers that hold it through the semaphore (handed over, downgraded)
        self.readers: list[TaskState] = []
        self.queue: list[Waiter] = []
        self.slots = Slots(self, "reader")
        # slots the writer still waits for (for reports)
        self.draining: list[Slot] = []
        # the footprint a fast-path reader adds to its slot's write
        self.read_it: tuple[tuple[SharedObject, int], ...] = ((self, READ),)

    def all_readers(self) -> list[TaskState]:
        slot_readers = [s.ts for s in self.slots.held() for _ in range(s.count)]
        return slot_readers + self.readers

    def wait_info(self, thread: SimThread) -> str:
        return self.state_text()

    def state_text(self) -> str:
        """Holders and queue, for reports."""
        parts = []
        # A writer that owns the semaphore but still waits for readers to
        # leave is, in the kernel, the head of the wait queue: say so.
        draining = self.writer is not None and any(s.count for s in self.draining)
        if self.writer is not None and not draining:
            parts.append(f"held for write by {self.writer.name}")
        readers = self.all_readers()
        if readers:
            parts.append("held for read by " + ", ".join(r.name for r in readers))
        queue = [f"{w.ts.name} ({'write' if w.write else 'read'})" for w in self.queue]
        if draining:
            assert self.writer is not None
            queue.insert(0, f"{self.writer.name} (write)")
        if queue:
            parts.append("queue: " + ", ".join(queue))
        return "; ".join(parts) or "not locked"

    def is_locked(self) -> bool:
        """``rwsem_is_locked``: held in any mode (not a visible operation)."""
        return self.writer is not None or bool(self.readers) or bool(self.slots.held())


def init_rwsem(name: str, key: str | None = None) -> RwSemaphore:
    """``init_rwsem(sem)``: a new, unlocked rw_semaphore (lockdep class *key*,
    default *name*)."""
    return RwSemaphore(name, key)


def _wake(sem: RwSemaphore) -> None:
    """Hand the semaphore to the queue after a release (``rwsem_wake``).
    A writer handed the lock still waits for the slot readers it saw when it
    queued (it does that itself, after its grant)."""
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


def _read_free(sem: RwSemaphore) -> bool:
    return sem.writer is None and not sem.queue


def _drain(sem: RwSemaphore, slots: list[Slot], label: str) -> None:
    """A writer that owns the semaphore waits for every other task's
    read-hold slot to be released: one WAIT per slot, after that reader's
    last ``up_read`` (at once for a slot that is already free, but still
    ordered after its release). No fast-path reader can come in meanwhile
    (the writer is set), so the guards stay true once true."""
    if not slots:
        return
    sem.draining = slots
    wait_released(slots, label + " (wait for reader)")
    sem.draining = []


def _queue_and_wait(sem: RwSemaphore, w: Waiter, ev: Event | None, killable: bool,
                    label: str) -> bool:
    """Queue *w* (its acquiring operation *ev* shows it) and sleep until it is
    granted. A killable acquirer with a fatal signal pending backs out
    instead, unless it was granted meanwhile: True when it backed out."""
    sem.queue.append(w)
    if ev is not None:
        ev.detail = "queued"
    if killable and pending(w.ts):
        visible(sem, RMW, label + " (interrupted)")
        if not w.granted:
            _dequeue(sem, w)
            return True
    else:
        visible(sem, WAIT, label, w.is_granted)
    return False


def _down_read(sem: RwSemaphore, label: str, subclass: int, killable: bool) -> int:
    ts = task()
    might_sleep(ts, f"{label}({sem.name})")
    key = sem.key if subclass == 0 else f"{sem.key}/{subclass}"
    if ts.sync.lockdep_on:
        lockdep.check_acquire(ts, sem, key, True)
    slot = sem.slots.of(ts)
    visible(slot, WRITE, label, also=sem.read_it)
    if _read_free(sem):
        slot.count += 1
        push_held(ts, sem, key, True, False)
        return 0
    # Slow path (rwsem_down_read_slowpath): under the wait lock, take it if
    # it became free meanwhile, else queue.
    ev = visible(sem, RMW, label + " (slow path)", also=((slot, WRITE),))
    if _read_free(sem):
        slot.count += 1
        push_held(ts, sem, key, True, False)
        return 0
    if _queue_and_wait(sem, Waiter(ts, False), ev, killable, label):
        return -EINTR
    push_held(ts, sem, key, True, False)
    return 0


def _down_write(sem: RwSemaphore, label: str, subclass: int, killable: bool) -> int:
    ts = task()
    might_sleep(ts, f"{label}({sem.name})")
    key = sem.key if subclass == 0 else f"{sem.key}/{subclass}"
    if ts.sync.lockdep_on:
        lockdep.check_acquire(ts, sem, key, False)
    if killable:
        # It must know now whether it would sleep for readers (it backs
        # out instead when a fatal signal is pending): read every slot.
        ev, slots = sem.slots.look(sem, RMW, label, ts)
        busy = [s for s in slots if s.count]
    else:
        # It waits for every reader slot after its RMW, whatever it holds:
        # no need to read them, and an up_read is then ordered before the
        # writer by the writer's WAIT whether it came before or after the
        # RMW -- one trace, not two.
        ev = visible(sem, RMW, label)
        busy = []
    if sem.writer is None and not sem.readers and not sem.queue:
        sem.writer = ts
    elif _queue_and_wait(sem, Waiter(ts, True), ev, killable, label):
        return -EINTR
    if killable:
        if busy and pending(ts):
            # It would sleep until the readers leave: back out instead.
            visible(sem, RMW, label + " (interrupted)")
            sem.writer = None
            _wake(sem)
            return -EINTR
        _drain(sem, busy, label)
    else:
        mine = sem.slots.mine(ts)
        _drain(sem, [s for s in sem.slots.table.values() if s is not mine], label)
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
    """``down_read_trylock(sem)``: one visible operation that never blocks
    (a read of the semaphore and a write of the task's slot); fails when the
    semaphore is held for write or anyone is queued. Adds no lockdep
    dependency."""
    ts = task()
    slot = sem.slots.of(ts)
    ev = visible(slot, WRITE, "down_read_trylock", also=sem.read_it)
    if _read_free(sem):
        slot.count += 1
        push_held(ts, sem, sem.key, True, True)
        return True
    if ev is not None:
        ev.detail = "failed"
    return False


def down_write_trylock(sem: RwSemaphore) -> bool:
    """``down_write_trylock(sem)``: one visible RMW (reading every read-hold
    slot) that never blocks; succeeds only on a free semaphore. Adds no
    lockdep dependency."""
    ts = task()
    ev, _slots = sem.slots.look(sem, RMW, "down_write_trylock", ts)
    if sem.writer is None and not sem.readers and not sem.queue and not sem.slots.held():
        sem.writer = ts
        push_held(ts, sem, sem.key, False, True)
        return True
    if ev is not None:
        ev.detail = "failed"
    return False


def up_read(sem: RwSemaphore) -> None:
    """``up_read(sem)``: release a read hold. A fast-path hold is one visible
    write of the task's slot (a writer waiting for it wakes on that write);
    a hold the queue handed over is one RMW of the semaphore, and the last
    such reader hands the semaphore to the queue. Releasing a semaphore the
    task does not hold for read is a ``lock-misuse`` violation."""
    ts = task()
    h = find_held(ts, sem)
    slot = sem.slots.mine(ts)
    # Whether this task holds it through its slot is its own state: only
    # this task writes its slot (a writer only reads it).
    via_slot = slot is not None and slot.count > 0
    if h is None or not h.read or not (via_slot or ts in sem.readers):
        raise misuse(
            ts,
            f"up_read({sem.name}) without holding it for read",
            f"lock state: {sem.state_text()}",
        )
    if via_slot:
        assert slot is not None
        visible(slot, WRITE, "up_read")
        slot.count -= 1
    else:
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
    """``rwsem_is_locked(sem)``: one visible read (of the semaphore and every
    read-hold slot); True when held in any mode."""
    # An RMW of the semaphore, not a read: it must be ordered against every
    # fast-path down_read (which reads the semaphore), including one by a
    # thread that does not exist yet and so has no slot to read.
    sem.slots.look(sem, RMW, "rwsem_is_locked", task())
    return sem.is_locked()

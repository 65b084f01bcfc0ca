"""Per-task shares of a count whose updates commute.

Several kernel counters are read-modify-written by many tasks although
their updates commute: readers of an rw_semaphore add and remove
``RWSEM_READER_BIAS``, faulting tasks take and drop ``vm_refcnt`` references
of a VMA, ``atomic_add`` whose result nobody reads. If each such update were
a read-modify-write of one shared object, DPOR would treat every two of them
as a race and explore both orders. Instead, each task (or each CPU) keeps
its own share in a :class:`Slot`, a shared object only that task writes; the
party whose behaviour depends on the total -- a writer that must wait for
readers to leave, an ``atomic_read`` -- reads every slot in one visible
operation (:meth:`Slots.look`), and waits for a slot with a WAIT that is
ordered after the write that enabled it (:func:`wait_released`).

This module is the shared machinery; the primitives that use it say what
their slots hold.
"""

from __future__ import annotations

from mmrace.engine import (
    READ,
    WAIT,
    Event,
    SharedObject,
    SimThread,
    current_execution,
    visible,
)
from mmrace.sync._task import TaskState, state_of, task


class Slot(SharedObject):
    """One task's share of a count (*count*), written only by that task."""

    __slots__ = ("owner", "ts", "count")

    def __init__(self, owner: SharedObject, ts: TaskState, name: str) -> None:
        super().__init__(name)
        self.owner = owner
        self.ts = ts
        self.count = 0

    def released(self) -> bool:
        return self.count == 0

    def wait_info(self, thread: SimThread) -> str:
        info = self.owner.wait_info(thread)
        if self.count:
            return f"{self.ts.name} holds {self.count} ({info})" if info else (
                f"{self.ts.name} holds {self.count}")
        return info


def task_key(ts: TaskState) -> int:
    """A task's key in a slot table: its thread id, -1 for set-up code."""
    th = ts.thread
    return th.tid if th is not None else -1


class Slots:
    """The slots of one counter *owner*, made on first use: one per task,
    or with *per_root*, one per thread the set-up spawned, shared by the
    threads it spawns in turn (a CPU's share: descendants, such as RCU
    callbacks, write their root's slot)."""

    __slots__ = ("owner", "suffix", "table", "per_root")

    def __init__(self, owner: SharedObject, suffix: str, per_root: bool = False) -> None:
        self.owner = owner
        self.suffix = suffix
        self.table: dict[int, Slot] = {}
        self.per_root = per_root

    def _key(self, ts: TaskState) -> tuple[int, TaskState]:
        th = ts.thread
        if th is None:
            return -1, ts
        if self.per_root and th.root != th.tid:
            return th.root, state_of(current_execution().threads[th.root])
        return th.tid, ts

    def of(self, ts: TaskState) -> Slot:
        """Task *ts*'s slot."""
        th = ts.thread
        s = self.table.get(-1 if th is None else th.root if self.per_root else th.tid)
        if s is None:
            key, owner_ts = self._key(ts)
            name = f"{self.owner.name}.{self.suffix}({owner_ts.name})"
            s = self.table[key] = Slot(self.owner, owner_ts, name)
        return s

    def current(self) -> Slot:
        """The running task's slot."""
        return self.of(task())

    def every(self) -> list[Slot]:
        """Every slot, after making the slot of each thread of the execution
        that has none yet (with *per_root*, of each CPU): an operation that
        reads them all then also meets a share taken later."""
        for th in current_execution().threads:
            if not self.per_root or th.root == th.tid:
                self.of(state_of(th))
        return list(self.table.values())

    def mine(self, ts: TaskState) -> Slot | None:
        """Task *ts*'s slot if it has one (no new object)."""
        return self.table.get(self._key(ts)[0])

    def others(self, ts: TaskState | None = None) -> list[Slot]:
        """Every slot but the own slot of *ts* (default: the running task)."""
        mine = self.mine(task() if ts is None else ts)
        return [s for s in self.table.values() if s is not mine]

    def held(self) -> list[Slot]:
        """The slots with a non-zero share, in creation order."""
        return [s for s in self.table.values() if s.count]

    def total(self) -> int:
        return sum(s.count for s in self.table.values())

    def look(
        self,
        obj: SharedObject,
        kind: int,
        label: str,
        ts: TaskState | None = None,
        *,
        own: bool = False,
        slot_kind: int = READ,
    ) -> tuple[Event | None, list[Slot]]:
        """One visible operation of *kind* on *obj* that also accesses
        (*slot_kind*) every slot -- but the own slot of task *ts* (default:
        the running task), whose share that task knows, unless *own*.
        Returns its event and the slots it accessed.

        A footprint is fixed when the operation is announced, while a slot is
        made on its task's first use: every existing thread gets its slot
        first, and if a slot still appears between the announcement and the
        operation (a thread spawned meanwhile took a share), the operation
        changed nothing and is made again with that slot in its footprint."""
        if ts is None:
            ts = task()
        self.every()
        mine = None if own else self.mine(ts)
        while True:
            slots = [s for s in self.table.values() if s is not mine]
            n = len(self.table)
            ev = visible(obj, kind, label, also=tuple((s, slot_kind) for s in slots) or None)
            if len(self.table) == n:
                return ev, slots
            label = f"{label} (again)"


def wait_released(slots: list[Slot], label: str) -> None:
    """Wait until each of *slots* has a zero share: one visible WAIT per
    slot, ordered after the write that released it (at once if it already
    was). The caller must have made sure no share can be taken meanwhile."""
    for s in slots:
        visible(s, WAIT, label, s.released)

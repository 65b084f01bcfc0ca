"""The mmap lock and the per-VMA locks (include/linux/mmap_lock.h,
mm/mmap_lock.c).

The per-VMA lock follows the refcount scheme of current kernels:
``vm_refcnt`` is 0 while the VMA is detached, 1 while attached, +1 per
reader; a writer adds ``VMA_LOCK_OFFSET`` (which readers cannot get past),
waits until only it and the attach reference remain, sets
``vm_lock_seq = mm->mm_lock_seq`` and removes the offset. A VMA is
write-locked while ``vm_lock_seq == mm->mm_lock_seq``; ``mmap_write_unlock``
and ``mmap_write_downgrade`` advance ``mm_lock_seq`` (``vma_end_write_all``),
releasing every VMA write lock at once.

Eras (``mmrace.fixes``): without ``per-vma-locks`` (before 6.4) there is no
VMA lock at all -- ``vma_start_write`` does nothing, the mmap lock does no
``mm_lock_seq`` bookkeeping, a VMA counts as write-locked whenever the mmap
lock is held for write, and faults never call ``lock_vma_under_rcu``.
Without ``vma-slab-typesafe-rcu`` (before 6.15) ``vma_start_read`` reads
``vma->vm_mm`` under RCU alone, as those kernels did.

Every transition is checked against the lock-state table, the mmap lock's
R/D/W exclusivity and the documented lock order (``mm/rules_check.py``).

Left out: lockdep annotations of the VMA lock (the rule checker covers them),
the mmap_lock tracepoints, killable waits for the VMA write lock, the
rw_semaphore VMA lock of 6.4 to 6.14 (the refcount scheme stands for both),
and SLAB_TYPESAFE_BY_RCU reuse of freed VMAs (a freed VMA stays readable
under RCU until a grace period, see ``vm_area_free``).
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import (
    READ,
    RMW,
    WRITE,
    SimThread,
    ViolationError,
    add_thread_describer,
    add_thread_exit_check,
    execution_local,
    visible,
)
from mmrace.mm.internal import held, kernel_config, kfunc
from mmrace.mm.locks import (
    EINTR,
    down_read,
    down_read_killable,
    down_read_trylock,
    down_write,
    down_write_killable,
    down_write_trylock,
    downgrade_write,
    rcu_read_lock,
    rcu_read_unlock,
    up_read,
    up_write,
    wait_released,
)
from mmrace.mm.mm_types import (
    MmStruct,
    VmAreaStruct,
    mm_assert_users,
)
from mmrace.mm.rules_check import (
    check_lock_state,
    check_mmap_exclusion,
    check_mmap_lock_nesting,
    vma_write_lock_order,
)


def _assert(cond: bool, title: str, what: str) -> None:
    if not cond:
        raise ViolationError("locking-rule", title, f"{what}; held: {held().describe()}")


def _took(mm: MmStruct, mode: str) -> None:
    # The lock lives in the mm_struct: taking it after the last mmdrop freed
    # the struct is a use-after-free (the free is not ordered against the
    # lock's own operations: a caller without an mm reference is caught when
    # the free came first in the execution explored).
    mm.check_alive(f"take {mm.mmap_lock.name}")
    h = held()
    h.mmap[mm.serial] = mode
    h.names[mm.serial] = mm.mmap_lock.name
    check_mmap_exclusion(mm, mode)
    check_lock_state(f"mmap lock ({mode})", mm=mm)


def per_vma_locks(mm: MmStruct) -> bool:
    """Whether *mm*'s kernel has per-VMA locks (6.4 on: ``per-vma-locks``)."""
    return bool(kernel_config(mm).has("per-vma-locks"))


# --- mmap lock ----------------------------------------------------------------


@kfunc
def mm_lock_seqcount_begin(mm: MmStruct) -> None:
    """``mm_lock_seqcount_begin``: the write section starts (odd sequence)."""
    visible(mm.mm_lock_seq, WRITE, "mm_lock_seqcount_begin")
    mm.mm_lock_seq.sequence += 1


@kfunc
def vma_end_write_all(mm: MmStruct) -> None:
    """``vma_end_write_all``: advance ``mm_lock_seq``, releasing every VMA write
    lock of *mm*. Requires the mmap write lock."""
    mmap_assert_write_locked(mm)
    visible(mm.mm_lock_seq, WRITE, "vma_end_write_all")
    mm.mm_lock_seq.sequence += 1


@kfunc
def mmap_write_lock(mm: MmStruct) -> None:
    """``mmap_write_lock``."""
    check_mmap_lock_nesting(mm)
    down_write(mm.mmap_lock)
    _took(mm, "W")
    if per_vma_locks(mm):
        mm_lock_seqcount_begin(mm)


@kfunc
def mmap_write_lock_killable(mm: MmStruct) -> int:
    """``mmap_write_lock_killable``: 0, or -EINTR (the model's sync decides)."""
    check_mmap_lock_nesting(mm)
    ret = down_write_killable(mm.mmap_lock)
    if ret:
        return -EINTR
    _took(mm, "W")
    if per_vma_locks(mm):
        mm_lock_seqcount_begin(mm)
    return 0


@kfunc
def mmap_write_unlock(mm: MmStruct) -> None:
    """``mmap_write_unlock``: release all VMA write locks, then the rwsem."""
    if per_vma_locks(mm):
        vma_end_write_all(mm)
    del held().mmap[mm.serial]
    up_write(mm.mmap_lock)
    check_lock_state("mmap_write_unlock", mm=mm)


@kfunc
def mmap_write_downgrade(mm: MmStruct) -> None:
    """``mmap_write_downgrade``: release all VMA write locks and keep the mm
    read-locked throughout."""
    if per_vma_locks(mm):
        vma_end_write_all(mm)
    held().mmap[mm.serial] = "D"
    downgrade_write(mm.mmap_lock)
    check_mmap_exclusion(mm, "D")
    check_lock_state("mmap_write_downgrade", mm=mm)


@kfunc
def mmap_read_lock(mm: MmStruct) -> None:
    """``mmap_read_lock``."""
    check_mmap_lock_nesting(mm)
    down_read(mm.mmap_lock)
    _took(mm, "R")


@kfunc
def mmap_read_lock_killable(mm: MmStruct) -> int:
    """``mmap_read_lock_killable``: 0 or -EINTR."""
    check_mmap_lock_nesting(mm)
    if down_read_killable(mm.mmap_lock):
        return -EINTR
    _took(mm, "R")
    return 0


@kfunc
def mmap_read_trylock(mm: MmStruct) -> bool:
    """``mmap_read_trylock``."""
    if down_read_trylock(mm.mmap_lock):
        _took(mm, "R")
        return True
    return False


@kfunc
def mmap_write_trylock(mm: MmStruct) -> bool:
    """``mmap_write_trylock`` (khugepaged's retraction before 6.6)."""
    if down_write_trylock(mm.mmap_lock):
        _took(mm, "W")
        mm_lock_seqcount_begin(mm)
        return True
    return False


@kfunc
def mmap_read_unlock(mm: MmStruct) -> None:
    """``mmap_read_unlock`` (also after a downgrade)."""
    h = held()
    _assert(h.mmap.get(mm.serial) in ("R", "D"),
            f"mmap_read_unlock of {mm.mmap_lock.name} not held for read",
            "mmap_read_unlock without holding the mmap lock for read")
    del h.mmap[mm.serial]
    up_read(mm.mmap_lock)
    check_lock_state("mmap_read_unlock", mm=mm)


def mmap_assert_locked(mm: MmStruct) -> None:
    """``mmap_assert_locked``: held for read or write by this thread."""
    _assert(mm.serial in held().mmap, f"mmap_assert_locked: {mm.mmap_lock.name} not held",
            f"{mm.mmap_lock.name} must be held")


def mmap_assert_write_locked(mm: MmStruct) -> None:
    """``mmap_assert_write_locked``."""
    _assert(held().mmap.get(mm.serial) == "W",
            f"mmap_assert_write_locked: {mm.mmap_lock.name} not held for write",
            f"{mm.mmap_lock.name} must be held for write")


# --- per-VMA lock -------------------------------------------------------------


def _is_vma_write_locked(vma: VmAreaStruct) -> bool:
    mm = vma.raw("vm_mm")
    return bool(vma.vm_lock.vm_lock_seq == mm.mm_lock_seq.sequence)


def vma_assert_write_locked(vma: VmAreaStruct) -> None:
    """``vma_assert_write_locked`` (before per-VMA locks: the mmap write lock)."""
    mm = vma.raw("vm_mm")
    locked = _is_vma_write_locked(vma) if per_vma_locks(mm) else True
    _assert(held().mmap.get(mm.serial) == "W" and locked,
            f"vma_assert_write_locked: {vma.name} not write-locked",
            f"{vma!r} must be write-locked (vma_start_write)")


def vma_assert_locked(vma: VmAreaStruct) -> None:
    """``vma_assert_locked``: read- or write-locked by this thread (before
    per-VMA locks: the mmap lock held)."""
    mm = vma.raw("vm_mm")
    h = held()
    if not per_vma_locks(mm):
        ok = mm.serial in h.mmap
    else:
        ok = vma.serial in h.vma_read or (
            h.mmap.get(mm.serial) == "W" and _is_vma_write_locked(vma))
    _assert(ok, f"vma_assert_locked: {vma.name} not locked", f"{vma!r} must be locked")


@kfunc
def vma_start_write(vma: VmAreaStruct) -> None:
    """``vma_start_write``: requires the mmap write lock; excludes readers,
    waits for current ones to leave, marks the VMA write-locked until the
    mmap write lock is released or downgraded. A no-op when already
    write-locked in this mmap write section.

    One RMW of the lock state that adds the offset (no reader can take a
    reference after it), one WAIT per task's reader references (after that
    task's last ``vma_refcount_put``, at once if it holds none), and one RMW
    that sets ``vm_lock_seq`` and removes the offset. The writer does not
    read the readers' references: whether a reader's put came before or
    after the offset, the writer's WAIT orders it after the put (one trace,
    not two)."""
    mm = vma.raw("vm_mm")
    mmap_assert_write_locked(mm)
    if not per_vma_locks(mm):
        return  # no VMA lock before 6.4: the mmap write lock is all there is
    lock = vma.vm_lock
    # __is_vma_write_locked: vm_lock_seq is only written under mmap W (which
    # we hold), so this read races with nothing and needs no operation.
    seq = mm.mm_lock_seq.sequence
    if lock.vm_lock_seq == seq:
        return
    vma_write_lock_order()
    visible(lock, RMW, "vm_refcnt += VMA_LOCK_OFFSET")
    others = lock.readers.others()
    if not lock.attached or not others:
        # Detached (vm_refcnt 0: __vma_enter_locked's refcount_add_not_zero
        # fails), or no task has ever taken a reader reference (a slot is
        # made by an increment, which this RMW is ordered against): nothing
        # to wait for, and the offset's addition, vm_lock_seq's write and
        # its removal are this one operation (a later reader fails its
        # recheck of vm_lock_seq instead of its increment).
        lock.vm_lock_seq = seq
        if lock.attached:
            check_lock_state("vma_start_write", vma=vma)
        return
    lock.excluding = True
    wait_released(others, "rcuwait_wait_event(vm_refcnt == OFFSET+1)")
    # WRITE_ONCE(vm_lock_seq) and the offset's removal are one operation:
    # no reader can take a reference in between (the offset is still set).
    visible(lock, RMW, "vm_lock_seq = mm_lock_seq; vm_refcnt -= VMA_LOCK_OFFSET")
    lock.vm_lock_seq = seq
    lock.excluding = False
    check_lock_state("vma_start_write", vma=vma)


@kfunc
def vma_try_start_write(vma: VmAreaStruct) -> bool:
    """``vma_try_start_write`` (6.4 to 6.5, khugepaged's
    ``retract_page_tables``, which holds ``i_mmap_rwsem`` and so may not wait
    for the VMA's readers): write-lock the VMA only if no reader holds it;
    False otherwise.

    One visible operation: an RMW of the lock state that reads every other
    task's reader references (the 6.4 kernel's ``down_write_trylock`` of the
    VMA's rw_semaphore fails while any reader holds it); ordered against
    each reader's increment and put. Left out: the rw_semaphore itself (the
    refcount scheme stands for it, as in :func:`vma_start_write`)."""
    mm = vma.raw("vm_mm")
    mmap_assert_write_locked(mm)
    if not per_vma_locks(mm):
        return True
    lock = vma.vm_lock
    seq = mm.mm_lock_seq.sequence
    if lock.vm_lock_seq == seq:
        return True
    ev, slots = lock.readers.look(lock, RMW, "vma_try_start_write")
    if any(s.count for s in slots):
        if ev is not None:
            ev.detail = "failed: readers"
        return False
    lock.vm_lock_seq = seq
    check_lock_state("vma_start_write", vma=vma)
    return True


@kfunc
def vma_mark_attached(vma: VmAreaStruct) -> None:
    """``vma_mark_attached``: ``vm_refcnt = 1`` (the VMA is write-locked or new)."""
    if not per_vma_locks(vma.raw("vm_mm")):
        # No VMA lock before 6.4: the count is only the model's record of
        # whether the VMA is in the tree (the rules' "detached" token), which
        # nobody else reads concurrently, so no operation.
        vma.vm_lock.attached = 1
        return
    visible(vma.vm_lock, WRITE, "refcount_set(vm_refcnt, 1)")
    vma.vm_lock.attached = 1


@kfunc
def vma_mark_detached(vma: VmAreaStruct) -> None:
    """``vma_mark_detached``: drop the attach reference; if readers still hold
    temporary references (they will fail their recheck), exclude new ones and
    wait for them to leave. Requires the VMA write lock.

    The drop and the offset's addition are one RMW (readers that took a
    reference after ``vma_start_write`` may hold one until their recheck
    fails); then one WAIT per task's reader references and one RMW that
    removes the offset. As in :func:`vma_start_write` the writer waits
    rather than reads."""
    vma_assert_write_locked(vma)
    lock = vma.vm_lock
    if not per_vma_locks(vma.raw("vm_mm")):
        lock.attached = 0  # the model's tree-membership record (see vma_mark_attached)
        return
    visible(lock, RMW, "refcount_dec_and_test(vm_refcnt); vm_refcnt += VMA_LOCK_OFFSET")
    lock.attached -= 1
    others = lock.readers.others()
    if not others:
        # No task has ever taken a reference: nothing to wait for.
        return
    lock.excluding = True
    wait_released(others, "rcuwait_wait_event(vm_refcnt == OFFSET)")
    visible(lock, RMW, "vm_refcnt -= VMA_LOCK_OFFSET")
    lock.excluding = False


def vma_is_attached(vma: VmAreaStruct) -> bool:
    """``vma_is_attached``: ``refcount_read(vm_refcnt) != 0``, one visible
    operation that reads every reader's references (an RMW of the lock
    state, so that it is also ordered against the increment of a task that
    has no slot yet)."""
    lock = vma.vm_lock
    lock.readers.look(lock, RMW, "refcount_read(vm_refcnt)")
    return bool(lock.vm_refcnt)


def _refcount_put(vma: VmAreaStruct) -> None:
    """``vma_refcount_put``: drop this task's reference, one visible write of
    its own slot (a writer waiting for it wakes on that write: its guard
    sees it, as ``rcuwait_wake_up`` makes it look)."""
    slot = vma.vm_lock.readers.current()
    visible(slot, WRITE, "vma_refcount_put")
    slot.count -= 1
    held().vma_read.pop(vma.serial, None)
    check_lock_state("vma_end_read", vma=vma)


def _describe_vma_locks(th: SimThread) -> str:
    """For deadlock reports: the VMA read locks *th* holds (sync's lock
    report does not know the per-VMA lock)."""
    table = execution_local("mm.held", dict)
    h = table.get(th.tid)
    if h is None or not h.vma_read:
        return ""
    names = ", ".join(v.name for v in h.vma_read.values())
    return f"    {th.name} holds the VMA read lock of {names} (vma_start_read)"


def _check_vma_locks_at_exit(th: SimThread) -> None:
    """A thread that returns to user space holding a VMA read lock (the
    kernel's lockdep map of the VMA lock reports it as any other lock)."""
    table = execution_local("mm.held", dict)
    h = table.get(th.tid)
    if h is None or not h.vma_read:
        return
    names = ", ".join(v.name for v in h.vma_read.values())
    raise ViolationError(
        "lock-held-at-exit",
        f"lock held when returning to user space: VMA read lock of {names} held by {th.name}",
        "WARNING: lock held when returning to user space!\n"
        f"{th.name} is leaving the kernel with the VMA read lock of {names} still held "
        "(vma_start_read without vma_end_read)",
    )


@kfunc
def vma_start_read(mm: MmStruct, vma: VmAreaStruct) -> bool:
    """``vma_start_read``: an optimistic read lock, called under RCU. Fails
    (False) if the VMA is write-locked, being write-locked, or detached.
    Before ``vma-slab-typesafe-rcu`` (6.15) it took the mm from
    ``vma->vm_mm``, read under RCU alone (VMAs were freed by RCU then)."""
    if not kernel_config(mm).has("vma-slab-typesafe-rcu"):
        mm = vma.vm_mm
    lock = vma.vm_lock
    visible(lock, READ, "READ_ONCE(vm_lock_seq)")
    lock_seq = lock.vm_lock_seq
    visible(mm.mm_lock_seq, READ, "READ_ONCE(mm_lock_seq)")
    if lock_seq == mm.mm_lock_seq.sequence:
        return False
    # refcount_inc_not_zero_limited: fails on a detached VMA (0) or one a
    # writer excludes readers from (the offset puts it over the limit); both
    # are in the lock state, which the increment reads. The reference itself
    # goes to this task's slot: other readers' increments commute with it.
    slot = lock.readers.current()
    visible(slot, WRITE, "refcount_inc_not_zero_limited(vm_refcnt)", also=((lock, READ),))
    if not lock.attached or lock.excluding:
        return False
    slot.count += 1
    h = held()
    h.vma_read[vma.serial] = vma
    add_thread_describer(_describe_vma_locks)
    add_thread_exit_check(_check_vma_locks_at_exit)
    # Recheck: a writer may have set vm_lock_seq before our reference.
    visible(mm.mm_lock_seq, READ, "raw_read_seqcount(mm_lock_seq)")
    if lock.vm_lock_seq == mm.mm_lock_seq.sequence:
        _refcount_put(vma)
        return False
    check_lock_state("vma_start_read", vma=vma)
    return True


@kfunc
def vma_end_read(vma: VmAreaStruct) -> None:
    """``vma_end_read``."""
    _assert(vma.serial in held().vma_read, f"vma_end_read: {vma.name} not read-locked",
            f"vma_end_read of {vma!r} without its read lock")
    _refcount_put(vma)


@kfunc
def lock_vma_under_rcu(mm: MmStruct, address: int) -> VmAreaStruct | None:
    """``lock_vma_under_rcu``: look *address* up under RCU, read-lock the VMA,
    recheck that it still belongs to *mm* and covers *address*. None on any
    failure: the caller falls back to ``mmap_read_lock``.

    Left out: the retry on a racing detach (the model just fails) and the
    per-VMA-lock statistics."""
    if not per_vma_locks(mm):
        return None  # no per-VMA lock before 6.4: callers fall back to the mmap lock
    rcu_read_lock()
    h = held()
    h.rcu += 1
    vma: Any = mm.mm_mt.load(address)
    mm_assert_users(mm, "lock_vma_under_rcu")
    if vma is not None and not vma_start_read(mm, vma):
        vma = None
    # The VMA may have been freed and reused (SLAB_TYPESAFE_BY_RCU) or
    # changed before we locked it: recheck under the read lock.
    if vma is not None and (vma.vm_mm is not mm
                            or not (vma.vm_start <= address < vma.vm_end)):
        vma_end_read(vma)
        vma = None
    h.rcu -= 1
    rcu_read_unlock()
    return vma  # type: ignore[no-any-return]


@kfunc
def vma_start_read_locked(vma: VmAreaStruct) -> bool:
    """``vma_start_read_locked`` (``_nested``): read-lock *vma* while holding
    the mmap lock, which excludes every VMA writer (``vma_start_write`` and
    ``vma_mark_detached`` need it for write), so no ``vm_lock_seq`` check is
    needed and only the reference count can fail: a detached VMA.

    One visible operation, as :func:`vma_start_read`'s increment: a write of
    this task's reader slot that reads the lock state (attach reference,
    writer's offset), so it commutes with other readers' references and is
    ordered against whatever changes or reads the whole count. Left out:
    ``VMA_REF_LIMIT`` (no model program holds 2**30 references) and the
    lockdep subclass of the ``_nested`` variant."""
    mmap_assert_locked(vma.raw("vm_mm"))
    lock = vma.vm_lock
    slot = lock.readers.current()
    visible(slot, WRITE, "refcount_inc_not_zero_limited(vm_refcnt)", also=((lock, READ),))
    if not lock.attached or lock.excluding:
        return False
    slot.count += 1
    held().vma_read[vma.serial] = vma
    add_thread_describer(_describe_vma_locks)
    add_thread_exit_check(_check_vma_locks_at_exit)
    check_lock_state("vma_start_read_locked", vma=vma)
    return True

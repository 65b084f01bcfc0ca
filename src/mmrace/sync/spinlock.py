"""Spinlocks (include/linux/spinlock.h) and local interrupt state.

Lock and unlock are one visible RMW each when uncontended; a contended
``spin_lock`` queues and waits (a visible WAIT) for the holder to hand the
lock over, FIFO as with queued spinlocks. Holding a spinlock raises the
task's preempt count, so sleeping under it is an ``invalid-context``
violation. Interrupt state is per task (a task with interrupts off cannot
migrate, so this is its CPU's state).

Footprints: as for the mutex (:mod:`mmrace.sync.mutex`), each operation
changes the owner or the queue of spinners, so operations on one lock
conflict and operations on different locks do not; interrupt and preempt
state are thread-local and cost nothing.

Left out: interrupt handlers themselves (so no irq-safety inversion
checks), ``raw_spinlock_t`` vs ``spinlock_t`` on PREEMPT_RT, and rwlock_t.
"""

from __future__ import annotations

from mmrace.engine import READ, RMW, WAIT, visible
from mmrace.sync import lockdep
from mmrace.sync._task import OwnedLock, TaskState, Waiter, misuse, pop_held, push_held, task


class Spinlock(OwnedLock):
    """``spinlock_t``. *name* names the instance; *key* is the lockdep class
    (defaults to *name*), e.g. ``"ptlock"``."""

    __slots__ = ()
    waiting = "spinning"


def spin_lock_init(name: str, key: str | None = None) -> Spinlock:
    """``spin_lock_init(lock)``: a new unlocked spinlock."""
    return Spinlock(name, key)


def _lock(lock: Spinlock, label: str, subclass: int) -> None:
    ts = task()
    key = lock.key if subclass == 0 else f"{lock.key}/{subclass}"
    if ts.sync.lockdep_on:
        lockdep.check_acquire(ts, lock, key, False)
    ts.atomic += 1
    ev = visible(lock, RMW, label)
    if lock.owner is None:
        lock.owner = ts
    else:
        w = Waiter(ts, True)
        lock.queue.append(w)
        if ev is not None:
            ev.detail = "queued"
        visible(lock, WAIT, label, w.is_granted)
    push_held(ts, lock, key, False, False)


def _unlock(lock: Spinlock, label: str) -> TaskState:
    ts = task()
    owner = lock.owner
    if owner is not ts:
        why = "it is not locked" if owner is None else f"it is held by {owner.name}"
        raise misuse(ts, f"{label}({lock.name}) by a task that does not hold it", why)
    visible(lock, RMW, label)
    if lock.queue:
        w = lock.queue.pop(0)
        lock.owner = w.ts
        w.granted = True
    else:
        lock.owner = None
    pop_held(ts, lock)
    ts.atomic -= 1
    return ts


def spin_lock(lock: Spinlock) -> None:
    """``spin_lock(lock)``: take *lock*, spinning (blocked) while held."""
    _lock(lock, "spin_lock", 0)


def spin_lock_nested(lock: Spinlock, subclass: int) -> None:
    """``spin_lock_nested(lock, subclass)``: :func:`spin_lock` in lockdep
    class ``key/subclass`` (e.g. :data:`SINGLE_DEPTH_NESTING` for the second
    page-table lock in mremap)."""
    _lock(lock, "spin_lock", subclass)


def spin_trylock(lock: Spinlock) -> bool:
    """``spin_trylock(lock)``: one visible RMW that never blocks; adds no
    lockdep dependency."""
    ts = task()
    ev = visible(lock, RMW, "spin_trylock")
    if lock.owner is None:
        lock.owner = ts
        ts.atomic += 1
        push_held(ts, lock, lock.key, False, True)
        return True
    if ev is not None:
        ev.detail = "failed"
    return False


def spin_unlock(lock: Spinlock) -> None:
    """``spin_unlock(lock)``: release *lock*, handing it to the first
    spinner. Unlocking a lock the task does not hold is ``lock-misuse``."""
    _unlock(lock, "spin_unlock")


def spin_lock_irq(lock: Spinlock) -> None:
    """``spin_lock_irq(lock)``: disable local interrupts, then take *lock*."""
    task().irqs_off = True
    _lock(lock, "spin_lock_irq", 0)


def spin_unlock_irq(lock: Spinlock) -> None:
    """``spin_unlock_irq(lock)``: release *lock*, then enable interrupts."""
    _unlock(lock, "spin_unlock_irq").irqs_off = False


def spin_lock_irqsave(lock: Spinlock) -> int:
    """``spin_lock_irqsave(lock, flags)``: save the interrupt state, disable
    interrupts and take *lock*; returns the saved flags."""
    ts = task()
    flags = 1 if ts.irqs_off else 0
    ts.irqs_off = True
    _lock(lock, "spin_lock_irqsave", 0)
    return flags


def spin_unlock_irqrestore(lock: Spinlock, flags: int) -> None:
    """``spin_unlock_irqrestore(lock, flags)``: release *lock* and restore
    the interrupt state saved by :func:`spin_lock_irqsave`."""
    _unlock(lock, "spin_unlock_irqrestore").irqs_off = bool(flags)


def spin_is_locked(lock: Spinlock) -> bool:
    """``spin_is_locked(lock)``: one visible read."""
    visible(lock, READ, "spin_is_locked")
    return lock.owner is not None


def local_irq_disable() -> None:
    """``local_irq_disable()`` (not a visible operation)."""
    task().irqs_off = True


def local_irq_enable() -> None:
    """``local_irq_enable()`` (not a visible operation)."""
    task().irqs_off = False


def local_irq_save() -> int:
    """``local_irq_save(flags)``: returns the saved flags."""
    ts = task()
    flags = 1 if ts.irqs_off else 0
    ts.irqs_off = True
    return flags


def local_irq_restore(flags: int) -> None:
    """``local_irq_restore(flags)``."""
    task().irqs_off = bool(flags)


def irqs_disabled() -> bool:
    """``irqs_disabled()``."""
    return task().irqs_off


def preempt_disable() -> None:
    """``preempt_disable()``: enter atomic context (sleeping is a violation)."""
    task().atomic += 1


def preempt_enable() -> None:
    """``preempt_enable()``."""
    ts = task()
    if ts.atomic <= 0:
        raise misuse(ts, "preempt_enable() without preempt_disable()")
    ts.atomic -= 1

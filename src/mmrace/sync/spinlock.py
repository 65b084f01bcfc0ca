"""Spinlocks (include/linux/spinlock.h) and local interrupt state.

``spin_lock`` is one visible acquisition (the engine's ACQUIRE), blocked
while another task holds the lock; ``spin_unlock`` is one RELEASE. Holding a
spinlock raises the task's preempt count, so sleeping under it is an
``invalid-context`` violation. Interrupt state is per task (a task with
interrupts off cannot migrate, so this is its CPU's state).

Footprints: two acquisitions of one lock race (either task could have got
it first); an acquisition comes after the release that freed the lock and
is never reversed against it. So taking a free lock and spinning until the
holder lets go are one trace: both end with the same task holding the lock
right after the release, and nothing else saw the spinning. (The lock was
modelled as a queue of spinners that the unlock handed it to; the two were
two traces, 31% of the races in the largest catalog scenario.) A queued
spinlock is FIFO, the model is not: any spinner may be next. That adds no
behaviour -- the FIFO order is the order the spinners arrived in, which
nothing else observes, so every order is some arrival order. Trylock is an
RMW (it races with acquisitions and releases), ``spin_is_locked`` a read;
operations on different locks are independent; interrupt and preempt state
are thread-local and cost nothing.

Left out: interrupt handlers themselves (so no irq-safety inversion
checks), ``raw_spinlock_t`` vs ``spinlock_t`` on PREEMPT_RT, and rwlock_t.
"""

from __future__ import annotations

from mmrace.engine import ACQUIRE, READ, RELEASE, RMW, visible
from mmrace.sync import lockdep
from mmrace.sync._task import OwnedLock, TaskState, misuse, pop_held, push_held, task


class Spinlock(OwnedLock):
    """``spinlock_t``. *name* names the instance; *key* is the lockdep class
    (defaults to *name*), e.g. ``"ptlock"``."""

    __slots__ = ()
    # Holding one raises the preempt count (the exit check tells it apart
    # from a leaked preempt_disable by this marker).
    disables_preemption = True


def spin_lock_init(name: str, key: str | None = None) -> Spinlock:
    """``spin_lock_init(lock)``: a new unlocked spinlock."""
    return Spinlock(name, key)


def _lock(lock: Spinlock, label: str, subclass: int) -> None:
    ts = task()
    key = lock.key if subclass == 0 else f"{lock.key}/{subclass}"
    if ts.sync.lockdep_on:
        lockdep.check_acquire(ts, lock, key, False)
    ts.atomic += 1
    # One ACQUIRE, blocked while another task holds the lock: spinning
    # changes nothing anyone else sees, and which spinner gets the lock next
    # is the order of their acquisitions, which DPOR explores.
    visible(lock, ACQUIRE, label, lock.is_free)
    lock.owner = ts
    push_held(ts, lock, key, False, False)


def _unlock(lock: Spinlock, label: str) -> TaskState:
    ts = task()
    owner = lock.owner
    if owner is not ts:
        why = "it is not locked" if owner is None else f"it is held by {owner.name}"
        raise misuse(ts, f"{label}({lock.name}) by a task that does not hold it", why)
    visible(lock, RELEASE, label)
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
    """``spin_unlock(lock)``: release *lock* (any spinner may take it
    next). Unlocking a lock the task does not hold is ``lock-misuse``."""
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

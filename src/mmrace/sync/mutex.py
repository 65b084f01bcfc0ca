"""Mutexes (kernel/locking/mutex.c).

``mutex_lock`` is one visible acquisition (the engine's ACQUIRE), blocked
while another task owns the mutex; ``mutex_unlock`` is one RELEASE.

Footprints: two acquisitions of one mutex race (either task could have got
it first); an acquisition comes after the release that freed it and is never
reversed against it. So the fast path (free mutex) and the slow path (sleep
until the owner unlocks, then take it) are one trace: both end with the
same task owning the mutex right after the unlock, and the sleeping itself
is seen by nobody. Which sleeper gets the mutex next is the order of their
acquisitions, which DPOR explores: the kernel's mutex is not FIFO either
(optimistic spinning, a woken waiter can lose to a newcomer). Trylock is an
RMW (it races with acquisitions and releases), ``mutex_is_locked`` a read;
operations on different mutexes are independent.

Left out: the hand-off flag (``MUTEX_FLAG_HANDOFF``), ww_mutex, and the
``mutex_lock_interruptible`` variant.
"""

from __future__ import annotations

from mmrace.engine import ACQUIRE, READ, RELEASE, RMW, visible
from mmrace.sync import lockdep
from mmrace.sync._task import (
    OwnedLock,
    might_sleep,
    misuse,
    pop_held,
    push_held,
    task,
)
from mmrace.sync.signal import EINTR, pending


class Mutex(OwnedLock):
    """``struct mutex``. *name* names the instance; *key* is the lockdep
    class (defaults to *name*)."""

    __slots__ = ()


def mutex_init(name: str, key: str | None = None) -> Mutex:
    """``mutex_init(lock)``: a new unlocked mutex."""
    return Mutex(name, key)


def _lock(m: Mutex, label: str, subclass: int, killable: bool) -> int:
    ts = task()
    might_sleep(ts, f"{label}({m.name})")
    key = m.key if subclass == 0 else f"{m.key}/{subclass}"
    if ts.sync.lockdep_on:
        lockdep.check_acquire(ts, m, key, False)
    if killable and pending(ts):
        # A fatal signal is pending: take the mutex only if it is free now
        # (one RMW, as a trylock), else give up with -EINTR rather than sleep.
        ev = visible(m, RMW, label)
        if m.owner is not None:
            if ev is not None:
                ev.detail = "interrupted"
            return -EINTR
    else:
        # One ACQUIRE, blocked while another task owns the mutex (see the
        # module docstring for why sleeping is not an event of its own).
        visible(m, ACQUIRE, label, m.is_free)
    m.owner = ts
    push_held(ts, m, key, False, False)
    return 0


def mutex_lock(m: Mutex) -> None:
    """``mutex_lock(lock)``: take *m*, sleeping while another task owns it.
    Sleeping in atomic context is an ``invalid-context`` violation."""
    _lock(m, "mutex_lock", 0, False)


def mutex_lock_nested(m: Mutex, subclass: int) -> None:
    """``mutex_lock_nested(lock, subclass)``: :func:`mutex_lock` in lockdep
    class ``key/subclass``."""
    _lock(m, "mutex_lock", subclass, False)


def mutex_lock_killable(m: Mutex) -> int:
    """``mutex_lock_killable(lock)``: returns ``-EINTR`` instead of sleeping
    when a fatal signal is pending, else 0. Left out: a signal arriving while
    asleep does not wake the task (the signal is looked at once, before the
    task would sleep)."""
    return _lock(m, "mutex_lock_killable", 0, True)


def mutex_trylock(m: Mutex) -> bool:
    """``mutex_trylock(lock)``: one visible RMW that never blocks; adds no
    lockdep dependency."""
    ts = task()
    ev = visible(m, RMW, "mutex_trylock")
    if m.owner is None:
        m.owner = ts
        push_held(ts, m, m.key, False, True)
        return True
    if ev is not None:
        ev.detail = "failed"
    return False


def mutex_unlock(m: Mutex) -> None:
    """``mutex_unlock(lock)``: release *m* (any waiter may take it next).
    Unlocking a mutex that is not locked, or that another task owns, is a
    ``lock-misuse`` violation."""
    ts = task()
    owner = m.owner
    if owner is not ts:
        why = "it is not locked" if owner is None else f"it is owned by {owner.name}"
        raise misuse(ts, f"mutex_unlock({m.name}) by a task that does not own it", why)
    visible(m, RELEASE, "mutex_unlock")
    m.owner = None
    pop_held(ts, m)


def mutex_is_locked(m: Mutex) -> bool:
    """``mutex_is_locked(lock)``: one visible read."""
    visible(m, READ, "mutex_is_locked")
    return m.owner is not None

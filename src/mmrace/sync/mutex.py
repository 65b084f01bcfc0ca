"""Mutexes (kernel/locking/mutex.c).

One visible RMW takes the mutex or queues the task; a queued task waits (a
visible WAIT) until ``mutex_unlock`` hands the mutex to it, first come first
served. Uncontended lock and unlock cost one visible operation each.

Footprints: every operation on a mutex changes its owner or its queue, and
the next operation's outcome depends on that (who gets it, whether it
queues), so any two operations on one mutex conflict; operations on
different mutexes are independent. Two tasks taking one mutex are four
traces -- either first, the second finding it free or queued and handed
it -- which are four different paths through ``mutex_lock`` (fast path,
``__mutex_lock_slowpath`` with hand-off). A queued waiter's WAIT happens
after the unlock that granted it and commutes with everything later.

Left out: optimistic spinning, lock stealing by a newcomer before the woken
waiter runs (the model always hands off), ww_mutex, and the
``mutex_lock_interruptible`` variant.
"""

from __future__ import annotations

from mmrace.engine import READ, RMW, WAIT, visible
from mmrace.sync import lockdep
from mmrace.sync._task import (
    OwnedLock,
    Waiter,
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
    ev = visible(m, RMW, label)
    if m.owner is None:
        m.owner = ts
    else:
        w = Waiter(ts, True)
        m.queue.append(w)
        if ev is not None:
            ev.detail = "queued"
        if killable and pending(ts):
            visible(m, RMW, label + " (interrupted)")
            if not w.granted:
                m.queue.remove(w)
                return -EINTR
        else:
            visible(m, WAIT, label, w.is_granted)
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
    asleep does not wake the task."""
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
    """``mutex_unlock(lock)``: release *m*, handing it to the first waiter.
    Unlocking a mutex that is not locked, or that another task owns, is a
    ``lock-misuse`` violation."""
    ts = task()
    owner = m.owner
    if owner is not ts:
        why = "it is not locked" if owner is None else f"it is owned by {owner.name}"
        raise misuse(ts, f"mutex_unlock({m.name}) by a task that does not own it", why)
    visible(m, RMW, "mutex_unlock")
    if m.queue:
        w = m.queue.pop(0)
        m.owner = w.ts
        w.granted = True
    else:
        m.owner = None
    pop_held(ts, m)


def mutex_is_locked(m: Mutex) -> bool:
    """``mutex_is_locked(lock)``: one visible read."""
    visible(m, READ, "mutex_is_locked")
    return m.owner is not None

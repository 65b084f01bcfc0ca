"""Mutexes, spinlocks, and sleeping in atomic context."""

from __future__ import annotations

from collections.abc import Callable

from mmrace.engine import Var, explore, require, spawn
from mmrace.sync import (
    Mutex,
    RwSemaphore,
    Spinlock,
    debug_locks_off,
    down_read,
    mutex_lock,
    mutex_trylock,
    mutex_unlock,
    rcu_read_lock,
    rcu_read_unlock,
    spin_lock,
    spin_lock_irq,
    spin_lock_irqsave,
    spin_trylock,
    spin_unlock,
    spin_unlock_irq,
    spin_unlock_irqrestore,
    synchronize_rcu,
)


def test_mutual_exclusion() -> None:
    def program() -> Callable[[], None]:
        m = Mutex("m")
        s = Spinlock("s")
        x = Var(0, "x")
        y = Var(0, "y")

        def t() -> None:
            mutex_lock(m)
            x.store(x.load() + 1)
            mutex_unlock(m)
            flags = spin_lock_irqsave(s)
            y.store(y.load() + 1)
            spin_unlock_irqrestore(s, flags)

        spawn(t, name="T1")
        spawn(t, name="T2")

        def check() -> None:
            require(x.value == 2 and y.value == 2, "lost update under a lock")

        return check

    r = explore(program, "dpor")
    assert r.outcome == "clean" and r.complete


def test_trylocks_never_block() -> None:
    def program() -> None:
        m = Mutex("m")
        s = Spinlock("s")

        def holder() -> None:
            mutex_lock(m)
            spin_lock(s)
            spin_unlock(s)
            mutex_unlock(m)

        def trier() -> None:
            if mutex_trylock(m):
                mutex_unlock(m)
            if spin_trylock(s):
                spin_unlock(s)

        spawn(holder, name="H")
        spawn(trier, name="T")

    r = explore(program, "dpor")
    assert r.outcome == "clean" and r.complete


def _sleep_in_atomic(how: str) -> Callable[[], None]:
    def program() -> None:
        s = Spinlock("ptlock")
        m = Mutex("m")
        sem = RwSemaphore("&mm->mmap_lock")

        def t() -> None:
            if how == "spinlock":
                spin_lock(s)
                mutex_lock(m)
            elif how == "irq":
                spin_lock_irq(s)
                spin_unlock(s)  # interrupts stay disabled
                down_read(sem)
            elif how == "rcu":
                rcu_read_lock()
                synchronize_rcu()
            else:  # fine: sleeping after everything is released
                spin_lock_irq(s)
                spin_unlock_irq(s)
                rcu_read_lock()
                rcu_read_unlock()
                mutex_lock(m)
                mutex_unlock(m)

        spawn(t, name="T1")

    return program


def test_sleeping_in_atomic_context() -> None:
    for how in ("spinlock", "irq", "rcu"):
        r = explore(_sleep_in_atomic(how), "dpor")
        v = r.violation
        assert v is not None and v.kind == "invalid-context", how
        assert v.title == "BUG: sleeping function called from invalid context"
    v = explore(_sleep_in_atomic("spinlock"), "dpor").violation
    assert v is not None and "1 lock held by T1:" in v.message and "ptlock" in v.message
    assert explore(_sleep_in_atomic("ok"), "dpor").outcome == "clean"


def test_bad_unlocks() -> None:
    def others_mutex() -> None:
        # The owner leaks its mutex on purpose: lockdep off, so that the
        # thief's unlock is the report (not the lock held at exit).
        debug_locks_off()
        m = Mutex("m")
        done = Var(0, "done")

        def owner() -> None:
            mutex_lock(m)
            done.store(1)

        def thief() -> None:
            if done.load():
                mutex_unlock(m)

        spawn(owner, name="T1")
        spawn(thief, name="T2")

    def double() -> None:
        m = Mutex("m")

        def t() -> None:
            mutex_lock(m)
            mutex_unlock(m)
            mutex_unlock(m)

        spawn(t, name="T1")

    def spin_not_held() -> None:
        s = Spinlock("s")
        spawn(lambda: spin_unlock(s), name="T1")

    for prog in (others_mutex, double, spin_not_held):
        r = explore(prog, "dpor")
        assert r.violation is not None and r.violation.kind == "lock-misuse", prog
    v = explore(others_mutex, "dpor").violation
    assert v is not None and "owned by T1" in v.message

"""Lockdep: ABBA inversions, trylocks, nesting, assertions, deadlock detail."""

from __future__ import annotations

from collections.abc import Callable

from mmrace.engine import explore, spawn
from mmrace.sync import (
    SINGLE_DEPTH_NESTING,
    Mutex,
    RwSemaphore,
    Spinlock,
    complete,
    debug_locks_off,
    down_read,
    down_write,
    down_write_nested,
    init_completion,
    lockdep_assert_held,
    lockdep_assert_held_read,
    lockdep_assert_held_write,
    lockdep_assert_not_held,
    mutex_lock,
    mutex_trylock,
    mutex_unlock,
    spin_lock,
    spin_lock_nested,
    spin_unlock,
    up_read,
    up_write,
    wait_for_completion,
)


def _abba(lockdep: bool, trylock: bool = False) -> Callable[[], None]:
    """T1 takes A then B; T2, strictly after T1 finished (a completion
    orders them), takes B then A. No execution can deadlock."""

    def program() -> None:
        a = Mutex("A")
        b = Mutex("B")
        done = init_completion("done")
        if not lockdep:
            debug_locks_off()

        def t1() -> None:
            mutex_lock(a)
            mutex_lock(b)
            mutex_unlock(b)
            mutex_unlock(a)
            complete(done)

        def t2() -> None:
            wait_for_completion(done)
            mutex_lock(b)
            if trylock:
                if mutex_trylock(a):
                    mutex_unlock(a)
            else:
                mutex_lock(a)
                mutex_unlock(a)
            mutex_unlock(b)

        spawn(t1, name="T1")
        spawn(t2, name="T2")

    return program


def test_abba_reported_without_deadlock() -> None:
    assert explore(_abba(lockdep=False), "dpor").outcome == "clean"
    r = explore(_abba(lockdep=True), "dpor")
    assert r.outcome == "violation" and r.executions == 1
    v = r.violation
    assert v is not None and v.kind == "lock-order"
    assert v.title == "possible circular locking dependency detected: B -> A"
    for text in (
        "WARNING: possible circular locking dependency detected",
        "T2 is trying to acquire lock:",
        "the existing dependency chain (in reverse order) is:",
        "-> #1 (B):",
        "T1: lock B",
        "while holding A",
        "Possible unsafe locking scenario:",
        "*** DEADLOCK ***",
    ):
        assert text in v.message, text


def test_abba_real_deadlock_found_by_engine_with_held_locks() -> None:
    def program() -> None:
        a = Mutex("A")
        b = Mutex("B")
        debug_locks_off()

        def t(x: Mutex, y: Mutex) -> None:
            mutex_lock(x)
            mutex_lock(y)
            mutex_unlock(y)
            mutex_unlock(x)

        spawn(t, a, b, name="T1")
        spawn(t, b, a, name="T2")

    r = explore(program, "dpor")
    assert r.violation is not None and r.violation.kind == "deadlock"
    assert "held by T1: A" in r.violation.message
    assert "held by T2: B" in r.violation.message


def test_trylock_adds_no_dependency() -> None:
    r = explore(_abba(lockdep=True, trylock=True), "dpor")
    assert r.outcome == "clean" and r.complete


def test_three_lock_cycle_chain() -> None:
    def program() -> None:
        a, b, c = Mutex("A"), Mutex("B"), Mutex("C")

        def t(x: Mutex, y: Mutex) -> None:
            mutex_lock(x)
            mutex_lock(y)
            mutex_unlock(y)
            mutex_unlock(x)

        def seq() -> None:
            t(a, b)
            t(b, c)
            t(c, a)

        spawn(seq, name="T1")

    r = explore(program, "dpor")
    assert r.violation is not None and r.violation.kind == "lock-order"
    assert "Chain exists of:" in r.violation.message


def test_write_read_edges_count() -> None:
    """A read acquisition inverted against a write one is still a cycle."""

    def program() -> None:
        x = RwSemaphore("X")
        y = RwSemaphore("Y")

        def t1() -> None:
            down_read(x)
            down_write(y)
            up_write(y)
            up_read(x)

        def t2() -> None:
            down_write(y)
            down_read(x)
            up_read(x)
            up_write(y)

        spawn(t1, name="T1")
        spawn(t2, name="T2")

    r = explore(program, "dpor")
    assert r.violation is not None and r.violation.kind == "lock-order"


def test_nested_annotation() -> None:
    def program(nested: bool) -> Callable[[], None]:
        def prog() -> None:
            p1 = Spinlock("ptl#1", "ptlock")
            p2 = Spinlock("ptl#2", "ptlock")
            s1 = RwSemaphore("anon_vma#1", "&anon_vma->rwsem")
            s2 = RwSemaphore("anon_vma#2", "&anon_vma->rwsem")

            def t() -> None:
                spin_lock(p1)
                if nested:
                    spin_lock_nested(p2, SINGLE_DEPTH_NESTING)
                else:
                    spin_lock(p2)
                spin_unlock(p2)
                spin_unlock(p1)
                down_write(s1)
                down_write_nested(s2, SINGLE_DEPTH_NESTING)
                up_write(s2)
                up_write(s1)

            spawn(t, name="T1")

        return prog

    assert explore(program(True), "dpor").outcome == "clean"
    r = explore(program(False), "dpor")
    assert r.violation is not None and r.violation.kind == "lock-order"
    assert r.violation.title == "possible recursive locking detected: ptlock"


def test_assertions() -> None:
    def good() -> None:
        sem = RwSemaphore("sem")
        m = Mutex("m")

        def t() -> None:
            lockdep_assert_not_held(sem)
            down_read(sem)
            lockdep_assert_held(sem)
            lockdep_assert_held_read(sem)
            up_read(sem)
            mutex_lock(m)
            lockdep_assert_held_write(m)
            mutex_unlock(m)

        spawn(t, name="T1")

    assert explore(good, "dpor").outcome == "clean"

    def bad() -> None:
        sem = RwSemaphore("&mm->mmap_lock")
        m = Mutex("m")

        def t() -> None:
            mutex_lock(m)
            down_read(sem)
            lockdep_assert_held_write(sem)

        spawn(t, name="T1")

    r = explore(bad, "dpor")
    assert r.violation is not None and r.violation.kind == "lock-misuse"
    assert r.violation.title == "lockdep_assert_held_write(&mm->mmap_lock) failed"
    assert "2 locks held by T1:" in r.violation.message
    assert "&mm->mmap_lock (read)" in r.violation.message


def test_setup_context_locks() -> None:
    def program() -> None:
        sem = RwSemaphore("sem")
        down_write(sem)
        lockdep_assert_held_write(sem)
        up_write(sem)

        def t() -> None:
            down_read(sem)
            up_read(sem)

        spawn(t, name="T1")

    assert explore(program, "dpor").outcome == "clean"

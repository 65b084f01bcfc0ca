"""A task that returns to user space holding a lock, inside an RCU read
section, or with preemption or interrupts disabled is a violation
(lockdep's "lock held when returning to user space"), not clean."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mmrace.engine import explore, spawn
from mmrace.mm.mmap_lock import lock_vma_under_rcu
from mmrace.sync import (
    debug_locks_off,
    down_read,
    down_write,
    init_rwsem,
    local_irq_disable,
    mutex_init,
    mutex_lock,
    preempt_disable,
    rcu_read_lock,
    spin_lock,
    spin_lock_init,
)
from mmrace.user import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, System


def _holding(take: Callable[[object], None], make: Callable[[str], object],
             name: str) -> Callable[[], Callable[[], None]]:
    """A factory (called in set-up) of a thread body that takes a new lock."""

    def factory() -> Callable[[], None]:
        lock = make(name)
        return lambda: take(lock)

    return factory


LEAKS: dict[str, tuple[Callable[[], Callable[[], None]], str]] = {
    "spinlock": (_holding(spin_lock, spin_lock_init, "ptl"), "ptl"),  # type: ignore[arg-type]
    "mutex": (_holding(mutex_lock, mutex_init, "m"), "m"),  # type: ignore[arg-type]
    "rwsem read": (_holding(down_read, init_rwsem, "sem"), "sem"),  # type: ignore[arg-type]
    "rwsem write": (_holding(down_write, init_rwsem, "sem"), "sem"),  # type: ignore[arg-type]
    "rcu": (lambda: rcu_read_lock, "rcu_read_lock"),
    "preempt": (lambda: preempt_disable, "preempt_count"),
    "irqs": (lambda: local_irq_disable, "interrupts"),
}


@pytest.mark.parametrize("what", list(LEAKS))
def test_thread_exit_holding_it_is_a_violation(what: str) -> None:
    make, name = LEAKS[what]

    def program() -> None:
        spawn(make(), name="T1")

    r = explore(program, "dpor")
    v = r.violation
    assert v is not None and v.kind == "lock-held-at-exit", v
    assert v.thread == "T1"
    assert "WARNING: lock held when returning to user space!" in v.message
    assert name in v.message


def test_debug_locks_off_silences_the_lock_part_only() -> None:
    def program(body: Callable[[], None]) -> Callable[[], None]:
        def prog() -> None:
            debug_locks_off()
            spawn(body, name="T1")

        return prog

    m = LEAKS["mutex"][0]
    assert explore(program(lambda: m()()), "dpor").outcome == "clean"
    v = explore(program(preempt_disable), "dpor").violation
    assert v is not None and v.kind == "lock-held-at-exit"


def test_set_up_may_leave_locks_held() -> None:
    """Set-up code is the world before the threads run, not a task that
    returns to user space: it may hand the threads a held lock."""

    def program() -> None:
        m = mutex_init("m")
        mutex_lock(m)

    assert explore(program, "dpor").outcome == "clean"


def test_vma_read_lock_held_at_exit() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
        spawn(lambda: lock_vma_under_rcu(p.mm, a), name="T1")

    v = explore(program, "dpor").violation
    assert v is not None and v.kind == "lock-held-at-exit"
    assert "VMA read lock of vma1" in v.title

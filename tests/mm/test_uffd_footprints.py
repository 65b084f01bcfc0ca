"""Footprints of userfaultfd's lock steps on the per-task reader slots:
``vma_start_read_locked`` (``uffd_lock_vma``'s and ``uffd_move_lock``'s
fallback under the mmap lock) and 6.9's ``map_changing_lock`` read side
commute between tasks, and a VMA read lock left held is reported."""

from __future__ import annotations

from typing import Any

from mmkit import ANON, RW

from mmrace.engine import explore, spawn
from mmrace.mm.mmap_lock import (
    mmap_read_lock,
    mmap_read_unlock,
    vma_end_read,
    vma_start_read_locked,
)
from mmrace.mm.userfaultfd_k import mmap_changing_inc, mmap_changing_read
from mmrace.user import PAGE_SIZE, UFFDIO_REGISTER_MODE_WP, System, Thread, vma_find


def test_two_tasks_read_locking_one_vma_under_the_mmap_lock_are_one_trace() -> None:
    """Each ``vma_start_read_locked`` writes its own task's reader slot (and
    reads the lock state, which no reader writes): two tasks' references
    commute, as do their ``mmap_read_lock``s."""

    def program() -> None:
        p = System(cpus=2).process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        mm = p.mm

        def reader() -> None:
            mmap_read_lock(mm)
            vma = vma_find(mm, a)
            assert vma_start_read_locked(vma)
            mmap_read_unlock(mm)
            assert vma.vm_lock.vm_refcnt >= 2  # attached + our reference
            vma_end_read(vma)

        spawn(reader, name="R0")
        spawn(reader, name="R1")

    r = explore(program, "dpor")
    assert r.outcome == "clean" and r.complete
    assert r.executions == 1 and r.blocked == 0


def test_a_vma_read_lock_taken_under_the_mmap_lock_must_be_released() -> None:
    def program() -> None:
        p = System(cpus=2).process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        mm = p.mm

        def leaker() -> None:
            mmap_read_lock(mm)
            vma_start_read_locked(vma_find(mm, a))
            mmap_read_unlock(mm)

        spawn(leaker, name="leaker")

    r = explore(program, "dpor")
    assert r.violation is not None and r.violation.kind == "lock-held-at-exit"
    assert "VMA read lock" in r.violation.message


def _two_writeprotects(release: str | None, without: tuple[str, ...]) -> Any:
    """Two threads of one process write-protect a page each, in two
    mappings registered with one userfaultfd."""

    def program() -> None:
        p = System(cpus=2, kernel=release, without=without).process()
        uffd = p.userfaultfd()
        addrs = []
        for _ in range(2):
            a = p.mmap(0, PAGE_SIZE, RW, ANON)
            p.poke(a, 1)
            uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_WP)
            addrs.append(a)
        for i, a in enumerate(addrs):
            def protect(t: Thread, a: int = a) -> None:
                uffd.writeprotect(a, PAGE_SIZE, True)
            p.thread(protect, cpu=i)

    return program


def test_map_changing_lock_readers_commute() -> None:
    """6.9 added ``down_read(map_changing_lock)`` to ``UFFDIO_WRITEPROTECT``:
    two tasks' read sides commute, so the lock adds no execution (before
    the reader slots, two write-protecting threads explored 20,788 instead
    of 14,715 executions of ``uffd-wp-protect-unprotect``)."""
    with_lock = explore(_two_writeprotects(None, ()), "dpor")
    without = explore(_two_writeprotects(None, ("uffd-map-changing-lock",)), "dpor")
    for r in (with_lock, without):
        assert r.outcome == "clean" and r.complete
    assert with_lock.executions == without.executions
    assert with_lock.steps > without.steps  # the lock's operations are there


def _two_raisers(kernel: str) -> tuple[int, set[bool]]:
    """Two events raise ``mmap_changing`` (the bare raise, no
    ``map_changing_lock``) while a third task reads it: executions, and
    whether the reader saw it raised."""
    seen: set[bool] = set()

    def program() -> None:
        p = System(cpus=3, kernel=kernel).process()
        ctx = p.userfaultfd().ctx

        def raiser() -> None:
            mmap_changing_inc(ctx, write_lock=False)

        def reader() -> None:
            seen.add(mmap_changing_read(ctx))

        spawn(raiser, name="R0")
        spawn(raiser, name="R1")
        spawn(reader, name="check")

    r = explore(program, "dpor")
    assert r.outcome == "clean" and r.complete and r.blocked == 0
    return r.executions, seen


def test_mmap_changing_raises_commute_from_5_15() -> None:
    """From 5.15 ``mmap_changing`` is an ``atomic_t``: two raisers'
    ``atomic_inc`` commute (per-CPU slots) and the reader's
    ``atomic_read`` orders against each (before or after either raise): 4
    traces. The bool of 4.18-5.14 is written twice (``WRITE_ONCE``), so
    the two stores race as well: 6 traces, the same two answers."""
    assert _two_raisers("5.15") == (4, {False, True})
    assert _two_raisers("5.14") == (6, {False, True})

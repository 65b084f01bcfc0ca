"""Footprints of the mm model's own lock wrappers and paths: traces of small
canonical programs under ``dpor``."""

from __future__ import annotations

import pytest
from mmkit import ANON, RW, two_page_race

from mmrace.engine import explore, spawn
from mmrace.mm.mmap_lock import (
    lock_vma_under_rcu,
    mmap_write_lock,
    mmap_write_unlock,
    vma_end_read,
    vma_try_start_write,
)
from mmrace.user import PAGE_SIZE, System, vma_find


@pytest.mark.parametrize("op", ["munmap", "dontneed", "mprotect"])
def test_one_syscall_alone_is_one_trace(op: str) -> None:
    """munmap used to be 189 traces on its own: its RCU callbacks were
    batched by a grace-period thread in every possible way."""
    r = explore(two_page_race(op, store=False), "dpor")
    assert r.outcome == "clean" and r.complete
    assert r.executions == 1 and r.blocked == 0


# Executions today (the issue measured more than 83,496 for munmap before
# the RCU, rwsem and vm_refcnt footprints): 104, 11, 21. The bounds leave
# room for model changes, not for a footprint that stops commuting.
@pytest.mark.parametrize(("op", "most"), [("munmap", 150), ("dontneed", 20), ("mprotect", 30)])
def test_store_racing_a_syscall_completes(op: str, most: int) -> None:
    r = explore(two_page_race(op, store=True), "dpor", max_executions=most + 1)
    assert r.violation is None, r.violation.message if r.violation else ""
    assert r.complete and r.executions <= most


def test_two_faults_read_locking_one_vma_are_one_trace() -> None:
    """vm_refcnt references of two readers commute (per-task slots)."""

    def program() -> None:
        p = System(cpus=2).process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)

        def reader() -> None:
            vma = lock_vma_under_rcu(p.mm, a)
            assert vma is not None
            vma_end_read(vma)

        spawn(reader, name="R0")
        spawn(reader, name="R1")

    r = explore(program, "dpor")
    assert r.outcome == "clean" and r.complete
    assert r.executions == 1 and r.blocked == 0


def test_vma_try_start_write_sees_each_reader_either_way() -> None:
    """``vma_try_start_write`` (khugepaged, 6.4-6.5) reads every task's
    reader references in one operation: a fault that holds the VMA read
    lock makes it fail, one before its increment or after its put does
    not; both are explored, and little else."""
    seen: list[bool] = []

    def program() -> None:
        p = System(cpus=2).process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        mm = p.mm

        def reader() -> None:
            vma = lock_vma_under_rcu(mm, a)
            if vma is not None:
                vma_end_read(vma)

        def writer() -> None:
            mmap_write_lock(mm)
            seen.append(vma_try_start_write(vma_find(mm, a)))
            mmap_write_unlock(mm)

        spawn(reader, name="R")
        spawn(writer, name="W")

    r = explore(program, "dpor")
    assert r.outcome == "clean" and r.complete
    assert set(seen) == {True, False}
    assert r.executions <= 20, r.executions  # 15 today

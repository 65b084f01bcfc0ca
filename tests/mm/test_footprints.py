"""Footprints of the mm model's own lock wrappers and paths: traces of small
canonical programs under ``dpor``."""

from __future__ import annotations

from typing import Any

import pytest
from mmkit import ANON, RW, two_page_race

from mmrace.engine import explore, spawn
from mmrace.mm.mm_types import (
    dec_tlb_flush_pending,
    inc_tlb_flush_pending,
    mm_tlb_flush_pending,
)
from mmrace.mm.mmap_lock import (
    lock_vma_under_rcu,
    mmap_write_lock,
    mmap_write_unlock,
    vma_end_read,
    vma_try_start_write,
)
from mmrace.mm.page_alloc import copy_user_highpage, folio_alloc, folio_write_word
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


def _page_copies(stores: int) -> tuple[int, set[tuple[int, ...]]]:
    """Two CPUs copy one page (``copy_user_highpage``, as two COW faults
    do) while *stores* other CPUs each store to a word of it: the
    executions, and what the copies saw."""
    seen: set[tuple[int, ...]] = set()

    def program() -> object:
        System(cpus=2 + stores)
        src = folio_alloc(0, name="src")
        copies = [folio_alloc(0, name=f"copy{i}") for i in range(2)]
        for i, dst in enumerate(copies):
            spawn(copy_user_highpage, dst, 0, src, 0, name=f"copier{i}")
        for i in range(stores):
            spawn(folio_write_word, src, 0, i, 10 + i, name=f"store{i}")

        def final() -> None:
            seen.add(tuple(dst.contents.get(0, w) for dst in copies for w in range(stores)))

        return final

    r = explore(program, "dpor")
    assert r.outcome == "clean" and r.complete and r.blocked == 0
    return r.executions, seen


def test_page_reads_commute_and_order_against_stores() -> None:
    """Two whole-page reads of one page commute (they used to be two
    writes of its store summary: two COW faults copying one page ran in
    both orders); each still orders against every store, also one by a CPU
    that had not stored before the read, so no outcome is lost."""
    assert _page_copies(0) == (1, {()})
    # one store: each copy before or after it
    executions, seen = _page_copies(1)
    assert executions == 4 and seen == {(a, b) for a in (0, 10) for b in (0, 10)}
    # two stores to different words commute with each other, not with a
    # copy: every view two copies can have of them in one order of events
    # (16 pairs of subsets, less the two where each copy saw only the
    # store the other missed), once each
    executions, seen = _page_copies(2)
    assert executions == 14 and len(seen) == 14


def _deferred_flushes(readers: int) -> Any:
    """Two CPUs each bracket a deferred flush (``inc_tlb_flush_pending``,
    ``dec_tlb_flush_pending``); *readers* more CPUs look at the count
    (``mm_tlb_flush_pending``) once and record what they saw."""
    seen: set[bool] = set()

    def program() -> None:
        mm = System(cpus=2 + readers).process().mm

        def flusher() -> None:
            inc_tlb_flush_pending(mm)
            dec_tlb_flush_pending(mm)

        def reader() -> None:
            seen.add(mm_tlb_flush_pending(mm))

        spawn(flusher, name="F0")
        spawn(flusher, name="F1")
        for i in range(readers):
            spawn(reader, name=f"R{i}")

    return program, seen


def test_deferred_flushes_of_two_cpus_commute() -> None:
    """``tlb_flush_pending`` is an ``atomic_t``: the two CPUs' increments
    and decrements commute (one trace; as read-modify-writes of one
    counter they were 6), and a reader orders against each of them: 3
    places among each CPU's pair, 9 traces (30 before)."""
    alone, _ = _deferred_flushes(0)
    r = explore(alone, "dpor")
    assert r.outcome == "clean" and r.complete
    assert r.executions == 1 and r.blocked == 0

    watched, seen = _deferred_flushes(1)
    r = explore(watched, "dpor")
    assert r.outcome == "clean" and r.complete
    assert r.executions == 9 and r.blocked == 0
    assert seen == {False, True}

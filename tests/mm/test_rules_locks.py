"""The lock order, the lock-state table and the mmap lock's R/D/W table as
checks: lockdep reports an acquisition against the documented order at
once, naming both levels; every lock transition is checked against the
lock-state table; every mmap lock acquisition against the R/D/W table."""

from __future__ import annotations

from typing import Any

from rules_witness import (
    P,
    Witness,
    order_anon_vma_then_mmap,
    order_ptl_then_vma_write,
    vma_read_then_rmap,
)

from mmrace.engine import Var, explore, spawn
from mmrace.mm.internal import held
from mmrace.mm.memory import vm_normal_page
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.mm.page_alloc import folio_lock
from mmrace.mm.pgtable import pte_offset_map_lock, walk_to_pmd
from mmrace.mm.rules import LOCK_ORDER, LOCK_ORDER_EDGES, lock_order_closure
from mmrace.mm.rules_check import MmLockOrder
from mmrace.user import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, System, vma_find


def test_documented_order_is_a_partial_order() -> None:
    order = MmLockOrder({})
    names = {lv.name for lv in LOCK_ORDER}
    for a in names:
        assert not order.must_precede(a, a), a
        for b in names:
            assert not (order.must_precede(a, b) and order.must_precede(b, a)), (a, b)
    assert order.must_precede("mm->mmap_lock", "mm->page_table_lock or pte_lock")
    assert order.must_precede("vma_start_write", "anon_vma->rwsem")
    assert not order.must_precede("anon_vma->rwsem", "mm->mmap_lock")
    _before, contradictions = lock_order_closure()
    assert contradictions == [("mapping->private_lock", "swap_lock")]
    for a, b, _ in LOCK_ORDER_EDGES:
        assert order.must_precede(a, b) != ((a, b) in contradictions)


def test_against_the_order_before_a_cycle_closes() -> None:
    """One task, one execution: no cycle in lockdep's graph yet, still reported."""
    r = Witness("order", None, order_anon_vma_then_mmap).run()
    assert r.violation is not None and r.violation.kind == "lock-order"
    assert "mm->mmap_lock" in r.violation.title and "anon_vma->rwsem" in r.violation.title
    assert "documented lock order" in r.violation.message


def test_vma_write_lock_has_its_place_in_the_order() -> None:
    r = Witness("order", None, order_ptl_then_vma_write).run()
    assert r.violation is not None and r.violation.kind == "lock-order"
    assert "vma_start_write" in r.violation.title
    assert "mm->page_table_lock or pte_lock" in r.violation.title


def test_folio_lock_under_a_page_table_lock_is_against_the_order() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, 2 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        p.poke(a, 1)
        mm = p.mm

        def body() -> None:
            mmap_read_lock(mm)
            found = walk_to_pmd(mm, a)
            assert found is not None
            pm = pte_offset_map_lock(mm, found[0], found[1], a)
            assert pm is not None
            folio = vm_normal_page(vma_find(mm, a), a, pm.table.entries[pm.index])
            folio_lock(folio)
        spawn(body, name="T")

    r = explore(program, max_executions=1)
    assert r.violation is not None and r.violation.kind == "lock-order"
    assert "folio_lock" in r.violation.title


def test_an_unlisted_lock_state_is_reported() -> None:
    r = Witness("state", None, vma_read_then_rmap).run()
    assert r.violation is not None and r.violation.kind == "locking-rule"
    assert "lock state -/R/R" in r.violation.title


def test_mmap_lock_modes_are_checked_against_the_table() -> None:
    """A record claiming another task holds the mmap lock for write while
    this one takes it for read breaks the R/D/W table (the rwsem itself
    never lets that happen: this is the check, not the lock)."""
    def program() -> None:
        p = System().process()
        mm = p.mm

        met = Var(0, "met")

        def liar() -> None:
            h = held()
            h.mmap[mm.serial] = "W"  # pretend
            h.names[mm.serial] = mm.mmap_lock.name
            # An operation the reader's conflicts with, so that it can run
            # meanwhile (two down_reads commute: they would not order it).
            met.store(1)
            mmap_read_lock(mm)
            mmap_read_unlock(mm)

        def reader() -> None:
            met.load()
            mmap_read_lock(mm)
            mmap_read_unlock(mm)
        spawn(liar, name="liar")
        spawn(reader, name="reader")

    r = explore(program, max_executions=5)
    assert r.violation is not None and r.violation.kind == "locking-rule"
    assert "mmap lock held" in r.violation.title


def _count(program: Any) -> int:
    r = explore(program, max_executions=10_000)
    assert r.violation is None, r.violation.message if r.violation else ""
    assert r.complete
    return r.executions


def test_read_checks_add_no_interleavings() -> None:
    """A field read under a lock that excludes every allowed writer is no
    visible operation: two faults on different VMAs are explored exactly as
    without the reads (the count pins the state of the footprints)."""
    def program() -> None:
        p = System().process()
        a = p.mmap(0, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        b = p.mmap(0, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        mm = p.mm

        def reader(addr: int) -> None:
            mmap_read_lock(mm)
            vma = vma_find(mm, addr)
            for _ in range(5):
                vma.vm_flags  # noqa: B018
                vma.vm_start  # noqa: B018
            mmap_read_unlock(mm)
        spawn(reader, a, name="A")
        spawn(reader, b, name="B")

    assert _count(program) <= 2

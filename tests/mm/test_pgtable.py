"""Page-table layout, the pte_offset_map_lock retry, and the page-table rules."""

from __future__ import annotations

from typing import Any

import pytest
from mmkit import ANON, RW, run1

from mmrace.engine import explore, spawn
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.mm.pgtable import (
    _PAGE_TABLE,
    LEVEL_PTE,
    pfn_pte,
    pgd_index,
    pmd_index,
    pmd_lock,
    pte_alloc_one,
    pte_index,
    pte_offset_map_lock,
    pte_unmap_unlock,
    ptl_lock,
    ptl_unlock,
    pud_index,
    set_pmd_at,
    set_pte_at,
    walk_to_pmd,
)
from mmrace.mm.rmap import i_mmap_lock_read, i_mmap_unlock_read
from mmrace.user import MAP_SHARED, PAGE_SIZE, System


def test_x86_64_index_arithmetic() -> None:
    addr = (3 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0x123
    assert (pgd_index(addr), pud_index(addr), pmd_index(addr), pte_index(addr)) == (3, 5, 7, 9)


def test_pte_offset_map_lock_retries_when_the_pmd_changes() -> None:
    """A collapse-like writer replaces the PTE table under the PMD and PTE
    locks; the reader that mapped the old table must notice the change under
    its PTE lock and retry onto the new table."""
    saw: list[bool] = []

    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        mm = p.mm
        found = walk_to_pmd(mm, a)
        assert found is not None
        pmd, mi = found

        def reader() -> None:
            mmap_read_lock(mm)
            pm = pte_offset_map_lock(mm, pmd, mi, a)
            assert pm is not None
            saw.append(bool(pm.table.entries))  # old table: has the entry
            pte_unmap_unlock(pm)
            mmap_read_unlock(mm)

        def replacer() -> None:
            mmap_read_lock(mm)
            new = pte_alloc_one(mm, LEVEL_PTE, pmd.addr_of(mi))
            ptl = pmd_lock(mm, pmd)
            old = pte_offset_map_lock(mm, pmd, mi, a)  # the PTE lock too
            assert old is not None
            new.installed = True
            set_pmd_at(mm, a, pmd, mi, pfn_pte(new.pfn, _PAGE_TABLE))
            pte_unmap_unlock(old)
            ptl_unlock(ptl)
            mmap_read_unlock(mm)

        spawn(reader, name="reader")
        spawn(replacer, name="replacer")

    r = explore(program, max_executions=500)
    assert r.violation is None, r.violation and r.violation.message
    assert set(saw) == {True, False}  # old table before, new table after (retried)
    assert r.complete


def _breach_program(hold: str) -> Any:
    def program() -> None:
        s = System()
        p = s.process()
        fd = s.open_file("f", PAGE_SIZE)
        a = p.mmap(0, 2 * PAGE_SIZE, RW, MAP_SHARED, fd)
        p.poke(a, 1)  # tables exist
        mm = p.mm
        pmd, mi = walk_to_pmd(mm, a)  # type: ignore[misc]

        def writer() -> None:
            if hold == "nothing":
                pm = pte_offset_map_lock(mm, pmd, mi, a)
                assert pm is not None
                table, idx = pm.table, pm.index + 1
                pte_unmap_unlock(pm)
                set_pte_at(mm, a + PAGE_SIZE, table, idx, pfn_pte(0x4242, 0x7))
            else:  # the PTL and i_mmap_rwsem only: an rmap lock alone may not fill
                mapping = p.fds[fd].f_mapping
                i_mmap_lock_read(mapping)
                pm = pte_offset_map_lock(mm, pmd, mi, a)
                assert pm is not None
                set_pte_at(mm, a + PAGE_SIZE, pm.table, pm.index + 1, pfn_pte(0x4242, 0x7))
                pte_unmap_unlock(pm)
                i_mmap_unlock_read(mapping)

        spawn(writer, name="writer")

    return program


@pytest.mark.parametrize("hold", ["nothing", "rmap only"])
def test_page_table_rule_breach_is_reported(hold: str) -> None:
    r = explore(_breach_program(hold), max_executions=5)
    assert r.violation is not None
    assert r.violation.kind == "locking-rule"
    needs = "pte ptl" if hold == "nothing" else "rmap locks alone are not enough"
    assert needs in r.violation.message


def test_ptl_helpers_balance() -> None:
    """In a thread, so that a lock the helpers left held is reported when
    the thread returns (lock-held-at-exit), and the rule checker's record
    of held locks is empty again."""
    from mmrace.mm.internal import held

    def program(leak: bool) -> Any:
        def prog() -> None:
            p = System().process()

            def t() -> None:
                ptl_lock(p.mm.page_table_lock)
                if not leak:
                    ptl_unlock(p.mm.page_table_lock)
                assert leak or not held().spin

            spawn(t, name="T1")

        return prog

    run1(program(False))
    v = explore(program(True), max_executions=1).violation
    assert v is not None and v.kind == "lock-held-at-exit"
    assert "page_table_lock" in v.title

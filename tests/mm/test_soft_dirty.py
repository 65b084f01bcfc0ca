"""Soft-dirty: bits after clear_refs under each switch setting, read back
through pagemap; a write sets soft-dirty again."""

from __future__ import annotations

from typing import Any

import pytest
from mmkit import ANON, RW, run1

from mmrace.engine import explore, spawn
from mmrace.mm.mm_types import VM_SOFTDIRTY
from mmrace.mm.pgtable import peek_pte, pte_soft_dirty, pte_write
from mmrace.user import CLEAR_REFS_SOFT_DIRTY, PAGE_SIZE, System, vma_find

KERNELS = [{}, {"kernel": "5.10"}, {"kernel": "5.11"},
           {"without": ["soft-dirty-tlb-flush"]}, {"without": ["clear-refs-mmap-write-lock"]}]


@pytest.mark.parametrize("kw", KERNELS)
def test_clear_refs_and_pagemap(kw: dict[str, Any]) -> None:
    out: dict[str, Any] = {}

    def program() -> None:
        proc = System(**kw).process()
        a = proc.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        out["new"] = proc.pagemap(a)  # not present, but VM_SOFTDIRTY
        proc.poke(a, 1)
        out["written"] = proc.pagemap(a)
        proc.clear_refs(CLEAR_REFS_SOFT_DIRTY)
        vma = vma_find(proc.mm, a)
        assert vma is not None
        out["vma_sd"] = bool(vma.raw("vm_flags") & VM_SOFTDIRTY)
        pte = peek_pte(proc.mm, a)
        out["pte"] = (pte_write(pte), pte_soft_dirty(pte))
        out["cleared"] = proc.pagemap(a)
        out["untouched"] = proc.pagemap(a + PAGE_SIZE)
        out["pending"] = proc.mm.tlb_flush_pending.value()
        proc.poke(a, 2)
        out["rewritten"] = proc.pagemap(a)

    run1(program)
    assert not out["new"].present and out["new"].soft_dirty
    assert out["written"].present and out["written"].soft_dirty
    assert not out["vma_sd"]
    assert out["pte"] == (False, False)
    assert out["cleared"].present and not out["cleared"].soft_dirty
    assert not out["untouched"].present and not out["untouched"].soft_dirty
    assert out["pending"] == 0
    assert out["rewritten"].soft_dirty and not out["rewritten"].uffd_wp


def test_new_mapping_is_soft_dirty_again() -> None:
    out: dict[str, Any] = {}

    def program() -> None:
        proc = System().process()
        a = proc.mmap(0, PAGE_SIZE, RW, ANON)
        proc.poke(a, 1)
        proc.clear_refs(CLEAR_REFS_SOFT_DIRTY)
        b = proc.mmap(0, PAGE_SIZE, RW, ANON)
        out["b"] = proc.pagemap(b).soft_dirty

    run1(program)
    assert out["b"]


@pytest.mark.parametrize("kw", [{}, {"kernel": "5.10"}])
def test_clear_refs_races_writer_clean(kw: dict[str, Any]) -> None:
    """Without TLBs (until the machine half lands) clear_refs racing a write
    fault is clean under both lockings; the write is never lost."""

    def program() -> Any:
        proc = System(**kw).process()
        a = proc.mmap(0, PAGE_SIZE, RW, ANON)
        proc.poke(a, 1)
        spawn(proc.clear_refs, CLEAR_REFS_SOFT_DIRTY, name="clear_refs")
        spawn(proc.poke, a, 2, name="writer")

        def check() -> None:
            # a PTE that is not soft-dirty must be write-protected, so the
            # next write is tracked
            pte = peek_pte(proc.mm, a)
            assert pte_soft_dirty(pte) or not pte_write(pte)
            assert proc.peek(a) == 2

        return check

    r = explore(program, max_seconds=50)
    assert r.violation is None, r.violation and r.violation.message
    assert r.complete

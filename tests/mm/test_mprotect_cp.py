"""change_protection: PTE bits after mprotect, the deferred flush bracketed
by tlb_flush_pending, and the uffd-wp cp_flags."""

from __future__ import annotations

from typing import Any

import pytest
from mmkit import ANON, RW, run1

from mmrace.engine import explore, spawn
from mmrace.mm import mprotect as mprotect_mod
from mmrace.mm.mm_types import MmStruct, mm_tlb_flush_pending
from mmrace.mm.pgtable import PMD_SIZE, peek_pte, pte_present, pte_soft_dirty, pte_write
from mmrace.user import MAP_SHARED, PAGE_SIZE, PROT_READ, System


@pytest.mark.parametrize("kw, rw_again", [({}, True), ({"kernel": "5.10"}, False),
                                          ({"without": ["mprotect-exclusive-anon-writable"]},
                                           False)])
def test_mprotect_bits(kw: dict[str, Any], rw_again: bool) -> None:
    out: dict[str, Any] = {}

    def program() -> None:
        proc = System(**kw).process()
        a = proc.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        proc.poke(a, 1)
        proc.mprotect(a, 2 * PAGE_SIZE, PROT_READ)
        pte = peek_pte(proc.mm, a)
        out["ro"] = (pte_present(pte), pte_write(pte), pte_soft_dirty(pte))
        proc.mprotect(a, 2 * PAGE_SIZE, RW)
        out["rw"] = pte_write(peek_pte(proc.mm, a))
        out["pending"] = proc.mm.tlb_flush_pending.value()
        proc.poke(a, 2)
        out["after"] = pte_write(peek_pte(proc.mm, a))

    run1(program)
    assert out["ro"] == (True, False, True)
    assert out["rw"] is rw_again
    assert out["pending"] == 0
    assert out["after"] is True


def test_shared_mapping_keeps_dirty_writable() -> None:
    out: dict[str, Any] = {}

    def program() -> None:
        system = System()
        fd = system.open_file("f", PAGE_SIZE)
        proc = system.processes[0]
        a = proc.mmap(0, PAGE_SIZE, RW, MAP_SHARED, fd)
        proc.poke(a, 1)
        proc.mprotect(a, PAGE_SIZE, PROT_READ)
        out["ro"] = pte_write(peek_pte(proc.mm, a))
        proc.mprotect(a, PAGE_SIZE, RW)
        out["rw"] = pte_write(peek_pte(proc.mm, a))

    run1(program)
    assert out == {"ro": False, "rw": True}


def test_flush_is_deferred_to_the_end_of_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every PTE of a two-table range is changed while tlb_flush_pending is
    raised, and the gather's flush range covers both tables at the end."""
    seen: list[tuple[bool, int]] = []
    real = mprotect_mod.change_pte_range
    ranges: list[tuple[int, int]] = []

    def spy(tlb: Any, vma: Any, *args: Any) -> int:
        mm: MmStruct = vma.raw("vm_mm")
        seen.append((mm_tlb_flush_pending(mm), args[2]))
        n = real(tlb, vma, *args)
        ranges.append((tlb.start, tlb.end))
        return n

    monkeypatch.setattr(mprotect_mod, "change_pte_range", spy)

    def program() -> None:
        proc = System().process()
        base = proc.mmap(0, 4 * PMD_SIZE, RW, ANON)
        a = (base + PMD_SIZE) & ~(PMD_SIZE - 1)
        proc.poke(a - PAGE_SIZE, 1)
        proc.poke(a, 2)
        proc.mprotect(a - PAGE_SIZE, 2 * PAGE_SIZE, PROT_READ)
        assert proc.mm.tlb_flush_pending.value() == 0

    run1(program)
    assert len(seen) == 2 and all(p for p, _ in seen)
    assert ranges[-1][1] - ranges[-1][0] == 2 * PAGE_SIZE  # one flush for both


def test_mprotect_races_fault_clean() -> None:
    def program() -> None:
        proc = System().process()
        a = proc.mmap(0, PAGE_SIZE, RW, ANON)
        proc.poke(a, 1)
        spawn(proc.mprotect, a, PAGE_SIZE, PROT_READ, name="mprotect")
        spawn(proc.peek, a, name="reader")

    r = explore(program, max_seconds=50)
    assert r.violation is None, r.violation and r.violation.message
    assert r.complete

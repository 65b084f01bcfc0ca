"""Scenarios shared by the TLB tests and bench/tlb.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.mm.mm_types import dec_tlb_flush_pending, inc_tlb_flush_pending
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.mm.pgtable import (
    flush_tlb_range,
    pte_offset_map_lock,
    pte_unmap_unlock,
    ptep_set_wrprotect,
    walk_to_pmd,
)
from mmrace.mm.vma import find_vma
from mmrace.user import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, System

PAGE = 4096
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def deferred_wrprotect(t: Any, addr: int) -> None:
    """The shape of ``change_protection`` under the mmap *read* lock
    (userfaultfd write-protect, soft-dirty clear_refs before its fix):
    raise ``tlb_flush_pending``, write-protect the PTE under its lock, and
    flush only afterwards (the deferral window)."""
    mm = t.process.mm
    mmap_read_lock(mm)
    vma = find_vma(mm, addr)
    inc_tlb_flush_pending(mm)
    found = walk_to_pmd(mm, addr)
    assert found is not None
    pm = pte_offset_map_lock(mm, found[0], found[1], addr)
    assert pm is not None
    ptep_set_wrprotect(mm, addr, pm.table, pm.index)
    pte_unmap_unlock(pm)
    flush_tlb_range(vma, addr, addr + PAGE)
    dec_tlb_flush_pending(mm)
    mmap_read_unlock(mm)


def deferred_flush_cow(fix: bool = False, stores: int = 2) -> Callable[[], Any]:
    """The minimal deferred-flush + COW race (seed 002): cpu0 keeps writing
    through its writable TLB entry; cpu1 write-protects the PTE and defers
    the flush; cpu2's write fault copies the page (its refcount is raised
    by a pin, so the 5.9 ``page_count`` COW policy copies) -- a store of
    cpu0 between the copy and the flush is lost. *fix*: the
    ``wp-fault-flush-pending`` switch (``do_wp_page`` flushes first when a
    flush is pending)."""

    def program() -> Any:
        s = System(cpus=3, policies={"cow-reuse": "page_count"},
                   with_=("wp-fault-flush-pending",) if fix else ())
        p = s.process()
        a = p.mmap(0, PAGE, RW, ANON)
        p.poke(a, 1)
        p.pin(a)

        def writer(t: Any) -> None:
            for i in range(stores):
                t.store(a, 2 + i)

        p.thread(writer, cpu=0, name="writer")
        p.thread(lambda t: deferred_wrprotect(t, a), cpu=1, name="wrprotect")
        p.thread(lambda t: t.store(a + 8, 9), cpu=2, name="cow")
        return None

    return program


__all__ = ["ANON", "PAGE", "RW", "deferred_flush_cow", "deferred_wrprotect"]

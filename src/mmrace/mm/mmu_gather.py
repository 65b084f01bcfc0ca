"""The mmu_gather batching interface (mm/mmu_gather.c, include/asm-generic/tlb.h,
arch/x86/include/asm/tlb.h).

Zapping collects the range whose PTEs it cleared, the folios whose
mappings it removed and the page-table pages it unlinked. ``tlb_flush_mmu``
first flushes the TLBs for the gathered range (``tlb_flush`` ->
``flush_tlb_mm_range``: an IPI per remote CPU in ``mm_cpumask``) and only
then frees the pages (``tlb_flush_mmu_free``), so no CPU can reach a
freed page through a stale translation. Page-table pages of every level
are freed after an RCU grace period (``tlb_remove_table`` with
``CONFIG_MMU_GATHER_RCU_TABLE_FREE``, as on x86), which also waits for
hardware walks in progress.

``tlb_gather_mmu`` raises ``mm->tlb_flush_pending`` and ``tlb_finish_mmu``
drops it; if another batch is pending meanwhile (``mm_tlb_flush_nested``),
``tlb_finish_mmu`` forces a flush of the whole mm, because the other
thread may have cleared PTEs this batch skipped as already none while
their flush has not happened yet.

Left out: the per-CPU batch pages and their size limits (a batch never
fills, so there is no intermediate ``tlb_flush_mmu`` from
``__tlb_remove_page``), ``tlb_change_page_size`` and stride tracking,
delayed rmap removal, ``need_flush_all``, the fullmm teardown shortcut
(a fullmm gather still flushes: harmless). ``tlb_remove_table_sync_one``
is here for callers that free a table without the gather.
"""

from __future__ import annotations

from typing import Any

from mmrace.arch import TLB_FLUSH_ALL, flush_tlb_mm_range, smp_call_function_sync
from mmrace.mm.internal import kfunc
from mmrace.mm.locks import call_rcu
from mmrace.mm.mm_types import (
    PAGE_SIZE,
    MmStruct,
    dec_tlb_flush_pending,
    inc_tlb_flush_pending,
    mm_tlb_flush_nested,
)
from mmrace.mm.page_alloc import folio_put_refs
from mmrace.mm.pgtable import pte_free
from mmrace.mm.swap_state import free_swap_cache

_NO_START = 1 << 64


class MmuGather:
    """``struct mmu_gather``: the mm, the range to flush (``start``/``end``),
    what was gathered (folios with their reference counts, page-table
    pages) and the flags that decide the flush."""

    __slots__ = ("mm", "fullmm", "start", "end", "folios", "tables", "freed_tables",
                 "cleared_ptes", "flushes")

    def __init__(self, mm: MmStruct, fullmm: bool = False) -> None:
        self.mm = mm
        self.fullmm = fullmm
        self.start = _NO_START
        self.end = 0
        self.folios: list[tuple[Any, int]] = []  # (folio, nr_refs)
        self.tables: list[Any] = []
        self.freed_tables = False
        self.cleared_ptes = False
        self.flushes = 0  # TLB flushes this gather issued (for tests)


def __tlb_reset_range(tlb: MmuGather) -> None:
    """``__tlb_reset_range``."""
    if tlb.fullmm:
        tlb.start = tlb.end = ~0
    else:
        tlb.start = _NO_START
        tlb.end = 0
    tlb.freed_tables = False
    tlb.cleared_ptes = False


def __tlb_adjust_range(tlb: MmuGather, address: int, size: int) -> None:
    """``__tlb_adjust_range``: widen the range to flush."""
    tlb.start = min(tlb.start, address)
    tlb.end = max(tlb.end, address + size)


@kfunc
def tlb_gather_mmu(mm: MmStruct, fullmm: bool = False) -> MmuGather:
    """``tlb_gather_mmu`` / ``tlb_gather_mmu_fullmm``: start a batch
    (``inc_tlb_flush_pending``: one visible RMW)."""
    tlb = MmuGather(mm, fullmm)
    __tlb_reset_range(tlb)
    inc_tlb_flush_pending(mm)
    return tlb


def tlb_remove_tlb_entry(tlb: MmuGather, addr: int) -> None:
    """``tlb_remove_tlb_entry``: a PTE of *addr* was cleared; flush it."""
    __tlb_adjust_range(tlb, addr, PAGE_SIZE)
    tlb.cleared_ptes = True


def tlb_flush_pte_range(tlb: MmuGather, addr: int, size: int) -> None:
    """``tlb_flush_pte_range``: PTEs of ``[addr, addr + size)`` changed."""
    __tlb_adjust_range(tlb, addr, size)
    tlb.cleared_ptes = True


def tlb_flush_pmd_range(tlb: MmuGather, addr: int, size: int) -> None:
    """``tlb_flush_pmd_range`` / ``tlb_remove_pmd_tlb_entry``: a huge PMD of
    ``[addr, addr + size)`` changed or was cleared."""
    __tlb_adjust_range(tlb, addr, size)
    tlb.cleared_ptes = True


@kfunc
def tlb_remove_table_sync_one() -> None:
    """``tlb_remove_table_sync_one``: an IPI to every other CPU, waiting
    for each to take it -- so for every GUP-fast walk in progress (it runs
    with interrupts off) to finish -- before a page table unlinked without
    RCU freeing may be freed (khugepaged's collapse does this)."""
    smp_call_function_sync("tlb_remove_table_smp_sync")


def tlb_remove_folio(tlb: MmuGather, folio: Any, nr_refs: int = 1) -> None:
    """``tlb_remove_folio`` / ``__tlb_remove_folio_pages``: drop the
    mapping's *nr_refs* references to *folio* after the flush."""
    tlb.folios.append((folio, nr_refs))


tlb_remove_page = tlb_remove_folio


def pte_free_tlb(tlb: MmuGather, table: Any, addr: int) -> None:
    """``pte_free_tlb`` / ``pmd_free_tlb`` / ``pud_free_tlb``: free a
    page-table page after the flush and a grace period."""
    tlb.freed_tables = True
    __tlb_adjust_range(tlb, addr, PAGE_SIZE)
    tlb.tables.append(table)


@kfunc
def tlb_flush(tlb: MmuGather) -> None:
    """x86 ``tlb_flush``: the gathered range, or the whole mm for a fullmm
    gather."""
    tlb.flushes += 1
    if tlb.fullmm:
        flush_tlb_mm_range(tlb.mm, 0, TLB_FLUSH_ALL, 12, tlb.freed_tables)
    else:
        flush_tlb_mm_range(tlb.mm, tlb.start, tlb.end, 12, tlb.freed_tables)


@kfunc
def tlb_flush_mmu_tlbonly(tlb: MmuGather) -> None:
    """``tlb_flush_mmu_tlbonly``: flush the gathered range (nothing if no
    PTE was cleared and no table freed), then reset it."""
    if not (tlb.freed_tables or tlb.cleared_ptes):
        return
    tlb_flush(tlb)
    __tlb_reset_range(tlb)


@kfunc
def tlb_flush_mmu_free(tlb: MmuGather) -> None:
    """``tlb_flush_mmu_free``: free the gathered tables (``tlb_table_flush``:
    after a grace period) and release the gathered folio references
    (``tlb_batch_pages_flush``). Called only after the flush."""
    tables, tlb.tables = tlb.tables, []
    if tables:
        tlb_table_flush(tables)
    folios, tlb.folios = tlb.folios, []
    for folio, nr in folios:
        # free_pages_and_swap_cache: a folio only the swap cache will hold
        # leaves it. The lockless PG_swapcache test is the kernel's too: a
        # folio entering the cache meanwhile is locked by reclaim (the
        # trylock fails), one leaving it needs nothing; so it is not a
        # scheduling point, and zaps of pages never swapped cost nothing.
        if folio.swapcache:
            free_swap_cache(folio)
        folio_put_refs(folio, nr)


def tlb_remove_table_rcu(tables: list[Any]) -> None:
    """``tlb_remove_table_rcu``: the RCU callback of one batch of gathered
    page-table pages: free each of them."""
    for t in tables:
        pte_free(t.mm, t)


@kfunc
def tlb_table_flush(tables: list[Any]) -> None:
    """``tlb_table_flush``: hand the batch of gathered page-table pages to
    RCU, one ``call_rcu`` for the whole batch as the kernel does (its
    ``struct mmu_table_batch`` carries the ``rcu_head``)."""
    call_rcu(tables, tlb_remove_table_rcu)


@kfunc
def tlb_flush_mmu(tlb: MmuGather) -> None:
    """``tlb_flush_mmu``: flush, then free."""
    tlb_flush_mmu_tlbonly(tlb)
    tlb_flush_mmu_free(tlb)


@kfunc
def tlb_finish_mmu(tlb: MmuGather) -> None:
    """``tlb_finish_mmu``: if batches are nested (``mm_tlb_flush_nested``:
    another thread is between its own gather and finish), flush the whole
    mm (``fullmm`` with ``freed_tables``); flush and free what was
    gathered; end the batch (``dec_tlb_flush_pending``)."""
    if mm_tlb_flush_nested(tlb.mm):
        tlb.fullmm = True
        __tlb_reset_range(tlb)
        tlb.freed_tables = True
    tlb_flush_mmu(tlb)
    dec_tlb_flush_pending(tlb.mm)

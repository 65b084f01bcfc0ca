"""The mmu_gather batching interface (mm/mmu_gather.c, include/asm-generic/tlb.h).

Zapping collects the folios whose mappings it removed and the page-table
pages it unlinked; ``tlb_finish_mmu`` flushes the TLB for the range and
only then frees them, so no CPU can still reach a freed page through a
stale translation. Until the model has TLBs (the TLB issue), the flush is
:func:`tlb_flush_mmu_tlbonly` (a no-op) and the free is direct: swapping
in real TLBs and shootdowns changes only this module.

Left out: the per-CPU batch pages and their size limits (a batch never
fills), ``tlb_change_page_size``, delayed rmap removal, fullmm teardown
shortcuts.
"""

from __future__ import annotations

from typing import Any

from mmrace.mm.internal import kfunc
from mmrace.mm.mm_types import MmStruct


class MmuGather:
    """``struct mmu_gather``."""

    __slots__ = ("mm", "fullmm", "start", "end", "folios", "tables", "freed_tables")

    def __init__(self, mm: MmStruct, fullmm: bool = False) -> None:
        self.mm = mm
        self.fullmm = fullmm
        self.start = 1 << 64
        self.end = 0
        self.folios: list[tuple[Any, int]] = []  # (folio, nr_refs)
        self.tables: list[Any] = []
        self.freed_tables = False


@kfunc
def tlb_gather_mmu(mm: MmStruct, fullmm: bool = False) -> MmuGather:
    """``tlb_gather_mmu`` / ``tlb_gather_mmu_fullmm``: start a batch
    (``inc_tlb_flush_pending``)."""
    tlb = MmuGather(mm, fullmm)
    mm.tlb_flush_pending.rmw(lambda n: n + 1)
    return tlb


def tlb_remove_tlb_entry(tlb: MmuGather, addr: int) -> None:
    """``tlb_remove_tlb_entry``: widen the range to flush."""
    tlb.start = min(tlb.start, addr)
    tlb.end = max(tlb.end, addr + 4096)


def tlb_remove_folio(tlb: MmuGather, folio: Any, nr_refs: int = 1) -> None:
    """``tlb_remove_folio`` / ``__tlb_remove_folio_pages``: drop the
    mapping's references to *folio* after the flush."""
    tlb.folios.append((folio, nr_refs))


def pte_free_tlb(tlb: MmuGather, table: Any, addr: int) -> None:
    """``pte_free_tlb`` / ``pmd_free_tlb`` / ``pud_free_tlb``: free a
    page-table page after the flush (and, for PTE tables, a grace period)."""
    tlb.freed_tables = True
    tlb.tables.append(table)


@kfunc
def tlb_flush_mmu_tlbonly(tlb: MmuGather) -> None:
    """``tlb_flush_mmu_tlbonly``: flush the gathered range (a no-op until
    the model has TLBs)."""
    tlb.start = 1 << 64
    tlb.end = 0


@kfunc
def tlb_flush_mmu_free(tlb: MmuGather) -> None:
    """``tlb_flush_mmu_free``: free the gathered tables and release the
    gathered folio references."""
    from mmrace.mm.page_alloc import folio_put_refs
    from mmrace.mm.pgtable import LEVEL_PTE, pte_free_defer

    tables, tlb.tables = tlb.tables, []
    for t in tables:
        if t.level == LEVEL_PTE:
            pte_free_defer(tlb.mm, t)
        else:
            from mmrace.mm.pgtable import pte_free

            pte_free(tlb.mm, t)
    folios, tlb.folios = tlb.folios, []
    for folio, nr in folios:
        folio_put_refs(folio, nr)


@kfunc
def tlb_flush_mmu(tlb: MmuGather) -> None:
    """``tlb_flush_mmu``: flush, then free."""
    tlb_flush_mmu_tlbonly(tlb)
    tlb_flush_mmu_free(tlb)


@kfunc
def tlb_finish_mmu(tlb: MmuGather) -> None:
    """``tlb_finish_mmu``: flush and free what was gathered, end the batch."""
    tlb_flush_mmu(tlb)
    tlb.mm.tlb_flush_pending.rmw(lambda n: n - 1)

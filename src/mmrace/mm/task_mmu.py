"""/proc/PID/clear_refs and /proc/PID/pagemap (fs/proc/task_mmu.c).

``clear_refs_write(CLEAR_REFS_SOFT_DIRTY)`` clears ``VM_SOFTDIRTY`` on every
VMA, then write-protects every present PTE and clears its soft-dirty bit
(``clear_soft_dirty``: ``ptep_modify_prot_start``/``commit`` under the PTL),
so the next write faults and sets soft-dirty again (``pte_mkdirty``). The
TLB flush is deferred to the end of the walk.

Current kernel: the mmap lock is held for write throughout ("mm: fix
clear_refs_write locking", 5.11) and the walk is bracketed by
``inc_tlb_flush_pending`` ... ``flush_tlb_mm`` + ``dec_tlb_flush_pending``
("mm: proc: Invalidate TLB after clearing soft-dirty page state", 5.12).
Without the first switch the mmap lock is taken for read, upgraded to write
only to clear ``VM_SOFTDIRTY`` and downgraded for the walk; without the
second the walk runs inside ``tlb_gather_mmu``/``tlb_finish_mmu``, which
flushes nothing because nothing was gathered.

Left out: THP PMDs, swap and migration entries, mmu notifiers, the
``CLEAR_REFS_MM_HIWATER_RSS`` statistics, page idle/referenced flags of
folios (types 1-3 only clear the accessed bit), PFN maps, the pagemap
fields other than present/soft-dirty/uffd-wp/pfn, PAGEMAP_SCAN.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmrace.mm.internal import errno_error, kernel_config, kfunc
from mmrace.mm.mm_types import (
    PAGE_MASK,
    PAGE_SHIFT,
    VM_PFNMAP,
    VM_SOFTDIRTY,
    MmStruct,
    VmAreaStruct,
    dec_tlb_flush_pending,
    inc_tlb_flush_pending,
)
from mmrace.mm.mmap_lock import (
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_downgrade,
    mmap_write_lock,
    mmap_write_unlock,
)
from mmrace.mm.mmu_gather import tlb_finish_mmu, tlb_gather_mmu
from mmrace.mm.page_alloc import folio_test_set_flag, pfn_folio
from mmrace.mm.pgtable import (
    PMD_SIZE,
    PageTable,
    flush_tlb_mm,
    pmd_none,
    pmd_trans_huge,
    pmdp_get,
    pmdp_invalidate,
    pmdp_test_and_clear_young,
    pte_clear_soft_dirty,
    pte_index,
    pte_offset_map_lock,
    pte_pfn,
    pte_present,
    pte_soft_dirty,
    pte_uffd_wp,
    pte_unmap_unlock,
    pte_wrprotect,
    ptep_get,
    ptep_modify_prot_commit,
    ptep_modify_prot_start,
    ptep_test_and_clear_young,
    ptl_unlock,
    set_pmd_at,
    walk_to_pmd,
)
from mmrace.mm.vma import find_vma, vm_flags_clear, vma_set_page_prot

CLEAR_REFS_ALL = 1
CLEAR_REFS_ANON = 2
CLEAR_REFS_MAPPED = 3
CLEAR_REFS_SOFT_DIRTY = 4
CLEAR_REFS_MM_HIWATER_RSS = 5

EINVAL = 22


def _vmas(mm: MmStruct) -> list[VmAreaStruct]:
    """``for_each_vma`` under the mmap lock (each step a visible lookup)."""
    out: list[VmAreaStruct] = []
    addr = 0
    while True:
        vma = find_vma(mm, addr)
        if vma is None:
            return out
        out.append(vma)
        addr = vma.vm_end


@kfunc
def clear_soft_dirty(vma: VmAreaStruct, addr: int, table: object, index: int) -> None:
    """``clear_soft_dirty``: write-protect a present PTE and clear its
    soft-dirty bit, atomically against hardware A/D updates."""
    assert isinstance(table, PageTable)
    ptent = ptep_get(table, index)
    if not pte_present(ptent):
        return
    old = ptep_modify_prot_start(vma, addr, table, index)
    ptent = pte_clear_soft_dirty(pte_wrprotect(old))
    ptep_modify_prot_commit(vma, addr, table, index, old, ptent)


@kfunc
def clear_refs_huge_pmd(vma: VmAreaStruct, pmd: PageTable, mi: int, addr: int,
                        type_: int) -> None:
    """The huge-PMD part of ``clear_refs_pte_range`` (the lockless look at the
    PMD was the walker's): under the PMD lock (rechecked), clear soft-dirty
    the way ``clear_soft_dirty_pmd`` does -- ``pmdp_invalidate``, keeping
    the accessed and dirty bits, then write-protected and not soft-dirty --
    or the accessed bit and the folio's PG_referenced."""
    ptl = huge_memory.__pmd_trans_huge_lock(pmd, mi, vma)
    if ptl is None:
        return
    if type_ == CLEAR_REFS_SOFT_DIRTY:
        old = pmdp_invalidate(vma, addr & ~(PMD_SIZE - 1), pmd, mi)
        new = pte_clear_soft_dirty(pte_wrprotect(old))
        set_pmd_at(vma.vm_mm, addr & ~(PMD_SIZE - 1), pmd, mi, new)
    else:
        v = pmdp_get(pmd, mi)
        if pte_present(v):
            pmdp_test_and_clear_young(vma, addr, pmd, mi)
            folio_test_set_flag(pfn_folio(pte_pfn(v)), "referenced", False,
                                "folio_clear_referenced")
    ptl_unlock(ptl)


@kfunc
def clear_refs_pte_range(vma: VmAreaStruct, pmd: object, mi: int, addr: int, end: int,
                         type_: int) -> None:
    """``clear_refs_pte_range``: under the PTE table's lock, clear soft-dirty
    (type 4) or the accessed bit (types 1-3) of each PTE."""
    assert isinstance(pmd, PageTable)
    mm = vma.vm_mm
    pm = pte_offset_map_lock(mm, pmd, mi, addr)
    if pm is None:
        return
    for i in range((end - addr) >> PAGE_SHIFT):
        idx = pm.index + i
        a = addr + (i << PAGE_SHIFT)
        if idx not in pm.table.entries and idx not in pm.table.slots:
            continue
        if type_ == CLEAR_REFS_SOFT_DIRTY:
            clear_soft_dirty(vma, a, pm.table, idx)
            continue
        if pte_present(ptep_get(pm.table, idx)):
            ptep_test_and_clear_young(vma, a, pm.table, idx)
    pte_unmap_unlock(pm)


def clear_refs_test_walk(vma: VmAreaStruct, type_: int) -> bool:
    """``clear_refs_test_walk``: whether to skip *vma*."""
    if vma.vm_flags & VM_PFNMAP:
        return True
    if type_ == CLEAR_REFS_ANON and vma.vm_file is not None:
        return True
    return type_ == CLEAR_REFS_MAPPED and vma.vm_file is None


@kfunc
def walk_page_range_clear_refs(mm: MmStruct, type_: int) -> None:
    """``walk_page_range(mm, 0, -1, &clear_refs_walk_ops)``."""
    for vma in _vmas(mm):
        if clear_refs_test_walk(vma, type_):
            continue
        addr, end = vma.vm_start, vma.vm_end
        while addr < end:
            nxt = min((addr & ~(PMD_SIZE - 1)) + PMD_SIZE, end)
            found = walk_to_pmd(mm, addr)
            if found is not None:
                pmd, mi = found
                v = pmdp_get(pmd, mi)
                if pmd_trans_huge(v):
                    clear_refs_huge_pmd(vma, pmd, mi, addr, type_)
                elif not pmd_none(v):
                    clear_refs_pte_range(vma, pmd, mi, addr, nxt, type_)
            addr = nxt


@kfunc
def clear_refs_write(mm: MmStruct, type_: int) -> None:
    """``clear_refs_write``: a write of *type_* to /proc/PID/clear_refs.
    Switches: ``clear-refs-mmap-write-lock`` (5.11) and
    ``soft-dirty-tlb-flush`` (5.12), see the module docstring."""
    if type_ < CLEAR_REFS_ALL or type_ > CLEAR_REFS_MM_HIWATER_RSS:
        raise errno_error(EINVAL, "clear_refs")
    cfg = kernel_config(mm)
    soft_dirty = type_ == CLEAR_REFS_SOFT_DIRTY
    if type_ == CLEAR_REFS_MM_HIWATER_RSS:
        mmap_write_lock(mm)
        mmap_write_unlock(mm)
        return
    write_locked = cfg.has("clear-refs-mmap-write-lock")
    if write_locked:
        mmap_write_lock(mm)
    else:
        mmap_read_lock(mm)
    flush_fix = cfg.has("soft-dirty-tlb-flush")
    tlb = None if flush_fix else tlb_gather_mmu(mm)
    if soft_dirty:
        vmas = [v for v in _vmas(mm) if v.vm_flags & VM_SOFTDIRTY]
        if vmas and not write_locked:
            # 5.10: upgrade to clear VM_SOFTDIRTY, then downgrade for the walk.
            mmap_read_unlock(mm)
            mmap_write_lock(mm)
            vmas = [v for v in _vmas(mm) if v.vm_flags & VM_SOFTDIRTY]
        for vma in vmas:
            vm_flags_clear(vma, VM_SOFTDIRTY)
            vma_set_page_prot(vma)
        if vmas and not write_locked:
            mmap_write_downgrade(mm)
        if flush_fix:
            inc_tlb_flush_pending(mm)
    walk_page_range_clear_refs(mm, type_)
    if soft_dirty and flush_fix:
        flush_tlb_mm(mm)
        dec_tlb_flush_pending(mm)
    if tlb is not None:
        tlb_finish_mmu(tlb)
    if write_locked:
        mmap_write_unlock(mm)
    else:
        mmap_read_unlock(mm)


@dataclass(frozen=True)
class PagemapEntry:
    """One 64-bit /proc/PID/pagemap entry, decoded."""

    present: bool
    soft_dirty: bool
    uffd_wp: bool
    pfn: int = 0


@kfunc
def pagemap_read(mm: MmStruct, addr: int) -> PagemapEntry:
    """``pagemap_read`` for one page: under the mmap read lock, the PTE read
    under its lock (``pagemap_pmd_range``/``pte_to_pagemap_entry``).
    Soft-dirty is reported for a soft-dirty PTE and for every page of a
    ``VM_SOFTDIRTY`` VMA (``pagemap_pte_hole`` too)."""
    addr &= PAGE_MASK
    mmap_read_lock(mm)
    try:
        vma = find_vma(mm, addr)
        if vma is None or vma.vm_start > addr:
            return PagemapEntry(False, False, False)
        vma_sd = bool(vma.vm_flags & VM_SOFTDIRTY)
        found = walk_to_pmd(mm, addr)
        pte = 0
        if found is not None:
            pmd, mi = found
            v = pmdp_get(pmd, mi)
            if pmd_trans_huge(v):
                # pagemap_pmd_range: the huge PMD, under its lock, as the
                # entry of each of its pages.
                ptl = huge_memory.__pmd_trans_huge_lock(pmd, mi, vma)
                if ptl is not None:
                    hv = pmdp_get(pmd, mi)
                    if hv & 0x1:
                        pte = (hv & ~0x80) + (pte_index(addr) << PAGE_SHIFT)
                    ptl_unlock(ptl)
            elif not pmd_none(v):
                pm = pte_offset_map_lock(mm, pmd, mi, addr)
                if pm is not None:
                    pte = ptep_get(pm.table, pm.index)
                    pte_unmap_unlock(pm)
        if not pte_present(pte):
            return PagemapEntry(False, vma_sd, False)
        return PagemapEntry(True, vma_sd or pte_soft_dirty(pte), pte_uffd_wp(pte), pte_pfn(pte))
    finally:
        mmap_read_unlock(mm)


__all__ = [
    "CLEAR_REFS_SOFT_DIRTY",
    "PagemapEntry",
    "clear_refs_write",
    "pagemap_read",
]

# The huge-PMD lock helper lives with the THP code, which imports the fault
# path that imports this module's callers: imported last (the seam).
from mmrace.mm import huge_memory  # noqa: E402

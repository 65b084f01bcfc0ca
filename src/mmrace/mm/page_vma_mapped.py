"""Finding where a folio is mapped in one VMA (mm/page_vma_mapped.c).

``page_vma_mapped_walk`` is how every rmap actor (reclaim's
``try_to_unmap_one``, ``folio_referenced_one``, ``page_mkclean_one``,
migration's ``try_to_migrate_one`` and ``remove_migration_pte``) reaches
the page-table entries that map a folio: under the rmap lock only (the
anon_vma or ``i_mmap_rwsem``, read), it reads the upper entries and the
PMD without locks, takes the PMD lock for a huge PMD, or maps the PTE
table under RCU (``pte_offset_map_rw_nolock``) and takes its lock,
rechecking that the PMD still points to the same table. So a page table
freed or replaced underneath it is found by the recheck or, if freed
while the walker still uses it, reported as a use-after-free. Before 6.5
(``pte-map-revalidate`` off) ``map_pte`` neither held RCU nor rechecked:
the rmap lock was supposed to keep the table in place.

Each call returns True with one mapping locked (``pvmw.pmd_table`` /
``pvmw.pmd_index`` and, for a PTE mapping, ``pvmw.pte`` with its index;
``pvmw.ptl`` held) and continues from there on the next call; False when
there are no more (everything released). ``page_vma_mapped_walk_done``
releases the current mapping early.

Left out: hugetlb, device-private entries, PMD migration entries (THP
migration is not modelled).
"""

from __future__ import annotations

from typing import Any

from mmrace.mm.internal import kfunc
from mmrace.mm.locks import Spinlock
from mmrace.mm.mm_types import PAGE_SHIFT, PAGE_SIZE
from mmrace.mm.pgtable import (
    PMD_SIZE,
    PageTable,
    PteMap,
    pmd_lock,
    pmd_none,
    pmd_present,
    pmd_trans_huge,
    pmd_unchanged_under_ptl,
    pmdp_get,
    pmdp_get_lockless,
    pte_offset_map_lock,
    pte_offset_map_nolock,
    pte_pfn,
    pte_present,
    pte_unmap,
    pte_unmap_unlock,
    ptep_get,
    ptl_lock_mapped,
    ptl_unlock,
    walk_to_pmd,
)
from mmrace.mm.swapops import (
    is_migration_entry,
    is_swap_pte,
    pte_to_swp_entry,
    swp_offset_pfn,
)

PVMW_SYNC = 1 << 0
"""Look at every entry under its lock (``pte_offset_map_lock``)."""
PVMW_MIGRATION = 1 << 1
"""Look for migration entries, not present PTEs."""


class PageVmaMappedWalk:
    """``struct page_vma_mapped_walk``: the folio range (``pfn``,
    ``nr_pages``, ``pgoff``), the VMA, the address walked, and what is
    locked now."""

    __slots__ = ("pfn", "nr_pages", "pgoff", "vma", "address", "flags", "end",
                 "pmd_table", "pmd_index", "pte", "ptl", "pmdval")

    def __init__(self, folio: Any, vma: Any, address: int, flags: int = 0) -> None:
        self.pfn = folio.pfn
        self.nr_pages = folio.nr_pages
        self.pgoff = folio.index
        self.vma = vma
        self.address = address
        self.flags = flags
        self.end = 0
        self.pmd_table: PageTable | None = None
        self.pmd_index = 0
        self.pte: PteMap | None = None
        self.ptl: Spinlock | None = None
        self.pmdval = 0

    @property
    def pte_index(self) -> int:
        assert self.pte is not None
        return self.pte.index


def vma_address_end(pvmw: PageVmaMappedWalk) -> int:
    """``vma_address_end``: where the folio's range ends in the VMA."""
    vma = pvmw.vma
    end = vma.vm_start + ((pvmw.pgoff - vma.vm_pgoff + pvmw.nr_pages) << PAGE_SHIFT)
    return int(min(end, vma.vm_end))


def _not_found(pvmw: PageVmaMappedWalk) -> bool:
    page_vma_mapped_walk_done(pvmw)
    return False


def page_vma_mapped_walk_done(pvmw: PageVmaMappedWalk) -> None:
    """``page_vma_mapped_walk_done``: release the mapping held."""
    if pvmw.pte is not None:
        if pvmw.ptl is not None:
            pte_unmap_unlock(pvmw.pte)
        else:
            pte_unmap(pvmw.pte)
    elif pvmw.ptl is not None:
        ptl_unlock(pvmw.ptl)
    pvmw.pte = None
    pvmw.ptl = None


def _check_pte(pvmw: PageVmaMappedWalk, pte: int) -> bool:
    """``check_pte``: the entry maps (or, for PVMW_MIGRATION, stands for)
    a page of the folio."""
    if pvmw.flags & PVMW_MIGRATION:
        if not is_swap_pte(pte):
            return False
        entry = pte_to_swp_entry(pte)
        if not is_migration_entry(entry):
            return False
        pfn = swp_offset_pfn(entry)
    elif pte_present(pte):
        pfn = pte_pfn(pte)
    else:
        return False
    return bool(pvmw.pfn <= pfn < pvmw.pfn + pvmw.nr_pages)


def _map_pte(pvmw: PageVmaMappedWalk) -> bool:
    """``map_pte``: map the PTE table and lock it if the entry may be one of
    ours (with PVMW_SYNC, always), rechecking the PMD under the lock."""
    vma = pvmw.vma
    mm = vma.raw("vm_mm")
    assert pvmw.pmd_table is not None
    if pvmw.flags & PVMW_SYNC:
        pm = pte_offset_map_lock(mm, pvmw.pmd_table, pvmw.pmd_index, pvmw.address)
        pvmw.pte = pm
        pvmw.ptl = pm.ptl if pm is not None else None
        return pm is not None
    while True:
        pm = pte_offset_map_nolock(mm, pvmw.pmd_table, pvmw.pmd_index, pvmw.address)
        pvmw.pte = pm
        if pm is None:
            return False
        ptent = ptep_get(pm.table, pm.index)
        if pvmw.flags & PVMW_MIGRATION:
            if not is_swap_pte(ptent):
                return False
        elif not pte_present(ptent):
            return False
        assert pm.ptl is not None
        ptl_lock_mapped(pm, pm.ptl)
        if not pmd_unchanged_under_ptl(pm, pvmw.pmd_table, pvmw.pmd_index):
            pte_unmap_unlock(pm)
            continue
        pvmw.ptl = pm.ptl
        return True


def _unlocked_pte(pvmw: PageVmaMappedWalk) -> None:
    """Drop the PTE table mapped (and locked or not) by the walk."""
    if pvmw.pte is not None:
        if pvmw.ptl is not None:
            pte_unmap_unlock(pvmw.pte)
        else:
            pte_unmap(pvmw.pte)
    pvmw.pte = None
    pvmw.ptl = None


@kfunc
def page_vma_mapped_walk(pvmw: PageVmaMappedWalk) -> bool:
    """``page_vma_mapped_walk``: find the next mapping of the folio in the
    VMA, from ``pvmw.address``; True with it locked, False at the end."""
    vma = pvmw.vma
    mm = vma.raw("vm_mm")
    if pvmw.pmd_table is not None and pvmw.pte is None:
        return _not_found(pvmw)  # the only PMD mapping was the last one
    if not pvmw.end:
        pvmw.end = vma_address_end(pvmw)
    if pvmw.pte is not None:
        if _next_pte(pvmw):
            return True
        if pvmw.address >= pvmw.end:
            return _not_found(pvmw)
    while pvmw.address < pvmw.end:
        found = walk_to_pmd(mm, pvmw.address)
        if found is None:
            pvmw.address = (pvmw.address & ~(PMD_SIZE - 1)) + PMD_SIZE
            continue
        pvmw.pmd_table, pvmw.pmd_index = found
        pmde = pmdp_get_lockless(*found)
        if pmd_trans_huge(pmde):
            ptl = pmd_lock(mm, found[0])
            pvmw.ptl = ptl
            pmde = pmdp_get(*found)
            if pmd_trans_huge(pmde):
                if pvmw.flags & PVMW_MIGRATION or not (
                        pvmw.pfn <= pte_pfn(pmde) < pvmw.pfn + pvmw.nr_pages):
                    return _not_found(pvmw)
                pvmw.pmdval = pmde
                return True
            # The huge PMD was split under us: handle it at the PTE level.
            ptl_unlock(ptl)
            pvmw.ptl = None
        elif pmd_none(pmde) or not pmd_present(pmde):
            pvmw.address = (pvmw.address & ~(PMD_SIZE - 1)) + PMD_SIZE
            continue
        if _map_pte(pvmw):
            assert pvmw.pte is not None
            if _check_pte(pvmw, ptep_get(pvmw.pte.table, pvmw.pte.index)):
                return True
        elif pvmw.pte is None:
            continue  # the PMD changed: restart at this address
        if _next_pte(pvmw):
            return True
    return _not_found(pvmw)


def _next_pte(pvmw: PageVmaMappedWalk) -> bool:
    """The ``next_pte`` loop: advance within the mapped PTE table to the
    next entry of the folio; True with it locked. On crossing the table's
    end, release it (the caller restarts at the PMD level)."""
    pm = pvmw.pte
    assert pm is not None
    while True:
        while True:
            pvmw.address += PAGE_SIZE
            if pvmw.address >= pvmw.end:
                _unlocked_pte(pvmw)
                return False
            if pvmw.address & (PMD_SIZE - PAGE_SIZE) == 0:
                _unlocked_pte(pvmw)  # crossed into the next PTE table
                return False
            pm.index += 1
            if (pvmw.ptl is not None and pm.index not in pm.table.entries
                    and pm.index not in pm.table.slots):
                continue  # never touched, and filling it needs the PTL we hold
            if ptep_get(pm.table, pm.index) != 0:
                break
        if pvmw.ptl is None:
            assert pm.ptl is not None
            ptl_lock_mapped(pm, pm.ptl)
            assert pvmw.pmd_table is not None
            if not pmd_unchanged_under_ptl(pm, pvmw.pmd_table, pvmw.pmd_index):
                pte_unmap_unlock(pm)
                pvmw.pte = None
                return False
            pvmw.ptl = pm.ptl
        if _check_pte(pvmw, ptep_get(pm.table, pm.index)):
            return True


__all__ = [
    "PVMW_MIGRATION",
    "PVMW_SYNC",
    "PageVmaMappedWalk",
    "page_vma_mapped_walk",
    "page_vma_mapped_walk_done",
]

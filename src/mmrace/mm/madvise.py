"""madvise, the advice that only changes VMA flags (mm/madvise.c).

Supported: MADV_DONTFORK, MADV_DOFORK, MADV_WIPEONFORK, MADV_KEEPONFORK,
MADV_HUGEPAGE, MADV_NOHUGEPAGE (and MADV_NORMAL/RANDOM/SEQUENTIAL,
DONTDUMP/DODUMP, which are also flag-only); MADV_DONTNEED; MADV_FREE
(lazy free: the pages stay mapped, clean and old, and reclaim may drop
them while they stay clean); MADV_PAGEOUT (reclaim the range now);
MADV_COLLAPSE (``mm/khugepaged.py``: collapse into THPs now, 6.1 on). Other
valid advice is accepted and does nothing yet (the page work lands with
later issues); unknown advice is EINVAL. Advice that changes only flags
takes the mmap write lock, as the kernel does; the page advice the read
lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.mm import huge_memory
from mmrace.mm.fs_userfaultfd import userfaultfd_remove
from mmrace.mm.internal import errno_error, kfunc
from mmrace.mm.khugepaged import madvise_collapse_range
from mmrace.mm.memory import vm_normal_page, vma_is_anonymous
from mmrace.mm.mm_types import (
    PAGE_MASK,
    PAGE_SHIFT,
    VM_DONTCOPY,
    VM_DONTDUMP,
    VM_IO,
    VM_LOCKED,
    VM_PFNMAP,
    VM_RAND_READ,
    VM_SEQ_READ,
    VM_SHARED,
    VM_SPECIAL,
    VM_WIPEONFORK,
    MmStruct,
    VmAreaStruct,
)
from mmrace.mm.mman import (
    MADV_COLD,
    MADV_COLLAPSE,
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_DONTNEED_LOCKED,
    MADV_FREE,
    MADV_HUGEPAGE,
    MADV_KEEPONFORK,
    MADV_MERGEABLE,
    MADV_NOHUGEPAGE,
    MADV_NORMAL,
    MADV_PAGEOUT,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_RANDOM,
    MADV_REMOVE,
    MADV_SEQUENTIAL,
    MADV_UNMERGEABLE,
    MADV_WILLNEED,
    MADV_WIPEONFORK,
)
from mmrace.mm.mmap import PAGE_ALIGN
from mmrace.mm.mmap_lock import (
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_unlock,
    vma_start_write,
)
from mmrace.mm.mmu_gather import MmuGather, tlb_finish_mmu, tlb_gather_mmu, tlb_remove_tlb_entry
from mmrace.mm.page_alloc import (
    folio_mapcount,
    folio_test_flag,
    folio_test_set_flag,
    folio_trylock,
    folio_unlock,
)
from mmrace.mm.pgtable import (
    PMD_SIZE,
    PageTable,
    pmd_none,
    pmd_trans_huge,
    pmdp_get,
    pte_clear,
    pte_dirty,
    pte_mkclean,
    pte_mkold,
    pte_none,
    pte_offset_map_lock,
    pte_present,
    pte_unmap_unlock,
    pte_young,
    ptep_get,
    ptep_get_and_clear,
    ptep_test_and_clear_young,
    set_pte_at,
    walk_to_pmd,
)
from mmrace.mm.swap_state import folio_free_swap, free_swap_and_cache
from mmrace.mm.swapops import non_swap_entry, pte_to_swp_entry
from mmrace.mm.vma import find_vma, find_vma_prev, vm_flags_reset, vma_lookup, vma_modify_flags
from mmrace.mm.vmscan import folio_isolate_lru, reclaim_pages

EINVAL, ENOMEM = 22, 12

_FLAG_ONLY = {MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_DONTFORK, MADV_DOFORK,
              MADV_WIPEONFORK, MADV_KEEPONFORK, MADV_DONTDUMP, MADV_DODUMP,
              MADV_HUGEPAGE, MADV_NOHUGEPAGE}
_VALID = _FLAG_ONLY | {MADV_WILLNEED, MADV_DONTNEED, MADV_FREE, MADV_REMOVE, MADV_MERGEABLE,
                       MADV_UNMERGEABLE, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_COLD,
                       MADV_PAGEOUT, MADV_POPULATE_READ, MADV_POPULATE_WRITE,
                       MADV_DONTNEED_LOCKED, MADV_COLLAPSE}


def madvise_behavior_valid(behavior: int) -> bool:
    """``madvise_behavior_valid``."""
    return behavior in _VALID


@kfunc
def madvise_update_vma(mm: MmStruct, vma: VmAreaStruct, prev: VmAreaStruct | None,
                       start: int, end: int, new_flags: int) -> VmAreaStruct:
    """``madvise_update_vma``: merge/split, then set flags under the VMA
    write lock."""
    if new_flags == vma.vm_flags:
        return vma
    vma = vma_modify_flags(mm, prev, vma, start, end, new_flags)
    vma_start_write(vma)
    vm_flags_reset(vma, new_flags)
    return vma


def _new_flags(vma: VmAreaStruct, behavior: int) -> int:
    flags = int(vma.vm_flags)
    if behavior == MADV_NORMAL:
        return flags & ~(VM_RAND_READ | VM_SEQ_READ)
    if behavior == MADV_SEQUENTIAL:
        return (flags & ~VM_RAND_READ) | VM_SEQ_READ
    if behavior == MADV_RANDOM:
        return (flags & ~VM_SEQ_READ) | VM_RAND_READ
    if behavior == MADV_DONTFORK:
        return flags | VM_DONTCOPY
    if behavior == MADV_DOFORK:
        if flags & VM_IO:
            raise errno_error(EINVAL)
        return flags & ~VM_DONTCOPY
    if behavior == MADV_WIPEONFORK:
        if vma.vm_file is not None or flags & VM_SHARED:
            raise errno_error(EINVAL)
        return flags | VM_WIPEONFORK
    if behavior == MADV_KEEPONFORK:
        return flags & ~VM_WIPEONFORK
    if behavior == MADV_DONTDUMP:
        return flags | VM_DONTDUMP
    if behavior == MADV_DODUMP:
        if flags & VM_SPECIAL:
            raise errno_error(EINVAL)
        return flags & ~VM_DONTDUMP
    if behavior in (MADV_HUGEPAGE, MADV_NOHUGEPAGE):
        return huge_memory.hugepage_madvise(vma, flags, behavior)
    return flags


@kfunc
def madvise_dontneed(mm: MmStruct, start: int, end: int) -> int:
    """``madvise_dontneed_free`` -> ``zap_page_range_single`` for each VMA in
    the range, under the mmap read lock (zapping needs only a stable VMA).
    VM_LOCKED and VM_PFNMAP VMAs give EINVAL. A VMA registered with a
    userfaultfd that asked for ``UFFD_FEATURE_EVENT_REMOVE`` first sends
    the REMOVE event (``userfaultfd_remove``, which drops the mmap lock and
    waits for the monitor to read it); the VMA is then looked up again.
    Left out: the per-VMA-lock variant of recent kernels."""
    from mmrace.mm.memory import zap_page_range_single
    from mmrace.mm.mm_types import VM_LOCKED, VM_PFNMAP
    from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock

    mmap_read_lock(mm)
    addr = start
    unmapped = False
    while addr < end:
        vma = find_vma(mm, addr)
        if vma is None or vma.vm_start >= end:
            unmapped = True
            break
        if vma.vm_start > addr:
            unmapped = True
        if vma.vm_flags & (VM_LOCKED | VM_PFNMAP):
            mmap_read_unlock(mm)
            raise errno_error(EINVAL)
        s, e = max(addr, vma.vm_start), min(end, vma.vm_end)
        if not userfaultfd_remove(vma, s, e):
            # The REMOVE event was read with the mmap lock dropped: look again.
            mmap_read_lock(mm)
            vma = vma_lookup(mm, s)
            if vma is None:
                mmap_read_unlock(mm)
                raise errno_error(ENOMEM)
            if vma.vm_flags & (VM_LOCKED | VM_PFNMAP):
                mmap_read_unlock(mm)
                raise errno_error(EINVAL)
            e = min(e, vma.vm_end)
        zap_page_range_single(vma, s, e - s)
        addr = e
    mmap_read_unlock(mm)
    if unmapped:
        raise errno_error(ENOMEM)
    return 0


@kfunc
def do_madvise(mm: MmStruct, start: int, len_in: int, behavior: int) -> int:
    """``do_madvise``: as the kernel, advice is applied to every VMA in the
    range and a hole anywhere in it gives ENOMEM at the end."""
    if not madvise_behavior_valid(behavior):
        raise errno_error(EINVAL)
    if start & ~PAGE_MASK:
        raise errno_error(EINVAL)
    length = PAGE_ALIGN(len_in)
    if len_in and not length:
        raise errno_error(EINVAL)
    end = start + length
    if end < start:
        raise errno_error(EINVAL)
    if end == start:
        return 0
    if behavior in (MADV_DONTNEED, MADV_DONTNEED_LOCKED):
        return madvise_dontneed(mm, start, end)
    if behavior == MADV_FREE:
        return madvise_free(mm, start, end)
    if behavior == MADV_PAGEOUT:
        madvise_pageout(mm, start, end)
        return 0
    if behavior == MADV_COLLAPSE:
        return madvise_collapse_range(mm, start, end)
    if behavior not in _FLAG_ONLY:
        return 0
    mmap_write_lock(mm)
    try:
        unmapped = False
        vma, prev = find_vma_prev(mm, start)
        if vma is not None and start > vma.vm_start:
            prev = vma
        while True:
            if vma is None:
                raise errno_error(ENOMEM)
            if start < vma.vm_start:
                unmapped = True
                start = vma.vm_start
                if start >= end:
                    break
            tmp = min(vma.vm_end, end)
            prev = madvise_update_vma(mm, vma, prev, start, tmp, _new_flags(vma, behavior))
            start = tmp
            if start < prev.vm_end:
                start = prev.vm_end
            if start >= end:
                break
            vma = find_vma(mm, prev.vm_end)
        if unmapped:
            raise errno_error(ENOMEM)
    except OSError:
        mmap_write_unlock(mm)
        raise
    mmap_write_unlock(mm)
    return 0


# --- MADV_FREE and MADV_PAGEOUT -----------------------------------------------------------------


def _for_each_vma_in(mm: MmStruct, start: int, end: int,
                     fn: Callable[[VmAreaStruct, int, int], None]) -> None:
    """Apply *fn* to the part of each VMA in ``[start, end)`` (mmap lock
    held); ENOMEM at the end if the range has a hole, as ``madvise_walk_vmas``."""
    addr = start
    unmapped = False
    while addr < end:
        vma = find_vma(mm, addr)
        if vma is None or vma.vm_start >= end:
            unmapped = True
            break
        if vma.vm_start > addr:
            unmapped = True
        s, e = max(addr, vma.vm_start), min(end, vma.vm_end)
        fn(vma, s, e)
        addr = e
    if unmapped:
        raise errno_error(ENOMEM)


def _pmd_ranges(start: int, end: int) -> list[tuple[int, int]]:
    out = []
    addr = start
    while addr < end:
        nxt = min((addr & ~(PMD_SIZE - 1)) + PMD_SIZE, end)
        out.append((addr, nxt))
        addr = nxt
    return out


@kfunc
def madvise_free_pte_range(tlb: MmuGather, vma: VmAreaStruct, pmd: PageTable, mi: int,
                           addr: int, end: int) -> None:
    """``madvise_free_pte_range``: a whole PMD-mapped THP is handled by
    ``madvise_free_huge_pmd``. Under the PTE lock: a swap entry is dropped
    (``free_swap_and_cache``: no need to swap in what is free); a page
    mapped only here loses its swap copy and PG_dirty (under its trylocked
    lock), its PTE becomes old and clean (``ptep_get_and_clear_full`` then
    ``set_pte_at``, flushed by the gather) and the folio lazy-free. Left
    out: large folios mapped by PTEs (the kernel splits them or skips)."""
    mm = vma.vm_mm
    if pmd_trans_huge(pmdp_get(pmd, mi)) and huge_memory.madvise_free_huge_pmd(
            tlb, vma, pmd, mi, addr, end):
        return
    pm = pte_offset_map_lock(mm, pmd, mi, addr)
    if pm is None:
        return
    table = pm.table
    for i in range((end - addr) >> PAGE_SHIFT):
        idx = pm.index + i
        a = addr + (i << PAGE_SHIFT)
        if idx not in table.entries and idx not in table.slots:
            continue  # never touched: none (filling it needs the PTL we hold)
        ptent = ptep_get(table, idx)
        if pte_none(ptent):
            continue
        if not pte_present(ptent):
            entry = pte_to_swp_entry(ptent)
            if not non_swap_entry(entry):
                free_swap_and_cache(entry)
                pte_clear(mm, a, table, idx)
            continue
        folio = vm_normal_page(vma, a, ptent)
        if folio is None or folio.order:
            continue
        if folio.swapcache or folio_test_flag(folio, "dirty", "folio_test_dirty"):
            if not folio_trylock(folio):
                continue
            if folio_mapcount(folio) != 1 or (folio.swapcache and not folio_free_swap(folio)):
                folio_unlock(folio)
                continue
            folio_test_set_flag(folio, "dirty", False, "folio_clear_dirty")
            folio_unlock(folio)
        if pte_young(ptent) or pte_dirty(ptent):
            ptent = ptep_get_and_clear(mm, a, table, idx)
            set_pte_at(mm, a, table, idx, pte_mkclean(pte_mkold(ptent)))
            tlb_remove_tlb_entry(tlb, a)
        huge_memory.folio_mark_lazyfree(folio)
    pte_unmap_unlock(pm)


@kfunc
def madvise_free_single_vma(vma: VmAreaStruct, start: int, end: int) -> None:
    """``madvise_free_single_vma``: only anonymous VMAs (EINVAL otherwise);
    one ``mmu_gather`` for the walk (flushed at ``tlb_finish_mmu``)."""
    if not vma_is_anonymous(vma) or vma.vm_flags & (VM_LOCKED | VM_PFNMAP):
        raise errno_error(EINVAL)
    mm = vma.vm_mm
    tlb = tlb_gather_mmu(mm)
    try:
        for s, e in _pmd_ranges(start, end):
            found = walk_to_pmd(mm, s)
            if found is None:
                continue
            pmdval = pmdp_get(*found)
            if not pmd_none(pmdval):
                madvise_free_pte_range(tlb, vma, found[0], found[1], s, e)
    finally:
        tlb_finish_mmu(tlb)


@kfunc
def madvise_free(mm: MmStruct, start: int, end: int) -> int:
    """MADV_FREE (``madvise_dontneed_free`` with MADV_FREE) under the mmap
    read lock. As for MADV_DONTNEED, a VMA registered with a userfaultfd
    that asked for ``UFFD_FEATURE_EVENT_REMOVE`` first sends the REMOVE
    event (``userfaultfd_remove`` drops the mmap lock and waits for the
    monitor); the lock is then retaken and the VMA looked up again (ENOMEM
    if it is gone). Left out: the per-VMA-lock variant of recent kernels."""

    def one(vma: VmAreaStruct, s: int, e: int) -> None:
        if vma.vm_flags & (VM_LOCKED | VM_PFNMAP):  # madvise_dontneed_free_valid_vma
            raise errno_error(EINVAL)
        if not userfaultfd_remove(vma, s, e):
            mmap_read_lock(mm)
            found = vma_lookup(mm, s)
            if found is None:
                raise errno_error(ENOMEM)
            vma, e = found, min(e, found.vm_end)
        madvise_free_single_vma(vma, s, e)

    mmap_read_lock(mm)
    try:
        _for_each_vma_in(mm, start, end, one)
    finally:
        mmap_read_unlock(mm)
    return 0


@kfunc
def madvise_pageout_range(vma: VmAreaStruct, start: int, end: int,
                          folios: list[Any]) -> None:
    """``madvise_cold_or_pageout_pte_range`` (pageout): under each PTE lock,
    isolate every small folio mapped only here (its young bit cleared)
    onto *folios*; a huge PMD is left alone (the kernel splits a THP that
    is not fully covered and pages out whole ones -- left out)."""
    mm = vma.vm_mm
    for s, e in _pmd_ranges(start, end):
        found = walk_to_pmd(mm, s)
        if found is None:
            continue
        pmdval = pmdp_get(*found)
        if pmd_none(pmdval) or pmd_trans_huge(pmdval):
            continue
        pm = pte_offset_map_lock(mm, found[0], found[1], s)
        if pm is None:
            continue
        table = pm.table
        for i in range((e - s) >> PAGE_SHIFT):
            idx = pm.index + i
            if idx not in table.entries and idx not in table.slots:
                continue  # never touched: none (filling it needs the PTL we hold)
            ptent = ptep_get(table, idx)
            if not pte_present(ptent):
                continue
            folio = vm_normal_page(vma, s + (i << PAGE_SHIFT), ptent)
            if folio is None or folio.order or folio_mapcount(folio) != 1:
                continue
            if pte_young(ptent):
                ptep_test_and_clear_young(vma, s + (i << PAGE_SHIFT), table, idx)
            if folio_isolate_lru(folio):
                folios.append(folio)
        pte_unmap_unlock(pm)


@kfunc
def madvise_pageout(mm: MmStruct, start: int, end: int) -> int:
    """MADV_PAGEOUT (``madvise_pageout``): under the mmap read lock, isolate
    the range's private pages, then reclaim them (``reclaim_pages``,
    references ignored). Returns the pages reclaimed; ENOMEM for a hole,
    EINVAL for a locked or PFN-mapped VMA."""
    reclaimed = 0

    def one(vma: VmAreaStruct, s: int, e: int) -> None:
        nonlocal reclaimed
        if vma.vm_flags & (VM_LOCKED | VM_PFNMAP):
            raise errno_error(EINVAL)
        folios: list[Any] = []
        madvise_pageout_range(vma, s, e, folios)
        if folios:
            reclaimed += reclaim_pages(folios)

    mmap_read_lock(mm)
    try:
        _for_each_vma_in(mm, start, end, one)
    finally:
        mmap_read_unlock(mm)
    return reclaimed

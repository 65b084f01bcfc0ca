"""Page migration of one folio (mm/migrate.c), as ``move_pages(2)`` does it.

``move_pages_one`` finds the folio mapped at an address (under the mmap
read lock, the way ``add_folio_for_migration`` does), isolates it from the
LRU and runs ``migrate_pages`` on it:

1. ``migrate_folio_unmap``: lock the folio, pin its anon_vma, and replace
   every mapping by a migration entry (``try_to_migrate``: under the rmap
   lock and each PTL, ``ptep_clear_flush`` first);
2. ``migrate_folio_move``: ``folio_migrate_mapping`` checks that nothing
   but the isolation (and the page or swap cache) references the folio --
   a GUP pin makes it fail with -EAGAIN -- and moves the cache entry;
   the data are copied; ``remove_migration_ptes`` maps the new folio
   wherever a migration entry for the old one is;
3. on failure the old folio is mapped back (``remove_migration_ptes(src,
   src)``).

A fault that finds a migration entry waits until the old folio is
unlocked (``migration_entry_wait``), then retries.

Left out: large folios (THP migration; ``move_pages`` returns -EBUSY for
them here, where the kernel would split or move the THP), NUMA nodes
(there is one; the status of a moved page is node 0), async/sync modes
and retries, ``MPOL_MF_MOVE_ALL``, movable_ops pages, hugetlb,
device-private memory, mmu notifiers.
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import RMW, ViolationError, visible
from mmrace.mm.internal import kernel_config, kfunc
from mmrace.mm.memory import vm_normal_page
from mmrace.mm.mm_types import MmStruct, VmAreaStruct
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.mm.page_alloc import (
    Folio,
    folio_alloc,
    folio_get,
    folio_lock,
    folio_mapcount,
    folio_put,
    folio_ref_count,
    folio_ref_freeze,
    folio_ref_unfreeze,
    folio_test_anon,
    folio_trylock,
    folio_unlock,
    folio_wait_locked_finish,
    folio_wait_locked_prepare,
    pfn_folio,
    visible_contents,
)
from mmrace.mm.page_vma_mapped import (
    PVMW_MIGRATION,
    PVMW_SYNC,
    PageVmaMappedWalk,
    page_vma_mapped_walk,
)
from mmrace.mm.pgtable import (
    PageTable,
    pfn_pte,
    pmd_trans_huge,
    pmdp_get,
    pte_mkdirty,
    pte_mksoft_dirty,
    pte_mkuffd_wp,
    pte_mkwrite,
    pte_mkyoung,
    pte_offset_map_lock,
    pte_present,
    pte_unmap_unlock,
    ptep_get,
    set_pte_at,
    vm_prot_to_pte,
    walk_to_pmd,
)
from mmrace.mm.rmap import (
    RmapWalkControl,
    folio_add_anon_rmap_ptes,
    folio_add_file_rmap_pte,
    get_anon_vma,
    put_anon_vma,
    rmap_walk,
    try_to_migrate,
)
from mmrace.mm.swapfile import swap_slot
from mmrace.mm.swapops import (
    is_migration_entry,
    is_readable_exclusive_migration_entry,
    is_swap_pte,
    is_writable_migration_entry,
    pte_swp_soft_dirty,
    pte_swp_uffd_wp,
    pte_to_swp_entry,
    swp_offset_pfn,
)
from mmrace.mm.vma import vma_lookup
from mmrace.mm.vmscan import folio_isolate_lru, folio_putback_lru

EFAULT, ENOENT, EACCES, EBUSY, EAGAIN = 14, 2, 13, 16, 11
MIGRATEPAGE_SUCCESS = 0


# --- waiting for a migration -----------------------------------------------------------


@kfunc
def migration_entry_wait(mm: MmStruct, pmd: PageTable, mi: int, address: int) -> None:
    """``migration_entry_wait`` / ``migration_entry_wait_on_locked``: under
    the PTL, if the PTE is still a migration entry, queue on the old
    folio's lock bit (migration holds the lock as long as its entries
    exist), drop the PTL and sleep until it is unlocked; the caller then
    retries the fault."""
    pm = pte_offset_map_lock(mm, pmd, mi, address)
    if pm is None:
        return
    pte = ptep_get(pm.table, pm.index)
    if not is_swap_pte(pte) or not is_migration_entry(pte_to_swp_entry(pte)):
        pte_unmap_unlock(pm)
        return
    folio = pfn_swap_entry_folio(pte_to_swp_entry(pte))
    woken = folio_wait_locked_prepare(folio)
    pte_unmap_unlock(pm)
    folio_wait_locked_finish(folio, woken)


def pfn_swap_entry_folio(entry: Any) -> Folio:
    """``pfn_swap_entry_folio`` (include/linux/swapops.h): the folio a
    migration entry stands for, which migration keeps locked for as long as
    any of its entries exists -- the kernel BUGs if it is not (before 5.x
    the same check was ``migration_entry_to_page``'s ``BUG_ON``). The lock
    bit is read without a visible operation: while the entry exists nobody
    may unlock the folio, so a rule-abiding unlock cannot race with this
    read, and one that broke the rule is what the check reports."""
    folio = pfn_folio(swp_offset_pfn(entry))
    if is_migration_entry(entry) and not folio.locked:
        raise ViolationError(
            "bug", "kernel BUG in pfn_swap_entry_folio: migration entry of an unlocked folio",
            f"kernel BUG at include/linux/swapops.h: a migration entry for {folio.name}, "
            "which is not locked: the migration that made the entry has finished (its "
            "remove_migration_ptes missed this entry), so the folio it names may be freed "
            "and reused")
    return folio


# --- putting the PTEs back -------------------------------------------------------------------


@kfunc
def remove_migration_pte(folio: Folio, vma: VmAreaStruct, addr: int, src: Folio) -> bool:
    """``remove_migration_pte``: every migration entry for *src* in *vma*
    (found by ``page_vma_mapped_walk`` with PVMW_SYNC | PVMW_MIGRATION: each
    entry looked at under its PTL; before ``remove-migration-pte-ptl``, 3.1,
    peeked at first without it)
    becomes a PTE mapping the same page of *folio*: writable if the entry
    was, exclusive unless it was a plain readable one, soft-dirty and
    uffd-wp carried over; the folio gains a mapping and a reference."""
    mm = vma.raw("vm_mm")
    # Before "mm: fix race between mremap and removing migration entry"
    # (3.1) the entry was peeked at without the PTL (is_swap_pte before the
    # lock): the walk without PVMW_SYNC does that (map_pte's lockless check).
    sync = PVMW_SYNC if kernel_config(mm).has("remove-migration-pte-ptl") else 0
    pvmw = PageVmaMappedWalk(src, vma, addr, sync | PVMW_MIGRATION)
    while page_vma_mapped_walk(pvmw):
        assert pvmw.pte is not None
        table, index = pvmw.pte.table, pvmw.pte_index
        old = ptep_get(table, index)
        entry = pte_to_swp_entry(old)
        idx = swp_offset_pfn(entry) - src.pfn
        pte = pte_mkyoung(pfn_pte(folio.pfn + idx, vm_prot_to_pte(vma.vm_page_prot)))
        if pte_swp_soft_dirty(old):
            pte = pte_mksoft_dirty(pte)
        if is_writable_migration_entry(entry):
            pte = pte_mkwrite(pte)
            if folio.dirty:
                pte = pte_mkdirty(pte)
        elif pte_swp_uffd_wp(old):
            pte = pte_mkuffd_wp(pte)
        exclusive = bool(folio.anon) and (is_writable_migration_entry(entry)
                                          or is_readable_exclusive_migration_entry(entry))
        folio_get(folio)
        if folio.anon:
            folio_add_anon_rmap_ptes(folio, idx, 1, vma, pvmw.address, exclusive)
        else:
            folio_add_file_rmap_pte(folio, idx, vma)
        set_pte_at(mm, pvmw.address, table, index, pte)
        mm.rss += 1
    return True


@kfunc
def remove_migration_ptes(src: Folio, dst: Folio, locked: bool = False) -> None:
    """``remove_migration_ptes``: walk *dst*'s rmap (it has *src*'s mapping
    and index) and replace *src*'s migration entries by *dst*'s pages."""

    def one(f: Any, vma: Any, addr: int) -> bool:
        return remove_migration_pte(f, vma, addr, src)

    rmap_walk(dst, RmapWalkControl(one, "remove_migration_ptes"), locked=locked)


# --- moving the folio ---------------------------------------------------------------------------


def folio_expected_refs(folio: Folio) -> int:
    """``folio_expected_refs``: the isolation's reference, plus one per page
    for a page-cache or swap-cache folio."""
    if folio.anon and not folio.swapcache:
        return 1
    return 1 + folio.nr_pages


@kfunc
def folio_migrate_mapping(dst: Folio, src: Folio) -> int:
    """``folio_migrate_mapping``: fail with -EAGAIN unless only the expected
    references hold *src* (so no GUP pin, no racing lookup); move its page-
    or swap-cache entry to *dst* (freezing *src*'s count meanwhile) and give
    *dst* its mapping and index."""
    expected = folio_expected_refs(src)
    if src.anon and not src.swapcache:
        if folio_ref_count(src) != expected:
            return -EAGAIN
    else:
        cache = swap_slot(src.swap) if src.swapcache else src.mapping
        visible(cache, RMW, "xas_lock_irq (folio_migrate_mapping)")
        if not folio_ref_freeze(src, expected):
            return -EAGAIN
        dst._refcount += src.nr_pages  # the cache's references (dst is private)
        if src.swapcache:
            slot = swap_slot(src.swap)
            slot.folio = dst
            slot.generation += 1
            dst.swapcache, dst.swap = True, src.swap
            src.swapcache, src.swap = False, None
        else:
            for i in range(src.nr_pages):
                src.mapping.i_pages[src.index + i] = dst
        folio_ref_unfreeze(src, expected - src.nr_pages)
    dst.mapping = src.mapping
    dst.index = src.index
    dst.anon = src.anon
    dst.swapbacked = src.swapbacked
    return MIGRATEPAGE_SUCCESS


@kfunc
def folio_migrate_copy(dst: Folio, src: Folio) -> None:
    """``folio_migrate_copy``: copy the data (a visible read of *src*'s
    contents and write of *dst*'s) and the flags (dirty, uptodate,
    referenced, active)."""
    visible_contents(src, 0, "folio_copy (read)")
    data = [dict(w) for w in src.contents.words]
    visible_contents(dst, 1, "folio_copy (write)")
    dst.contents.words = data
    dst.dirty, dst.uptodate = src.dirty, src.uptodate
    dst.referenced, dst.active = src.referenced, src.active


@kfunc
def move_to_new_folio(dst: Folio, src: Folio) -> int:
    """``move_to_new_folio`` / ``migrate_folio``: mapping, then data."""
    rc = folio_migrate_mapping(dst, src)
    if rc != MIGRATEPAGE_SUCCESS:
        return rc
    folio_migrate_copy(dst, src)
    return MIGRATEPAGE_SUCCESS


@kfunc
def migrate_pages_one(src: Folio) -> int:
    """``migrate_pages`` of one isolated small folio (the caller's isolation
    reference is consumed): unmap to migration entries, move, map the new
    folio (or, on failure, the old one again). Returns 0 or -errno."""
    dst = folio_alloc(0)
    if not folio_trylock(src):
        folio_lock(src)
    anon_vma = None
    if folio_test_anon(src) and src.mapping is not None:
        anon_vma = src.mapping
        get_anon_vma(anon_vma)
    dst.locked = True  # __folio_set_locked: nobody can see dst yet
    was_mapped = folio_mapcount(src) > 0
    if was_mapped:
        try_to_migrate(src, 0)
    rc = -EAGAIN
    if not folio_mapcount(src):
        rc = move_to_new_folio(dst, src)
    if rc == MIGRATEPAGE_SUCCESS:
        if was_mapped:
            remove_migration_ptes(src, dst)
        folio_unlock(dst)
        folio_unlock(src)
        folio_put(dst)  # the mappings (and cache) hold dst now
        src.access(RMW, "folio_clear_lru (migrated)")
        src.isolated = False
        folio_put(src)  # the isolation's reference: src is freed
    else:
        if was_mapped:
            remove_migration_ptes(src, src)
        folio_unlock(dst)
        folio_put(dst)
        folio_unlock(src)
        folio_putback_lru(src)
    if anon_vma is not None:
        put_anon_vma(anon_vma)
    return rc


# --- move_pages(2) for one page ------------------------------------------------------------


@kfunc
def move_pages_one(mm: MmStruct, addr: int) -> int:
    """``move_pages(2)`` of the page at *addr* (``add_folio_for_migration``,
    then ``migrate_pages``): the per-page status -- 0 (the node it is on
    now) or -EFAULT (no VMA, or the zero page), -ENOENT (nothing mapped),
    -EACCES (mapped by others), -EBUSY (could not be isolated, or a THP),
    -EAGAIN (still referenced: e.g. pinned)."""
    mmap_read_lock(mm)
    vma = vma_lookup(mm, addr)
    if vma is None:
        mmap_read_unlock(mm)
        return -EFAULT
    folio: Folio | None = None
    err = -ENOENT
    found = walk_to_pmd(mm, addr)
    if found is not None:
        if pmd_trans_huge(pmdp_get(*found)):
            err = -EBUSY
        else:
            pm = pte_offset_map_lock(mm, found[0], found[1], addr)
            if pm is not None:
                pte = ptep_get(pm.table, pm.index)
                if pte_present(pte):
                    folio = vm_normal_page(vma, addr, pte)
                    if folio is None:
                        err = -EFAULT  # the zero page
                    else:
                        folio_get(folio)
                pte_unmap_unlock(pm)
                if folio is not None and folio.order:
                    folio_put(folio)
                    folio, err = None, -EBUSY
    if folio is not None:
        if folio_mapcount(folio) > 1:
            err = -EACCES
        elif folio_isolate_lru(folio):
            err = 0
        else:
            err = -EBUSY
        folio_put(folio)
    mmap_read_unlock(mm)
    if err:
        return err
    assert folio is not None
    return migrate_pages_one(folio)


__all__ = [
    "migrate_pages_one",
    "migration_entry_wait",
    "move_pages_one",
    "remove_migration_ptes",
]

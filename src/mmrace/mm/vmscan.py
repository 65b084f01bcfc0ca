"""Page reclaim of single folios (the essentials of mm/vmscan.c's
``shrink_folio_list``), and LRU isolation.

A reclaim step takes one folio off the LRU (``folio_isolate_lru``: a
reference and PG_lru cleared) and runs ``shrink_folio_list`` on it, under
no mm lock at all -- only the folio lock and, inside the rmap walks, the
anon_vma or ``i_mmap_rwsem`` for read:

* ``folio_check_references``: ``folio_referenced`` clears the accessed
  bits of every mapping (an rmap walk); a folio referenced twice, or
  mapped in an mlocked VMA, is activated, once is kept;
* an anonymous swap-backed folio gets a swap slot and enters the swap
  cache (``add_to_swap``);
* ``try_to_unmap``: every mapping becomes a swap entry (anonymous), is
  dropped (file), or -- a lazy-free (MADV_FREE) folio -- is discarded if
  still clean;
* a dirty folio is written out (``pageout``: for a file folio
  ``folio_clear_dirty_for_io`` first write-protects its shared mappings
  with ``folio_mkclean``); writeback is synchronous and unlocks the folio,
  which is then locked again;
* ``__remove_mapping`` frees it from the swap or page cache if only the
  isolation and the cache reference it (``folio_ref_freeze``); a lazy-free
  folio is freed if only the isolation does.

Left out: LRU lists and their scanning (the scenario names the folio),
memcg, large folios (kept: no THP swap-out or split in reclaim), shmem
writeout (shmem folios are kept), batched TLB flushes (reclaim flushes
each PTE as it clears it), writeback as I/O, the workingset.
"""

from __future__ import annotations

from mmrace.engine import RMW, visible
from mmrace.mm.internal import kfunc
from mmrace.mm.mm_types import VM_EXEC, VM_LOCKED
from mmrace.mm.page_alloc import (
    Folio,
    folio_mapcount,
    folio_put,
    folio_ref_freeze,
    folio_ref_unfreeze,
    folio_test_flag,
    folio_test_set_flag,
    folio_trylock,
    folio_unlock,
    free_folio,
    visible_contents,
)
from mmrace.mm.rmap import (
    TTU_BATCH_FLUSH,
    folio_mark_dirty,
    folio_mkclean,
    folio_referenced,
    try_to_unmap,
)
from mmrace.mm.swap_state import __delete_from_swap_cache, add_to_swap, swap_writepage
from mmrace.mm.swapfile import put_swap_folio, swap_slot

FOLIOREF_RECLAIM, FOLIOREF_RECLAIM_CLEAN, FOLIOREF_KEEP, FOLIOREF_ACTIVATE = range(4)
PAGE_KEEP, PAGE_ACTIVATE, PAGE_SUCCESS, PAGE_CLEAN = range(4)


# --- LRU isolation ---------------------------------------------------------------------------


@kfunc
def folio_isolate_lru(folio: Folio) -> bool:
    """``folio_isolate_lru``: take the folio off its LRU list (clear PG_lru,
    take a reference); False if it is isolated already -- or gone: a freed
    folio is on no LRU list (one visible RMW, never a use-after-free)."""
    ev = visible(folio, RMW, "folio_isolate_lru")
    if not folio_isolate_lru_in_op(folio):
        if ev is not None:
            ev.detail = "not on the LRU"
        return False
    return True


def folio_isolate_lru_in_op(folio: Folio) -> bool:
    """The effect of :func:`folio_isolate_lru` within a visible RMW of
    *folio* the caller already made (its lookup, say)."""
    if folio.isolated or folio.freed_at is not None or folio._refcount == 0:
        return False
    folio.isolated = True
    folio._refcount += 1
    return True


@kfunc
def folio_putback_lru(folio: Folio) -> None:
    """``folio_putback_lru``: back on the LRU; the isolation's reference goes."""
    folio.access(RMW, "folio_putback_lru")
    folio.isolated = False
    folio_put(folio)


# --- shrink_folio_list ----------------------------------------------------------------------------


def folio_is_file_lru(folio: Folio) -> bool:
    """``folio_is_file_lru``: not swap-backed (file pages, and lazy-free
    anonymous ones)."""
    return not folio.swapbacked


@kfunc
def folio_check_references(folio: Folio) -> int:
    """``folio_check_references``: what to do with the folio, from its
    mappings' accessed bits (cleared by ``folio_referenced``) and its
    PG_referenced."""
    referenced_ptes, vm_flags = folio_referenced(folio)
    referenced_folio = folio_test_set_flag(folio, "referenced", False,
                                           "folio_test_clear_referenced")
    if vm_flags & VM_LOCKED:
        return FOLIOREF_ACTIVATE
    if referenced_ptes:
        folio_test_set_flag(folio, "referenced", True, "folio_set_referenced")
        if referenced_folio or referenced_ptes > 1:
            return FOLIOREF_ACTIVATE
        if vm_flags & VM_EXEC and folio_is_file_lru(folio):
            return FOLIOREF_ACTIVATE
        return FOLIOREF_KEEP
    if referenced_folio and folio_is_file_lru(folio):
        return FOLIOREF_RECLAIM_CLEAN
    return FOLIOREF_RECLAIM


@kfunc
def folio_clear_dirty_for_io(folio: Folio) -> bool:
    """``folio_clear_dirty_for_io``: before writeback, write-protect and
    clean the shared mappings of a file folio (``folio_mkclean``; their
    dirty bits go to the folio), then test-and-clear PG_dirty."""
    if not folio.anon and folio_mkclean(folio):
        folio_mark_dirty(folio)
    return folio_test_set_flag(folio, "dirty", False, "folio_test_clear_dirty")


@kfunc
def pageout(folio: Folio) -> int:
    """``pageout``: write a dirty, locked, unmapped folio: an anonymous one
    to its swap slot, a file one to the file's blocks. The write is
    synchronous and, as ``->writepage`` does, unlocks the folio."""
    if not folio_clear_dirty_for_io(folio):
        return PAGE_CLEAN
    if folio.swapcache:
        swap_writepage(folio)
    else:
        visible_contents(folio, 0, "writepage (read)")
        mapping = folio.mapping
        visible(mapping, RMW, "writepage")
        for i in range(folio.nr_pages):
            mapping.backing[folio.index + i] = dict(folio.contents.words[i])
    folio_unlock(folio)
    return PAGE_SUCCESS


@kfunc
def __remove_mapping(folio: Folio) -> bool:
    """``__remove_mapping``: under the cache's lock, freeze the refcount at
    the isolation's plus the cache's references (fails if anyone else --
    a mapping, a GUP pin, a racing lookup -- holds one), give up if it was
    redirtied meanwhile, and delete the folio from the swap or page cache."""
    cache = swap_slot(folio.swap) if folio.swapcache else folio.mapping
    visible(cache, RMW, "xa_lock_irq (__remove_mapping)")
    refcount = 1 + folio.nr_pages
    if not folio_ref_freeze(folio, refcount):
        return False
    if folio_test_flag(folio, "dirty", "folio_test_dirty"):
        folio_ref_unfreeze(folio, refcount)
        return False
    if folio.swapcache:
        entry = folio.swap
        __delete_from_swap_cache(folio, entry)
        put_swap_folio(folio, entry)
    else:
        mapping = folio.mapping
        for i in range(folio.nr_pages):
            mapping.i_pages.pop(folio.index + i, None)
        folio.mapping = None
    return True


def _free_frozen(folio: Folio) -> None:
    """The end of ``shrink_folio_list`` for a reclaimed folio: its count is
    frozen at zero, so nobody can lock it; clear PG_locked and free it."""
    folio.locked = False
    free_folio(folio)


@kfunc
def shrink_folio_list(folios: list[Folio], ignore_references: bool = False) -> int:
    """``shrink_folio_list`` for isolated folios (each holding the
    isolation's reference, which is consumed): returns how many pages were
    reclaimed. See the module docstring for the steps."""
    nr_reclaimed = 0
    for folio in folios:
        if not folio_trylock(folio):
            folio_putback_lru(folio)
            continue
        if ignore_references:
            references = FOLIOREF_RECLAIM
        else:
            references = folio_check_references(folio)
        if references in (FOLIOREF_ACTIVATE, FOLIOREF_KEEP):
            _keep_locked(folio, references == FOLIOREF_ACTIVATE)
            continue
        if folio.order:
            _keep_locked(folio, False)  # large folios: left out
            continue
        anon = folio.anon
        swapbacked = folio_test_flag(folio, "swapbacked", "folio_test_swapbacked")
        if anon and swapbacked and not folio.swapcache:
            if not add_to_swap(folio):
                _keep_locked(folio, True)
                continue
        elif not anon and swapbacked:
            _keep_locked(folio, False)  # shmem writeout: left out
            continue
        if folio_mapcount(folio):
            try_to_unmap(folio, TTU_BATCH_FLUSH)
            if folio_mapcount(folio):
                _keep_locked(folio, True)
                continue
        lazyfree = anon and not folio_test_flag(folio, "swapbacked", "folio_test_swapbacked")
        if not lazyfree and folio_test_flag(folio, "dirty", "folio_test_dirty"):
            if references == FOLIOREF_RECLAIM_CLEAN:
                _keep_locked(folio, False)
                continue
            rc = pageout(folio)
            if rc == PAGE_SUCCESS:
                if folio_test_flag(folio, "dirty", "folio_test_dirty"):
                    folio_putback_lru(folio)
                    continue
                if not folio_trylock(folio):
                    folio_putback_lru(folio)
                    continue
                if folio_test_flag(folio, "dirty", "folio_test_dirty"):
                    _keep_locked(folio, False)
                    continue
        if lazyfree:
            # Only the isolation may still reference it (follow
            # __remove_mapping): a racing reference keeps the folio.
            if not folio_ref_freeze(folio, 1):
                _keep_locked(folio, False)
                continue
        elif not __remove_mapping(folio):
            _keep_locked(folio, False)
            continue
        _free_frozen(folio)
        nr_reclaimed += folio.nr_pages
    return nr_reclaimed


def _keep_locked(folio: Folio, activate: bool) -> None:
    if activate:
        folio_test_set_flag(folio, "active", True, "folio_set_active")
    folio_unlock(folio)
    folio_putback_lru(folio)


@kfunc
def reclaim_folio(folio: Folio, ignore_references: bool = False) -> int:
    """One reclaim step on *folio*, as kswapd's ``shrink_inactive_list`` does
    it for a folio at the tail of the LRU: isolate it (0 if it is not on
    the LRU any more) and ``shrink_folio_list`` it. Returns the pages
    reclaimed."""
    if not folio_isolate_lru(folio):
        return 0
    return shrink_folio_list([folio], ignore_references)


def reclaim_pages(folios: list[Folio]) -> int:
    """``reclaim_pages`` (MADV_PAGEOUT): shrink isolated folios, ignoring
    their references."""
    return shrink_folio_list(folios, ignore_references=True)


__all__ = [
    "folio_check_references",
    "folio_isolate_lru",
    "folio_putback_lru",
    "reclaim_folio",
    "reclaim_pages",
    "shrink_folio_list",
]

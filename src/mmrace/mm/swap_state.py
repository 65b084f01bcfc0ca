"""The swap cache and swap I/O (mm/swap_state.c, with ``folio_free_swap``
and ``free_swap_and_cache`` of mm/swapfile.c and the synchronous
``swap_writepage`` / ``swap_read_folio`` of mm/page_io.c).

A folio in the swap cache has PG_swapcache, ``folio.swap`` its entry, and
the cache holds one reference per page; the slot (``swapfile.SwapSlot``)
points back to it. Adding and deleting is one visible operation on the
slot (the swap address space's ``i_pages`` lock for that index).

I/O is synchronous, as to a RAM disk: ``swap_writepage`` copies the
folio's data into the slot (a visible read of the folio's contents) and
``swap_read_folio`` copies it back into a new folio.

A swap-in that finds its folio in the swap cache records the fault in the
VMA's readahead state, ``vma->swap_readahead_info``: one ``atomic_long_t``
packing the page address of the last fault, the window size and the hits
(``SWAP_RA_VAL``). It is written with atomic operations under whatever lock
the fault holds -- the mmap read lock, or since 6.6 the per-VMA lock -- the
rule table's ``atomic`` token: the one VMA field several readers of the
same VMA may write at once.

Left out: readahead itself (no folio is ever marked for readahead, so hits
stay 0) and the window heuristics, the ``SWP_SYNCHRONOUS_IO`` path that
skips the swap cache, shadow entries and workingset detection, large folios.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.engine import READ, RMW, WAIT, WRITE, visible
from mmrace.mm.internal import kfunc
from mmrace.mm.mm_types import PAGE_MASK, PAGE_SHIFT
from mmrace.mm.page_alloc import (
    Folio,
    folio_alloc,
    folio_put_refs,
    folio_ref_add,
    folio_try_get,
    folio_trylock,
    folio_unlock,
    visible_contents,
)
from mmrace.mm.rules_check import check_vma_write
from mmrace.mm.swapfile import (
    EEXIST,
    SwapSlot,
    __swap_count,
    folio_alloc_swap,
    put_swap_folio,
    swap_free,
    swap_slot,
    swapcache_prepare,
)
from mmrace.mm.swapops import SwpEntry

# --- the VMA's readahead state ---------------------------------------------------------

SWAP_RA_WIN_SHIFT = PAGE_SHIFT // 2
SWAP_RA_HITS_MASK = (1 << SWAP_RA_WIN_SHIFT) - 1
SWAP_RA_HITS_MAX = SWAP_RA_HITS_MASK
SWAP_RA_WIN_MASK = ~PAGE_MASK & ~SWAP_RA_HITS_MASK


def SWAP_RA_VAL(addr: int, win: int, hits: int) -> int:
    return (addr & PAGE_MASK) | (win << SWAP_RA_WIN_SHIFT) | hits


def swap_ra_hits(val: int) -> int:
    return val & SWAP_RA_HITS_MASK


def swap_ra_win(val: int) -> int:
    return (val & SWAP_RA_WIN_MASK) >> SWAP_RA_WIN_SHIFT


def get_swap_ra_val(vma: Any) -> int:
    """``GET_SWAP_RA_VAL``: ``atomic_long_read(&vma->swap_readahead_info)``
    (a checked read of the field)."""
    return int(vma.swap_readahead_info)


def swap_update_readahead(vma: Any, addr: int, readahead: bool) -> None:
    """``swap_update_readahead`` (the VMA half of ``swap_cache_get_folio``
    before 6.16): count a readahead hit and record the fault address with
    ``atomic_long_set`` (checked as an atomic write)."""
    val = get_swap_ra_val(vma)
    win = swap_ra_win(val)
    hits = swap_ra_hits(val)
    if readahead:
        hits = min(hits + 1, SWAP_RA_HITS_MAX)
    new = SWAP_RA_VAL(addr, win, hits)
    if vma.published:
        check_vma_write(vma, "swap_readahead_info", new, atomic=True)
    vma._f_swap_readahead_info = new


# --- the swap cache ------------------------------------------------------------------------


@kfunc
def add_to_swap_cache(folio: Folio, entry: SwpEntry) -> None:
    """``add_to_swap_cache``: under the swap address space's lock, enter
    the locked *folio* at *entry* (the cache takes a reference per page)."""
    slot = swap_slot(entry)
    ev = visible(slot, WRITE, "add_to_swap_cache")
    slot.folio = folio
    slot.generation += 1
    if ev is not None:
        ev.detail = folio.name
    folio_ref_add(folio, folio.nr_pages)
    folio.access(WRITE, "folio_set_swapcache")
    folio.swapcache = True
    folio.swap = entry


@kfunc
def __delete_from_swap_cache(folio: Folio, entry: SwpEntry) -> None:
    """``__delete_from_swap_cache``: take *folio* out of the cache (the
    caller drops the cache's references and the slot's cache bit)."""
    slot = swap_slot(entry)
    visible(slot, WRITE, "__delete_from_swap_cache")
    slot.folio = None
    slot.generation += 1
    folio.access(WRITE, "folio_clear_swapcache")
    folio.swapcache = False
    folio.swap = None


@kfunc
def delete_from_swap_cache(folio: Folio) -> None:
    """``delete_from_swap_cache``: remove the locked *folio* from the swap
    cache, clear the slot's cache bit and drop the cache's references."""
    entry = folio.swap
    __delete_from_swap_cache(folio, entry)
    put_swap_folio(folio, entry)
    folio_put_refs(folio, folio.nr_pages)


@kfunc
def swap_cache_get_folio(entry: SwpEntry, vma: Any = None, addr: int = 0) -> Folio | None:
    """``swap_cache_get_folio``: the cached folio for *entry* with a
    reference (``folio_try_get``), or None. A fault (*vma*, *addr*) that
    finds it updates the VMA's readahead state."""
    slot = swap_slot(entry)
    visible(slot, READ, "swap_cache_get_folio")
    folio: Any = slot.folio
    if folio is None or slot.freed:
        return None
    if not folio_try_get(folio):
        return None
    if vma is not None:
        swap_update_readahead(vma, addr, False)
    return folio  # type: ignore[no-any-return]


@kfunc
def add_to_swap(folio: Folio) -> bool:
    """``add_to_swap``: give the locked anonymous *folio* a swap slot and
    put it in the swap cache; mark it dirty so it is written out (a
    MADV_FREE'd folio whose PTE dirty bit was cleared must still be
    written). False if no slot could be had (never, here)."""
    entry = folio_alloc_swap(folio)
    add_to_swap_cache(folio, entry)
    folio.access(RMW, "folio_mark_dirty")
    folio.dirty = True
    return True


@kfunc
def folio_swapped(folio: Folio) -> bool:
    """``folio_swapped``: some swap PTE still names the folio's slot."""
    return __swap_count(folio.swap) > 0


@kfunc
def folio_free_swap(folio: Folio) -> bool:
    """``folio_free_swap``: if no swap PTE names the locked *folio*'s slot
    any more, drop it from the swap cache and free the slot; the data now
    exists only in the folio, which is therefore dirty."""
    if not folio.swapcache:
        return False
    if folio_swapped(folio):
        return False
    delete_from_swap_cache(folio)
    folio.access(RMW, "folio_set_dirty")
    folio.dirty = True
    return True


@kfunc
def free_swap_and_cache(entry: SwpEntry) -> None:
    """``free_swap_and_cache``: a swap PTE was zapped; drop its count and,
    if only the swap cache still holds the slot, try to free the cached
    folio too (only if its lock can be taken at once, as the kernel's
    ``__try_to_reclaim_swap``)."""
    slot = swap_slot(entry)
    swap_free(entry)
    if slot.count or not slot.has_cache:
        return
    folio = swap_cache_get_folio(entry)
    if folio is None:
        return
    if folio_trylock(folio):
        if folio.swapcache and folio.swap == entry and not folio._mapcount:
            folio_free_swap(folio)
        folio_unlock(folio)
    folio_put_refs(folio, 1)


@kfunc
def free_swap_cache(folio: Folio) -> None:
    """``free_swap_cache``: a folio being unmapped that only the swap cache
    would keep leaves it, if its lock can be had at once."""
    if folio_trylock(folio):
        if folio.swapcache and not folio._mapcount:
            folio_free_swap(folio)
        folio_unlock(folio)


# --- swap I/O (mm/page_io.c) ---------------------------------------------------------------


@kfunc
def swap_writepage(folio: Folio) -> None:
    """``swap_writepage`` / ``swap_writeout``: write the folio's data to its
    slot, synchronously (the write completes before this returns)."""
    visible_contents(folio, READ, "swap_writepage (read)")
    slot = swap_slot(folio.swap)
    visible(slot, WRITE, "swap_writepage")
    slot.data = [dict(w) for w in folio.contents.words]


@kfunc
def swap_read_folio(folio: Folio, entry: SwpEntry) -> None:
    """``swap_read_folio``: fill a new locked *folio* from *entry*'s slot and
    mark it up to date."""
    slot = swap_slot(entry)
    visible(slot, READ, "swap_read_folio")
    data = slot.data
    visible_contents(folio, WRITE, "swap_read_folio (write)")
    if data is not None:
        folio.contents.words = [dict(w) for w in data]
    folio.uptodate = True


def _cache_changed(slot: SwapSlot, gen: int) -> Callable[[], bool]:
    """The guard of a swap-in waiting for another one: the slot's cache
    entry changed since *gen* (monotone: generations only grow)."""
    return lambda: slot.generation != gen


@kfunc
def read_swap_cache_async(entry: SwpEntry, name: str = "") -> Folio | None:
    """``read_swap_cache_async`` / ``__read_swap_cache_async``: the swap-cache
    folio for *entry* (with a reference), reading it in if it is not
    cached: allocate, claim the slot's cache bit (``swapcache_prepare``),
    add to the cache, read. If another task holds the cache bit but has not
    added its folio yet, wait for it (the kernel sleeps a tick and
    retries). None if the entry is no longer in use."""
    slot = swap_slot(entry)
    while True:
        folio = swap_cache_get_folio(entry)
        if folio is not None:
            return folio
        if not __swap_count(entry):
            return None
        new = folio_alloc(0, name)
        err = swapcache_prepare(entry)
        # Read in the same event as swapcache_prepare (no visible operation
        # in between): the cache state that made it fail.
        gen = slot.generation
        if err == -EEXIST:
            folio_put_refs(new, 1)
            visible(slot, WAIT, "swapcache_prepare: wait", guard=_cache_changed(slot, gen))
            continue
        if err:
            folio_put_refs(new, 1)
            return None
        new.locked = True  # __folio_set_locked: nobody else can see it yet
        new.swapbacked = True
        add_to_swap_cache(new, entry)
        swap_read_folio(new, entry)
        folio_unlock(new)
        return new


__all__ = [
    "SWAP_RA_VAL",
    "add_to_swap",
    "add_to_swap_cache",
    "delete_from_swap_cache",
    "folio_alloc_swap",
    "folio_free_swap",
    "free_swap_and_cache",
    "get_swap_ra_val",
    "read_swap_cache_async",
    "swap_cache_get_folio",
    "swap_read_folio",
    "swap_update_readahead",
    "swap_writepage",
]

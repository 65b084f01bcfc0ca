"""Physical memory: folios, the memory map and the shared zero page
(mm/page_alloc.c, mm/swap.c's ``folio_put``, include/linux/mm.h and
include/linux/page_ref.h helpers).

A :class:`Folio` is a kernel object with a lifetime. Its reference count,
map count, flags and folio lock are fields of the folio, so every access
to them is a visible operation on the folio (all of them conflict, as a
cache line would). The data (512 8-byte words per page, kept sparsely)
is its own shared object, :class:`FolioContents`, so
that loads and stores of data do not conflict with reference counting;
freeing a folio writes both, so DPOR orders every data access against
the free and an access after it is a use-after-free.

Page frame numbers are handed out per execution, in allocation order
(deterministic); ``pfn_to_folio`` looks them up in the execution's memory
map, which keeps freed folios so that a stale pfn leads to a reported
use-after-free rather than a Python error.

Data footprints are per word (see :class:`FolioContents`): two CPUs
storing to different words of one page commute, so DPOR does not reverse
them (they were half of all its backtracking on ``deferred_flush_cow``);
a page copy still orders against every store, a free against every access.

Left out: zones, the buddy allocator and its per-CPU lists, LRU lists and
their pagevecs, memcg charging, the swap cache, KSM, page poisoning by
hardware, ``struct page`` vs ``struct folio`` layout (the model has one
object per folio; per-page state is kept in lists on it).
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import (
    ACQUIRE,
    READ,
    RELEASE,
    RMW,
    WAIT,
    WRITE,
    SharedObject,
    ViolationError,
    execution_local,
    register_kind,
    visible,
)
from mmrace.mm.internal import kfunc
from mmrace.mm.locks import KObject, kfree, kfree_in_op
from mmrace.mm.mm_types import PAGE_SIZE
from mmrace.mm.rules_check import folio_lock_order
from mmrace.sync.slots import Slots

WORD_SIZE = 8
"""Bytes per word of user data: a user load or store addresses one naturally
aligned 8-byte word (``unsigned long``)."""
WORDS_PER_PAGE = PAGE_SIZE // WORD_SIZE
"""Words per page (512): every naturally aligned word of a page is
addressable; only the words ever stored are kept (untouched words read 0)."""

GUP_PIN_COUNTING_BIAS = 1024
"""A ``FOLL_PIN`` on a small folio adds this to its refcount (include/linux/mm.h)."""

HPAGE_PMD_ORDER = 9


Accesses = tuple[tuple[SharedObject, int], ...]

PAGE_READ = register_kind("read page", WRITE)
"""A whole-page read (``copy_user_highpage``'s source) of a folio's store
summary: it depends like a write so that it orders against every word
store (which reads the summary), but it changes nothing."""


class FolioContents(SharedObject):
    """The data words of a folio's pages, with per-word footprints.

    This object is the folio's *store summary*; ``loads`` is its *load
    summary*; ``cell(idx, word)`` is one word's own object (made on first
    use). Accesses touch:

    =====================  ==========================  ====================
    access                 word cell                   summaries
    =====================  ==========================  ====================
    store / add of a word  WRITE / RMW                 store summary READ,
                                                       its CPU's store
                                                       slot WRITE
    load of a word         READ                        load summary READ
    page read (copy src)   --                          store summary READ,
                                                       every store slot READ
    batched page read      --                          store summary
    (khugepaged)                                       PAGE_READ
    page write (copy dst,  --                          both WRITE
    poison on free)
    =====================  ==========================  ====================

    So the same word conflicts as before; different words commute (the
    summaries are only read, and each CPU writes its own store slot); a
    page read conflicts with every store (through the storing CPU's slot)
    and with page writes, but not with loads or other page reads -- two
    CPUs copying one page in COW faults read it in either order with the
    same result; a page write conflicts with everything. khugepaged's
    batched read of up to 512 folios keeps one PAGE_READ of each store
    summary rather than a slot per CPU per folio (it then also orders
    against other page reads, which costs executions, not races).
    Dependence is a superset of "touch the same data and one writes", so
    no race is lost. Store slots are ``mmrace.sync.slots`` per CPU (the
    thread the set-up spawned; an RCU callback writes its CPU's), and a
    page read makes the slots of every CPU of the execution
    (``Slots.every``), so a store made later still meets the page read on
    its CPU's slot. Cells can be made lazily: no
    whole-page access touches them, and an object made
    after a decision point gets a serial that no footprint recorded at
    that point can name."""

    __slots__ = ("folio", "words", "loads", "cells", "stores")

    def __init__(self, folio: Folio, nr_pages: int) -> None:
        super().__init__(f"{folio.name}.data")
        self.folio = folio
        # Sparse: per page, word index -> value; a word never stored reads 0
        # (a new page is zeroed). Cells, too, exist only for words some
        # access touched, so the 510 words a scenario never uses cost nothing.
        self.words: list[dict[int, int]] = [{} for _ in range(nr_pages)]
        self.loads = SharedObject(f"{folio.name}.data(loads)")
        self.cells: dict[int, SharedObject] = {}
        self.stores = Slots(self, "stores", per_root=True)  # one store slot per CPU

    def cell(self, idx: int, word: int) -> SharedObject:
        key = idx * WORDS_PER_PAGE + word
        c = self.cells.get(key)
        if c is None:
            name = f"{self.name}.w{word}" if len(self.words) == 1 else f"{self.name}[{idx}].w{word}"
            c = self.cells[key] = SharedObject(name)
        return c

    def get(self, idx: int, word: int) -> int:
        """The value of *word* of page *idx* (0 if never stored)."""
        return self.words[idx].get(word, 0)

    def set(self, idx: int, word: int, value: int) -> None:
        self.words[idx][word] = value

    def word_footprint(self, idx: int, word: int, kind: int) -> Accesses:
        """The (object, kind) accesses of a load (READ), store (WRITE) or
        add (RMW) of one word."""
        cell = (self.cell(idx, word), kind)
        if kind == READ:
            return (cell, (self.loads, READ))
        return (cell, (self, READ), (self.stores.current(), WRITE))

    def page_footprint(self, kind: int) -> tuple[SharedObject, int, Accesses | None]:
        """(main object, kind, also) of a whole-page read (READ) or write."""
        if kind == READ:
            return self, READ, tuple((slot, READ) for slot in self.stores.every())
        return self, WRITE, ((self.loads, WRITE),)


class Folio(KObject):
    """``struct folio``: *order* 0 (a page) or 9 (a PMD-sized THP).

    ``_refcount`` and ``_mapcount`` count references and page-table mappings
    (``_mapcount`` here is the number of mappings, not the kernel's -1 based
    field); ``_pincount`` is the large-folio pin count. ``mapping`` is the
    anon_vma of an anonymous folio (``PageAnon``) or the file's
    address_space; ``anon_exclusive`` holds ``PageAnonExclusive`` per page.

    Large folios keep the mapcounts of kernels with ``CONFIG_PAGE_MAPCOUNT``
    (up to 6.14 by default): ``_mapcount`` is then the folio's total
    (``_large_mapcount``: one per PTE and one per PMD mapping, what
    ``folio_mapcount`` returns), ``_entire_mapcount`` counts PMD mappings
    and ``page_mapcount[i]`` the PTE mappings of page *i*.

    Flags (PG_*): ``isolated`` (PG_lru cleared: taken off the LRU by reclaim
    or migration; a folio is on the LRU otherwise), ``active``,
    ``referenced``, ``swapbacked``
    (anonymous memory that needs swap to be reclaimed; cleared by
    MADV_FREE), ``swapcache`` with ``swap`` its entry, ``dirty``,
    ``uptodate``, ``locked``. Waiters for the lock bit without taking it
    (``folio_wait_locked``) are in ``unlock_waiters``."""

    def __init__(self, name: str, order: int, pfn: int) -> None:
        super().__init__(name)
        self.order = order
        self.nr_pages = 1 << order
        self.pfn = pfn
        self._refcount = 1
        self._mapcount = 0
        self._pincount = 0
        self.anon = False
        self.anon_exclusive = [False] * self.nr_pages
        self.locked = False
        self.uptodate = False
        self.dirty = False
        self.mapping: Any = None
        self.index = 0
        self.is_zero = False
        self._entire_mapcount = 0
        self.page_mapcount = [0] * self.nr_pages if order else []
        self.isolated = False
        self.active = False
        self.referenced = False
        self.swapbacked = False
        self.swapcache = False
        self.swap: Any = None  # the swap entry (folio->swap) while in the swap cache
        self.unlock_waiters: list[list[bool]] = []
        self.contents = FolioContents(self, self.nr_pages)

    def is_unlocked(self) -> bool:
        """The guard of ``folio_lock``: PG_locked is clear."""
        return not self.locked

    def __repr__(self) -> str:
        return self.name


class MemState:
    """Per-execution physical memory: the memory map and the live folios."""

    def __init__(self) -> None:
        self.next_pfn = 0x1000
        self.mem_map: dict[int, Any] = {}  # pfn -> folio or page table
        self.live: dict[int, Folio] = {}  # folio serial -> folio (allocation order)
        self.zero: Folio | None = None
        self.allocated = 0
        self.freed = 0


def mem_state() -> MemState:
    """The execution's physical memory."""
    st: MemState = execution_local("mm.mem", MemState)
    return st


def alloc_pfns(obj: Any, nr: int) -> int:
    """Reserve *nr* page frames for *obj* (a folio or a page-table page)."""
    st = mem_state()
    pfn = st.next_pfn
    st.next_pfn += nr
    for i in range(nr):
        st.mem_map[pfn + i] = obj
    return pfn


def pfn_to_obj(pfn: int) -> Any:
    """``pfn_to_page``: whatever occupies frame *pfn* (possibly freed)."""
    return mem_state().mem_map[pfn]


def pfn_folio(pfn: int) -> Folio:
    """``pfn_folio``."""
    obj = mem_state().mem_map[pfn]
    assert isinstance(obj, Folio), f"pfn {pfn:#x} is not a folio"
    return obj


def folio_page_index(folio: Folio, pfn: int) -> int:
    """Which page of *folio* frame *pfn* is."""
    return pfn - folio.pfn


# --- allocation and freeing -------------------------------------------------------


@kfunc
def folio_alloc(order: int = 0, name: str = "") -> Folio:
    """``folio_alloc`` / ``vma_alloc_folio``: a new folio with refcount 1.
    Nobody else can see it yet, so allocation is not a visible operation.
    Pages come zeroed (``__GFP_ZERO``, as anonymous faults ask)."""
    st = mem_state()
    st.allocated += 1
    pfn = st.next_pfn
    folio = Folio(name or f"folio@{pfn:#x}", order, pfn)
    alloc_pfns(folio, folio.nr_pages)
    st.live[folio.serial] = folio
    return folio


def get_zero_folio() -> Folio:
    """The shared zero page (``ZERO_PAGE(0)``): never freed, never written,
    not refcounted by mappings (its PTEs are special)."""
    st = mem_state()
    if st.zero is None:
        z = Folio("zero_page", 0, alloc_pfns(None, 1))
        st.mem_map[z.pfn] = z
        z.is_zero = True
        z.uptodate = True
        st.zero = z
    return st.zero


def my_zero_pfn() -> int:
    """``my_zero_pfn``."""
    return get_zero_folio().pfn


def is_zero_pfn(pfn: int) -> bool:
    """``is_zero_pfn``."""
    z = mem_state().zero
    return z is not None and pfn == z.pfn


def _refcount_violation(folio: Folio, what: str) -> ViolationError:
    return ViolationError(
        "refcount",
        f"{what} on {folio.name}",
        f"VM_BUG_ON_FOLIO: {what} on {folio.name} (refcount {folio._refcount}, "
        f"mapcount {folio._mapcount})",
    )


@kfunc
def free_folio(folio: Folio) -> None:
    """``__folio_put`` -> ``free_unref_folios``: return the folio to the
    allocator. Its data are poisoned (a visible write of the contents) and
    the folio itself is freed (``kfree``-like): any later access through any
    path is a use-after-free."""
    if folio._mapcount:
        raise _refcount_violation(folio, "freeing a mapped folio")
    visible_contents(folio, WRITE, "poison (free)")
    kfree(folio)
    st = mem_state()
    st.live.pop(folio.serial, None)
    st.freed += 1


def folio_free_footprint(folio: Folio) -> Accesses:
    """The accesses of :func:`free_folio`: the folio written (``kfree``)
    and its data poisoned (a page write), for a caller that frees it inside
    an operation of its own (:func:`free_folio_in_op`)."""
    obj, k, also = folio.contents.page_footprint(WRITE)
    return ((folio, WRITE), (obj, k), *(also or ()))


def free_folio_in_op(folio: Folio) -> None:
    """The effect of :func:`free_folio` inside a visible operation the
    caller made, whose footprint includes :func:`folio_free_footprint`
    (a batch release that frees several folios in one operation)."""
    if folio._mapcount:
        raise _refcount_violation(folio, "freeing a mapped folio")
    kfree_in_op(folio)
    st = mem_state()
    st.live.pop(folio.serial, None)
    st.freed += 1


# --- reference counts ------------------------------------------------------------------


def folio_ref_count(folio: Folio) -> int:
    """``folio_ref_count``: one visible read."""
    folio.access(READ, "folio_ref_count")
    return folio._refcount


def folio_get(folio: Folio) -> None:
    """``folio_get``: one visible RMW; from zero it is a use-after-free."""
    folio.access(RMW, "folio_get")
    if folio._refcount <= 0:
        raise _refcount_violation(folio, "folio_get on a zero refcount")
    folio._refcount += 1


def folio_ref_add(folio: Folio, nr: int) -> None:
    """``folio_ref_add``."""
    folio.access(RMW, f"folio_ref_add({nr})")
    if folio._refcount <= 0:
        raise _refcount_violation(folio, "folio_ref_add on a zero refcount")
    folio._refcount += nr


def folio_try_get(folio: Folio) -> bool:
    """``folio_try_get``: increment unless zero (speculative lookups).
    ``struct page`` is never freed, so a speculative reference on a freed
    (or frozen) folio fails instead of being a use-after-free."""
    visible(folio, RMW, "folio_try_get")
    if folio._refcount == 0 or folio.freed_at is not None:
        return False
    folio._refcount += 1
    return True


def folio_ref_try_add(folio: Folio, nr: int) -> bool:
    """``folio_ref_try_add``: add *nr* unless the count is zero (GUP-fast's
    ``try_get_folio``); fails on a freed or frozen folio."""
    ev = visible(folio, RMW, f"folio_ref_try_add({nr})")
    if folio._refcount == 0 or folio.freed_at is not None:
        if ev is not None:
            ev.detail = "failed: refcount 0"
        return False
    folio._refcount += nr
    return True


def folio_ref_freeze(folio: Folio, count: int) -> bool:
    """``folio_ref_freeze``: atomically replace a refcount of exactly
    *count* by 0 (so speculative ``folio_try_get`` fails); False if other
    references exist."""
    ev = visible(folio, RMW, f"folio_ref_freeze({count})")
    folio.check_alive("folio_ref_freeze")
    if folio._refcount != count:
        if ev is not None:
            ev.detail = f"failed: refcount {folio._refcount}"
        return False
    folio._refcount = 0
    return True


def folio_ref_unfreeze(folio: Folio, count: int) -> None:
    """``folio_ref_unfreeze``: set the refcount of a frozen folio."""
    folio.access(RMW, f"folio_ref_unfreeze({count})")
    folio._refcount = count


def folio_free_frozen(folio: Folio) -> None:
    """Free a folio whose refcount reclaim or migration froze to zero
    (``free_unref_folios`` of the frozen folio)."""
    free_folio(folio)


@kfunc
def folio_put_refs(folio: Folio, nr: int) -> None:
    """``folio_put_refs``: drop *nr* references, freeing the folio on the last."""
    if folio.is_zero:
        return
    folio.access(RMW, f"folio_put_refs({nr})" if nr != 1 else "folio_put")
    folio._refcount -= nr
    if folio._refcount < 0:
        raise _refcount_violation(folio, "refcount underflow")
    if folio._refcount == 0:
        free_folio(folio)


def folio_put_refs_in_op(folio: Folio, nr: int) -> None:
    """The effect of :func:`folio_put_refs` inside a visible RMW of *folio*
    the caller made, whose footprint includes :func:`folio_free_footprint`."""
    folio._refcount -= nr
    if folio._refcount < 0:
        raise _refcount_violation(folio, "refcount underflow")
    if folio._refcount == 0:
        free_folio_in_op(folio)


def folio_put(folio: Folio) -> None:
    """``folio_put``."""
    folio_put_refs(folio, 1)


put_page = folio_put


def folio_maybe_dma_pinned(folio: Folio) -> bool:
    """``folio_maybe_dma_pinned``: a large folio's pin count, or a small
    folio's refcount of at least ``GUP_PIN_COUNTING_BIAS`` (one visible read;
    false positives are possible, as in the kernel)."""
    folio.access(READ, "folio_maybe_dma_pinned")
    if folio.order:
        return folio._pincount > 0
    return folio._refcount >= GUP_PIN_COUNTING_BIAS


page_maybe_dma_pinned = folio_maybe_dma_pinned


# --- map counts ----------------------------------------------------------------------------


def folio_mapcount(folio: Folio) -> int:
    """``folio_mapcount``: one visible read."""
    folio.access(READ, "folio_mapcount")
    return folio._mapcount


def folio_mapped(folio: Folio) -> bool:
    """``folio_mapped``."""
    return folio_mapcount(folio) > 0


def folio_inc_mapcount(folio: Folio, what: str, idx: int = 0, nr: int = 1) -> None:
    """The ``atomic_inc(&page->_mapcount)`` of the rmap functions: *nr* PTE
    mappings of pages *idx*.. (a large folio's per-page counts and its
    total) in one visible RMW."""
    folio.access(RMW, what)
    folio._mapcount += nr
    if folio.order:
        for i in range(idx, idx + nr):
            folio.page_mapcount[i] += 1


def folio_dec_mapcount(folio: Folio, what: str, idx: int = 0, nr: int = 1) -> int:
    """The ``atomic_add_negative(-1, &page->_mapcount)`` of the rmap
    functions, for *nr* PTE mappings of pages *idx*..; returns the new
    total. Below zero is a violation."""
    folio.access(RMW, what)
    folio._mapcount -= nr
    if folio.order:
        for i in range(idx, idx + nr):
            folio.page_mapcount[i] -= 1
            if folio.page_mapcount[i] < 0:
                raise _refcount_violation(folio, f"page {i} mapcount underflow")
    if folio._mapcount < 0:
        raise _refcount_violation(folio, "mapcount underflow")
    return folio._mapcount


def folio_entire_mapcount_add(folio: Folio, delta: int, what: str) -> int:
    """A PMD mapping added (+1) or removed (-1): ``_entire_mapcount`` and
    the total, in one visible RMW; returns the new entire mapcount."""
    folio.access(RMW, what)
    folio._entire_mapcount += delta
    folio._mapcount += delta
    if folio._entire_mapcount < 0 or folio._mapcount < 0:
        raise _refcount_violation(folio, "entire mapcount underflow")
    return folio._entire_mapcount


def page_mapcount(folio: Folio, idx: int) -> int:
    """``page_mapcount``: how often page *idx* is mapped (its PTE mappings
    plus the folio's PMD mappings); one visible read."""
    folio.access(READ, "page_mapcount")
    if not folio.order:
        return folio._mapcount
    return folio.page_mapcount[idx] + folio._entire_mapcount


# --- flags and the folio lock --------------------------------------------------------


def folio_test_anon(folio: Folio) -> bool:
    """``folio_test_anon`` (``PageAnon``): one visible read of ``mapping``."""
    folio.access(READ, "folio_test_anon")
    return folio.anon


def PageAnonExclusive(folio: Folio, idx: int = 0) -> bool:
    """``PageAnonExclusive`` of page *idx* of *folio*."""
    folio.access(READ, "PageAnonExclusive")
    return folio.anon_exclusive[idx]


def SetPageAnonExclusive(folio: Folio, idx: int = 0) -> None:
    """``SetPageAnonExclusive``."""
    folio.access(WRITE, "SetPageAnonExclusive")
    folio.anon_exclusive[idx] = True


def ClearPageAnonExclusive(folio: Folio, idx: int = 0) -> None:
    """``ClearPageAnonExclusive``."""
    folio.access(WRITE, "ClearPageAnonExclusive")
    folio.anon_exclusive[idx] = False


def folio_trylock(folio: Folio) -> bool:
    """``folio_trylock``: one visible RMW."""
    folio.access(RMW, "folio_trylock")
    if folio.locked:
        return False
    folio.locked = True
    return True


@kfunc
def folio_lock(folio: Folio) -> None:
    """``folio_lock``: take PG_locked, sleeping while another task holds it.

    One visible acquisition (the engine's ACQUIRE), blocked while PG_locked
    is set: two ``folio_lock``s of one folio race (either could get it
    first), and the one that has to wait is ordered after the unlock that
    lets it in without being reversed against it. So taking a free lock and
    sleeping until the holder's ``folio_unlock`` are one trace (the same
    task holds PG_locked right after the unlock; nobody saw it sleep),
    where a model that queued the waiter and had the unlock hand it over
    made them two. The kernel's ``folio_wait_bit_common`` may hand PG_locked
    to the first exclusive waiter or let a newcomer take it first; in the
    model any task blocked on the lock may be next, which covers both.
    Left out: killable and async waits. The folio lock's place in the
    documented lock order is checked here (lockdep does not see
    PG_locked)."""
    folio_lock_order()
    visible(folio, ACQUIRE, "folio_lock", guard=folio.is_unlocked)
    folio.check_alive("folio_lock")
    folio.locked = True


def folio_unlock(folio: Folio) -> None:
    """``folio_unlock``: clear PG_locked and wake every
    ``folio_wait_locked`` waiter (one visible release)."""
    visible(folio, RELEASE, "folio_unlock")
    folio.check_alive("folio_unlock")
    folio_unlock_in_op(folio)


def folio_unlock_in_op(folio: Folio) -> None:
    """The effect of :func:`folio_unlock` inside a visible RMW of *folio*
    the caller made (one operation that releases several folios)."""
    for w in folio.unlock_waiters:
        w[0] = True
    folio.unlock_waiters = []
    folio.locked = False


def folio_wait_locked_prepare(folio: Folio) -> list[bool]:
    """Queue for the next ``folio_unlock`` of *folio* (the first half of
    ``folio_wait_bit_common`` without taking the bit); the caller holds a
    lock or a reference that keeps *folio* from being unlocked before it
    is queued, then drops it and calls :func:`folio_wait_locked_finish`."""
    woken = [False]
    folio.unlock_waiters.append(woken)
    return woken


@kfunc
def folio_wait_locked_finish(folio: Folio, woken: list[bool]) -> None:
    """Sleep until the ``folio_unlock`` that *woken* was queued for (a
    visible WAIT: its guard, "woken", is monotone)."""
    visible(folio, WAIT, "folio_wait_locked", guard=lambda: woken[0])


@kfunc
def folio_wait_locked(folio: Folio) -> None:
    """``folio_wait_locked``: one visible read; if PG_locked is set, sleep
    until the next unlock (without taking the lock)."""
    folio.access(READ, "folio_test_locked")
    if not folio.locked:
        return
    folio_wait_locked_finish(folio, folio_wait_locked_prepare(folio))


def folio_test_set_flag(folio: Folio, flag: str, value: bool, what: str) -> bool:
    """Set (or clear) the PG_* flag *flag* as one visible RMW of the folio's
    flags; returns the old value (``folio_test_set_*`` /
    ``folio_test_clear_*``)."""
    folio.access(RMW, what)
    old = bool(getattr(folio, flag))
    setattr(folio, flag, value)
    return old


def folio_test_flag(folio: Folio, flag: str, what: str) -> bool:
    """Read the PG_* flag *flag* (one visible read of the folio)."""
    folio.access(READ, what)
    return bool(getattr(folio, flag))


# --- data ------------------------------------------------------------------------------------


def visible_contents(folio: Folio, kind: int, what: str) -> None:
    """A visible whole-page access (READ or WRITE) to *folio*'s data; a
    use-after-free once it is freed."""
    obj, k, also = folio.contents.page_footprint(kind)
    visible(obj, k, what, also=also)
    if folio.freed_at is not None and what != "poison (free)":
        raise folio._uaf(what)


def _visible_word(folio: Folio, idx: int, word: int, kind: int, what: str) -> None:
    (cell, k), *summaries = folio.contents.word_footprint(idx, word, kind)
    visible(cell, k, what, also=tuple(summaries))
    if folio.freed_at is not None:
        raise folio._uaf(what)


def folio_read_word(folio: Folio, idx: int, word: int) -> int:
    """A load of one word of page *idx* (one visible read of that word)."""
    _visible_word(folio, idx, word, READ, f"load word {word}")
    return folio.contents.get(idx, word)


def folio_write_word(folio: Folio, idx: int, word: int, value: int) -> None:
    """A store to one word of page *idx* (one visible write of that word)."""
    if folio.is_zero:
        raise ViolationError("memory-corruption", "store to the shared zero page",
                             "a store reached the shared zero page")
    _visible_word(folio, idx, word, WRITE, f"store word {word}")
    folio.contents.set(idx, word, value)


@kfunc
def copy_user_highpage(dst: Folio, dst_idx: int, src: Folio, src_idx: int) -> None:
    """``copy_user_highpage`` / ``__wp_page_copy_user``: read the source page
    (one visible read), write the copy (one visible write)."""
    visible_contents(src, READ, "copy_user_highpage (read)")
    data = dict(src.contents.words[src_idx])
    visible_contents(dst, WRITE, "copy_user_highpage (write)")
    dst.contents.words[dst_idx] = data


__all__ = [
    "GUP_PIN_COUNTING_BIAS",
    "WORDS_PER_PAGE",
    "WORD_SIZE",
    "Folio",
    "folio_alloc",
    "folio_get",
    "folio_mapcount",
    "folio_put",
    "folio_ref_count",
    "get_zero_folio",
    "mem_state",
    "pfn_folio",
]

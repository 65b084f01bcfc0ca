"""get_user_pages, slow path (mm/gup.c, with ``gup_must_unshare`` and
``folio_maybe_dma_pinned`` of mm/internal.h and include/linux/mm.h).

``__get_user_pages`` walks the page tables under the caller's mmap read
lock (``follow_page_pte`` under the PTE lock); a missing page, a write to a
read-only PTE (``FOLL_WRITE``), or a read-only pin of a page that must be
unshared first (``gup_must_unshare``: -EMLINK) is resolved by
``faultin_page`` through ``handle_mm_fault`` and the walk is retried.
``FOLL_GET`` takes a reference (``put_page`` drops it); ``FOLL_PIN`` adds
``GUP_PIN_COUNTING_BIAS`` to a small folio's refcount (or one reference and
one ``_pincount`` to a large one: what ``folio_maybe_dma_pinned`` sees) and
marks the mm ``MMF_HAS_PINNED``; ``FOLL_LONGTERM`` asks for a pin that may
outlive the syscall; ``FOLL_FORCE`` lets ptrace and ``/proc/PID/mem`` write
to read-only private mappings.

The eras (``mmrace.fixes.gup_cow``): 5.8 breaks COW for every read-only
lookup in a COW mapping (``gup-cow-break-reads``, undone in 5.9 by
``gup-remove-enforced-cow``); 5.19 unshares a possibly shared anonymous page
before a read-only pin (``gup-unshare-anon-ro-pin``); 6.0 follows a
read-only PTE for a ``FOLL_FORCE`` write only to an exclusive anonymous page
instead of to any dirty PTE after a COW (``FOLL_COW``,
``foll-force-anon-exclusive``); 6.2 unshares the zero page and page-cache
pages before a read-only long-term pin in a COW mapping
(``gup-longterm-unshare-cow``).

The retry loop is bounded: a page that keeps needing a fault while no other
thread runs (the same lookup and the same fault, forever) is reported as a
``livelock`` violation naming the loop, where the kernel would spin.

Left out: GUP-fast, ``FOLL_LONGTERM`` migration out of ZONE_MOVABLE/CMA
(``check_and_migrate_movable_pages``: the model has no zones), huge pages,
``FOLL_NOWAIT``/``VM_FAULT_RETRY`` unlocking (faults here never drop the
mmap lock), ``FOLL_TOUCH`` accessed-bit updates, device and P2PDMA pages,
gate pages, fs-DAX and secretmem refusals, the refusal of long-term write
pins of file mappings that need dirty tracking, fatal-signal checks. The
shared zero page is never refcounted in the model (its PTEs are special),
so grabbing it changes no count.
"""

from __future__ import annotations

from mmrace.arch import local_irq_restore, local_irq_save
from mmrace.engine import RMW, ViolationError, current_execution, current_thread
from mmrace.mm.internal import errno_error, kernel_config, kfunc
from mmrace.mm.locks import rcu_read_lock, rcu_read_unlock
from mmrace.mm.memory import (
    FAULT_FLAG_UNSHARE,
    FAULT_FLAG_WRITE,
    VM_FAULT_ERROR,
    VM_FAULT_OOM,
    VM_FAULT_RETRY,
    VM_FAULT_WRITE,
    handle_mm_fault,
    is_cow_mapping,
    vm_normal_page,
)
from mmrace.mm.mm_types import (
    FAULT_FLAG_REMOTE,
    PAGE_MASK,
    PAGE_SHIFT,
    VM_IO,
    VM_LOCKONFAULT,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_WRITE,
    MmStruct,
    VmAreaStruct,
)
from mmrace.mm.mmap_lock import mmap_assert_locked, mmap_read_lock, mmap_read_unlock
from mmrace.mm.page_alloc import (
    GUP_PIN_COUNTING_BIAS,
    Folio,
    PageAnonExclusive,
    folio_get,
    folio_put_refs,
    folio_ref_add,
    folio_ref_try_add,
    folio_test_anon,
    folio_test_set_flag,
    get_zero_folio,
    is_zero_pfn,
    pfn_folio,
    pfn_to_obj,
)
from mmrace.mm.pgtable import (
    PMD_MASK,
    PMD_SIZE,
    PageTable,
    pgd_offset,
    pgdp_get,
    pmd_index,
    pmd_lock,
    pmd_none,
    pmd_present,
    pmd_same,
    pmd_trans_huge,
    pmdp_get,
    pmdp_get_lockless,
    pte_access_permitted,
    pte_dirty,
    pte_index,
    pte_offset_map_lock,
    pte_pfn,
    pte_present,
    pte_same,
    pte_soft_dirty,
    pte_special,
    pte_unmap_unlock,
    pte_write,
    ptep_get,
    ptep_get_lockless,
    ptl_unlock,
    pud_index,
    pudp_get,
    table_of,
    walk_to_pmd,
)
from mmrace.mm.userfaultfd_k import userfaultfd_pte_wp
from mmrace.mm.vma import find_vma
from mmrace.sync import raw_read_seqcount, read_seqcount_retry

# FOLL_* flags, with the values of the 5.x include/linux/mm.h (FOLL_COW went
# in 6.0; FOLL_PIN is mm/internal.h's private flag).
FOLL_WRITE = 0x01
FOLL_TOUCH = 0x02
FOLL_GET = 0x04
FOLL_FORCE = 0x10
FOLL_POPULATE = 0x40
FOLL_REMOTE = 0x2000
FOLL_COW = 0x4000
FOLL_LONGTERM = 0x10000
FOLL_PIN = 0x40000
FOLL_FAST_ONLY = 0x80000  # mm/internal.h
EFAULT, ENOMEM, EEXIST, EINVAL, EMLINK = 14, 12, 17, 22, 31

GUP_SOLO_RETRY_LIMIT = 8
"""How many times ``__get_user_pages`` may fault one page while no other
thread runs before the retry loop is reported as a livelock. A correct
lookup needs at most three (a read fault mapping the zero page, an
unsharing fault, a write fault reusing the page for ``FOLL_COW``)."""


# --- era helpers -------------------------------------------------------------------


def gup_forces_cow_break(mm: MmStruct) -> bool:
    """Whether *mm*'s kernel breaks COW for read-only lookups (5.8 only:
    ``gup-cow-break-reads`` without ``gup-remove-enforced-cow``). A GUP-fast
    of that era refuses to follow a read-only PTE and falls back to the slow
    path, where the COW is broken."""
    cfg = kernel_config(mm)
    return bool(cfg.has("gup-cow-break-reads") and not cfg.has("gup-remove-enforced-cow"))


def should_force_cow_break(vma: VmAreaStruct, vm_flags: int, flags: int) -> bool:
    """5.8's ``should_force_cow_break``: a lookup that grabs the page in a COW
    mapping is done as a write. ``FOLL_POPULATE`` lookups are exempt: the
    kernel's populate passes no pages array (so no ``FOLL_GET``); the model's
    populate only holds its references for a moment."""
    if not flags & (FOLL_GET | FOLL_PIN) or flags & FOLL_POPULATE:
        return False
    return is_cow_mapping(vm_flags) and gup_forces_cow_break(vma.vm_mm)


# --- checks on the VMA and the PTE ------------------------------------------------------


def check_vma_flags(vma: VmAreaStruct, gup_flags: int) -> int:
    """``check_vma_flags``: 0 or -EFAULT. ``VM_IO``/``VM_PFNMAP`` mappings
    have no pages to grab (``vma_can_gup``); a write needs ``VM_WRITE``, or
    ``FOLL_FORCE`` in a COW mapping; a read needs ``VM_READ``, or
    ``FOLL_FORCE`` and ``VM_MAYREAD``."""
    flags = vma.vm_flags
    if flags & (VM_IO | VM_PFNMAP):
        return -EFAULT
    force = bool(gup_flags & FOLL_FORCE)
    if gup_flags & FOLL_WRITE:
        if not flags & VM_WRITE and not (force and is_cow_mapping(flags)):
            return -EFAULT
    elif not flags & VM_READ and not (force and flags & VM_MAYREAD):
        return -EFAULT
    return 0


def pte_needs_soft_dirty_wp(vma: VmAreaStruct, pte: int) -> bool:
    """``pte_needs_soft_dirty_wp``: soft-dirty tracking is on for the VMA
    (``VM_SOFTDIRTY`` clear) and the PTE is not soft-dirty yet, so a write
    must fault to record it."""
    return not vma.vm_flags & VM_SOFTDIRTY and not pte_soft_dirty(pte)


def can_follow_write_pte(pte: int, folio: Folio | None, vma: VmAreaStruct, flags: int,
                         idx: int = 0) -> bool:
    """``can_follow_write_pte``: may a ``FOLL_WRITE`` lookup use this PTE?

    A writable PTE, always. Otherwise, since 6.0
    (``foll-force-anon-exclusive``), only ``FOLL_FORCE`` in a private,
    ``VM_MAYWRITE`` but not ``VM_WRITE`` mapping, on a ``PageAnonExclusive``
    page whose PTE needs no soft-dirty or uffd-wp write fault. Before it, a
    dirty PTE after this lookup's own COW (``FOLL_COW``, with ``FOLL_FORCE``;
    in 5.8, whose forced COW break sets ``FOLL_COW`` for plain reads, without
    it). *idx* is the page of *folio* the PTE maps."""
    if pte_write(pte):
        return True
    mm = vma.vm_mm
    if not kernel_config(mm).has("foll-force-anon-exclusive"):
        if gup_forces_cow_break(mm):
            return bool(flags & FOLL_COW) and pte_dirty(pte)
        return bool(flags & FOLL_FORCE and flags & FOLL_COW) and pte_dirty(pte)
    if not flags & FOLL_FORCE:
        return False
    vm_flags = vma.vm_flags
    if vm_flags & (VM_MAYSHARE | VM_SHARED) or not vm_flags & VM_MAYWRITE:
        return False
    if vm_flags & VM_WRITE:
        return False  # writable: it just needs the write fault
    if folio is None or not folio_test_anon(folio) or not PageAnonExclusive(folio, idx):
        return False
    if pte_needs_soft_dirty_wp(vma, pte):
        return False
    return not userfaultfd_pte_wp(vma, pte)


def gup_must_unshare(vma: VmAreaStruct | None, flags: int, folio: Folio, idx: int = 0,
                     mm: MmStruct | None = None) -> bool:
    """``gup_must_unshare``: must a read-only pin unshare page *idx* of
    *folio* first?

    Only ``FOLL_PIN`` without ``FOLL_WRITE``, and only since 5.19
    (``gup-unshare-anon-ro-pin``): an anonymous page that is not
    ``PageAnonExclusive``. Since 6.2 (``gup-longterm-unshare-cow``) also any
    other page (the zero page, a page-cache page) under ``FOLL_LONGTERM`` in
    a COW mapping -- or, from GUP-fast (*vma* None, pass *mm*), always, so
    that the slow path looks the VMA up."""
    if flags & (FOLL_WRITE | FOLL_PIN) != FOLL_PIN:
        return False
    owner = vma.vm_mm if vma is not None else mm
    assert owner is not None, "gup_must_unshare needs the vma or, from GUP-fast, the mm"
    cfg = kernel_config(owner)
    if not cfg.has("gup-unshare-anon-ro-pin"):
        return False
    if folio.is_zero or not folio_test_anon(folio):
        if not flags & FOLL_LONGTERM or not cfg.has("gup-longterm-unshare-cow"):
            return False
        return vma is None or is_cow_mapping(vma.vm_flags)
    return not PageAnonExclusive(folio, idx)


# --- grabbing and releasing ---------------------------------------------------------------


@kfunc
def try_grab_folio(folio: Folio, flags: int) -> None:
    """``try_grab_folio``: ``FOLL_GET`` one reference; ``FOLL_PIN`` on a
    small folio ``GUP_PIN_COUNTING_BIAS`` references, on a large one a
    reference and one ``_pincount``. The zero page is not counted."""
    if folio.is_zero:
        return
    if flags & FOLL_PIN:
        if folio.order:  # a large folio counts pins exactly (_pincount)
            folio_ref_add(folio, 1)
            folio.access(RMW, "atomic_add(_pincount)")
            folio._pincount += 1
        else:
            folio_ref_add(folio, GUP_PIN_COUNTING_BIAS)
    elif flags & FOLL_GET:
        folio_get(folio)


@kfunc
def gup_put_folio(folio: Folio, refs: int, flags: int) -> None:
    """``gup_put_folio``: undo *refs* grabs of ``try_grab_folio`` or
    ``try_grab_folio_fast`` (freeing the folio if that was its last
    reference). The zero page is not counted."""
    if folio.is_zero:
        return
    if flags & FOLL_PIN:
        if folio.order:
            folio.access(RMW, f"atomic_sub(_pincount, {refs})")
            folio._pincount -= refs
            folio_put_refs(folio, refs)
        else:
            folio_put_refs(folio, refs * GUP_PIN_COUNTING_BIAS)
    else:
        folio_put_refs(folio, refs)


def unpin_user_page(folio: Folio) -> None:
    """``unpin_user_page``."""
    gup_put_folio(folio, 1, FOLL_PIN)


def put_user_page(folio: Folio) -> None:
    """``put_page`` of a ``FOLL_GET`` reference."""
    gup_put_folio(folio, 1, FOLL_GET)


def mm_set_has_pinned_flag(mm: MmStruct) -> None:
    """``mm_set_has_pinned_flag``: set ``MMF_HAS_PINNED`` unless it is set
    already (a read first, so repeated pins do not write the shared flag)."""
    if not mm.has_pinned.load():
        mm.has_pinned.store(1)


# --- the walk ---------------------------------------------------------------------------------


@kfunc
def follow_page_pte(vma: VmAreaStruct, address: int, flags: int) -> tuple[Folio | None, int]:
    """``follow_page_pte``: under the PTE lock, the grabbed folio mapped at
    *address*; or (None, 0) when the caller must fault (no page, or a write
    the PTE does not allow); (None, -EMLINK) when it must unshare first;
    (None, -EEXIST) for a PTE without a struct page (``follow_pfn_pte``)."""
    mm = vma.vm_mm
    found = walk_to_pmd(mm, address)
    if found is None:
        return None, 0
    pmdval = pmdp_get(*found)
    if pmd_none(pmdval):
        return None, 0
    if pmd_trans_huge(pmdval):
        folio, err = follow_huge_pmd(vma, address, found[0], found[1], flags)
        if err != 1:
            return folio, err
    pm = pte_offset_map_lock(mm, found[0], found[1], address)
    if pm is None:
        return None, 0
    pte = ptep_get(pm.table, pm.index)
    if not pte_present(pte):
        pte_unmap_unlock(pm)
        return None, 0
    folio = vm_normal_page(vma, address, pte)
    idx = pte_pfn(pte) - folio.pfn if folio is not None else 0
    if flags & FOLL_WRITE and not can_follow_write_pte(pte, folio, vma, flags, idx):
        pte_unmap_unlock(pm)
        return None, 0
    if folio is None:
        if not is_zero_pfn(pte_pfn(pte)):
            pte_unmap_unlock(pm)
            return None, -EEXIST
        folio = get_zero_folio()
    if not pte_write(pte) and gup_must_unshare(vma, flags, folio, idx):
        pte_unmap_unlock(pm)
        return None, -EMLINK
    try_grab_folio(folio, flags)
    pte_unmap_unlock(pm)
    return folio, 0


@kfunc
def faultin_page(vma: VmAreaStruct, address: int, flags: int, unshare: bool) -> tuple[int, int]:
    """``faultin_page``: ``(0 or -EFAULT/-ENOMEM, flags)``. A write fault
    that broke COW (``VM_FAULT_WRITE``) in a mapping without ``VM_WRITE``
    sets ``FOLL_COW`` in the returned flags, until 6.0
    (``foll-force-anon-exclusive``) removed it."""
    fault_flags = FAULT_FLAG_REMOTE if flags & FOLL_REMOTE else 0
    if flags & FOLL_WRITE:
        fault_flags |= FAULT_FLAG_WRITE
    if unshare:
        fault_flags |= FAULT_FLAG_UNSHARE
    ret = handle_mm_fault(vma, address, fault_flags)
    if ret & VM_FAULT_ERROR:
        return (-ENOMEM if ret & VM_FAULT_OOM else -EFAULT), flags
    assert not ret & VM_FAULT_RETRY  # no FAULT_FLAG_ALLOW_RETRY was passed
    if (ret & VM_FAULT_WRITE and not kernel_config(vma.vm_mm).has("foll-force-anon-exclusive")
            and not vma.vm_flags & VM_WRITE):
        flags |= FOLL_COW
    return 0, flags


def _steps_of_others(since: int) -> tuple[bool, int]:
    """Whether a thread other than the running one made a visible operation
    since event *since*, and the current event count. In set-up code nothing
    else runs."""
    th = current_thread()
    if th is None:
        return False, 0
    events = current_execution().events
    return any(e.tid != th.tid for e in events[since:]), len(events)


def _gup_livelock(vma: VmAreaStruct, address: int, flags: int, tries: int,
                  unshare: bool) -> ViolationError:
    cfg = kernel_config(vma.vm_mm)
    why = "it must unshare the page (-EMLINK)" if unshare else "the PTE never allows the lookup"
    hint = ""
    if unshare and cfg.policy("cow-reuse") != "anon_exclusive":
        hint = (f"; the unshare rule (gup-unshare-anon-ro-pin) with the cow-reuse policy "
                f"{cfg.policy('cow-reuse')!r}: a reused page is never marked "
                "PageAnonExclusive, so gup_must_unshare stays true")
    title = (f"livelock in __get_user_pages: follow_page_pte -> faultin_page retry loop at "
             f"{address:#x} makes no progress")
    return ViolationError(
        "livelock", title,
        f"{title}: {tries} faults in a row with no other thread running, each followed by "
        f"the same lookup failing because {why} (gup flags {flags:#x}, "
        f"{cfg.describe()}){hint}")


def follow_or_fault(vma: VmAreaStruct, address: int, flags: int) -> tuple[Folio | None, int]:
    """The ``retry:`` loop of ``__get_user_pages`` for one page: look the
    page up, fault and retry until it is grabbed; ``(folio, 0)`` or
    ``(None, -errno)``. Raises a ``livelock`` violation when the page needs
    :data:`GUP_SOLO_RETRY_LIMIT` faults in a row while no other thread runs
    (the kernel would loop for ever)."""
    solo = 0
    _, mark = _steps_of_others(0)
    while True:
        folio, err = follow_page_mask(vma, address, flags)
        if folio is not None:
            return folio, 0
        if err and err != -EMLINK:
            return None, err
        ret, flags = faultin_page(vma, address, flags, err == -EMLINK)
        if ret:
            return None, ret
        others, mark = _steps_of_others(mark)
        solo = 0 if others else solo + 1
        if solo >= GUP_SOLO_RETRY_LIMIT:
            raise _gup_livelock(vma, address, flags, solo, err == -EMLINK)


def follow_page_mask(vma: VmAreaStruct, address: int, flags: int) -> tuple[Folio | None, int]:
    """``follow_page_mask``: small pages only in the model (a huge PMD is
    looked past, as ``handle_mm_fault`` does)."""
    return follow_page_pte(vma, address, flags)


def gup_vma_lookup(mm: MmStruct, addr: int) -> VmAreaStruct | None:
    """``gup_vma_lookup``: the VMA containing *addr* (GUP no longer grows
    the stack)."""
    vma = find_vma(mm, addr)
    if vma is None or addr < vma.vm_start:
        return None
    return vma


@kfunc
def __get_user_pages(mm: MmStruct, start: int, nr_pages: int, gup_flags: int) -> list[Folio]:
    """``__get_user_pages``: fault in and grab *nr_pages* pages from *start*;
    the caller holds the mmap lock. Returns the pages grabbed, possibly fewer
    than asked (a short count); raises ``OSError`` with the errno of the
    first page's failure (``EFAULT``: unmapped, ``PROT_NONE`` without
    ``FOLL_FORCE``, ``VM_IO|VM_PFNMAP``, a write the VMA forbids; ``EEXIST``:
    a PTE without a struct page) when it grabbed none."""
    mmap_assert_locked(mm)
    if (gup_flags & FOLL_GET and gup_flags & FOLL_PIN) or (
            gup_flags & FOLL_LONGTERM and not gup_flags & FOLL_PIN):
        raise errno_error(EINVAL, "is_valid_gup_args")
    if gup_flags & FOLL_PIN:
        mm_set_has_pinned_flag(mm)  # done by __get_user_pages_locked
    out: list[Folio] = []
    addr = start & PAGE_MASK
    vma: VmAreaStruct | None = None
    vm_flags = 0
    err = 0
    for _ in range(nr_pages):
        if vma is None or addr >= vma.vm_end:
            vma = gup_vma_lookup(mm, addr)
            if vma is None:
                err = -EFAULT
                break
            err = check_vma_flags(vma, gup_flags)
            if err:
                break
            vm_flags = vma.vm_flags
        foll_flags = gup_flags
        if should_force_cow_break(vma, vm_flags, foll_flags):
            foll_flags |= FOLL_WRITE
        folio, err = follow_or_fault(vma, addr, foll_flags)
        if folio is None:
            break
        out.append(folio)
        addr += 1 << PAGE_SHIFT
    if not out and nr_pages:
        raise errno_error(-err or EFAULT, f"get_user_pages at {start:#x}")
    return out


def get_user_pages(mm: MmStruct, start: int, nr_pages: int, gup_flags: int) -> list[Folio]:
    """``get_user_pages`` (``FOLL_GET``): the caller holds the mmap read lock."""
    return __get_user_pages(mm, start, nr_pages, gup_flags | FOLL_GET)


def pin_user_pages(mm: MmStruct, start: int, nr_pages: int, gup_flags: int) -> list[Folio]:
    """``pin_user_pages`` (``FOLL_PIN``): the caller holds the mmap read lock.
    With ``FOLL_LONGTERM`` this is ``__gup_longterm_locked`` without the
    migration step (the model has no movable zones)."""
    return __get_user_pages(mm, start, nr_pages, gup_flags | FOLL_PIN)


@kfunc
def pin_user_pages_unlocked(mm: MmStruct, start: int, nr_pages: int,
                            gup_flags: int) -> list[Folio]:
    """``pin_user_pages_unlocked``: takes the mmap read lock itself."""
    mmap_read_lock(mm)
    try:
        pages = pin_user_pages(mm, start, nr_pages, gup_flags)
    except OSError:
        mmap_read_unlock(mm)
        raise
    mmap_read_unlock(mm)
    return pages


@kfunc
def get_user_pages_unlocked(mm: MmStruct, start: int, nr_pages: int,
                            gup_flags: int) -> list[Folio]:
    """``get_user_pages_unlocked``."""
    mmap_read_lock(mm)
    try:
        pages = get_user_pages(mm, start, nr_pages, gup_flags)
    except OSError:
        mmap_read_unlock(mm)
        raise
    mmap_read_unlock(mm)
    return pages


def get_user_pages_remote(mm: MmStruct, start: int, nr_pages: int,
                          gup_flags: int) -> list[Folio]:
    """``get_user_pages_remote``: ``FOLL_GET`` on another task's mm (the
    caller holds its mmap read lock); faults are ``FAULT_FLAG_REMOTE``."""
    return __get_user_pages(mm, start, nr_pages, gup_flags | FOLL_GET | FOLL_TOUCH | FOLL_REMOTE)


@kfunc
def populate_vma_page_range(vma: VmAreaStruct, start: int, end: int) -> int:
    """``populate_vma_page_range``: fault in (and touch) every page, as
    ``__mm_populate`` does for mlock/MAP_POPULATE: write-fault private
    writable mappings (``FOLL_WRITE``), read others; references are
    dropped at once — but while held they raise ``page_count``. A
    ``VM_LOCKONFAULT`` VMA (``mlock2(MLOCK_ONFAULT)``) is left to fault
    on first access, as in the kernel."""
    if vma.vm_flags & VM_LOCKONFAULT:
        return (end - start) >> PAGE_SHIFT
    gup_flags = FOLL_GET | FOLL_POPULATE
    if (vma.vm_flags & (VM_WRITE | VM_SHARED)) == VM_WRITE:  # private writable: break COW now
        gup_flags |= FOLL_WRITE
    mm = vma.vm_mm
    n = (end - start) >> PAGE_SHIFT
    pages = __get_user_pages(mm, start, n, gup_flags)
    for f in pages:
        put_user_page(f)
    return len(pages)


@kfunc
def __mm_populate(mm: MmStruct, start: int, length: int) -> None:
    """``__mm_populate``: under the mmap read lock, populate each VMA."""
    end = start + length
    mmap_read_lock(mm)
    addr = start
    while addr < end:
        vma = find_vma(mm, addr)
        if vma is None or vma.vm_start >= end:
            break
        s, e = max(addr, vma.vm_start), min(end, vma.vm_end)
        try:
            populate_vma_page_range(vma, s, e)
        except OSError:
            pass
        addr = e
    mmap_read_unlock(mm)


# --- huge PMDs in the slow path (follow_pmd_mask / follow_huge_pmd) -------------------------


@kfunc
def follow_huge_pmd(vma: VmAreaStruct, address: int, pmd: PageTable, mi: int,
                    flags: int) -> tuple[Folio | None, int]:
    """``follow_pmd_mask`` for a huge PMD + ``follow_huge_pmd``: under the
    PMD lock, the THP -- grabbed as ``try_grab_folio`` does -- if the
    access is allowed; ``(None, 0)`` to fault (a write the PMD does not
    allow, or an entry being split), ``(None, -EMLINK)`` to unshare first,
    ``(None, 1)`` if it is no longer a huge PMD (follow the PTEs)."""
    ptl = pmd_lock(vma.vm_mm, pmd)
    pmdval = pmdp_get(pmd, mi)
    if not pmd_trans_huge(pmdval):
        ptl_unlock(ptl)
        return None, 1
    if not pte_present(pmdval):  # invalidated: being split or changed
        ptl_unlock(ptl)
        return None, 0
    folio = pfn_folio(pte_pfn(pmdval))
    if flags & FOLL_WRITE and not pte_write(pmdval):
        ptl_unlock(ptl)
        return None, 0
    if not pte_write(pmdval) and gup_must_unshare(vma, flags, folio):
        ptl_unlock(ptl)
        return None, -EMLINK
    try_grab_folio(folio, flags)
    ptl_unlock(ptl)
    return folio, 0


# --- GUP-fast (gup_fast, lockless_pages_from_mm) ---------------------------------------------



@kfunc
def try_grab_folio_fast(folio: Folio, refs: int, flags: int) -> Folio | None:
    """``try_grab_folio_fast``: a speculative reference (``folio_ref_try_add``:
    fails on a folio being freed) and, for ``FOLL_PIN``, the pin
    (``_pincount`` of a large folio, the bias of a small one) -- taken
    before the caller rechecks the page-table entry."""
    if not folio_ref_try_add(folio, refs):
        return None
    if flags & FOLL_PIN:
        if folio.order:
            folio.access(RMW, f"atomic_add(_pincount, {refs})")
            folio._pincount += refs
        else:
            folio_ref_add(folio, refs * (GUP_PIN_COUNTING_BIAS - 1))
    return folio


@kfunc
def gup_fast_pte_range(pmdval: int, pmd: PageTable, mi: int, addr: int, end: int, flags: int,
                       pages: list[Folio]) -> bool:
    """``gup_fast_pte_range``: map the PTE table the PMD value read by the
    caller points to (``pte_offset_map(&pmd, ...)`` of the local copy: no
    second read; the table cannot be freed under the caller's RCU and
    interrupts-off section), then for each page:
    ``ptep_get_lockless``; refuse PROT_NONE and non-user entries, writes to
    read-only ones (``pte_access_permitted``), special ones (the zero
    page); take the reference or pin; recheck that neither the PMD (from
    6.0, ``gup-fast-pmd-recheck``) nor the PTE changed (else drop it and
    stop); refuse a read-only pin of an anon
    page that is not exclusive (``gup_must_unshare``: the slow path will
    unshare it). False stops GUP-fast (the slow path takes over)."""
    table = table_of(pmdval)
    ret = True
    while addr != end:
        idx = pte_index(addr)
        pte = ptep_get_lockless(table, idx)
        if not pte_access_permitted(pte, bool(flags & FOLL_WRITE)) or pte_special(pte):
            ret = False
            break
        page = pfn_to_obj(pte_pfn(pte))
        if not isinstance(page, Folio) or page.is_zero:
            ret = False
            break
        folio = try_grab_folio_fast(page, 1, flags)
        if folio is None:
            ret = False
            break
        # The PMD recheck is "mm: gup: fix the fast GUP race against THP
        # collapse" (6.0): before it only the PTE was rechecked, and a
        # collapse that had cleared the PMD (but not yet the PTE) went unseen.
        if ((kernel_config(pmd.mm).has("gup-fast-pmd-recheck")
             and not pmd_same(pmdval, pmdp_get(pmd, mi)))
                or not pte_same(pte, ptep_get(table, idx))):
            gup_put_folio(folio, 1, flags)
            ret = False
            break
        if not pte_write(pte) and gup_must_unshare(None, flags, folio,
                                                   pte_pfn(pte) - folio.pfn, pmd.mm):
            gup_put_folio(folio, 1, flags)
            ret = False
            break
        folio_test_set_flag(folio, "referenced", True, "folio_set_referenced")
        pages.append(folio)
        addr += 1 << PAGE_SHIFT
    return ret


@kfunc
def gup_fast_pmd_leaf(pmdval: int, pmd: PageTable, mi: int, addr: int, end: int, flags: int,
                      pages: list[Folio]) -> bool:
    """``gup_fast_pmd_leaf``: a huge PMD: access check, one grab of as many
    references as pages wanted (``record_subpages``), the PMD recheck,
    the unshare check; each page is returned as its folio."""
    if not pte_access_permitted(pmdval, bool(flags & FOLL_WRITE)):
        return False
    folio = pfn_folio(pte_pfn(pmdval))
    refs = (end - addr) >> PAGE_SHIFT
    if try_grab_folio_fast(folio, refs, flags) is None:
        return False
    if not pmd_same(pmdval, pmdp_get(pmd, mi)):
        gup_put_folio(folio, refs, flags)
        return False
    if not pte_write(pmdval) and gup_must_unshare(None, flags, folio, pte_index(addr), pmd.mm):
        gup_put_folio(folio, refs, flags)
        return False
    folio_test_set_flag(folio, "referenced", True, "folio_set_referenced")
    pages.extend([folio] * refs)
    return True


@kfunc
def gup_fast_pgd_range(mm: MmStruct, start: int, end: int, flags: int,
                       pages: list[Folio]) -> None:
    """``gup_fast_pgd_range`` .. ``gup_fast_pmd_range``: read each level
    with ``READ_ONCE`` (``pmdp_get_lockless``) and stop at the first entry
    that is not present; a huge PMD is a leaf."""
    addr = start
    while addr < end:
        nxt = min((addr & PMD_MASK) + PMD_SIZE, end)
        pgd, gi = pgd_offset(mm, addr)
        e = pgdp_get(pgd, gi)
        if not pte_present(e):
            return
        pud = table_of(e)
        e = pudp_get(pud, pud_index(addr))
        if not pte_present(e):
            return
        pmd, mi = table_of(e), pmd_index(addr)
        pmdval = pmdp_get_lockless(pmd, mi)
        if not pmd_present(pmdval):
            return
        if pmd_trans_huge(pmdval):
            if not gup_fast_pmd_leaf(pmdval, pmd, mi, addr, nxt, flags, pages):
                return
        elif not gup_fast_pte_range(pmdval, pmd, mi, addr, nxt, flags, pages):
            return
        addr = nxt


@kfunc
def gup_fast(mm: MmStruct, start: int, end: int, flags: int, pages: list[Folio]) -> int:
    """``gup_fast`` (``lockless_pages_from_mm``): walk the page tables with
    interrupts off -- so a TLB-flush IPI, and with it the freeing of pages
    and page tables that waits for one (``tlb_remove_table_sync_one``),
    waits for the walk; the section is an RCU read-side section too -- and
    no lock at all. For ``FOLL_PIN``, sample ``mm->write_protect_seq``
    first (odd: a fork is write-protecting, give up) and recheck it after:
    if a fork ran meanwhile, unpin everything (the page may have become
    shared). Returns the number of pages taken."""
    seq = 0
    if flags & FOLL_PIN:
        seq = raw_read_seqcount(mm.write_protect_seq)
        if seq & 1:
            return 0
    # 5.8 (gup-cow-break-reads): a lookup may have to break COW, which only
    # the slow path can do, so the lockless walk takes writable PTEs only.
    walk_flags = flags | FOLL_WRITE if gup_forces_cow_break(mm) else flags
    irq = local_irq_save()
    rcu_read_lock()
    gup_fast_pgd_range(mm, start, end, walk_flags, pages)
    rcu_read_unlock()
    local_irq_restore(irq)
    if flags & FOLL_PIN and read_seqcount_retry(mm.write_protect_seq, seq):
        for f in pages:
            gup_put_folio(f, 1, flags)
        pages.clear()
        return 0
    return len(pages)


@kfunc
def gup_fast_fallback(mm: MmStruct, start: int, nr_pages: int, gup_flags: int) -> list[Folio]:
    """``gup_fast_fallback`` (``get_user_pages_fast`` / ``pin_user_pages_fast``):
    GUP-fast for as many pages as it can, then the slow path
    (``get_user_pages_unlocked``: mmap read lock, faults) for the rest,
    unless ``FOLL_FAST_ONLY``. Raises OSError(EFAULT) if nothing could be
    had and (EINVAL) for unknown flags. ``FOLL_PIN`` marks the mm
    ``MMF_HAS_PINNED`` first."""
    if gup_flags & ~(FOLL_WRITE | FOLL_LONGTERM | FOLL_FORCE | FOLL_PIN | FOLL_GET
                     | FOLL_FAST_ONLY):
        raise errno_error(EINVAL, "gup flags")
    if gup_flags & FOLL_PIN:
        mm.has_pinned.store(1)  # mm_set_has_pinned_flag
    start &= ~((1 << PAGE_SHIFT) - 1)
    end = start + (nr_pages << PAGE_SHIFT)
    if end > mm.task_size or end <= start:
        raise errno_error(EFAULT, f"gup_fast at {start:#x}")
    pages: list[Folio] = []
    nr_pinned = gup_fast(mm, start, end, gup_flags, pages)
    if nr_pinned == nr_pages or gup_flags & FOLL_FAST_ONLY:
        return pages
    rest = start + (nr_pinned << PAGE_SHIFT)
    slow_flags = gup_flags & ~FOLL_FAST_ONLY
    try:
        if slow_flags & FOLL_PIN:
            more = pin_user_pages_unlocked(mm, rest, nr_pages - nr_pinned,
                                           slow_flags & ~FOLL_PIN)
        else:
            more = get_user_pages_unlocked(mm, rest, nr_pages - nr_pinned,
                                           slow_flags & ~FOLL_GET)
    except OSError:
        if pages:
            return pages
        raise
    return pages + more


def get_user_pages_fast(mm: MmStruct, start: int, nr_pages: int, gup_flags: int) -> list[Folio]:
    """``get_user_pages_fast`` (``FOLL_GET``)."""
    return gup_fast_fallback(mm, start, nr_pages, gup_flags | FOLL_GET)


def pin_user_pages_fast(mm: MmStruct, start: int, nr_pages: int, gup_flags: int) -> list[Folio]:
    """``pin_user_pages_fast`` (``FOLL_PIN``)."""
    return gup_fast_fallback(mm, start, nr_pages, gup_flags | FOLL_PIN)

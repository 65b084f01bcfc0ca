"""get_user_pages, slow path (mm/gup.c).

``__get_user_pages`` walks the page tables under the caller's mmap read
lock (``follow_page_pte`` under the PTE lock); a missing page, a write to a
read-only PTE (``FOLL_WRITE``), or a pin of a possibly shared anonymous page
(``gup_must_unshare``) is resolved by ``faultin_page`` through
``handle_mm_fault`` and the walk is retried. ``FOLL_GET`` takes a
reference; ``FOLL_PIN`` adds ``GUP_PIN_COUNTING_BIAS`` (what
``page_maybe_dma_pinned`` sees) and marks the mm ``MMF_HAS_PINNED``.

Left out: GUP-fast, ``FOLL_LONGTERM`` migration, huge pages,
``FOLL_NOWAIT``/``VM_FAULT_RETRY`` unlocking (faults here never drop the
mmap lock), ``FOLL_TOUCH`` accessed-bit updates, device pages.
"""

from __future__ import annotations

from mmrace.arch import local_irq_restore, local_irq_save
from mmrace.engine import RMW
from mmrace.mm.internal import errno_error, kfunc
from mmrace.mm.locks import rcu_read_lock, rcu_read_unlock
from mmrace.mm.memory import (
    FAULT_FLAG_REMOTE,
    FAULT_FLAG_UNSHARE,
    FAULT_FLAG_WRITE,
    VM_FAULT_ERROR,
    VM_FAULT_RETRY,
    handle_mm_fault,
    is_cow_mapping,
    vm_normal_page,
)
from mmrace.mm.mm_types import (
    PAGE_SHIFT,
    VM_LOCKONFAULT,
    VM_MAYWRITE,
    VM_READ,
    VM_SHARED,
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
from mmrace.mm.vma import find_vma
from mmrace.sync import raw_read_seqcount, read_seqcount_retry

FOLL_WRITE = 0x01
FOLL_GET = 0x04
FOLL_FORCE = 0x10
FOLL_PIN = 0x40000  # mm/internal.h's private FOLL_PIN
EFAULT, ENOMEM, EMLINK, EINVAL = 14, 12, 31, 22


def check_vma_flags(vma: VmAreaStruct, gup_flags: int) -> int:
    """``check_vma_flags``: 0 or -EFAULT."""
    flags = vma.vm_flags
    if gup_flags & FOLL_WRITE:
        if not flags & VM_WRITE and (not gup_flags & FOLL_FORCE or not is_cow_mapping(flags)):
            return -EFAULT
    elif not flags & VM_READ and not (gup_flags & FOLL_FORCE and flags & VM_MAYWRITE):
        return -EFAULT
    return 0


def can_follow_write_pte(pte: int, folio: Folio | None, vma: VmAreaStruct, flags: int) -> bool:
    """``can_follow_write_pte``: a writable PTE, or with ``FOLL_FORCE`` a
    dirty PTE of an exclusive anon page of a private mapping (the
    post-Dirty-COW rule)."""
    if pte_write(pte):
        return True
    if not flags & FOLL_FORCE or not is_cow_mapping(vma.vm_flags):
        return False
    if folio is None or not folio_test_anon(folio):
        return False
    return PageAnonExclusive(folio, 0) and pte_dirty(pte)


def gup_must_unshare(vma: VmAreaStruct, flags: int, folio: Folio) -> bool:
    """``gup_must_unshare``: a read-only pin of an anon page that may be
    shared must unshare it first (``FAULT_FLAG_UNSHARE``)."""
    if flags & FOLL_WRITE or not flags & FOLL_PIN:
        return False
    if not folio_test_anon(folio):
        return False
    return not PageAnonExclusive(folio, 0)


@kfunc
def try_grab_folio(folio: Folio, flags: int) -> None:
    """``try_grab_folio``: ``FOLL_GET`` one reference, ``FOLL_PIN`` the bias."""
    if flags & FOLL_PIN:
        if folio.order:  # a large folio counts pins exactly (_pincount)
            folio_ref_add(folio, 1)
            folio._pincount += 1
        else:
            folio_ref_add(folio, GUP_PIN_COUNTING_BIAS)
    elif flags & FOLL_GET:
        folio_get(folio)


@kfunc
def follow_page_pte(vma: VmAreaStruct, address: int, flags: int) -> tuple[Folio | None, int]:
    """``follow_page_pte``: under the PTE lock, the grabbed folio mapped at
    *address*, or (None, 0) to fault, or (None, -EMLINK) to unshare."""
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
    if flags & FOLL_WRITE and not can_follow_write_pte(pte, folio, vma, flags):
        pte_unmap_unlock(pm)
        return None, 0
    if folio is None:
        from mmrace.mm.page_alloc import pfn_to_obj

        folio = pfn_to_obj(pte_pfn(pte))  # the zero page
    assert folio is not None
    if not folio.is_zero and gup_must_unshare(vma, flags, folio):
        pte_unmap_unlock(pm)
        return None, -EMLINK
    if not folio.is_zero:
        try_grab_folio(folio, flags)
    pte_unmap_unlock(pm)
    return folio, 0


@kfunc
def faultin_page(vma: VmAreaStruct, address: int, flags: int, unshare: bool) -> int:
    """``faultin_page``: 0, or -EFAULT/-ENOMEM."""
    fault_flags = FAULT_FLAG_REMOTE
    if flags & FOLL_WRITE:
        fault_flags |= FAULT_FLAG_WRITE
    if unshare:
        fault_flags |= FAULT_FLAG_UNSHARE
    ret = handle_mm_fault(vma, address, fault_flags)
    if ret & VM_FAULT_ERROR:
        return -EFAULT
    assert not ret & VM_FAULT_RETRY
    return 0


@kfunc
def __get_user_pages(mm: MmStruct, start: int, nr_pages: int, gup_flags: int) -> list[Folio]:
    """``__get_user_pages``: fault in and grab *nr_pages* pages from *start*.
    Raises OSError(EFAULT) like a failed GUP."""
    mmap_assert_locked(mm)
    if gup_flags & FOLL_PIN:
        mm.has_pinned.store(1)  # mm_set_has_pinned_flag
    out: list[Folio] = []
    addr = start
    for _ in range(nr_pages):
        vma = find_vma(mm, addr)
        if vma is None or vma.vm_start > addr or check_vma_flags(vma, gup_flags):
            break
        while True:
            folio, err = follow_page_pte(vma, addr, gup_flags)
            if folio is not None:
                break
            if faultin_page(vma, addr, gup_flags, err == -EMLINK):
                folio = None
                break
        if folio is None:
            break
        out.append(folio)
        addr += 1 << PAGE_SHIFT
    if not out and nr_pages:
        raise errno_error(EFAULT, f"get_user_pages at {start:#x}")
    return out


def get_user_pages(mm: MmStruct, start: int, nr_pages: int, gup_flags: int) -> list[Folio]:
    """``get_user_pages`` (``FOLL_GET``): the caller holds the mmap read lock."""
    return __get_user_pages(mm, start, nr_pages, gup_flags | FOLL_GET)


def pin_user_pages(mm: MmStruct, start: int, nr_pages: int, gup_flags: int) -> list[Folio]:
    """``pin_user_pages`` (``FOLL_PIN``): the caller holds the mmap read lock."""
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


def unpin_user_page(folio: Folio) -> None:
    """``unpin_user_page``."""
    if not folio.is_zero:
        gup_put_folio(folio, 1, FOLL_PIN)


def put_user_page(folio: Folio) -> None:
    """``put_page`` of a ``FOLL_GET`` reference."""
    if not folio.is_zero:
        folio_put_refs(folio, 1)


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
    gup_flags = FOLL_GET
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

FOLL_LONGTERM = 0x100
FOLL_FAST_ONLY = 0x80000  # mm/internal.h


def gup_fast_must_unshare(flags: int, folio: Folio, idx: int) -> bool:
    """``gup_must_unshare`` as GUP-fast calls it (no VMA): a read-only pin
    of an anonymous page that is not ``PageAnonExclusive`` must go to the
    slow path to be unshared (a file page: only for ``FOLL_LONGTERM``)."""
    if flags & (FOLL_WRITE | FOLL_PIN) != FOLL_PIN:
        return False
    if not folio_test_anon(folio):
        return bool(flags & FOLL_LONGTERM)
    return not PageAnonExclusive(folio, idx)


def gup_put_folio(folio: Folio, refs: int, flags: int) -> None:
    """``gup_put_folio``: drop what ``try_grab_folio_fast`` took."""
    if flags & FOLL_PIN:
        if folio.order:
            folio.access(RMW, f"atomic_sub(_pincount, {refs})")
            folio._pincount -= refs
            folio_put_refs(folio, refs)
        else:
            folio_put_refs(folio, refs * GUP_PIN_COUNTING_BIAS)
    else:
        folio_put_refs(folio, refs)


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
    page); take the reference or pin; recheck that neither the PMD nor the
    PTE changed (else drop it and stop); refuse a read-only pin of an anon
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
        if (not pmd_same(pmdval, pmdp_get(pmd, mi))
                or not pte_same(pte, ptep_get(table, idx))):
            gup_put_folio(folio, 1, flags)
            ret = False
            break
        if not pte_write(pte) and gup_fast_must_unshare(flags, folio,
                                                        pte_pfn(pte) - folio.pfn):
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
    if not pte_write(pmdval) and gup_fast_must_unshare(flags, folio, pte_index(addr)):
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
    irq = local_irq_save()
    rcu_read_lock()
    gup_fast_pgd_range(mm, start, end, flags, pages)
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

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

from mmrace.mm.internal import errno_error, kfunc
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
    folio_test_anon,
)
from mmrace.mm.pgtable import (
    pmd_none,
    pmdp_get,
    pte_dirty,
    pte_offset_map_lock,
    pte_pfn,
    pte_present,
    pte_unmap_unlock,
    pte_write,
    ptep_get,
    walk_to_pmd,
)
from mmrace.mm.vma import find_vma

FOLL_WRITE = 0x01
FOLL_GET = 0x04
FOLL_FORCE = 0x10
FOLL_PIN = 0x40000  # mm/internal.h's private FOLL_PIN
EFAULT, ENOMEM, EMLINK = 14, 12, 31


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
        folio_ref_add(folio, GUP_PIN_COUNTING_BIAS)
    elif flags & FOLL_GET:
        folio_get(folio)


@kfunc
def follow_page_pte(vma: VmAreaStruct, address: int, flags: int) -> tuple[Folio | None, int]:
    """``follow_page_pte``: under the PTE lock, the grabbed folio mapped at
    *address*, or (None, 0) to fault, or (None, -EMLINK) to unshare."""
    mm = vma.vm_mm
    found = walk_to_pmd(mm, address)
    if found is None or pmd_none(pmdp_get(*found)):
        return None, 0
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
        folio_put_refs(folio, GUP_PIN_COUNTING_BIAS)


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

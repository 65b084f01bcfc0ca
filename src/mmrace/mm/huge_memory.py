"""Transparent huge pages mapped by a PMD (mm/huge_memory.c, the THP parts
of mm/memory.c's fault path and mm/gup.c's ``follow_huge_pmd``).

A PMD-mapped THP is one PMD entry with ``_PAGE_PSE`` pointing at an
order-9 folio (``mk_huge_pmd``): faulting one in, zapping it, changing its
protection, copying it at fork, COW-ing or splitting it each touch that one
entry, never 512 PTEs. An anonymous THP keeps a preallocated PTE table
deposited with its PMD (``pgtable_trans_huge_deposit``), so a split
(``__split_huge_pmd_locked``) fills that private table with 512 PTEs
invisibly and publishes it with one ``pmd_populate``. File (shmem) PMD
mappings have no deposit on x86: splitting one just clears it, and the
pages fault back in by PTEs.

The sysfs knob ``/sys/kernel/mm/transparent_hugepage/enabled`` is
:func:`set_transparent_hugepage` (``System(thp=...)``): ``always``,
``madvise`` (only ``MADV_HUGEPAGE`` regions; the model's default, as many
distributions ship) or ``never``; ``MADV_NOHUGEPAGE`` always wins.

Left out: the huge zero page (the model behaves as with
``use_zero_page`` 0: a read fault allocates a THP), mTHP orders other than
PMD size, ``defrag`` and allocation failure (a THP is always available),
khugepaged (a later issue), THP migration and PMD migration entries (a THP
is split first), the deferred-split shrinker (a partially unmapped THP stays
large until its last page is unmapped), ``split_huge_page`` of anonymous
folios, PUD-sized pages, DAX, NUMA hinting, mmu notifiers.
"""

from __future__ import annotations

from mmrace.engine import WRITE, execution_local
from mmrace.mm.fs_userfaultfd import handle_userfault
from mmrace.mm.internal import kernel_config, kfunc
from mmrace.mm.locks import Spinlock
from mmrace.mm.memory import (
    FAULT_FLAG_UNSHARE,
    FAULT_FLAG_WRITE,
    VM_FAULT_FALLBACK,
    VmFault,
    vma_is_anonymous,
    vmf_anon_prepare,
)
from mmrace.mm.mm_types import (
    PAGE_SHIFT,
    VM_HUGEPAGE,
    VM_NOHUGEPAGE,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_SPECIAL,
    VM_UFFD_MISSING,
    VM_UFFD_WP,
    VM_WRITE,
    MmStruct,
    VmAreaStruct,
)
from mmrace.mm.mmu_gather import MmuGather, tlb_flush_pmd_range, tlb_remove_folio
from mmrace.mm.mprotect import (
    MM_CP_TRY_CHANGE_WRITABLE,
    MM_CP_UFFD_WP,
    MM_CP_UFFD_WP_RESOLVE,
)
from mmrace.mm.page_alloc import (
    HPAGE_PMD_ORDER,
    Folio,
    PageAnonExclusive,
    SetPageAnonExclusive,
    folio_alloc,
    folio_get,
    folio_lock,
    folio_mapcount,
    folio_put,
    folio_ref_add,
    folio_ref_count,
    folio_test_flag,
    folio_test_set_flag,
    folio_trylock,
    folio_unlock,
    pfn_folio,
)
from mmrace.mm.pgtable import (
    LEVEL_PTE,
    PMD_SIZE,
    PageTable,
    flush_pmd_tlb_range,
    mk_huge_pmd,
    mm_dec_nr_ptes,
    mm_inc_nr_ptes,
    pfn_pte,
    pgtable_trans_huge_deposit,
    pgtable_trans_huge_withdraw,
    pmd_clear_uffd_wp,
    pmd_dirty,
    pmd_lock,
    pmd_mkclean,
    pmd_mkdirty,
    pmd_mkold,
    pmd_mksoft_dirty,
    pmd_mkuffd_wp,
    pmd_mkwrite,
    pmd_mkyoung,
    pmd_none,
    pmd_pfn,
    pmd_populate,
    pmd_present,
    pmd_same,
    pmd_soft_dirty,
    pmd_trans_huge,
    pmd_uffd_wp,
    pmd_write,
    pmd_wrprotect,
    pmd_young,
    pmdp_get,
    pmdp_get_lockless,
    pmdp_huge_clear_flush,
    pmdp_huge_get_and_clear,
    pmdp_huge_get_and_clear_full,
    pmdp_invalidate,
    pmdp_invalidate_ad,
    pmdp_set_access_flags,
    pmdp_set_wrprotect,
    pte_alloc_one,
    pte_free,
    pte_free_defer,
    pte_mkdirty,
    pte_mksoft_dirty,
    pte_mkuffd_wp,
    pte_mkwrite,
    pte_mkyoung,
    pte_modify,
    ptl_lock,
    ptl_unlock,
    set_pmd_at,
    set_pte_private,
    vm_prot_to_pte,
    walk_to_pmd,
)
from mmrace.mm.rmap import (
    folio_add_anon_rmap_ptes,
    folio_add_new_anon_rmap,
    folio_mark_dirty,
    folio_move_anon_rmap,
    folio_remove_rmap_pmd,
    folio_try_dup_anon_rmap_pmd,
)
from mmrace.mm.userfaultfd_k import (
    userfaultfd_missing,
    userfaultfd_wp,
    vma_has_uffd_without_event_remap,
)

HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER
HPAGE_PMD_SIZE = PMD_SIZE
HPAGE_PMD_MASK = ~(HPAGE_PMD_SIZE - 1)
EAGAIN = 11

THP_ENABLED = ("always", "madvise", "never")


class ThpSettings:
    """``/sys/kernel/mm/transparent_hugepage/`` for one execution."""

    __slots__ = ("enabled",)

    def __init__(self) -> None:
        self.enabled = "madvise"


def thp_settings() -> ThpSettings:
    st: ThpSettings = execution_local("mm.thp", ThpSettings)
    return st


def set_transparent_hugepage(enabled: str) -> None:
    """Write *enabled* to ``transparent_hugepage/enabled`` (ValueError for
    anything but ``always``, ``madvise`` or ``never``)."""
    if enabled not in THP_ENABLED:
        raise ValueError(f"transparent_hugepage/enabled: {enabled!r} is not one of "
                         f"{', '.join(THP_ENABLED)}")
    thp_settings().enabled = enabled


def hugepage_madvise(vma: VmAreaStruct, vm_flags: int, advice: int) -> int:
    """``hugepage_madvise``: the new flags for ``MADV_HUGEPAGE`` (14) or
    ``MADV_NOHUGEPAGE`` (15). Left out: registering with khugepaged."""
    if advice == 14:
        return (vm_flags & ~VM_NOHUGEPAGE) | VM_HUGEPAGE
    return (vm_flags & ~VM_HUGEPAGE) | VM_NOHUGEPAGE


def vma_thp_disabled(vma: VmAreaStruct, vm_flags: int) -> bool:
    """``vma_thp_disabled``: ``MADV_NOHUGEPAGE`` (the prctl and MMF bit are
    left out)."""
    return bool(vm_flags & VM_NOHUGEPAGE)


def thp_vma_suitable_order(vma: VmAreaStruct, addr: int, order: int = HPAGE_PMD_ORDER) -> bool:
    """``thp_vma_suitable_order``: the aligned block around *addr* lies in
    the VMA and, for a file, its file offset is aligned as well."""
    size = (1 << order) << PAGE_SHIFT
    haddr = addr & ~(size - 1)
    if not vma_is_anonymous(vma) and ((vma.vm_start >> PAGE_SHIFT) - vma.vm_pgoff) % (1 << order):
        return False
    return bool(haddr >= vma.vm_start and haddr + size <= vma.vm_end)


def thp_vma_allowable_order(vma: VmAreaStruct, vm_flags: int, addr: int) -> bool:
    """``thp_vma_allowable_order(vma, vm_flags, TVA_PAGEFAULT, PMD_ORDER)``
    for an anonymous VMA: THP enabled for it (``always``, or ``madvise``
    and ``VM_HUGEPAGE``), not disabled, not special, and the PMD block fits.
    File VMAs get PMD mappings only through the page cache (``do_set_pmd``)."""
    if not vma_is_anonymous(vma) or vm_flags & (VM_SPECIAL | VM_SHARED):
        return False
    if vma_thp_disabled(vma, vm_flags):
        return False
    enabled = thp_settings().enabled
    if enabled == "never" or (enabled == "madvise" and not vm_flags & VM_HUGEPAGE):
        return False
    return thp_vma_suitable_order(vma, addr)


def maybe_pmd_mkwrite(pmd: int, vma: VmAreaStruct) -> int:
    """``maybe_pmd_mkwrite``."""
    return pmd_mkwrite(pmd) if vma.vm_flags & VM_WRITE else pmd


def _pmd_of(vmf: VmFault) -> tuple[PageTable, int]:
    assert vmf.pmd is not None
    return vmf.pmd, vmf.pmd_index


# --- the huge-PMD lock ---------------------------------------------------------------------


@kfunc
def __pmd_trans_huge_lock(pmd: PageTable, mi: int, vma: VmAreaStruct) -> Spinlock | None:
    """``__pmd_trans_huge_lock``: the PMD lock if the entry (reread under
    it) is a huge PMD; None (unlocked) otherwise."""
    ptl = pmd_lock(vma.raw("vm_mm"), pmd)
    if pmd_trans_huge(pmdp_get(pmd, mi)):
        return ptl
    ptl_unlock(ptl)
    return None


def pmd_trans_huge_lock(pmd: PageTable, mi: int, vma: VmAreaStruct) -> Spinlock | None:
    """``pmd_trans_huge_lock``: a lockless look first, then the lock."""
    if pmd_trans_huge(pmdp_get_lockless(pmd, mi)):
        return __pmd_trans_huge_lock(pmd, mi, vma)
    return None


# --- faults ----------------------------------------------------------------------------------


@kfunc
def __do_huge_pmd_anonymous_page(vmf: VmFault, folio: Folio) -> int:
    """``__do_huge_pmd_anonymous_page``: preallocate the PTE table to
    deposit, take the PMD lock and, if the PMD is still empty, map the
    folio with one PMD entry (``map_anon_folio_pmd``): dirty, writable if
    the VMA is, the folio's new anon rmap exclusive; else back off."""
    vma = vmf.vma
    mm = vma.vm_mm
    haddr = vmf.address & HPAGE_PMD_MASK
    pmd, mi = _pmd_of(vmf)
    pgtable = pte_alloc_one(mm, LEVEL_PTE, haddr)
    ptl = pmd_lock(mm, pmd)
    if not pmd_none(pmdp_get(pmd, mi)):
        ptl_unlock(ptl)
        folio_put(folio)
        pte_free(mm, pgtable)
        return 0
    if userfaultfd_missing(vma):
        ptl_unlock(ptl)
        folio_put(folio)
        pte_free(mm, pgtable)
        return handle_userfault(vmf, VM_UFFD_MISSING)
    entry = pmd_mkyoung(mk_huge_pmd(folio.pfn, vm_prot_to_pte(vma.vm_page_prot)))
    entry = maybe_pmd_mkwrite(pmd_mkdirty(entry), vma)
    folio_add_new_anon_rmap(folio, vma, haddr, True)
    pgtable_trans_huge_deposit(mm, pmd, mi, pgtable)
    mm_inc_nr_ptes(mm)
    set_pmd_at(mm, haddr, pmd, mi, entry)
    mm.rss += HPAGE_PMD_NR
    ptl_unlock(ptl)
    return 0


@kfunc
def do_huge_pmd_anonymous_page(vmf: VmFault) -> int:
    """``do_huge_pmd_anonymous_page``: fault in a whole THP (a read fault
    too: the huge zero page is left out), or ``VM_FAULT_FALLBACK`` when the
    PMD block does not fit in the VMA. The new folio is zeroed by the
    allocator (invisible: nobody else can reach it yet)."""
    vma = vmf.vma
    haddr = vmf.address & HPAGE_PMD_MASK
    if not thp_vma_suitable_order(vma, haddr):
        return VM_FAULT_FALLBACK
    ret = vmf_anon_prepare(vmf)
    if ret:
        return ret
    folio = folio_alloc(HPAGE_PMD_ORDER)
    return __do_huge_pmd_anonymous_page(vmf, folio)


@kfunc
def create_huge_pmd(vmf: VmFault) -> int:
    """``create_huge_pmd``: anonymous VMAs fault in a THP; file VMAs have no
    ``->huge_fault`` (only DAX does) and fall back to the PTE level, where
    ``finish_fault`` / ``filemap_map_pages`` may still map a large page-cache
    folio by PMD (``do_set_pmd``)."""
    if vma_is_anonymous(vmf.vma):
        return do_huge_pmd_anonymous_page(vmf)
    return VM_FAULT_FALLBACK


@kfunc
def huge_pmd_set_accessed(vmf: VmFault, orig_pmd: int) -> None:
    """``huge_pmd_set_accessed`` / ``touch_pmd``: under the PMD lock, if the
    entry is unchanged, set its accessed (and for a write, dirty) bits."""
    vma = vmf.vma
    mm = vma.vm_mm
    pmd, mi = _pmd_of(vmf)
    ptl = pmd_lock(mm, pmd)
    if pmd_same(pmdp_get(pmd, mi), orig_pmd):
        entry = pmd_mkyoung(orig_pmd)
        if vmf.flags & FAULT_FLAG_WRITE:
            entry = pmd_mkdirty(entry)
        pmdp_set_access_flags(vma, vmf.address & HPAGE_PMD_MASK, pmd, mi, entry,
                              bool(vmf.flags & FAULT_FLAG_WRITE))
    ptl_unlock(ptl)


@kfunc
def do_huge_pmd_wp_page(vmf: VmFault, orig_pmd: int) -> int:
    """``do_huge_pmd_wp_page``: a write (or unshare) fault on a read-only
    anonymous huge PMD. Reuse the THP if it is exclusive (or, under its
    lock, nothing else references it); otherwise split the PMD and return
    ``VM_FAULT_FALLBACK``, so the PTE-level fault copies the one page (the
    current kernel no longer copies whole THPs)."""
    unshare = bool(vmf.flags & FAULT_FLAG_UNSHARE)
    vma = vmf.vma
    mm = vma.vm_mm
    pmd, mi = _pmd_of(vmf)
    haddr = vmf.address & HPAGE_PMD_MASK
    ptl = pmd_lock(mm, pmd)
    if not pmd_same(pmdp_get(pmd, mi), orig_pmd):
        ptl_unlock(ptl)
        return 0
    folio = pfn_folio(pmd_pfn(orig_pmd))
    reuse = PageAnonExclusive(folio, 0)
    if not reuse:
        if not folio_trylock(folio):
            folio_get(folio)
            ptl_unlock(ptl)
            folio_lock(folio)
            ptl_lock(ptl)
            if not pmd_same(pmdp_get(pmd, mi), orig_pmd):
                ptl_unlock(ptl)
                folio_unlock(folio)
                folio_put(folio)
                return 0
            folio_put(folio)
        if PageAnonExclusive(folio, 0):
            folio_unlock(folio)
            reuse = True
        elif folio_ref_count(folio) == 1:
            folio_move_anon_rmap(folio, vma)
            SetPageAnonExclusive(folio, 0)
            folio_unlock(folio)
            reuse = True
        else:
            folio_unlock(folio)
            ptl_unlock(ptl)
            __split_huge_pmd(vma, pmd, mi, vmf.address, False)
            return VM_FAULT_FALLBACK
    if unshare:
        ptl_unlock(ptl)
        return 0
    entry = maybe_pmd_mkwrite(pmd_mkdirty(pmd_mkyoung(orig_pmd)), vma)
    pmdp_set_access_flags(vma, haddr, pmd, mi, entry, True)
    ptl_unlock(ptl)
    return 0


@kfunc
def wp_huge_pmd(vmf: VmFault, orig_pmd: int) -> int:
    """``wp_huge_pmd``: an anonymous THP goes to ``do_huge_pmd_wp_page``
    (after the uffd-wp check); a file PMD is split so the write is handled
    per page (no ``->huge_fault`` in the model)."""
    vma = vmf.vma
    if vma_is_anonymous(vma):
        if (not vmf.flags & FAULT_FLAG_UNSHARE and userfaultfd_wp(vma)
                and pmd_uffd_wp(orig_pmd)):
            return handle_userfault(vmf, VM_UFFD_WP)
        return do_huge_pmd_wp_page(vmf, orig_pmd)
    pmd, mi = _pmd_of(vmf)
    __split_huge_pmd(vma, pmd, mi, vmf.address, False)
    return VM_FAULT_FALLBACK


# --- zapping -----------------------------------------------------------------------------------


def zap_deposited_table(mm: MmStruct, pmd: PageTable, mi: int) -> None:
    """``zap_deposited_table``: free the PTE table deposited with a huge PMD."""
    pte_free_defer(mm, pgtable_trans_huge_withdraw(mm, pmd, mi))
    mm_dec_nr_ptes(mm)


@kfunc
def zap_huge_pmd(tlb: MmuGather, vma: VmAreaStruct, pmd: PageTable, mi: int, addr: int) -> bool:
    """``zap_huge_pmd``: under the PMD lock (rechecked: False if it is no
    longer a huge PMD), clear it, add its range to the gather, drop the
    folio's PMD mapping (a file folio inherits the dirty bit), free the
    deposited table, and release the mapping's reference after the flush."""
    mm = vma.vm_mm
    ptl = __pmd_trans_huge_lock(pmd, mi, vma)
    if ptl is None:
        return False
    orig = pmdp_huge_get_and_clear_full(mm, addr, pmd, mi)
    tlb_flush_pmd_range(tlb, addr, HPAGE_PMD_SIZE)
    folio = pfn_folio(pmd_pfn(orig))
    folio_remove_rmap_pmd(folio, vma)
    mm.rss -= HPAGE_PMD_NR
    if folio.anon:
        zap_deposited_table(mm, pmd, mi)
    elif pmd_dirty(orig):
        folio_mark_dirty(folio)
    ptl_unlock(ptl)
    tlb_remove_folio(tlb, folio)
    return True


# --- splitting a huge PMD ------------------------------------------------------------------------


@kfunc
def __split_huge_pmd_locked(vma: VmAreaStruct, pmd: PageTable, mi: int, haddr: int,
                            freeze: bool) -> None:
    """``__split_huge_pmd_locked`` (PMD lock held, the entry a huge PMD).

    A file PMD is cleared and flushed (``pmdp_huge_clear_flush``): the
    pages fault back in by PTEs. An anonymous one is first made not-present
    but still huge (``pmdp_invalidate``, with a flush), so no CPU keeps a
    huge and a small translation at once and a lockless ``pmd_none`` check
    never sees it empty; the folio gains 511 references and a PTE mapping
    per page (exclusive if the THP was); the deposited table is withdrawn
    and filled with 512 PTEs carrying the PMD's write, young, dirty,
    soft-dirty and uffd-wp bits -- invisibly, nobody can reach it yet --
    then the PMD mapping goes and ``pmd_populate`` publishes the table.
    Left out: *freeze* (PMD to migration entries)."""
    assert not freeze, "split_huge_pmd with freeze is not modelled"
    mm = vma.vm_mm
    if not vma_is_anonymous(vma):
        old = pmdp_huge_clear_flush(vma, haddr, pmd, mi)
        folio = pfn_folio(pmd_pfn(old))
        if pmd_dirty(old):
            folio_mark_dirty(folio)
        folio_remove_rmap_pmd(folio, vma)
        mm.rss -= HPAGE_PMD_NR
        folio_put(folio)
        return
    old = pmdp_invalidate(vma, haddr, pmd, mi)
    folio = pfn_folio(pmd_pfn(old))
    dirty = pmd_dirty(old)
    if dirty:
        folio_test_set_flag(folio, "dirty", True, "folio_set_dirty")
    write, young = pmd_write(old), pmd_young(old)
    soft_dirty, uffd_wp = pmd_soft_dirty(old), pmd_uffd_wp(old)
    anon_exclusive = PageAnonExclusive(folio, 0)
    folio_ref_add(folio, HPAGE_PMD_NR - 1)
    folio_add_anon_rmap_ptes(folio, 0, HPAGE_PMD_NR, vma, haddr, anon_exclusive)
    pgtable = pgtable_trans_huge_withdraw(mm, pmd, mi)
    prot = vm_prot_to_pte(vma.vm_page_prot)
    for i in range(HPAGE_PMD_NR):
        entry = pfn_pte(folio.pfn + i, prot)
        if write:
            entry = pte_mkwrite(entry)
        if young:
            entry = pte_mkyoung(entry)
        if dirty:
            entry = pte_mkdirty(entry)
        if soft_dirty:
            entry = pte_mksoft_dirty(entry)
        if uffd_wp:
            entry = pte_mkuffd_wp(entry)
        set_pte_private(pgtable, i, entry)
    folio_remove_rmap_pmd(folio, vma)
    pmd_populate(mm, pmd, mi, pgtable)


def split_huge_pmd_locked(vma: VmAreaStruct, address: int, pmd: PageTable, mi: int,
                          freeze: bool) -> None:
    """``split_huge_pmd_locked``: split if (under the PMD lock) the entry
    is still a huge PMD."""
    if pmd_trans_huge(pmdp_get(pmd, mi)):
        __split_huge_pmd_locked(vma, pmd, mi, address & HPAGE_PMD_MASK, freeze)


@kfunc
def __split_huge_pmd(vma: VmAreaStruct, pmd: PageTable, mi: int, address: int,
                     freeze: bool = False) -> None:
    """``__split_huge_pmd``: take the PMD lock and split."""
    ptl = pmd_lock(vma.vm_mm, pmd)
    split_huge_pmd_locked(vma, address, pmd, mi, freeze)
    ptl_unlock(ptl)


def split_huge_pmd(vma: VmAreaStruct, pmd: PageTable, mi: int, address: int) -> None:
    """``split_huge_pmd``: a lockless look, then ``__split_huge_pmd``."""
    if pmd_trans_huge(pmdp_get_lockless(pmd, mi)):
        __split_huge_pmd(vma, pmd, mi, address, False)


@kfunc
def split_huge_pmd_address(vma: VmAreaStruct, address: int, freeze: bool = False) -> None:
    """``split_huge_pmd_address``: split the huge PMD mapping *address*, if
    any (``mm_find_pmd`` then ``__split_huge_pmd``)."""
    found = walk_to_pmd(vma.vm_mm, address)
    if found is None:
        return
    __split_huge_pmd(vma, found[0], found[1], address, freeze)


def split_huge_pmd_if_needed(vma: VmAreaStruct, address: int) -> None:
    """``split_huge_pmd_if_needed``: a VMA boundary moving to an address
    that is not PMD-aligned splits a huge PMD that may straddle it."""
    if address % HPAGE_PMD_SIZE == 0:
        return
    lo = address & HPAGE_PMD_MASK
    if vma.vm_start <= lo and lo + HPAGE_PMD_SIZE <= vma.vm_end:
        split_huge_pmd_address(vma, address, False)


@kfunc
def vma_adjust_trans_huge(vma: VmAreaStruct, start: int, end: int,
                          next_vma: VmAreaStruct | None = None) -> None:
    """``vma_adjust_trans_huge``: *vma* is about to become ``[start, end)``
    (a split, a partial munmap or mprotect): split the huge PMDs the new
    boundaries cut through (and *next_vma*'s, if its start moves to *end*)."""
    split_huge_pmd_if_needed(vma, start)
    split_huge_pmd_if_needed(vma, end)
    if next_vma is not None:
        split_huge_pmd_if_needed(next_vma, end)


# --- moving a huge PMD (mremap) ------------------------------------------------------------------


def _move_deposit(mm: MmStruct, old_pmd: PageTable, oi: int, new_pmd: PageTable,
                  ni: int) -> None:
    """The deposited PTE table follows the huge PMD. The kernel moves it only
    when ``pmd_move_must_withdraw`` (the two entries under different PMD
    locks, an anonymous VMA): its deposit list lives per PMD page, or per mm
    without split PMD locks. The model keys a deposit by PMD entry, so it
    always moves one that exists (file THPs have none on x86). Invisible
    bookkeeping: the deposit is touched only under the PMD locks, held."""
    if oi in old_pmd.deposited:
        pgtable = pgtable_trans_huge_withdraw(mm, old_pmd, oi)
        pgtable.base = new_pmd.addr_of(ni)  # model bookkeeping: the range it will map
        pgtable_trans_huge_deposit(mm, new_pmd, ni, pgtable)


@kfunc
def move_huge_pmd(vma: VmAreaStruct, old_addr: int, new_addr: int,
                  old_pmd: tuple[PageTable, int], new_pmd: tuple[PageTable, int]) -> bool:
    """``move_huge_pmd``: mremap of a whole PMD-mapped THP. The destination
    entry must be empty (False otherwise: the caller falls back, or a
    racing collapse installed a table there). Under the old PMD lock
    (``__pmd_trans_huge_lock``: False if the entry is no longer huge) and,
    nested, the new one: ``pmdp_huge_get_and_clear``, the deposited table
    moved with it, soft-dirty set, uffd-wp
    cleared for a VMA whose userfaultfd takes no REMAP events,
    ``set_pmd_at`` at the new place, and the old range flushed before the
    locks are dropped if the entry was present. The folio's rmap does not
    change: the destination VMA's pgoff puts it at the new address."""
    mm = vma.vm_mm
    ot, oi = old_pmd
    nt, ni = new_pmd
    if not pmd_none(pmdp_get(nt, ni)):
        return False
    old_ptl = __pmd_trans_huge_lock(ot, oi, vma)
    if old_ptl is None:
        return False
    new_ptl = nt.ptl if nt.ptl is not None else mm.page_table_lock  # pmd_lockptr
    if new_ptl is not old_ptl:
        ptl_lock(new_ptl, nested=True)
    pmd = pmdp_huge_get_and_clear(mm, old_addr, ot, oi)
    force_flush = pmd_present(pmd)
    _move_deposit(mm, ot, oi, nt, ni)
    pmd = pmd_mksoft_dirty(pmd)  # move_soft_dirty_pmd
    if vma_has_uffd_without_event_remap(vma):
        pmd = pmd_clear_uffd_wp(pmd)  # clear_uffd_wp_pmd
    set_pmd_at(mm, new_addr, nt, ni, pmd)
    if force_flush:
        flush_pmd_tlb_range(vma, old_addr, old_addr + HPAGE_PMD_SIZE)
    if new_ptl is not old_ptl:
        ptl_unlock(new_ptl)
    ptl_unlock(old_ptl)
    return True


# --- change_protection ---------------------------------------------------------------------------


def can_change_pmd_writable(vma: VmAreaStruct, addr: int, pmd: int) -> bool:
    """``can_change_pmd_writable``: as ``can_change_pte_writable``, for a
    huge PMD."""
    flags = vma.vm_flags
    if not flags & VM_WRITE:
        return False
    if not flags & VM_SOFTDIRTY and not pmd_soft_dirty(pmd):
        return False
    if userfaultfd_wp(vma) and pmd_uffd_wp(pmd):
        return False
    if not flags & VM_SHARED:
        if not kernel_config(vma.vm_mm).has("mprotect-exclusive-anon-writable"):
            return False
        folio = pfn_folio(pmd_pfn(pmd))
        return bool(folio.anon) and PageAnonExclusive(folio, 0)
    return pmd_dirty(pmd)


@kfunc
def change_huge_pmd(tlb: MmuGather, vma: VmAreaStruct, pmd: PageTable, mi: int, addr: int,
                    newprot: int, cp_flags: int) -> int:
    """``change_huge_pmd``: under the PMD lock, give a huge PMD the new
    protection. The entry is never cleared in between (``pmdp_invalidate_ad``
    keeps it huge), so a concurrent MADV_DONTNEED cannot skip it (the
    race of "thp: fix MADV_DONTNEED vs. numa balancing race"); the flush is
    deferred to the gather. Returns the pages changed (0 if the PMD was no
    longer huge)."""
    mm = vma.vm_mm
    ptl = __pmd_trans_huge_lock(pmd, mi, vma)
    if ptl is None:
        return 0
    oldpmd = pmdp_invalidate_ad(vma, addr, pmd, mi)
    entry = pte_modify(oldpmd, vm_prot_to_pte(newprot))
    if cp_flags & MM_CP_UFFD_WP:
        entry = pmd_mkuffd_wp(entry)
    elif cp_flags & MM_CP_UFFD_WP_RESOLVE:
        entry = pmd_clear_uffd_wp(entry)
    if (cp_flags & MM_CP_TRY_CHANGE_WRITABLE and not pmd_write(entry)
            and can_change_pmd_writable(vma, addr, entry)):
        entry = pmd_mkwrite(entry)
    set_pmd_at(mm, addr, pmd, mi, entry)
    # The model flushes every changed huge PMD, as change_pte_range does
    # every changed PTE (huge_pmd_needs_flush would skip some).
    tlb_flush_pmd_range(tlb, addr, HPAGE_PMD_SIZE)
    ptl_unlock(ptl)
    return HPAGE_PMD_NR


# --- fork --------------------------------------------------------------------------------------


@kfunc
def copy_huge_pmd(dst_mm: MmStruct, src_mm: MmStruct, dst_pmd: PageTable, dmi: int,
                  src_pmd: PageTable, smi: int, addr: int, dst_vma: VmAreaStruct,
                  src_vma: VmAreaStruct) -> int:
    """``copy_huge_pmd``: fork shares an anonymous THP with the child by one
    write-protected PMD in each (with a table deposited for the child), the
    folio's pages no longer exclusive. A possibly pinned exclusive THP is
    not shared: the parent's PMD is split and the caller copies PTEs
    (-EAGAIN). File PMDs are not copied (the child faults them). Both PMD
    locks are held (the source's nested)."""
    if not vma_is_anonymous(dst_vma):
        return 0
    pgtable = pte_alloc_one(dst_mm, LEVEL_PTE, addr)
    dst_ptl = pmd_lock(dst_mm, dst_pmd)
    src_ptl = src_pmd.ptl
    assert src_ptl is not None
    ptl_lock(src_ptl, nested=True)
    pmd = pmdp_get(src_pmd, smi)
    ret = -EAGAIN
    if pmd_trans_huge(pmd):
        folio = pfn_folio(pmd_pfn(pmd))
        folio_get(folio)
        if folio_try_dup_anon_rmap_pmd(folio, src_vma):
            folio_put(folio)
            pte_free(dst_mm, pgtable)
            ptl_unlock(src_ptl)
            ptl_unlock(dst_ptl)
            __split_huge_pmd(src_vma, src_pmd, smi, addr, False)
            return -EAGAIN
        dst_mm.rss += HPAGE_PMD_NR
        pgtable_trans_huge_deposit(dst_mm, dst_pmd, dmi, pgtable)
        mm_inc_nr_ptes(dst_mm)
        pmdp_set_wrprotect(src_mm, addr, src_pmd, smi)
        if not userfaultfd_wp(dst_vma):
            pmd = pmd_clear_uffd_wp(pmd)
        pmd = pmd_mkold(pmd_wrprotect(pmd))
        set_pmd_at(dst_mm, addr, dst_pmd, dmi, pmd)
        ret = 0
    else:
        pte_free(dst_mm, pgtable)
    ptl_unlock(src_ptl)
    ptl_unlock(dst_ptl)
    return ret


# --- MADV_FREE -----------------------------------------------------------------------------------


@kfunc
def folio_mark_lazyfree(folio: Folio) -> None:
    """``folio_mark_lazyfree`` (``lru_lazyfree``): an exclusively mapped,
    swap-backed anonymous folio not in the swap cache becomes lazy-free:
    PG_swapbacked, PG_active and PG_referenced cleared (it moves to the
    inactive file LRU), so reclaim may drop it while it stays clean."""
    folio.access(WRITE, "folio_mark_lazyfree")
    if folio.anon and folio.swapbacked and not folio.swapcache:
        folio.swapbacked = False
        folio.active = False
        folio.referenced = False


@kfunc
def madvise_free_huge_pmd(tlb: MmuGather, vma: VmAreaStruct, pmd: PageTable, mi: int,
                          addr: int, nxt: int) -> bool:
    """``madvise_free_huge_pmd``: MADV_FREE of a whole PMD-mapped THP mapped
    only here: clean the folio and make the PMD old and clean, then mark the
    folio lazy-free. True if done (False: leave the range alone).

    With the fix ``thp-madv-free-pmdp-invalidate`` (4.11) the PMD is
    rewritten through ``pmdp_invalidate`` (never none); before it, it was
    cleared (``pmdp_huge_get_and_clear_full``) and set again, so a
    concurrent MADV_DONTNEED, which checks ``pmd_none`` without the lock,
    could skip it and return with the page still mapped. Left out: a
    partial range (the kernel splits the folio; the model leaves it)."""
    mm = vma.vm_mm
    ptl = pmd_trans_huge_lock(pmd, mi, vma)
    if ptl is None:
        return False
    ret = False
    orig = pmdp_get(pmd, mi)
    if pmd_present(orig):
        folio = pfn_folio(pmd_pfn(orig))
        if folio_mapcount(folio) == 1 and nxt - addr == HPAGE_PMD_SIZE and folio_trylock(folio):
            if folio_test_flag(folio, "dirty", "folio_test_dirty"):
                folio_test_set_flag(folio, "dirty", False, "folio_clear_dirty")
            folio_unlock(folio)
            if pmd_young(orig) or pmd_dirty(orig):
                if kernel_config(mm).has("thp-madv-free-pmdp-invalidate"):
                    pmdp_invalidate(vma, addr, pmd, mi)
                else:
                    pmdp_huge_get_and_clear_full(mm, addr, pmd, mi)
                orig = pmd_mkclean(pmd_mkold(orig))
                set_pmd_at(mm, addr, pmd, mi, orig)
                tlb_flush_pmd_range(tlb, addr, HPAGE_PMD_SIZE)
            folio_mark_lazyfree(folio)
            ret = True
    ptl_unlock(ptl)
    return ret


__all__ = [
    "HPAGE_PMD_NR",
    "HPAGE_PMD_SIZE",
    "change_huge_pmd",
    "copy_huge_pmd",
    "do_huge_pmd_anonymous_page",
    "set_transparent_hugepage",
    "split_huge_pmd_address",
    "zap_huge_pmd",
]

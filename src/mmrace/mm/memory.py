"""Page faults, COW and zapping (mm/memory.c, with the x86 fault entry of
arch/x86/mm/fault.c as :func:`do_user_addr_fault`).

Fault order is the current kernel's: ``lock_vma_under_rcu`` first
(``FAULT_FLAG_VMA_LOCK``), falling back to ``mmap_read_lock`` when no VMA
could be locked or the handler returned ``VM_FAULT_RETRY`` (for example
``vmf_anon_prepare`` needing the mmap lock to set up the anon_vma and
failing to trylock it). Before 6.4 (``per-vma-locks``) faults take the mmap
read lock only; before 6.5 (``stack-expand-write-locked``) a stack grows
under it. ``do_wp_page``'s reuse decision is the
``cow-reuse`` policy (``mmrace.fixes``).

Left out: THP faults (huge PMDs are only walked past), swap and
migration entries, userfaultfd minor faults and PTE markers, NUMA hinting,
fault-around, ``page_mkwrite`` and write-notify (shared file mappings are
mapped writable at once), mmu notifiers, mlock accounting, the
killable/interruptible retry details, PTE table reclaim during zap,
device/PFN mappings.
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import ViolationError
from mmrace.mm.internal import errno_error, held, kernel_config, kfunc
from mmrace.mm.locks import rcu_read_lock, rcu_read_unlock
from mmrace.mm.mm_types import (
    FAULT_FLAG_ALLOW_RETRY,
    FAULT_FLAG_DEFAULT,
    FAULT_FLAG_INSTRUCTION,
    FAULT_FLAG_INTERRUPTIBLE,
    FAULT_FLAG_KILLABLE,
    FAULT_FLAG_MKWRITE,
    FAULT_FLAG_ORIG_PTE_VALID,
    FAULT_FLAG_REMOTE,
    FAULT_FLAG_RETRY_NOWAIT,
    FAULT_FLAG_TRIED,
    FAULT_FLAG_UNSHARE,
    FAULT_FLAG_USER,
    FAULT_FLAG_VMA_LOCK,
    FAULT_FLAG_WRITE,
    PAGE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    VM_EXEC,
    VM_FAULT_COMPLETED,
    VM_FAULT_ERROR,
    VM_FAULT_FALLBACK,
    VM_FAULT_LOCKED,
    VM_FAULT_MAJOR,
    VM_FAULT_NOPAGE,
    VM_FAULT_OOM,
    VM_FAULT_RETRY,
    VM_FAULT_SIGBUS,
    VM_FAULT_SIGSEGV,
    VM_FAULT_WRITE,
    VM_GROWSDOWN,
    VM_LOCKED,
    VM_MAYSHARE,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_READ,
    VM_SHARED,
    VM_UFFD_MINOR,
    VM_UFFD_MISSING,
    VM_UFFD_WP,
    VM_WIPEONFORK,
    VM_WRITE,
    MmStruct,
    VmAreaStruct,
    mm_assert_users,
    mm_tlb_flush_pending,
)
from mmrace.mm.mmap_lock import (
    lock_vma_under_rcu,
    mmap_read_lock,
    mmap_read_trylock,
    mmap_read_unlock,
    vma_end_read,
)
from mmrace.mm.mmu_gather import (
    MmuGather,
    tlb_finish_mmu,
    tlb_gather_mmu,
    tlb_remove_folio,
    tlb_remove_tlb_entry,
)
from mmrace.mm.page_alloc import (
    HPAGE_PMD_ORDER,
    Folio,
    PageAnonExclusive,
    SetPageAnonExclusive,
    copy_user_highpage,
    folio_alloc,
    folio_get,
    folio_lock,
    folio_mapcount,
    folio_put,
    folio_ref_count,
    folio_test_anon,
    folio_trylock,
    folio_unlock,
    is_zero_pfn,
    mem_state,
    my_zero_pfn,
    pfn_folio,
)
from mmrace.mm.pgtable import (
    PMD_SIZE,
    PTRS_PER_PTE,
    PageTable,
    PteMap,
    flush_tlb_fix_spurious_fault,
    flush_tlb_page,
    mk_huge_pmd,
    pfn_pte,
    pmd_alloc,
    pmd_lock,
    pmd_none,
    pmd_trans_huge,
    pmdp_get,
    pte_alloc,
    pte_clear,
    pte_clear_uffd_wp,
    pte_index,
    pte_mkdirty,
    pte_mksoft_dirty,
    pte_mkspecial,
    pte_mkuffd_wp,
    pte_mkwrite,
    pte_mkyoung,
    pte_none,
    pte_offset_map_lock,
    pte_offset_map_nolock,
    pte_pfn,
    pte_present,
    pte_same,
    pte_special,
    pte_unmap,
    pte_unmap_unlock,
    pte_write,
    pte_wrprotect,
    ptep_clear_flush,
    ptep_get,
    ptep_get_and_clear,
    ptep_get_stable_bits,
    ptep_set_access_flags,
    ptep_set_wrprotect,
    ptl_lock,
    ptl_unlock,
    pud_alloc,
    set_pmd_at,
    set_pte_at,
    update_mmu_cache,
    vm_prot_to_pte,
    walk_to_pmd,
)
from mmrace.mm.rmap import (
    __anon_vma_prepare,
    folio_add_anon_rmap_ptes,
    folio_add_file_rmap_pmd,
    folio_add_file_rmap_pte,
    folio_add_new_anon_rmap,
    folio_move_anon_rmap,
    folio_remove_rmap_pte,
    linear_page_index,
)
from mmrace.mm.swap_state import (
    folio_free_swap,
    free_swap_and_cache,
    read_swap_cache_async,
    swap_cache_get_folio,
)
from mmrace.mm.swapfile import swap_duplicate, swap_free
from mmrace.mm.swapops import (
    is_migration_entry,
    is_pte_marker_entry,
    is_writable_migration_entry,
    make_readable_migration_entry,
    non_swap_entry,
    pte_marker_uffd_wp,
    pte_swp_clear_uffd_wp,
    pte_swp_exclusive,
    pte_swp_flags,
    pte_swp_mkexclusive,
    pte_swp_soft_dirty,
    pte_swp_uffd_wp,
    pte_to_swp_entry,
    swp_entry_to_pte,
)
from mmrace.mm.vma import vm_flags_set
from mmrace.sync import write_seqcount_begin, write_seqcount_end

EFAULT = 14


class VmFault:
    """``struct vm_fault``."""

    __slots__ = ("vma", "address", "flags", "pgoff", "pmd", "pmd_index", "pte", "orig_pte",
                 "page_folio", "page_idx", "cow_folio")

    def __init__(self, vma: VmAreaStruct, address: int, flags: int) -> None:
        self.vma = vma
        self.address = address & PAGE_MASK
        self.flags = flags
        self.pgoff = linear_page_index(vma, self.address)
        self.pmd: PageTable | None = None
        self.pmd_index = 0
        self.pte: PteMap | None = None
        self.orig_pte = 0
        self.page_folio: Folio | None = None
        self.page_idx = 0
        self.cow_folio: Folio | None = None


def vma_is_anonymous(vma: VmAreaStruct) -> bool:
    """``vma_is_anonymous`` (in the model: no file behind the VMA)."""
    return vma.vm_file is None


def is_cow_mapping(flags: int) -> bool:
    """``is_cow_mapping``: private and may be written."""
    return (flags & (VM_SHARED | 0x20)) == 0x20  # VM_MAYWRITE


def mk_pte(folio: Folio, vma: VmAreaStruct) -> int:
    """``mk_pte(page, vma->vm_page_prot)``."""
    return pfn_pte(folio.pfn, vm_prot_to_pte(vma.vm_page_prot))


def maybe_mkwrite(pte: int, vma: VmAreaStruct) -> int:
    """``maybe_mkwrite``: writable if the VMA allows writes."""
    if vma.vm_flags & VM_WRITE:
        return pte_mkwrite(pte)
    return pte


def vm_normal_page(vma: VmAreaStruct, addr: int, pte: int) -> Folio | None:
    """``vm_normal_folio``: the folio a present PTE maps, or None for special
    mappings (the zero page)."""
    if pte_special(pte) or is_zero_pfn(pte_pfn(pte)):
        return None
    return pfn_folio(pte_pfn(pte))


def _map_count(mm: MmStruct, delta: int) -> None:
    mm.rss += delta  # debugger statistics (add_mm_counter), not a visible operation


# --- anon_vma under the VMA lock ----------------------------------------------------


@kfunc
def __vmf_anon_prepare(vmf: VmFault) -> int:
    """``__vmf_anon_prepare``: nothing to do if the VMA has an anon_vma; under
    the VMA lock only, trylock the mmap lock to prepare one (``__anon_vma_prepare``
    looks at neighbouring VMAs) or return ``VM_FAULT_RETRY``."""
    vma = vmf.vma
    if vma.anon_vma is not None:
        return 0
    mm = vma.vm_mm
    if vmf.flags & FAULT_FLAG_VMA_LOCK and not mmap_read_trylock(mm):
        return VM_FAULT_RETRY
    __anon_vma_prepare(vma)
    if vmf.flags & FAULT_FLAG_VMA_LOCK:
        mmap_read_unlock(mm)
    return 0


def vmf_anon_prepare(vmf: VmFault) -> int:
    """``vmf_anon_prepare``: on ``VM_FAULT_RETRY`` the VMA lock is dropped
    here, as the kernel does."""
    ret = __vmf_anon_prepare(vmf)
    if ret & VM_FAULT_RETRY:
        vma_end_read(vmf.vma)
    return ret


# --- anonymous faults -----------------------------------------------------------------


def vmf_pte_changed(vmf: VmFault, pm: PteMap) -> bool:
    """``vmf_pte_changed``."""
    cur = ptep_get(pm.table, pm.index)
    if vmf.flags & FAULT_FLAG_ORIG_PTE_VALID:
        return not pte_same(cur, vmf.orig_pte)
    return not pte_none(cur)


@kfunc
def do_anonymous_page(vmf: VmFault) -> int:
    """``do_anonymous_page``: a read maps the shared zero page (special,
    read-only); a write allocates a zeroed exclusive anon folio (after
    ``vmf_anon_prepare``) and maps it writable and dirty. If the PTE was
    filled meanwhile, back off (the new folio is released). A VMA registered
    with ``UFFDIO_REGISTER_MODE_MISSING`` hands the fault to
    ``handle_userfault`` instead (checked under the PTL)."""
    vma = vmf.vma
    mm = vma.vm_mm
    if vma.vm_flags & VM_SHARED:
        return VM_FAULT_SIGBUS
    assert vmf.pmd is not None
    pte_alloc(mm, vmf.pmd, vmf.pmd_index)
    if not vmf.flags & FAULT_FLAG_WRITE:
        entry = pte_mkspecial(pfn_pte(my_zero_pfn(), vm_prot_to_pte(vma.vm_page_prot)))
        pm = pte_offset_map_lock(mm, vmf.pmd, vmf.pmd_index, vmf.address)
        if pm is None:
            return 0
        if vmf_pte_changed(vmf, pm):
            pte_unmap_unlock(pm)
            return 0
        if userfaultfd_missing(vma):  # deliver the fault to userland, checked under the PTL
            pte_unmap_unlock(pm)
            return handle_userfault(vmf, VM_UFFD_MISSING)
        set_pte_at(mm, vmf.address, pm.table, pm.index, entry)
        update_mmu_cache(vma, vmf.address, pm.table, pm.index)
        pte_unmap_unlock(pm)
        return 0
    ret = vmf_anon_prepare(vmf)
    if ret:
        return ret
    folio = folio_alloc(0)
    entry = mk_pte(folio, vma)
    entry = pte_mkyoung(entry)
    if vma.vm_flags & VM_WRITE:
        entry = pte_mkwrite(pte_mkdirty(entry))
    pm = pte_offset_map_lock(mm, vmf.pmd, vmf.pmd_index, vmf.address)
    if pm is None:
        folio_put(folio)
        return 0
    if vmf_pte_changed(vmf, pm):
        pte_unmap_unlock(pm)
        folio_put(folio)
        return 0
    if userfaultfd_missing(vma):
        pte_unmap_unlock(pm)
        folio_put(folio)
        return handle_userfault(vmf, VM_UFFD_MISSING)
    _map_count(mm, 1)
    folio_add_new_anon_rmap(folio, vma, vmf.address, True)
    set_pte_at(mm, vmf.address, pm.table, pm.index, entry)
    update_mmu_cache(vma, vmf.address, pm.table, pm.index)
    pte_unmap_unlock(pm)
    return 0


# --- file faults ------------------------------------------------------------------------


def vmf_can_call_fault(vmf: VmFault) -> int:
    """``vmf_can_call_fault``: under the VMA lock, a VMA with ``->close``
    must be faulted under the mmap lock."""
    ops = vmf.vma.vm_ops
    if ops is not None and ops.close is not None and vmf.flags & FAULT_FLAG_VMA_LOCK:
        vma_end_read(vmf.vma)
        return VM_FAULT_RETRY
    return 0


@kfunc
def __do_fault(vmf: VmFault) -> int:
    """``__do_fault``: ``vma->vm_ops->fault`` (the page cache's
    ``filemap_fault`` unless the file supplies its own)."""
    ops = vmf.vma.vm_ops
    if ops is not None and ops.fault is not None:
        ret, folio = ops.fault(vmf)
    else:
        ret, folio = filemap.filemap_fault(vmf)
    vmf.page_folio = folio
    if folio is not None:
        vmf.page_idx = vmf.pgoff - folio.index  # the page in a large folio
    return int(ret)


@kfunc
def finish_fault(vmf: VmFault) -> int:
    """``finish_fault``: map ``vmf->cow_page`` (a private copy, as a new
    exclusive anon folio) or ``vmf->page`` (the page-cache folio) if the PTE
    is still empty; the folio's reference passes to the mapping."""
    vma = vmf.vma
    mm = vma.vm_mm
    write = bool(vmf.flags & FAULT_FLAG_WRITE)
    cow = write and not vma.vm_flags & VM_SHARED
    folio = vmf.cow_folio if cow else vmf.page_folio
    idx = 0 if cow else vmf.page_idx
    assert folio is not None and vmf.pmd is not None
    if folio.order == HPAGE_PMD_ORDER and pmd_none(pmdp_get(vmf.pmd, vmf.pmd_index)):
        ret = do_set_pmd(vmf, folio)
        if ret != VM_FAULT_FALLBACK:
            return ret
    pte_alloc(mm, vmf.pmd, vmf.pmd_index)
    pm = pte_offset_map_lock(mm, vmf.pmd, vmf.pmd_index, vmf.address)
    if pm is None:
        return VM_FAULT_NOPAGE
    if vmf_pte_changed(vmf, pm):  # (none, or the marker the fault is on)
        pte_unmap_unlock(pm)
        return VM_FAULT_NOPAGE
    entry = pte_mkyoung(pfn_pte(folio.pfn + idx, vm_prot_to_pte(vma.vm_page_prot)))
    if write:
        entry = maybe_mkwrite(pte_mkdirty(entry), vma)
    if vmf_orig_pte_uffd_wp(vmf):
        entry = pte_mkuffd_wp(entry)  # set_pte_range: the marker's protection stays
    _map_count(mm, 1)
    if cow:
        folio_add_new_anon_rmap(folio, vma, vmf.address, True)
    else:
        folio_add_file_rmap_pte(folio, idx, vma)
    set_pte_at(mm, vmf.address, pm.table, pm.index, entry)
    update_mmu_cache(vma, vmf.address, pm.table, pm.index)
    pte_unmap_unlock(pm)
    return 0


def should_fault_around(vmf: VmFault) -> bool:
    """``should_fault_around``: the file has ``->map_pages`` (the page
    cache's, or shmem's; a driver's own ``->fault`` has none), the VMA is
    not registered for uffd-wp or minor faults (``uffd_disable_fault_around``:
    fault-around would map cached pages without telling the monitor), and
    ``fault_around_bytes`` is above a page."""
    ops = vmf.vma.vm_ops
    if ops is not None and getattr(ops, "map_pages", None) is None:
        return False
    if vmf.vma.vm_flags & (VM_UFFD_WP | VM_UFFD_MINOR):  # uffd_disable_fault_around
        return False
    return filemap.fault_around_pages() > 1


@kfunc
def do_fault_around(vmf: VmFault) -> int:
    """``do_fault_around``: map the cached pages around the faulting one
    (``fault_around_bytes``, clamped to the VMA and the PTE table) with
    ``->map_pages`` under RCU; ``VM_FAULT_NOPAGE`` if that mapped the
    faulting page itself."""
    vma = vmf.vma
    nr_pages = filemap.fault_around_pages()
    pte_off = pte_index(vmf.address)
    vma_off = vmf.pgoff - vma.vm_pgoff
    from_pte = max(pte_off - pte_off % nr_pages, pte_off - min(pte_off, vma_off))
    to_pte = min(from_pte + nr_pages, PTRS_PER_PTE,
                 pte_off + ((vma.vm_end - vma.vm_start) >> PAGE_SHIFT) - vma_off) - 1
    rcu_read_lock()
    ret = filemap.filemap_map_pages(vmf, vmf.pgoff + from_pte - pte_off,
                                    vmf.pgoff + to_pte - pte_off)
    rcu_read_unlock()
    return ret


@kfunc
def do_set_pmd(vmf: VmFault, folio: Folio) -> int:
    """``do_set_pmd``: map a PMD-sized page-cache folio with one huge PMD if
    THP is not disabled for the VMA, the PMD block fits in it with the
    file offset aligned, and (under the PMD lock) the PMD is still empty;
    ``VM_FAULT_FALLBACK`` otherwise (the caller maps by PTEs). The fault's
    folio reference passes to the mapping. No table is deposited (x86 does
    not need one for file THPs)."""
    vma = vmf.vma
    mm = vma.vm_mm
    haddr = vmf.address & ~(huge_memory.HPAGE_PMD_SIZE - 1)
    if huge_memory.vma_thp_disabled(vma, vma.vm_flags):
        return VM_FAULT_FALLBACK
    if not huge_memory.thp_vma_suitable_order(vma, haddr):
        return VM_FAULT_FALLBACK
    if folio.order != HPAGE_PMD_ORDER:
        return VM_FAULT_FALLBACK
    assert vmf.pmd is not None
    ptl = pmd_lock(mm, vmf.pmd)
    ret = VM_FAULT_FALLBACK
    if pmd_none(pmdp_get(vmf.pmd, vmf.pmd_index)):
        entry = pte_mkyoung(mk_huge_pmd(folio.pfn, vm_prot_to_pte(vma.vm_page_prot)))
        if vmf.flags & FAULT_FLAG_WRITE:
            entry = huge_memory.maybe_pmd_mkwrite(pte_mkdirty(entry), vma)
        _map_count(mm, huge_memory.HPAGE_PMD_NR)
        folio_add_file_rmap_pmd(folio, vma)
        set_pmd_at(mm, haddr, vmf.pmd, vmf.pmd_index, entry)
        ret = 0
    ptl_unlock(ptl)
    return ret


@kfunc
def do_read_fault(vmf: VmFault) -> int:
    """``do_read_fault``: map the cached pages around the address first
    (``do_fault_around``); if that did not map the faulting page, get it
    with ``->fault`` and map it read-only."""
    if should_fault_around(vmf):
        ret = do_fault_around(vmf)
        if ret:
            return ret
    ret = vmf_can_call_fault(vmf)
    if ret:
        return ret
    ret = __do_fault(vmf)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        return ret
    folio = vmf.page_folio
    assert folio is not None
    ret |= finish_fault(vmf)
    folio_unlock(folio)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        folio_put(folio)
    return ret


@kfunc
def do_cow_fault(vmf: VmFault) -> int:
    """``do_cow_fault``: a write to a private file mapping maps a private
    copy of the page-cache page (copied before the PTL is taken)."""
    ret = vmf_can_call_fault(vmf)
    if not ret:
        ret = vmf_anon_prepare(vmf)
    if ret:
        return ret
    vmf.cow_folio = folio_alloc(0)
    ret = __do_fault(vmf)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        folio_put(vmf.cow_folio)
        return ret
    page = vmf.page_folio
    assert page is not None
    copy_user_highpage(vmf.cow_folio, 0, page, vmf.page_idx)
    ret |= finish_fault(vmf)
    folio_unlock(page)
    folio_put(page)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        folio_put(vmf.cow_folio)
    return ret


@kfunc
def do_shared_fault(vmf: VmFault) -> int:
    """``do_shared_fault``: a write to a shared file mapping maps the
    page-cache folio writable (no ``page_mkwrite`` in the model)."""
    ret = vmf_can_call_fault(vmf)
    if ret:
        return ret
    ret = __do_fault(vmf)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        return ret
    folio = vmf.page_folio
    assert folio is not None
    ret |= finish_fault(vmf)
    folio.dirty = True
    folio_unlock(folio)
    if ret & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_RETRY):
        folio_put(folio)
    return ret


@kfunc
def do_fault(vmf: VmFault) -> int:
    """``do_fault``: read, COW or shared fault of a file mapping. A driver's
    ``vm_ops`` without ``->fault`` (every page inserted at mmap or by the
    driver, as Binder does) gets ``VM_FAULT_SIGBUS`` for an empty PTE,
    rechecked under the PTL, and ``VM_FAULT_NOPAGE`` if it was filled
    meanwhile. (A file without ``vm_ops`` in the model is a page-cache file:
    ``filemap_fault``.)"""
    ops = vmf.vma.vm_ops
    if ops is not None and ops.fault is None:
        assert vmf.pmd is not None
        pm = pte_offset_map_lock(vmf.vma.vm_mm, vmf.pmd, vmf.pmd_index, vmf.address)
        if pm is None:
            return VM_FAULT_SIGBUS
        ret = VM_FAULT_SIGBUS if pte_none(ptep_get(pm.table, pm.index)) else VM_FAULT_NOPAGE
        pte_unmap_unlock(pm)
        return ret
    if not vmf.flags & FAULT_FLAG_WRITE:
        return do_read_fault(vmf)
    if not vmf.vma.vm_flags & VM_SHARED:
        return do_cow_fault(vmf)
    return do_shared_fault(vmf)


def do_pte_missing(vmf: VmFault) -> int:
    """``do_pte_missing``."""
    if vma_is_anonymous(vmf.vma):
        return do_anonymous_page(vmf)
    return do_fault(vmf)


# --- write-protect faults ---------------------------------------------------------------


@kfunc
def wp_page_reuse(vmf: VmFault, folio: Folio | None) -> None:
    """``wp_page_reuse``: make the existing PTE writable, dirty and young
    (``ptep_set_access_flags``), then unlock."""
    vma = vmf.vma
    pm = vmf.pte
    assert pm is not None
    if vmf.flags & FAULT_FLAG_UNSHARE and not vmf.flags & FAULT_FLAG_WRITE:
        pte_unmap_unlock(pm)  # unsharing only: the page is exclusive now
        return
    entry = pte_mkyoung(vmf.orig_pte)
    entry = maybe_mkwrite(pte_mkdirty(entry), vma)
    if ptep_set_access_flags(vma, vmf.address, pm.table, pm.index, entry, True):
        update_mmu_cache(vma, vmf.address, pm.table, pm.index)
    pte_unmap_unlock(pm)


@kfunc
def wp_page_copy(vmf: VmFault) -> int:
    """``wp_page_copy``: copy the page (or take a zeroed one for the zero
    page) *before* taking the PTL, then under it recheck ``pte_same``;
    if unchanged, clear and flush the old entry (``ptep_clear_flush``),
    add the new exclusive anon folio and install it writable, and drop the
    old mapping. The caller took a reference on the old folio."""
    vma = vmf.vma
    mm = vma.vm_mm
    old = vmf.page_folio
    ret = vmf_anon_prepare(vmf)
    if ret:
        if old is not None:
            folio_put(old)
        return ret
    new = folio_alloc(0)
    if not is_zero_pfn(pte_pfn(vmf.orig_pte)) and old is not None:
        copy_user_highpage(new, 0, old, vmf.page_idx)
    assert vmf.pmd is not None
    pm = pte_offset_map_lock(mm, vmf.pmd, vmf.pmd_index, vmf.address)
    to_put: Folio | None = new
    copied = False
    if pm is not None and pte_same(ptep_get(pm.table, pm.index), vmf.orig_pte):
        copied = True
        if old is None:
            _map_count(mm, 1)
        entry = pte_mkyoung(mk_pte(new, vma))
        if not vmf.flags & FAULT_FLAG_UNSHARE or vmf.flags & FAULT_FLAG_WRITE:
            entry = maybe_mkwrite(pte_mkdirty(entry), vma)
        ptep_clear_flush(vma, vmf.address, pm.table, pm.index)
        folio_add_new_anon_rmap(new, vma, vmf.address, True)
        set_pte_at(mm, vmf.address, pm.table, pm.index, entry)
        update_mmu_cache(vma, vmf.address, pm.table, pm.index)
        if old is not None:
            folio_remove_rmap_pte(old, vmf.page_idx, vma)
        to_put = old  # the old mapping's reference goes
        pte_unmap_unlock(pm)
    elif pm is not None:
        pte_unmap_unlock(pm)
    if to_put is not None:
        folio_put(to_put)
    if old is not None:
        folio_put(old)
    unshare = vmf.flags & FAULT_FLAG_UNSHARE and not vmf.flags & FAULT_FLAG_WRITE
    return VM_FAULT_WRITE if copied and not unshare else 0


@kfunc
def wp_can_reuse_anon_folio(folio: Folio, vma: VmAreaStruct) -> bool:
    """``wp_can_reuse_anon_folio``: a small folio whose only reference is
    this mapping's may be reused (under a trylocked folio lock, moving it to
    the VMA's anon_vma)."""
    if folio_ref_count(folio) > 1:
        return False
    if not folio_trylock(folio):
        return False
    if folio_ref_count(folio) != 1:
        folio_unlock(folio)
        return False
    folio_move_anon_rmap(folio, vma)
    folio_unlock(folio)
    return True


def can_reuse(vmf: VmFault, folio: Folio, policy: str) -> bool:
    """The ``cow-reuse`` policy's decision for an anonymous folio (the PTL
    is held).

    * ``mapcount`` (before 5.9, ``reuse_swap_page``): mapped once;
    * ``page_count`` (5.9, "mm: do_wp_page() simplification"): the refcount
      is exactly 1, checked again under a trylocked page lock;
    * ``anon_exclusive`` (5.19 on): ``PageAnonExclusive``, else the
      refcount check of ``wp_can_reuse_anon_folio``.

    Left out: the pre-5.9 sleeping ``lock_page`` after dropping the PTL
    (a failed trylock copies instead)."""
    idx = vmf.page_idx
    if policy == "anon_exclusive":
        if PageAnonExclusive(folio, idx):
            return True
        if wp_can_reuse_anon_folio(folio, vmf.vma):
            SetPageAnonExclusive(folio, idx)
            return True
        return False
    if policy == "page_count":
        if folio_ref_count(folio) != 1:
            return False
        if not folio_trylock(folio):
            return False
        ok = folio_mapcount(folio) == 1 and folio_ref_count(folio) == 1
        folio_unlock(folio)
        return ok
    # mapcount
    if not folio_trylock(folio):
        return False
    ok = folio_mapcount(folio) <= 1
    if ok:
        folio_move_anon_rmap(folio, vmf.vma)
    folio_unlock(folio)
    return ok


@kfunc
def do_wp_page(vmf: VmFault) -> int:
    """``do_wp_page``: a write to a present, write-protected PTE (PTL held).
    Shared mappings reuse the page (``wp_page_shared``); anonymous pages are
    reused when the ``cow-reuse`` policy says so; everything else (the zero
    page, page-cache pages of private mappings, shared anon pages) is copied
    by ``wp_page_copy`` after dropping the PTL. An unsharing fault
    (``FAULT_FLAG_UNSHARE``, a read-only GUP pin) makes the page exclusive
    without making it writable; before 6.2 (``gup-longterm-unshare-cow``) it
    left pages that are not anonymous alone. Reuse and copy return
    ``VM_FAULT_WRITE``, which GUP's ``FOLL_COW`` read until 6.0.

    First (not for unsharing): a uffd-wp PTE goes to ``handle_userfault``;
    then, with the ``uffd-wp-flush-pending`` fix, a uffd-wp VMA with a
    deferred flush pending (``mm_tlb_flush_pending``) has the address
    flushed before the page may be copied (the ``wp-fault-flush-pending``
    proposal does it for every VMA)."""
    vma = vmf.vma
    mm = vma.vm_mm
    if not vmf.flags & FAULT_FLAG_UNSHARE:
        assert vmf.pte is not None
        # Only the uffd-wp bit of this re-read is used, under the PTL that
        # handle_pte_fault took and rechecked: see ptep_get_stable_bits.
        if userfaultfd_pte_wp(vma, ptep_get_stable_bits(vmf.pte.table, vmf.pte.index)):
            pte_unmap_unlock(vmf.pte)
            vmf.pte = None
            return handle_userfault(vmf, VM_UFFD_WP)
        cfg = kernel_config(mm)
        if cfg.has("wp-fault-flush-pending"):
            if mm_tlb_flush_pending(mm):
                flush_tlb_page(vma, vmf.address)
        elif (cfg.has("uffd-wp-flush-pending") and userfaultfd_wp(vma)
                and mm_tlb_flush_pending(mm)):
            # Userfaultfd write-protect can defer flushes: flush before copying.
            flush_tlb_page(vma, vmf.address)
    folio = vm_normal_page(vma, vmf.address, vmf.orig_pte)
    vmf.page_folio = folio
    if folio is not None:
        vmf.page_idx = pte_pfn(vmf.orig_pte) - folio.pfn
    if vma.vm_flags & (VM_SHARED | VM_MAYSHARE):
        wp_page_reuse(vmf, folio)
        return 0
    unshare = vmf.flags & FAULT_FLAG_UNSHARE and not vmf.flags & FAULT_FLAG_WRITE
    if folio is not None and folio_test_anon(folio):
        policy = kernel_config(vma.vm_mm).policy("cow-reuse")
        if can_reuse(vmf, folio, policy):
            wp_page_reuse(vmf, folio)
            return 0 if unshare else VM_FAULT_WRITE
    elif unshare and not kernel_config(mm).has("gup-longterm-unshare-cow"):
        # 5.19-6.1: only anonymous pages are unshared ("nothing to do").
        assert vmf.pte is not None
        pte_unmap_unlock(vmf.pte)
        vmf.pte = None
        return 0
    if folio is not None:
        folio_get(folio)
    assert vmf.pte is not None
    pte_unmap_unlock(vmf.pte)
    vmf.pte = None
    return wp_page_copy(vmf)


# --- swap and migration entries ---------------------------------------------------------


def should_try_to_free_swap(folio: Folio, vma: VmAreaStruct, fault_flags: int) -> bool:
    """``should_try_to_free_swap``: drop the swap copy of a folio faulted
    back in when the VMA is locked, or when this write fault is likely its
    only user (its references are ours plus the swap cache's)."""
    if not folio.swapcache:
        return False
    if vma.vm_flags & VM_LOCKED:
        return True
    return bool(fault_flags & FAULT_FLAG_WRITE) and folio_ref_count(folio) == 1 + folio.nr_pages


@kfunc
def handle_pte_marker(vmf: VmFault) -> int:
    """``handle_pte_marker`` / ``pte_marker_handle_uffd_wp``: a fault on a
    uffd-wp marker is a missing page (``do_pte_missing``), whose new PTE
    keeps the uffd-wp bit (``finish_fault``), so a write then traps; in a
    VMA no longer registered for uffd-wp the marker is just cleared
    (``pte_marker_clear``)."""
    if not pte_marker_uffd_wp(vmf.orig_pte):
        return VM_FAULT_SIGBUS
    if userfaultfd_wp(vmf.vma):
        return do_pte_missing(vmf)
    assert vmf.pmd is not None
    pm = pte_offset_map_lock(vmf.vma.vm_mm, vmf.pmd, vmf.pmd_index, vmf.address)
    if pm is not None:
        if pte_same(ptep_get(pm.table, pm.index), vmf.orig_pte):
            pte_clear(vmf.vma.vm_mm, vmf.address, pm.table, pm.index)
        pte_unmap_unlock(pm)
    return 0


def vmf_orig_pte_uffd_wp(vmf: VmFault) -> bool:
    """``vmf_orig_pte_uffd_wp``: the fault is on a uffd-wp marker."""
    return bool(vmf.flags & FAULT_FLAG_ORIG_PTE_VALID) and pte_marker_uffd_wp(vmf.orig_pte)


@kfunc
def do_swap_page(vmf: VmFault) -> int:
    """``do_swap_page``: a fault on a non-present, non-none PTE.

    A migration entry waits for the migration to finish
    (``migration_entry_wait``) and the fault is retried. A swap entry: find
    the folio in the swap cache or read it in (``read_swap_cache_async``),
    lock it, and under the PTL, if the PTE is still that entry, drop the
    entry's swap count (freeing the swap copy if that was the last user and
    the folio can do without it), then map the page -- writable at once if
    the entry was exclusive or nobody else holds the folio -- and go on to
    ``do_wp_page`` for a write the PTE still does not allow. The folio's
    lookup reference passes to the mapping. A PTE marker goes to
    ``handle_pte_marker``. Left out: readahead, the ``SWP_SYNCHRONOUS_IO``
    path that skips the swap cache, large folios, device-private and
    hwpoison entries."""
    vma = vmf.vma
    mm = vma.vm_mm
    assert vmf.pmd is not None
    entry = pte_to_swp_entry(vmf.orig_pte)
    if non_swap_entry(entry):
        if is_migration_entry(entry):
            migrate.migration_entry_wait(mm, vmf.pmd, vmf.pmd_index, vmf.address)
        elif is_pte_marker_entry(entry):
            return handle_pte_marker(vmf)
        return 0
    ret = vmf_anon_prepare(vmf) if vma.anon_vma is None else 0
    if ret:
        return ret
    folio = swap_cache_get_folio(entry, vma, vmf.address)
    if folio is None:
        folio = read_swap_cache_async(entry)
        if folio is None:
            # The entry was freed (the PTE changed meanwhile): nothing to do.
            return 0
    folio_lock(folio)
    if not folio.swapcache or folio.swap != entry:
        folio_unlock(folio)
        folio_put(folio)
        return 0
    pm = pte_offset_map_lock(mm, vmf.pmd, vmf.pmd_index, vmf.address)
    if pm is None or not pte_same(ptep_get(pm.table, pm.index), vmf.orig_pte):
        if pm is not None:
            pte_unmap_unlock(pm)
        folio_unlock(folio)
        folio_put(folio)
        return 0
    swap_free(entry)
    exclusive = pte_swp_exclusive(vmf.orig_pte)
    if should_try_to_free_swap(folio, vma, vmf.flags):
        folio_free_swap(folio)
    _map_count(mm, 1)
    pte = pfn_pte(folio.pfn, vm_prot_to_pte(vma.vm_page_prot))
    if pte_swp_soft_dirty(vmf.orig_pte):
        pte = pte_mksoft_dirty(pte)
    if pte_swp_uffd_wp(vmf.orig_pte):
        pte = pte_mkuffd_wp(pte)
    write = bool(vmf.flags & FAULT_FLAG_WRITE)
    if exclusive or folio_ref_count(folio) == 1:
        if vma.vm_flags & VM_WRITE and not (pte_swp_uffd_wp(vmf.orig_pte)
                                            and vma.vm_flags & VM_UFFD_WP):
            pte = pte_mkwrite(pte)
            if write:
                pte = pte_mkdirty(pte)
                write = False
        exclusive = True
    pte = pte_mkyoung(pte)
    if not folio_test_anon(folio):
        folio_add_new_anon_rmap(folio, vma, vmf.address, exclusive)
    else:
        folio_add_anon_rmap_ptes(folio, 0, 1, vma, vmf.address, exclusive)
    set_pte_at(mm, vmf.address, pm.table, pm.index, pte)
    folio_unlock(folio)
    if write:
        vmf.pte = pm
        vmf.orig_pte = pte
        return do_wp_page(vmf)
    update_mmu_cache(vma, vmf.address, pm.table, pm.index)
    pte_unmap_unlock(pm)
    return 0


# --- the fault entry points ------------------------------------------------------------


@kfunc
def handle_pte_fault(vmf: VmFault) -> int:
    """``handle_pte_fault``: read the PTE without the lock; an empty one is
    a missing page; otherwise take the PTL and recheck ``pte_same`` (a
    changed PTE means another thread handled it: return); a write to a
    read-only PTE is ``do_wp_page``; else only the accessed/dirty bits are
    updated (a spurious fault changes nothing)."""
    vma = vmf.vma
    mm = vma.vm_mm
    assert vmf.pmd is not None
    pm: PteMap | None = None
    if not pmd_none(pmdp_get(vmf.pmd, vmf.pmd_index)):
        pm = pte_offset_map_nolock(mm, vmf.pmd, vmf.pmd_index, vmf.address)
        if pm is None:
            return 0
        vmf.orig_pte = ptep_get(pm.table, pm.index)
        vmf.flags |= FAULT_FLAG_ORIG_PTE_VALID
        if pte_none(vmf.orig_pte):
            pte_unmap(pm)
            pm = None
    if pm is None:
        vmf.flags &= ~FAULT_FLAG_ORIG_PTE_VALID
        return do_pte_missing(vmf)
    if not pte_present(vmf.orig_pte):
        pte_unmap(pm)
        return do_swap_page(vmf)
    assert pm.ptl is not None
    ptl_lock(pm.ptl)
    vmf.pte = pm
    entry = vmf.orig_pte
    if not pte_same(ptep_get(pm.table, pm.index), entry):
        pte_unmap_unlock(pm)
        return 0
    if vmf.flags & (FAULT_FLAG_WRITE | FAULT_FLAG_UNSHARE):
        if not pte_write(entry):
            return do_wp_page(vmf)
        if vmf.flags & FAULT_FLAG_WRITE:
            entry = pte_mkdirty(entry)
    entry = pte_mkyoung(entry)
    if ptep_set_access_flags(vma, vmf.address, pm.table, pm.index, entry,
                             bool(vmf.flags & FAULT_FLAG_WRITE)):
        update_mmu_cache(vma, vmf.address, pm.table, pm.index)
    elif vmf.flags & FAULT_FLAG_WRITE:
        flush_tlb_fix_spurious_fault(vma, vmf.address)
    pte_unmap_unlock(pm)
    return 0


@kfunc
def __handle_mm_fault(vma: VmAreaStruct, address: int, flags: int) -> int:
    """``__handle_mm_fault``: allocate the upper tables down to the PMD; an
    empty PMD in a THP-enabled anonymous VMA faults in a huge page
    (``create_huge_pmd``, unless it falls back); a huge PMD is handled
    whole (``wp_huge_pmd`` for a write to a read-only one, else
    ``huge_pmd_set_accessed``) unless that falls back too; everything else
    goes to ``handle_pte_fault``."""
    mm = vma.vm_mm
    vmf = VmFault(vma, address, flags)
    pud, ui = pud_alloc(mm, address)
    pmd, mi = pmd_alloc(mm, pud, ui, address)
    vmf.pmd, vmf.pmd_index = pmd, mi
    orig_pmd = pmdp_get(pmd, mi)
    if pmd_none(orig_pmd) and huge_memory.thp_vma_allowable_order(vma, vma.vm_flags, address):
        ret = huge_memory.create_huge_pmd(vmf)
        if not ret & VM_FAULT_FALLBACK:
            return ret
    elif pmd_trans_huge(orig_pmd):
        # (One made not-present by a split or protection change in progress
        # takes the same paths: they wait for the PMD lock its changer
        # holds, find it changed, and the fault is retried.)
        if flags & (FAULT_FLAG_WRITE | FAULT_FLAG_UNSHARE) and not pte_write(orig_pmd):
            ret = huge_memory.wp_huge_pmd(vmf, orig_pmd)
            if not ret & VM_FAULT_FALLBACK:
                return ret
        else:
            huge_memory.huge_pmd_set_accessed(vmf, orig_pmd)
            return 0
    return handle_pte_fault(vmf)


@kfunc
def handle_mm_fault(vma: VmAreaStruct, address: int, flags: int) -> int:
    """``handle_mm_fault``. Called with the mmap read lock or (with
    ``FAULT_FLAG_VMA_LOCK``) the VMA read lock; on ``VM_FAULT_RETRY`` the
    handler has released that lock."""
    return __handle_mm_fault(vma, address, flags)


def access_error(write: bool, vma: VmAreaStruct) -> bool:
    """x86 ``access_error``."""
    flags = vma.vm_flags
    if write:
        return not flags & VM_WRITE
    return not flags & (VM_READ | VM_EXEC | VM_WRITE)


@kfunc
def lock_mm_and_find_vma(mm: MmStruct, address: int) -> VmAreaStruct | None:
    """``lock_mm_and_find_vma``: mmap read lock and the VMA covering
    *address*, expanding a stack below it. None (unlocked) if there is none.
    Before ``stack-expand-write-locked`` (6.5) the fault grew the stack under
    the read lock it holds (``expand_stack`` of that era, which was
    ``expand_downwards`` under the read lock)."""
    mmap_read_lock(mm)
    vma = find_vma(mm, address)
    if vma is not None and vma.vm_start <= address:
        return vma
    if vma is None or not vma.vm_flags & VM_GROWSDOWN:
        mmap_read_unlock(mm)
        return None
    if not kernel_config(mm).has("stack-expand-write-locked"):
        if expand_downwards(vma, address) == 0:
            return vma
        mmap_read_unlock(mm)
        return None
    return expand_stack(mm, address)


@kfunc
def do_user_addr_fault(mm: MmStruct, address: int, write: bool) -> int:
    """arch/x86/mm/fault.c ``do_user_addr_fault`` for a user-mode fault:
    per-VMA lock first, then the mmap lock, retrying while the handler asks.
    Returns the fault result; raises ``OSError(EFAULT)`` for SIGSEGV and
    SIGBUS (the user program would be killed)."""
    flags = FAULT_FLAG_DEFAULT | FAULT_FLAG_USER | (FAULT_FLAG_WRITE if write else 0)
    # Before 6.4 (``per-vma-locks``) faults go straight to the mmap lock.
    vma = lock_vma_under_rcu(mm, address) if kernel_config(mm).has("per-vma-locks") else None
    if vma is not None:
        if access_error(write, vma):
            vma_end_read(vma)
            raise errno_error(EFAULT, f"SIGSEGV (access error) at {address:#x}")
        fault = handle_mm_fault(vma, address, flags | FAULT_FLAG_VMA_LOCK)
        if not fault & (VM_FAULT_RETRY | VM_FAULT_COMPLETED):
            vma_end_read(vma)
        if not fault & VM_FAULT_RETRY:
            return _fault_done(fault, address)
    while True:
        vma = lock_mm_and_find_vma(mm, address)
        if vma is None:
            raise errno_error(EFAULT, f"SIGSEGV (no mapping) at {address:#x}")
        if access_error(write, vma):
            mmap_read_unlock(mm)
            raise errno_error(EFAULT, f"SIGSEGV (access error) at {address:#x}")
        fault = handle_mm_fault(vma, address, flags)
        if fault & VM_FAULT_RETRY:
            flags |= FAULT_FLAG_TRIED
            continue
        mmap_read_unlock(mm)
        return _fault_done(fault, address)


def _fault_done(fault: int, address: int) -> int:
    if fault & VM_FAULT_ERROR:
        what = "SIGBUS" if fault & VM_FAULT_SIGBUS else "SIGSEGV"
        raise errno_error(EFAULT, f"{what} at {address:#x}")
    return fault


# --- zapping -------------------------------------------------------------------------------


class ZapDetails:
    """``struct zap_details``: ``even_cows`` False spares private COW copies
    (anon folios) when zapping a file range (``unmap_mapping_range``);
    ``drop_markers`` (``ZAP_FLAG_DROP_MARKER``, munmap and exit's
    ``unmap_vmas``) clears uffd-wp markers, which any other zap keeps."""

    __slots__ = ("even_cows", "drop_markers")

    def __init__(self, even_cows: bool = True, drop_markers: bool = False) -> None:
        self.even_cows = even_cows
        self.drop_markers = drop_markers


@kfunc
def zap_nonpresent_pte(tlb: MmuGather, vma: VmAreaStruct, table: PageTable, idx: int, addr: int,
                       ptent: int, details: ZapDetails | None) -> None:
    """``zap_nonpresent_ptes`` (PTL held): a swap entry gives back its swap
    count (``free_swap_and_cache``); a migration entry is just cleared (its
    folio's mapping went when it was installed). A truncation that spares
    private COW copies (``!even_cows``) keeps anonymous ones here too."""
    mm = vma.vm_mm
    entry = pte_to_swp_entry(ptent)
    spare_cows = details is not None and not details.even_cows
    if not non_swap_entry(entry):
        if spare_cows:
            return
        free_swap_and_cache(entry)
    elif is_migration_entry(entry):
        if spare_cows and pfn_folio(entry.offset).anon:
            return
    elif is_pte_marker_entry(entry):
        if details is None or not details.drop_markers:
            return  # a uffd-wp marker outlives a zap of the page (zap_drop_markers)
    else:
        return
    pte_clear(mm, addr, table, idx)


@kfunc
def zap_pte_range(tlb: MmuGather, vma: VmAreaStruct, pmd: PageTable, mi: int, addr: int,
                  end: int, details: ZapDetails | None) -> None:
    """``zap_pte_range``: under the PTE lock, clear every present entry in
    ``[addr, end)`` (``ptep_get_and_clear_full``), drop the rmap and batch the
    folio reference for release after the TLB flush."""
    mm = vma.vm_mm
    pm = pte_offset_map_lock(mm, pmd, mi, addr)
    if pm is None:
        return
    base_idx = pm.index
    for i in range((end - addr) >> PAGE_SHIFT):
        idx = base_idx + i
        a = addr + (i << PAGE_SHIFT)
        if idx not in pm.table.entries and idx not in pm.table.slots:
            continue  # never touched: pte_none without a visible read
        # (An entry never touched is skipped without a visible read: filling
        # it needs this PTL, which we hold, so the lock orders us against it.)
        ptent = ptep_get(pm.table, idx)
        if pte_none(ptent):
            continue
        if not pte_present(ptent):
            zap_nonpresent_pte(tlb, vma, pm.table, idx, a, ptent, details)
            continue
        folio = vm_normal_page(vma, a, ptent)
        if (details is not None and not details.even_cows and folio is not None
                and folio.anon):
            continue
        ptep_get_and_clear(mm, a, pm.table, idx)
        tlb_remove_tlb_entry(tlb, a)
        if folio is None:
            continue
        if not folio.anon and ptent & 0x40:  # _PAGE_DIRTY
            folio.dirty = True
        _map_count(mm, -1)
        folio_remove_rmap_pte(folio, pte_pfn(ptent) - folio.pfn, vma)
        tlb_remove_folio(tlb, folio)
    pte_unmap_unlock(pm)


@kfunc
def unmap_page_range(tlb: MmuGather, vma: VmAreaStruct, addr: int, end: int,
                     details: ZapDetails | None = None) -> None:
    """``unmap_page_range``: walk the PMDs covering ``[addr, end)`` (no
    allocation) and zap each PTE table's part. ``BUG_ON(addr >= end)``: an
    empty or inverted range (a size that wrapped past the end of the address
    space) is a ``bug`` violation."""
    if addr >= end:
        raise ViolationError(
            "bug", "kernel BUG in unmap_page_range: addr >= end",
            f"kernel BUG at mm/memory.c: BUG_ON(addr >= end) in unmap_page_range of {vma!r}: "
            f"addr {addr:#x}, end {end:#x} (the end wrapped around the address space?)")
    mm = vma.vm_mm
    while addr < end:
        nxt = min((addr & ~(PMD_SIZE - 1)) + PMD_SIZE, end)
        found = walk_to_pmd(mm, addr)
        if found is not None:
            pmd, mi = found
            pmdval = pmdp_get(pmd, mi)
            # zap_pmd_range: a huge PMD is zapped whole (or split, for part
            # of it) under its lock, which rechecks it; an empty one --
            # read without the lock -- is skipped.
            if pmd_trans_huge(pmdval):
                if nxt - addr != PMD_SIZE:
                    huge_memory.__split_huge_pmd(vma, pmd, mi, addr, False)
                elif huge_memory.zap_huge_pmd(tlb, vma, pmd, mi, addr):
                    addr = nxt
                    continue
                pmdval = pmdp_get(pmd, mi)
            if not pmd_none(pmdval) and not pmd_trans_huge(pmdval):
                zap_pte_range(tlb, vma, pmd, mi, addr, nxt, details)
        addr = nxt


@kfunc
def unmap_single_vma(tlb: MmuGather, vma: VmAreaStruct, start_addr: int, end_addr: int,
                     details: ZapDetails | None = None) -> None:
    """``unmap_single_vma``: zap the part of ``[start_addr, end_addr)`` inside
    *vma*, with the kernel's clamping: nothing if the range starts at or
    after the VMA's end or ends at or before its start; an end that wrapped
    below the start but still lies in the VMA reaches ``unmap_page_range``
    inverted (and its BUG_ON). Left out: uprobes, hugetlb VMAs."""
    vm_start, vm_end = vma.vm_start, vma.vm_end
    start = max(vm_start, start_addr)
    if start >= vm_end:
        return
    end = min(vm_end, end_addr)
    if end <= vm_start:
        return
    if start != end:
        unmap_page_range(tlb, vma, start, end, details)


@kfunc
def unmap_vmas(tlb: MmuGather, vmas: list[VmAreaStruct], start: int, end: int) -> None:
    """``unmap_vmas``: zap ``[start, end)`` of each VMA, private pages and
    uffd-wp markers included (``ZAP_FLAG_DROP_MARKER``)."""
    details = ZapDetails(even_cows=True, drop_markers=True)
    for vma in vmas:
        unmap_single_vma(tlb, vma, start, end, details)


ULONG_MAX = (1 << 64) - 1


@kfunc
def zap_page_range_single(vma: VmAreaStruct, address: int, size: int,
                          details: ZapDetails | None = None) -> None:
    """``zap_page_range_single``: zap a range of one VMA in its own mmu_gather
    batch. The caller keeps the VMA stable (mmap, VMA or rmap lock). The end
    is ``address + size`` in unsigned long arithmetic: a size that wraps
    past the end of the address space can hit ``unmap_page_range``'s
    BUG_ON (seed 003). Left out: ``lru_add_drain``, mmu notifiers, hugetlb."""
    end = (address + size) & ULONG_MAX
    tlb = tlb_gather_mmu(vma.vm_mm)
    unmap_single_vma(tlb, vma, address, end, details)
    tlb_finish_mmu(tlb)


# --- drivers inserting pages and pfns (vm_insert_page, vmf_insert_*) ---------------
#
# What a driver's f_op->mmap or vm_ops->fault uses to map its own memory:
# refcounted pages (vm_insert_page: a normal PTE, the page gains a reference
# and a file-style mapping) or raw pfns (vmf_insert_pfn / vmf_insert_mixed:
# a special PTE, no reference; x86 has pte_special). Every PTE goes in under
# the PTL, and only into an empty entry.

EBUSY = 16
EINVAL = 22
ENOMEM = 12


def get_locked_pte(mm: MmStruct, addr: int) -> PteMap | None:
    """``get_locked_pte`` (``walk_to_pmd`` + ``pte_alloc_map_lock``):
    allocate the tables down to the PTE table of *addr* and return it
    mapped and locked; None if the PMD is not a table. Left out:
    ``walk_to_pmd``'s debug-only ``VM_BUG_ON(pmd_trans_huge())``."""
    pud, ui = pud_alloc(mm, addr)
    pmd, mi = pmd_alloc(mm, pud, ui, addr)
    pte_alloc(mm, pmd, mi)
    return pte_offset_map_lock(mm, pmd, mi, addr)


def vm_mixed_zeropage_allowed(vma: VmAreaStruct) -> bool:
    """``vm_mixed_zeropage_allowed``: the shared zero page may be mapped into
    a COW mapping or one that can never be writable. Left out:
    ``mm_forbids_zeropage`` and the fsdax/VM_IO ``pfn_mkwrite`` case."""
    flags = vma.vm_flags
    if is_cow_mapping(flags):
        return True
    return not flags & (VM_WRITE | 0x20)  # VM_MAYWRITE


def validate_page_before_insert(vma: VmAreaStruct, folio: Folio) -> int:
    """``validate_page_before_insert``: 0, or -EINVAL for a page nobody holds
    (refcount 0: one visible read), an anonymous page, or the zero page
    where it is not allowed. ``PageAnon`` is set only when a new folio is
    first mapped, before any other thread can see it, so reading it here
    needs no scheduling point. Left out: page types, slab pages."""
    if folio_ref_count(folio) == 0:
        return -EINVAL
    if folio.is_zero:
        return 0 if vm_mixed_zeropage_allowed(vma) else -EINVAL
    if folio.anon:
        return -EINVAL
    return 0


@kfunc
def insert_page_into_pte_locked(vma: VmAreaStruct, pm: PteMap, addr: int, folio: Folio,
                                prot: int) -> int:
    """``insert_page_into_pte_locked`` (``mkwrite`` false): -EBUSY if the
    entry is not empty; else map *folio* (the zero page as a special PTE;
    any other page gains a reference and a file-style rmap)."""
    mm = vma.vm_mm
    cur = ptep_get(pm.table, pm.index)
    # Checked under the PTL, after the entry's read: exit_mmap's zap of this
    # table (or its walk past the PMD) is ordered against it.
    mm_assert_users(mm, "vm_insert_page")
    if not pte_none(cur):
        return -EBUSY
    entry = pfn_pte(folio.pfn, vm_prot_to_pte(prot))
    if folio.is_zero:
        entry = pte_mkspecial(entry)
    else:
        folio_get(folio)
        _map_count(mm, 1)
        folio_add_file_rmap_pte(folio, 0, vma)
    set_pte_at(mm, addr, pm.table, pm.index, entry)
    return 0


@kfunc
def insert_page(vma: VmAreaStruct, addr: int, folio: Folio, prot: int) -> int:
    """``insert_page``: validate, lock the PTE (allocating tables), insert."""
    ret = validate_page_before_insert(vma, folio)
    if ret:
        return ret
    pm = get_locked_pte(vma.vm_mm, addr)
    if pm is None:
        return -ENOMEM
    ret = insert_page_into_pte_locked(vma, pm, addr, folio, prot)
    pte_unmap_unlock(pm)
    return ret


def _bug(what: str, vma: VmAreaStruct, detail: str) -> ViolationError:
    return ViolationError("bug", f"kernel BUG in {what}",
                          f"kernel BUG at mm/memory.c ({what}) on {vma!r}: {detail}; "
                          f"held: {held().describe()}")


@kfunc
def vm_insert_page(vma: VmAreaStruct, addr: int, folio: Folio) -> int:
    """``vm_insert_page``: map a driver's own page at *addr* (0 or -errno:
    -EFAULT outside the VMA, -EINVAL for a bad page, -EBUSY if mapped).

    The two clean contracts (Jann Horn, seed 003): the VMA already has
    ``VM_MIXEDMAP`` and the caller holds the mmap or VMA lock (read is
    enough: a fault handler, Binder), or the caller holds the mmap lock for
    write and ``vm_insert_page`` sets ``VM_MIXEDMAP`` (``vm_flags_set``) --
    during ``f_op->mmap``, say. Otherwise ``BUG_ON(mmap_read_trylock())``
    fires: a ``bug`` violation (the model asks whether this thread holds the
    lock for write; the kernel's trylock also fails, without a BUG, while
    another thread holds it for write, and ``vma_start_write`` then asserts).
    ``BUG_ON(VM_PFNMAP)`` likewise. Setting ``VM_MIXEDMAP`` on a VMA with a
    userfaultfd context is reported as an ``invariant`` violation: the
    kernel does not refuse it, but ``vma_can_userfault`` never lets such a
    VMA be registered, and the seed calls the state one that "probably
    shouldn't be permitted". Left out: ``vm_insert_pages``' batching."""
    mm = vma.vm_mm
    if addr < vma.vm_start or addr >= vma.vm_end:
        return -EFAULT
    flags = vma.vm_flags
    if not flags & VM_MIXEDMAP:
        if held().mmap.get(mm.serial) != "W":
            raise _bug("vm_insert_page", vma, "BUG_ON(mmap_read_trylock(vma->vm_mm)): VM_MIXEDMAP "
                       "is not set and the mmap lock is not held for write")
        if flags & VM_PFNMAP:
            raise _bug("vm_insert_page", vma, "BUG_ON(vma->vm_flags & VM_PFNMAP)")
        if vma.vm_userfaultfd_ctx is not None:
            raise ViolationError(
                "invariant", "VM_MIXEDMAP set on a VMA registered with userfaultfd",
                f"vm_insert_page sets VM_MIXEDMAP on {vma!r}, which has a userfaultfd "
                "context: vma_can_userfault never lets a VM_MIXEDMAP VMA be registered")
        vm_flags_set(vma, VM_MIXEDMAP)
    return insert_page(vma, addr, folio, vma.vm_page_prot)


def pfn_valid(pfn: int) -> bool:
    """``pfn_valid``: the frame has a ``struct page`` (a folio or page table
    of this execution's memory map)."""
    return pfn in mem_state().mem_map


@kfunc
def insert_pfn(vma: VmAreaStruct, addr: int, pfn: int, prot: int) -> int:
    """``insert_pfn`` (``mkwrite`` false): a special PTE for *pfn* unless the
    entry is already set; ``VM_FAULT_NOPAGE`` either way, ``VM_FAULT_OOM``
    without a PTE table."""
    mm = vma.vm_mm
    pm = get_locked_pte(mm, addr)
    if pm is None:
        return VM_FAULT_OOM
    cur = ptep_get(pm.table, pm.index)
    mm_assert_users(mm, "insert_pfn")  # under the PTL, as in insert_page_into_pte_locked
    if pte_none(cur):
        entry = pte_mkspecial(pfn_pte(pfn, vm_prot_to_pte(prot)))
        set_pte_at(mm, addr, pm.table, pm.index, entry)
        update_mmu_cache(vma, addr, pm.table, pm.index)
    pte_unmap_unlock(pm)
    return VM_FAULT_NOPAGE


@kfunc
def vmf_insert_pfn_prot(vma: VmAreaStruct, addr: int, pfn: int, prot: int) -> int:
    """``vmf_insert_pfn_prot``: for a ``vm_ops->fault`` of a ``VM_PFNMAP``
    (or ``VM_MIXEDMAP``, for pfns without a ``struct page``) VMA. Its
    BUG_ONs are ``bug`` violations: neither flag, both flags, a COW
    ``VM_PFNMAP`` mapping, a valid pfn in a ``VM_MIXEDMAP`` VMA (use
    ``vmf_insert_mixed``). Outside the VMA: ``VM_FAULT_SIGBUS``. Left out:
    ``pfn_modify_allowed`` (L1TF), PAT cache modes."""
    flags = vma.vm_flags
    both = VM_PFNMAP | VM_MIXEDMAP
    if not flags & both:
        raise _bug("vmf_insert_pfn_prot", vma, "BUG_ON(!(vm_flags & (VM_PFNMAP|VM_MIXEDMAP)))")
    if flags & both == both:
        raise _bug("vmf_insert_pfn_prot", vma, "BUG_ON(VM_PFNMAP and VM_MIXEDMAP both set)")
    if flags & VM_PFNMAP and is_cow_mapping(flags):
        raise _bug("vmf_insert_pfn_prot", vma, "BUG_ON(VM_PFNMAP && is_cow_mapping())")
    if flags & VM_MIXEDMAP and pfn_valid(pfn):
        raise _bug("vmf_insert_pfn_prot", vma, "BUG_ON(VM_MIXEDMAP && pfn_valid(pfn))")
    if addr < vma.vm_start or addr >= vma.vm_end:
        return VM_FAULT_SIGBUS
    return insert_pfn(vma, addr, pfn, prot)


def vmf_insert_pfn(vma: VmAreaStruct, addr: int, pfn: int) -> int:
    """``vmf_insert_pfn``: with the VMA's own protection."""
    return vmf_insert_pfn_prot(vma, addr, pfn, vma.vm_page_prot)


@kfunc
def vmf_insert_mixed(vma: VmAreaStruct, addr: int, pfn: int) -> int:
    """``vmf_insert_mixed`` (``__vm_insert_mixed``, ``mkwrite`` false): a
    ``VM_MIXEDMAP`` VMA may map any pfn, with or without a ``struct page``;
    x86 has ``pte_special``, so it becomes a special PTE without a page
    reference (the driver keeps the page alive until it unmaps it).
    ``VM_FAULT_SIGBUS`` without ``VM_MIXEDMAP`` (``vm_mixed_ok``; the model
    has no devmap or special pfn_t), for the zero page where it is not
    allowed, or outside the VMA."""
    if is_zero_pfn(pfn):
        if not vm_mixed_zeropage_allowed(vma):
            return VM_FAULT_SIGBUS
    elif not vma.vm_flags & VM_MIXEDMAP:
        return VM_FAULT_SIGBUS
    if addr < vma.vm_start or addr >= vma.vm_end:
        return VM_FAULT_SIGBUS
    return insert_pfn(vma, addr, pfn, vma.vm_page_prot)


# --- fork: copy_page_range ----------------------------------------------------------------


@kfunc
def copy_present_pte(dst_vma: VmAreaStruct, src_vma: VmAreaStruct, dst: PteMap,
                     src: PteMap, idx: int, addr: int, pte: int) -> None:
    """``copy_present_pte``: share the page with the child (raising its
    refcount and mapcount); for a private writable mapping write-protect
    both parent and child. An exclusive anon page that may be pinned is
    copied instead (``folio_try_dup_anon_rmap_pte`` fails; the
    ``fork-copy-pinned`` fix), leaving the parent's PTE writable. The
    child's PTE keeps the uffd-wp bit only if the child's VMA is still
    registered for uffd-wp (``dup_userfaultfd`` with
    ``UFFD_FEATURE_EVENT_FORK``)."""
    src_mm = src_vma.vm_mm
    dst_mm = dst_vma.vm_mm
    folio = vm_normal_page(src_vma, addr, pte)
    if folio is not None and folio_test_anon(folio):
        folio_get(folio)
        if folio_try_dup_anon_rmap_pte_(folio, pte, src_vma):
            folio_put(folio)
            # copy_present_page: a private copy for the child, parent untouched
            new = folio_alloc(0)
            copy_user_highpage(new, 0, folio, pte_pfn(pte) - folio.pfn)
            folio_add_new_anon_rmap(new, dst_vma, addr, True)
            _map_count(dst_mm, 1)
            entry = maybe_mkwrite(pte_mkdirty(mk_pte(new, dst_vma)), dst_vma)
            set_pte_at(dst_mm, addr, dst.table, idx, entry)
            return
        _map_count(dst_mm, 1)
    elif folio is not None:
        folio_get(folio)
        folio_add_file_rmap_pte(folio, 0, dst_vma)
        _map_count(dst_mm, 1)
    if is_cow_mapping(src_vma.vm_flags) and pte_write(pte):
        ptep_set_wrprotect(src_mm, addr, src.table, idx)
        pte = pte_wrprotect(pte)
    if src_vma.vm_flags & VM_SHARED:
        pte = pte & ~0x40  # pte_mkclean for shared mappings
    pte = pte & ~0x20  # pte_mkold
    if not dst_vma.vm_flags & VM_UFFD_WP:  # !userfaultfd_wp(dst_vma)
        pte = pte_clear_uffd_wp(pte)  # the child is not tracked: no uffd-wp faults
    set_pte_at(dst_mm, addr, dst.table, idx, pte)


def folio_try_dup_anon_rmap_pte_(folio: Folio, pte: int, src_vma: VmAreaStruct) -> bool:
    return folio_try_dup_anon_rmap_pte(folio, pte_pfn(pte) - folio.pfn, src_vma) != 0


@kfunc
def copy_nonpresent_pte(dst_vma: VmAreaStruct, src_vma: VmAreaStruct, dst: PteMap,
                        src: PteMap, idx: int, addr: int, pte: int) -> None:
    """``copy_nonpresent_pte``: a swap entry is shared with the child
    (``swap_duplicate``; the exclusive marker is dropped from both); a
    writable migration entry in a COW mapping becomes readable in both, so
    the page is write-protected once migration completes. The child's
    entry keeps the uffd-wp bit only if its VMA is still registered for
    uffd-wp (as ``copy_present_pte``)."""
    src_mm = src_vma.vm_mm
    dst_mm = dst_vma.raw("vm_mm")
    entry = pte_to_swp_entry(pte)
    if is_pte_marker_entry(entry):
        # copy_pte_marker: a uffd-wp marker only into a child VMA that is
        # still registered for uffd-wp (fork drops the registration unless
        # the monitor asked for fork events).
        if pte_marker_uffd_wp(pte) and userfaultfd_wp(dst_vma):
            set_pte_at(dst_mm, addr, dst.table, idx, pte)
        return
    if not non_swap_entry(entry):
        if swap_duplicate(entry) < 0:
            return
        if pte_swp_exclusive(pte):
            pte = pte & ~pte_swp_mkexclusive(0)
            set_pte_at(src_mm, addr, src.table, idx, pte)
    elif is_writable_migration_entry(entry) and is_cow_mapping(src_vma.vm_flags):
        pte = swp_entry_to_pte(make_readable_migration_entry(entry.offset)) | (
            pte_swp_flags(pte) & ~pte_swp_mkexclusive(0))
        set_pte_at(src_mm, addr, src.table, idx, pte)
    if not dst_vma.vm_flags & VM_UFFD_WP:  # !userfaultfd_wp(dst_vma)
        pte = pte_swp_clear_uffd_wp(pte)
    set_pte_at(dst_mm, addr, dst.table, idx, pte)


@kfunc
def copy_pte_range(dst_vma: VmAreaStruct, src_vma: VmAreaStruct, dst_pmd: PageTable, dmi: int,
                   src_pmd: PageTable, smi: int, addr: int, end: int) -> None:
    """``copy_pte_range``: allocate the child's PTE table, lock it, then the
    parent's (``spin_lock_nested``), and copy each present entry."""
    dst_mm = dst_vma.vm_mm
    src_mm = src_vma.vm_mm
    pte_alloc(dst_mm, dst_pmd, dmi)
    dst = pte_offset_map_lock(dst_mm, dst_pmd, dmi, addr)
    if dst is None:
        return
    src = pte_offset_map_nolock(src_mm, src_pmd, smi, addr)
    if src is None:
        pte_unmap_unlock(dst)
        return
    assert src.ptl is not None
    ptl_lock(src.ptl, nested=True)
    base = src.index
    for i in range((end - addr) >> PAGE_SHIFT):
        idx = base + i
        if idx not in src.table.entries and idx not in src.table.slots:
            continue
        pte = ptep_get(src.table, idx)
        if pte_none(pte):
            continue
        if not pte_present(pte):
            copy_nonpresent_pte(dst_vma, src_vma, dst, src, idx, addr + (i << PAGE_SHIFT), pte)
            continue
        copy_present_pte(dst_vma, src_vma, dst, src, idx, addr + (i << PAGE_SHIFT), pte)
    pte_unmap_unlock(src)
    pte_unmap_unlock(dst)


def vma_needs_copy(dst_vma: VmAreaStruct, src_vma: VmAreaStruct) -> bool:
    """``vma_needs_copy``: anonymous memory must be copied; file pages can
    be faulted in again by the child."""
    if dst_vma.raw("vm_flags") & VM_WIPEONFORK:
        return False
    return src_vma.anon_vma is not None


@kfunc
def copy_page_range(dst_vma: VmAreaStruct, src_vma: VmAreaStruct) -> int:
    """``copy_page_range``: copy the parent's page tables of *src_vma* into
    the child (mmap write locks of both mms held). Returns 0."""
    if not vma_needs_copy(dst_vma, src_vma):
        return 0
    src_mm = src_vma.vm_mm
    dst_mm = dst_vma.raw("vm_mm")
    is_cow = is_cow_mapping(src_vma.vm_flags)
    if is_cow:
        # GUP-fast pinning concurrently (FOLL_PIN) rechecks this counter and
        # backs off: a page write-protected here must not get a new pin.
        write_seqcount_begin(src_mm.write_protect_seq)
    addr, end = src_vma.vm_start, src_vma.vm_end
    while addr < end:
        nxt = min((addr & ~(PMD_SIZE - 1)) + PMD_SIZE, end)
        found = walk_to_pmd(src_mm, addr)
        if found is not None:
            src_pmdval = pmdp_get(*found)
            if not pmd_none(src_pmdval):
                pud, ui = pud_alloc(dst_mm, addr)
                dpmd, dmi = pmd_alloc(dst_mm, pud, ui, addr)
                if pmd_trans_huge(src_pmdval) and huge_memory.copy_huge_pmd(
                        dst_mm, src_mm, dpmd, dmi, found[0], found[1], addr, dst_vma,
                        src_vma) == 0:
                    addr = nxt
                    continue  # -EAGAIN: the source was split; copy its PTEs
                copy_pte_range(dst_vma, src_vma, dpmd, dmi, found[0], found[1], addr, nxt)
        addr = nxt
    if is_cow:
        write_seqcount_end(src_mm.write_protect_seq)
    return 0


# The fault flags and results are defined in mm_types.py, as in the kernel's
# include/linux/mm_types.h (fs/userfaultfd.c's event code needs them without
# the fault path); callers keep importing them from here.
__all__ = [
    "FAULT_FLAG_ALLOW_RETRY",
    "FAULT_FLAG_DEFAULT",
    "FAULT_FLAG_INSTRUCTION",
    "FAULT_FLAG_INTERRUPTIBLE",
    "FAULT_FLAG_KILLABLE",
    "FAULT_FLAG_MKWRITE",
    "FAULT_FLAG_ORIG_PTE_VALID",
    "FAULT_FLAG_REMOTE",
    "FAULT_FLAG_RETRY_NOWAIT",
    "FAULT_FLAG_TRIED",
    "FAULT_FLAG_UNSHARE",
    "FAULT_FLAG_USER",
    "FAULT_FLAG_VMA_LOCK",
    "FAULT_FLAG_WRITE",
    "VM_FAULT_COMPLETED",
    "VM_FAULT_ERROR",
    "VM_FAULT_FALLBACK",
    "VM_FAULT_LOCKED",
    "VM_FAULT_MAJOR",
    "VM_FAULT_NOPAGE",
    "VM_FAULT_OOM",
    "VM_FAULT_RETRY",
    "VM_FAULT_SIGBUS",
    "VM_FAULT_SIGSEGV",
    "VM_FAULT_WRITE",
    "do_user_addr_fault",
    "handle_mm_fault",
    "unmap_vmas",
    "vm_insert_page",
    "vmf_insert_mixed",
    "vmf_insert_pfn",
    "zap_page_range_single",
]

_ = (Any, PAGE_SIZE)

# The THP, page-cache, migration, stack-growth, rmap and userfaultfd parts of
# the fault path live in their kernel files, which call back into this one:
# they are imported once this module is complete (the seam of the cycle).
from mmrace.mm import filemap, huge_memory, migrate  # noqa: E402
from mmrace.mm.mmap import expand_downwards, expand_stack  # noqa: E402
from mmrace.mm.rmap import folio_try_dup_anon_rmap_pte  # noqa: E402
from mmrace.mm.userfaultfd import (  # noqa: E402
    handle_userfault,
    userfaultfd_missing,
    userfaultfd_pte_wp,
    userfaultfd_wp,
)
from mmrace.mm.vma import find_vma  # noqa: E402

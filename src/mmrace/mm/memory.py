"""Page faults, COW and zapping (mm/memory.c, with the x86 fault entry of
arch/x86/mm/fault.c as :func:`do_user_addr_fault`).

Fault order is the current kernel's: ``lock_vma_under_rcu`` first
(``FAULT_FLAG_VMA_LOCK``), falling back to ``mmap_read_lock`` when no VMA
could be locked or the handler returned ``VM_FAULT_RETRY`` (for example
``vmf_anon_prepare`` needing the mmap lock to set up the anon_vma and
failing to trylock it). ``do_wp_page``'s reuse decision is the
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

from mmrace.mm.internal import errno_error, kernel_config, kfunc
from mmrace.mm.mm_types import (
    PAGE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_MAYSHARE,
    VM_READ,
    VM_SHARED,
    VM_UFFD_MISSING,
    VM_UFFD_WP,
    VM_WRITE,
    MmStruct,
    VmAreaStruct,
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
    Folio,
    PageAnonExclusive,
    SetPageAnonExclusive,
    copy_user_highpage,
    folio_alloc,
    folio_get,
    folio_mapcount,
    folio_put,
    folio_ref_count,
    folio_test_anon,
    folio_trylock,
    folio_unlock,
    is_zero_pfn,
    my_zero_pfn,
    pfn_folio,
)
from mmrace.mm.pgtable import (
    PageTable,
    PteMap,
    flush_tlb_fix_spurious_fault,
    pfn_pte,
    pmd_alloc,
    pmd_none,
    pmd_trans_huge,
    pmdp_get,
    pte_alloc,
    pte_clear_uffd_wp,
    pte_mkdirty,
    pte_mkspecial,
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
    ptep_clear_flush,
    ptep_get,
    ptep_get_and_clear,
    ptep_get_stable_bits,
    ptep_set_access_flags,
    ptl_lock,
    set_pte_at,
    update_mmu_cache,
    vm_prot_to_pte,
    walk_to_pmd,
)
from mmrace.mm.rmap import (
    __anon_vma_prepare,
    folio_add_file_rmap_pte,
    folio_add_new_anon_rmap,
    folio_move_anon_rmap,
    folio_remove_rmap_pte,
    linear_page_index,
)

# --- fault flags and results (include/linux/mm_types.h) ----------------------------

FAULT_FLAG_WRITE = 1 << 0
FAULT_FLAG_MKWRITE = 1 << 1
FAULT_FLAG_ALLOW_RETRY = 1 << 2
FAULT_FLAG_RETRY_NOWAIT = 1 << 3
FAULT_FLAG_KILLABLE = 1 << 4
FAULT_FLAG_TRIED = 1 << 5
FAULT_FLAG_USER = 1 << 6
FAULT_FLAG_REMOTE = 1 << 7
FAULT_FLAG_INSTRUCTION = 1 << 8
FAULT_FLAG_INTERRUPTIBLE = 1 << 9
FAULT_FLAG_UNSHARE = 1 << 10
FAULT_FLAG_ORIG_PTE_VALID = 1 << 11
FAULT_FLAG_VMA_LOCK = 1 << 12
FAULT_FLAG_DEFAULT = FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE | FAULT_FLAG_INTERRUPTIBLE

VM_FAULT_OOM = 0x1
VM_FAULT_SIGBUS = 0x2
VM_FAULT_MAJOR = 0x4
VM_FAULT_WRITE = 0x8  # do_wp_page broke COW or reused the page (GUP's FOLL_COW, until 6.0)
VM_FAULT_SIGSEGV = 0x40
VM_FAULT_NOPAGE = 0x100
VM_FAULT_LOCKED = 0x200
VM_FAULT_RETRY = 0x400
VM_FAULT_FALLBACK = 0x800
VM_FAULT_COMPLETED = 0x4000
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV

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
    from mmrace.mm.userfaultfd import handle_userfault, userfaultfd_missing

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
    from mmrace.mm.filemap import filemap_fault

    ops = vmf.vma.vm_ops
    if ops is not None and ops.fault is not None:
        ret, folio = ops.fault(vmf)
    else:
        ret, folio = filemap_fault(vmf)
    vmf.page_folio = folio
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
    assert folio is not None and vmf.pmd is not None
    pte_alloc(mm, vmf.pmd, vmf.pmd_index)
    pm = pte_offset_map_lock(mm, vmf.pmd, vmf.pmd_index, vmf.address)
    if pm is None:
        return VM_FAULT_NOPAGE
    if not pte_none(ptep_get(pm.table, pm.index)):
        pte_unmap_unlock(pm)
        return VM_FAULT_NOPAGE
    entry = pte_mkyoung(mk_pte(folio, vma))
    if write:
        entry = maybe_mkwrite(pte_mkdirty(entry), vma)
    _map_count(mm, 1)
    if cow:
        folio_add_new_anon_rmap(folio, vma, vmf.address, True)
    else:
        folio_add_file_rmap_pte(folio, 0, vma)
    set_pte_at(mm, vmf.address, pm.table, pm.index, entry)
    update_mmu_cache(vma, vmf.address, pm.table, pm.index)
    pte_unmap_unlock(pm)
    return 0


@kfunc
def do_read_fault(vmf: VmFault) -> int:
    """``do_read_fault``: map the page-cache folio read-only."""
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
    copy_user_highpage(vmf.cow_folio, 0, page, 0)
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
    """``do_fault``: read, COW or shared fault of a file mapping."""
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
    from mmrace.mm.mm_types import mm_tlb_flush_pending
    from mmrace.mm.pgtable import flush_tlb_page
    from mmrace.mm.userfaultfd import handle_userfault, userfaultfd_pte_wp, userfaultfd_wp

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
        return 0  # swap/migration entries: not modelled
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
    """``__handle_mm_fault``: allocate the upper tables down to the PMD, then
    ``handle_pte_fault``. Huge PMDs (THP) are not faulted in the model."""
    from mmrace.mm.pgtable import pud_alloc

    mm = vma.vm_mm
    vmf = VmFault(vma, address, flags)
    pud, ui = pud_alloc(mm, address)
    pmd, mi = pmd_alloc(mm, pud, ui, address)
    vmf.pmd, vmf.pmd_index = pmd, mi
    if pmd_trans_huge(pmdp_get(pmd, mi)):
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
    *address*, expanding a stack below it. None (unlocked) if there is none."""
    from mmrace.mm.mmap import expand_stack
    from mmrace.mm.vma import find_vma

    mmap_read_lock(mm)
    vma = find_vma(mm, address)
    if vma is not None and vma.vm_start <= address:
        return vma
    if vma is None or not vma.vm_flags & VM_GROWSDOWN:
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
    vma = lock_vma_under_rcu(mm, address)
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
    (anon folios) when zapping a file range (``unmap_mapping_range``)."""

    __slots__ = ("even_cows",)

    def __init__(self, even_cows: bool = True) -> None:
        self.even_cows = even_cows


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
        if pte_none(ptent) or not pte_present(ptent):
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
    allocation) and zap each PTE table's part."""
    from mmrace.mm.pgtable import PMD_SIZE

    mm = vma.vm_mm
    while addr < end:
        nxt = min((addr & ~(PMD_SIZE - 1)) + PMD_SIZE, end)
        found = walk_to_pmd(mm, addr)
        if found is not None:
            pmd, mi = found
            pmdval = pmdp_get(pmd, mi)
            if not pmd_none(pmdval) and not pmd_trans_huge(pmdval):
                zap_pte_range(tlb, vma, pmd, mi, addr, nxt, details)
        addr = nxt


@kfunc
def unmap_single_vma(tlb: MmuGather, vma: VmAreaStruct, start: int, end: int,
                     details: ZapDetails | None = None) -> None:
    """``unmap_single_vma``: zap the part of ``[start, end)`` inside *vma*."""
    start = max(vma.vm_start, start)
    end = min(vma.vm_end, end)
    if start < end:
        unmap_page_range(tlb, vma, start, end, details)


@kfunc
def unmap_vmas(tlb: MmuGather, vmas: list[VmAreaStruct], start: int, end: int) -> None:
    """``unmap_vmas``: zap ``[start, end)`` of each VMA."""
    for vma in vmas:
        unmap_single_vma(tlb, vma, start, end)


@kfunc
def zap_page_range_single(vma: VmAreaStruct, address: int, size: int,
                          details: ZapDetails | None = None) -> None:
    """``zap_page_range_single``: zap a range of one VMA in its own mmu_gather
    batch. The caller keeps the VMA stable (mmap, VMA or rmap lock)."""
    tlb = tlb_gather_mmu(vma.vm_mm)
    unmap_single_vma(tlb, vma, address, address + size, details)
    tlb_finish_mmu(tlb)


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
        from mmrace.mm.pgtable import pte_wrprotect, ptep_set_wrprotect

        ptep_set_wrprotect(src_mm, addr, src.table, idx)
        pte = pte_wrprotect(pte)
    if src_vma.vm_flags & VM_SHARED:
        pte = pte & ~0x40  # pte_mkclean for shared mappings
    pte = pte & ~0x20  # pte_mkold
    if not dst_vma.vm_flags & VM_UFFD_WP:  # !userfaultfd_wp(dst_vma)
        pte = pte_clear_uffd_wp(pte)  # the child is not tracked: no uffd-wp faults
    set_pte_at(dst_mm, addr, dst.table, idx, pte)


def folio_try_dup_anon_rmap_pte_(folio: Folio, pte: int, src_vma: VmAreaStruct) -> bool:
    from mmrace.mm.rmap import folio_try_dup_anon_rmap_pte

    return folio_try_dup_anon_rmap_pte(folio, pte_pfn(pte) - folio.pfn, src_vma) != 0


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
        if pte_none(pte) or not pte_present(pte):
            continue
        copy_present_pte(dst_vma, src_vma, dst, src, idx, addr + (i << PAGE_SHIFT), pte)
    pte_unmap_unlock(src)
    pte_unmap_unlock(dst)


def vma_needs_copy(dst_vma: VmAreaStruct, src_vma: VmAreaStruct) -> bool:
    """``vma_needs_copy``: anonymous memory must be copied; file pages can
    be faulted in again by the child."""
    from mmrace.mm.mm_types import VM_WIPEONFORK

    if dst_vma.raw("vm_flags") & VM_WIPEONFORK:
        return False
    return src_vma.anon_vma is not None


@kfunc
def copy_page_range(dst_vma: VmAreaStruct, src_vma: VmAreaStruct) -> int:
    """``copy_page_range``: copy the parent's page tables of *src_vma* into
    the child (mmap write locks of both mms held). Returns 0."""
    from mmrace.mm.pgtable import PMD_SIZE, pud_alloc

    if not vma_needs_copy(dst_vma, src_vma):
        return 0
    src_mm = src_vma.vm_mm
    dst_mm = dst_vma.raw("vm_mm")
    addr, end = src_vma.vm_start, src_vma.vm_end
    while addr < end:
        nxt = min((addr & ~(PMD_SIZE - 1)) + PMD_SIZE, end)
        found = walk_to_pmd(src_mm, addr)
        if found is not None and not pmd_none(pmdp_get(*found)):
            pud, ui = pud_alloc(dst_mm, addr)
            dpmd, dmi = pmd_alloc(dst_mm, pud, ui, addr)
            copy_pte_range(dst_vma, src_vma, dpmd, dmi, found[0], found[1], addr, nxt)
        addr = nxt
    return 0


__all__ = [
    "FAULT_FLAG_WRITE",
    "VM_FAULT_RETRY",
    "do_user_addr_fault",
    "handle_mm_fault",
    "unmap_vmas",
    "zap_page_range_single",
]

_ = (Any, PAGE_SIZE)

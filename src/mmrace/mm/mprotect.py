"""mprotect and change_protection (mm/mprotect.c).

``change_protection`` rewrites the PTEs of a range under their PTLs with
``ptep_modify_prot_start``/``ptep_modify_prot_commit`` and only records the
range in the caller's ``mmu_gather``: the TLB flush comes once, at
``tlb_finish_mmu``, after every PTE of the range was changed. Until then the
mm's ``tlb_flush_pending`` (raised by ``tlb_gather_mmu``) says a flush is
deferred — the window the seed-002 races live in. Before 6.0 the kernel did
the same without an ``mmu_gather`` (``inc_tlb_flush_pending``,
``flush_tlb_range``, ``dec_tlb_flush_pending`` in
``change_protection_range``); the order of events is the same.

``PROT_GROWSDOWN`` extends the range down to the start of a grows-down VMA
(EINVAL on any other); ``PROT_GROWSUP`` is EINVAL (x86 has no grows-up
VMAs), and so are both together.

A huge PMD covered whole is changed in place (``change_huge_pmd``), one
covered in part is split first; a writable migration entry loses write
permission with its VMA.

Left out: pkeys, arch-specific VM_FLAGS_CLEAR bits, RLIMIT_AS, NUMA hinting
(MM_CP_PROT_NUMA), uffd-wp bits of swap entries and PTE markers on empty
entries, hugetlb, mmu notifiers, large folio batching.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.mm.internal import errno_error, kernel_config, kfunc
from mmrace.mm.mm_types import (
    PAGE_SHIFT,
    PAGE_SIZE,
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_GROWSDOWN,
    VM_HUGETLB,
    VM_NORESERVE,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_WRITE,
    MmStruct,
    VmAreaStruct,
)
from mmrace.mm.mman import PROT_EXEC, PROT_GROWSDOWN, PROT_GROWSUP, PROT_READ, PROT_SEM, PROT_WRITE
from mmrace.mm.mmap import PAGE_ALIGN, calc_vm_prot_bits, offset_in_page, ulong
from mmrace.mm.mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
from mmrace.mm.mmu_gather import MmuGather, tlb_finish_mmu, tlb_gather_mmu
from mmrace.mm.page_alloc import PageAnonExclusive, pfn_folio
from mmrace.mm.pgtable import (
    PMD_SIZE,
    pmd_alloc,
    pmd_none,
    pmd_trans_huge,
    pmdp_get,
    pte_alloc,
    pte_clear,
    pte_clear_uffd_wp,
    pte_dirty,
    pte_mkuffd_wp,
    pte_mkwrite,
    pte_modify,
    pte_none,
    pte_offset_map_lock,
    pte_pfn,
    pte_present,
    pte_soft_dirty,
    pte_uffd_wp,
    pte_unmap_unlock,
    pte_write,
    ptep_get,
    ptep_modify_prot_commit,
    ptep_modify_prot_start,
    pud_alloc,
    set_pte_at,
    vm_prot_to_pte,
    walk_to_pmd,
)
from mmrace.mm.swapops import (
    PTE_MARKER_UFFD_WP,
    is_pte_marker_entry,
    is_writable_migration_entry,
    make_pte_marker,
    make_readable_exclusive_migration_entry,
    make_readable_migration_entry,
    pte_swp_flags,
    pte_to_swp_entry,
    swp_entry_to_pte,
)
from mmrace.mm.userfaultfd_k import userfaultfd_wp
from mmrace.mm.vma import (
    find_vma,
    find_vma_prev,
    vm_flags_reset,
    vma_modify_flags,
    vma_set_page_prot,
)

EINVAL, ENOMEM, EACCES = 22, 12, 13

# cp_flags (include/linux/mm.h)
MM_CP_TRY_CHANGE_WRITABLE = 1 << 0
MM_CP_PROT_NUMA = 1 << 1
MM_CP_UFFD_WP = 1 << 2
MM_CP_UFFD_WP_RESOLVE = 1 << 3
MM_CP_UFFD_WP_ALL = MM_CP_UFFD_WP | MM_CP_UFFD_WP_RESOLVE

change_protection_hook: Callable[[Any, VmAreaStruct, int, int, int], int] | None = None
"""Test seam: when set, ``mprotect_fixup`` calls it instead of
:func:`change_protection` (same arguments)."""


def vma_is_anonymous(vma: VmAreaStruct) -> bool:
    """``vma_is_anonymous``: no vm_ops (shared anonymous memory is shmem)."""
    return vma.vm_ops is None and vma.vm_file is None


@kfunc
def mprotect_fixup(tlb: MmuGather, mm: MmStruct, vma: VmAreaStruct, prev: VmAreaStruct | None,
                   start: int, end: int, newflags: int) -> VmAreaStruct:
    """``mprotect_fixup``: give ``[start, end)`` of *vma* the flags *newflags*,
    merging or splitting as needed; returns the VMA that now covers the range
    (the next ``prev``), and change the PTEs of the range
    (:func:`change_protection`, flush deferred to the caller's
    ``tlb_finish_mmu``). Accounting follows the kernel: a private mapping
    made writable is charged (VM_ACCOUNT), an unfaulted anonymous one made
    read-only is uncharged."""
    oldflags = vma.vm_flags
    if newflags == oldflags:
        return vma
    if newflags & VM_WRITE:
        if not oldflags & (VM_ACCOUNT | VM_WRITE | VM_HUGETLB | VM_SHARED | VM_NORESERVE):
            newflags |= VM_ACCOUNT
    elif oldflags & VM_ACCOUNT and vma_is_anonymous(vma) and vma.anon_vma is None:
        newflags &= ~VM_ACCOUNT
    vma = vma_modify_flags(mm, prev, vma, start, end, newflags)
    # vm_flags and vm_page_prot are protected by the mmap lock held for write
    # and the VMA write lock.
    vma_start_write(vma)
    vm_flags_reset(vma, newflags)
    vma_set_page_prot(vma)
    mm_cp_flags = MM_CP_TRY_CHANGE_WRITABLE if vma_wants_manual_pte_write_upgrade(vma) else 0
    if change_protection_hook is not None:
        change_protection_hook(tlb, vma, start, end, mm_cp_flags)
    else:
        change_protection(tlb, vma, start, end, mm_cp_flags)
    return vma


@kfunc
def do_mprotect_pkey(mm: MmStruct, start: int, length: int, prot: int) -> int:
    """``do_mprotect_pkey`` (pkey -1): returns 0 or raises OSError. As in the
    kernel, VMAs before a hole keep their new protection when ENOMEM is
    returned for the hole. The PTE changes of every VMA are flushed once,
    by ``tlb_finish_mmu``, before the mmap write lock is dropped."""
    start, length = ulong(start), ulong(length)
    grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP)
    prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP)
    if grows == PROT_GROWSDOWN | PROT_GROWSUP:  # a range cannot grow both ways
        raise errno_error(EINVAL)
    if offset_in_page(start):
        raise errno_error(EINVAL)
    if not length:
        return 0
    length = PAGE_ALIGN(length)
    end = start + length
    if end <= start:
        raise errno_error(ENOMEM)
    if prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM):
        raise errno_error(EINVAL)
    mmap_write_lock(mm)
    tlb = tlb_gather_mmu(mm)
    try:
        vma = find_vma(mm, start)
        if vma is None or vma.vm_start >= end:
            raise errno_error(ENOMEM)
        if grows & PROT_GROWSDOWN:
            # The range extends down to the start of a grows-down VMA.
            start = vma.vm_start
            if not vma.vm_flags & VM_GROWSDOWN:
                raise errno_error(EINVAL)
        elif vma.vm_start > start:
            raise errno_error(ENOMEM)
        elif grows & PROT_GROWSUP:
            # x86 has no VM_GROWSUP (it is VM_NONE there): never a grows-up VMA.
            raise errno_error(EINVAL)
        _, prev = find_vma_prev(mm, vma.vm_start)
        if start > vma.vm_start:
            prev = vma
        nstart = start
        while True:
            # for_each_vma_range, re-walked after each fixup (the tree changes)
            vma = find_vma(mm, nstart)
            if vma is None or vma.vm_start >= end:
                break
            if vma.vm_start > nstart:
                raise errno_error(ENOMEM)
            newflags = calc_vm_prot_bits(prot) | (vma.vm_flags & ~VM_ACCESS_FLAGS)
            if (newflags & ~(newflags >> 4)) & VM_ACCESS_FLAGS:
                raise errno_error(EACCES)
            tmp = min(vma.vm_end, end)
            prev = mprotect_fixup(tlb, mm, vma, prev, nstart, tmp, newflags)
            nstart = prev.vm_end
            if nstart >= end:
                break
        if nstart < end:
            raise errno_error(ENOMEM)
    except OSError:
        tlb_finish_mmu(tlb)
        mmap_write_unlock(mm)
        raise
    tlb_finish_mmu(tlb)
    mmap_write_unlock(mm)
    return 0


def nr_pages(start: int, end: int) -> int:
    return (end - start) >> PAGE_SHIFT


# --- change_protection ------------------------------------------------------------


def vma_wants_manual_pte_write_upgrade(vma: VmAreaStruct) -> bool:
    """``vma_wants_manual_pte_write_upgrade``: a writable VMA whose
    ``vm_page_prot`` is write-protected (private, or write-notify) may have
    PTEs made writable by hand (``MM_CP_TRY_CHANGE_WRITABLE``)."""
    flags = vma.vm_flags
    if not flags & VM_WRITE:
        return False
    if flags & VM_SHARED:
        return vma_wants_writenotify(vma, vma.vm_page_prot)
    return True


def can_change_pte_writable(vma: VmAreaStruct, addr: int, pte: int) -> bool:
    """``can_change_pte_writable``: may *pte* be made writable without a
    write fault? Not if soft-dirty tracking or uffd-wp needs the fault; in a
    private mapping only for an exclusive anonymous page (as the write fault
    would reuse it); in a shared one only if already dirty. Before the
    ``mprotect-exclusive-anon-writable`` fix only the shared-dirty case
    existed (``dirty_accountable``)."""
    flags = vma.vm_flags
    if not flags & VM_WRITE:
        return False
    if not flags & VM_SOFTDIRTY and not pte_soft_dirty(pte):
        return False  # pte_needs_soft_dirty_wp
    if userfaultfd_wp(vma) and pte_uffd_wp(pte):
        return False
    if not flags & VM_SHARED:
        if not kernel_config(vma.vm_mm).has("mprotect-exclusive-anon-writable"):
            return False
        folio = vm_normal_page(vma, addr, pte)
        return (folio is not None and folio.anon
                and bool(PageAnonExclusive(folio, pte_pfn_idx(folio, pte))))
    return pte_dirty(pte)


def pte_pfn_idx(folio: Any, pte: int) -> int:
    return int(pte_pfn(pte) - folio.pfn)


def tlb_flush_pte_range(tlb: MmuGather, addr: int, size: int) -> None:
    """``tlb_flush_pte_range``: add ``[addr, addr + size)`` to the range the
    gather will flush (the model's ``mmu_gather`` tracks it through
    ``tlb_remove_tlb_entry``)."""
    fn = getattr(mmu_gather, "tlb_flush_pte_range", None)
    if fn is not None:
        fn(tlb, addr, size)
    else:
        mmu_gather.tlb_remove_tlb_entry(tlb, addr)


@kfunc
def change_pte_range(tlb: MmuGather, vma: VmAreaStruct, pmd: Any, mi: int, addr: int, end: int,
                     newprot: int, cp_flags: int) -> int:
    """``change_pte_range``: under the PTE table's lock, for each present PTE
    in ``[addr, end)``: ``ptep_modify_prot_start`` (atomic get-and-clear),
    ``pte_modify`` to *newprot*, set (``MM_CP_UFFD_WP``, which also
    write-protects) or clear (``MM_CP_UFFD_WP_RESOLVE``) the uffd-wp bit,
    make it writable again if ``MM_CP_TRY_CHANGE_WRITABLE`` and
    :func:`can_change_pte_writable` allow, ``ptep_modify_prot_commit``, and
    add the page to the gather's flush range. No flush here. Returns the
    number of PTEs changed, or -EAGAIN if the table went before its lock
    was taken (the caller retries the PMD). Protecting file-backed memory
    for uffd-wp puts a uffd-wp marker in each empty entry.

    Switches: ``uffd-wp-resolve-skip`` (proposal) leaves PTEs without the
    uffd-wp bit alone on resolve; ``uffd-wp-resolve-preserve-write``
    (proposal) keeps an RW bit that is already set on resolve."""
    mm = vma.vm_mm
    cfg = kernel_config(mm)
    uffd_wp = bool(cp_flags & MM_CP_UFFD_WP)
    uffd_wp_resolve = bool(cp_flags & MM_CP_UFFD_WP_RESOLVE)
    prot_numa = bool(cp_flags & MM_CP_PROT_NUMA)
    pm = pte_offset_map_lock(mm, pmd, mi, addr)
    if pm is None:
        return -11  # -EAGAIN: the table went (6.5: pte_offset_map_lock may fail): again
    pages = 0
    base = pm.index
    markers = uffd_wp and userfaultfd_wp_use_markers(vma)
    for i in range((end - addr) >> PAGE_SHIFT):
        idx = base + i
        a = addr + (i << PAGE_SHIFT)
        if idx not in pm.table.entries and idx not in pm.table.slots:
            # Never touched: none, and filling it needs the PTL we hold.
            if markers:
                set_pte_at(mm, a, pm.table, idx, make_pte_marker(PTE_MARKER_UFFD_WP))
                pages += 1
            continue
        oldpte = ptep_get(pm.table, idx)
        if pte_none(oldpte):
            # "Nobody plays with any none ptes besides userfaultfd": for
            # file-backed memory the page may be cached unmapped, so a
            # write-protected empty entry keeps a uffd-wp marker.
            if markers:
                set_pte_at(mm, a, pm.table, idx, make_pte_marker(PTE_MARKER_UFFD_WP))
                pages += 1
            continue
        if not pte_present(oldpte):
            pages += change_nonpresent_pte(vma, a, pm.table, idx, oldpte, newprot,
                                           uffd_wp_resolve)
            continue
        if uffd_wp_resolve and not pte_uffd_wp(oldpte) and cfg.has("uffd-wp-resolve-skip"):
            continue
        preserve_write = prot_numa and pte_write(oldpte)
        if uffd_wp_resolve and cfg.has("uffd-wp-resolve-preserve-write"):
            preserve_write = pte_write(oldpte)
        oldpte = ptep_modify_prot_start(vma, a, pm.table, idx)
        ptent = pte_modify(oldpte, vm_prot_to_pte(newprot))
        if preserve_write:
            ptent = pte_mkwrite(ptent)
        if uffd_wp:
            ptent = pte_mkuffd_wp(ptent)
        elif uffd_wp_resolve:
            ptent = pte_clear_uffd_wp(ptent)
        if (cp_flags & MM_CP_TRY_CHANGE_WRITABLE and not pte_write(ptent)
                and can_change_pte_writable(vma, a, ptent)):
            ptent = pte_mkwrite(ptent)
        ptep_modify_prot_commit(vma, a, pm.table, idx, oldpte, ptent)
        tlb_flush_pte_range(tlb, a, PAGE_SIZE)
        pages += 1
    pte_unmap_unlock(pm)
    return pages


def change_nonpresent_pte(vma: VmAreaStruct, addr: int, table: Any, idx: int, oldpte: int,
                          newprot: int, uffd_wp_resolve: bool = False) -> int:
    """The non-present branch of ``change_pte_range``: a writable migration
    entry becomes readable ("a protection check is difficult so just be
    safe"; readable-exclusive for an anonymous page), so the page is not
    mapped writable against the new protection when the migration
    completes; un-protecting drops a uffd-wp marker (the next fault is an
    ordinary one). Swap entries keep their bits (changing the uffd-wp bit
    of a swap PTE is left out). Returns the entries changed."""
    entry = pte_to_swp_entry(oldpte)
    if is_pte_marker_entry(entry):
        if uffd_wp_resolve:
            pte_clear(vma.vm_mm, addr, table, idx)
            return 1
        return 0
    if is_writable_migration_entry(entry):
        folio = pfn_folio(entry.offset)
        make = (make_readable_exclusive_migration_entry if folio.anon
                else make_readable_migration_entry)
        new = swp_entry_to_pte(make(entry.offset))
        set_pte_at(vma.vm_mm, addr, table, idx, new | pte_swp_flags(oldpte))
    return 0


def userfaultfd_wp_use_markers(vma: VmAreaStruct) -> bool:
    """``userfaultfd_wp_use_markers``: file-backed memory keeps uffd-wp
    protection of empty entries in markers (anonymous memory only with
    ``UFFD_FEATURE_WP_UNPOPULATED``, left out)."""
    return vma.vm_file is not None


def uffd_wp_protect_file(vma: VmAreaStruct, cp_flags: int) -> bool:
    """``uffd_wp_protect_file``: protecting file-backed memory, which then
    needs PTE tables (a huge PMD cannot carry the bit: it is split)."""
    return bool(cp_flags & MM_CP_UFFD_WP) and vma.vm_file is not None


@kfunc
def change_pmd_prepare(vma: VmAreaStruct, addr: int) -> None:
    """``change_pmd_prepare``: when protecting file-backed memory for
    uffd-wp, make sure the PTE table exists (``pte_alloc``) so empty entries
    can take markers -- the PMD may be empty, e.g. after khugepaged
    retracted the table."""
    mm = vma.vm_mm
    pud, ui = pud_alloc(mm, addr)
    pmd, mi = pmd_alloc(mm, pud, ui, addr)
    pte_alloc(mm, pmd, mi)


@kfunc
def change_protection_range(tlb: MmuGather, vma: VmAreaStruct, start: int, end: int,
                            newprot: int, cp_flags: int) -> int:
    """``change_protection_range`` / ``change_pmd_range``: walk the PMDs of
    ``[start, end)`` (no allocation) and change each PTE table's part.
    Huge PMDs are skipped (THP is not modelled)."""
    mm = vma.vm_mm
    pages = 0
    addr = start
    while addr < end:
        nxt = min((addr & ~(PMD_SIZE - 1)) + PMD_SIZE, end)
        found = walk_to_pmd(mm, addr)
        protect_file = uffd_wp_protect_file(vma, cp_flags)
        if protect_file and (found is None or pmd_none(pmdp_get(*found))):
            change_pmd_prepare(vma, addr)
            found = walk_to_pmd(mm, addr)
        if found is not None:
            pmd, mi = found
            pmdval = pmdp_get(pmd, mi)
            if (pmd_none(pmdval) and protect_file
                    and kernel_config(mm).has("uffd-wp-populate-recheck")):
                continue  # emptied since change_pmd_prepare (a retraction): again
            # change_pmd_range: a huge PMD covered whole is changed in place;
            # one covered in part, or a file one being uffd-wp protected, is
            # split and handled by PTEs.
            if pmd_trans_huge(pmdval):
                if nxt - addr != PMD_SIZE or protect_file:
                    huge_memory.__split_huge_pmd(vma, pmd, mi, addr, False)
                    if protect_file and pmd_none(pmdp_get(pmd, mi)):
                        change_pmd_prepare(vma, addr)
                else:
                    ret = huge_memory.change_huge_pmd(tlb, vma, pmd, mi, addr, newprot,
                                                      cp_flags)
                    if ret:
                        pages += ret
                        addr = nxt
                        continue
                pmdval = pmdp_get(pmd, mi)
            if not pmd_none(pmdval) and not pmd_trans_huge(pmdval):
                ret = change_pte_range(tlb, vma, pmd, mi, addr, nxt, newprot, cp_flags)
                if ret < 0:
                    continue  # "goto again": the PMD changed under us
                pages += ret
        addr = nxt
    return pages


@kfunc
def change_protection(tlb: MmuGather, vma: VmAreaStruct, start: int, end: int,
                      cp_flags: int) -> int:
    """``change_protection``: give the PTEs of ``[start, end)`` in *vma* the
    VMA's current ``vm_page_prot`` (plus the uffd-wp changes of *cp_flags*).
    The caller holds the mmap lock (write for mprotect, read for
    UFFDIO_WRITEPROTECT) and owns *tlb*: the flush happens at its
    ``tlb_finish_mmu``, once for the whole range. Returns the number of PTEs
    changed."""
    assert (cp_flags & MM_CP_UFFD_WP_ALL) != MM_CP_UFFD_WP_ALL
    return change_protection_range(tlb, vma, start, end, vma.vm_page_prot, cp_flags)



# change_huge_pmd (mm/huge_memory.py) reads this module's MM_CP_* flags, and
# the fault, VMA and gather code import this module: they are imported last
# (the seam of those cycles).
from mmrace.mm import (  # noqa: E402
    huge_memory,
    mmu_gather,
)
from mmrace.mm.memory import vm_normal_page  # noqa: E402
from mmrace.mm.vma import vma_wants_writenotify  # noqa: E402

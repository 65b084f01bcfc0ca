"""mprotect, the VMA part (mm/mprotect.c).

Left out: ``change_protection`` on the page tables (the TLB issue adds it
at :data:`change_protection_hook`), pkeys, PROT_GROWSDOWN/PROT_GROWSUP
extension of the range, arch-specific VM_FLAGS_CLEAR bits, RLIMIT_AS.
"""

from __future__ import annotations

from collections.abc import Callable

from mmrace.mm.internal import errno_error, kfunc
from mmrace.mm.mm_types import (
    PAGE_SHIFT,
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_HUGETLB,
    VM_NORESERVE,
    VM_SHARED,
    VM_WRITE,
    MmStruct,
    VmAreaStruct,
)
from mmrace.mm.mman import PROT_EXEC, PROT_GROWSDOWN, PROT_GROWSUP, PROT_READ, PROT_SEM, PROT_WRITE
from mmrace.mm.mmap import PAGE_ALIGN, calc_vm_prot_bits, offset_in_page
from mmrace.mm.mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
from mmrace.mm.vma import (
    find_vma,
    find_vma_prev,
    vm_flags_reset,
    vma_modify_flags,
    vma_set_page_prot,
)

EINVAL, ENOMEM, EACCES = 22, 12, 13

change_protection_hook: Callable[[VmAreaStruct, int, int, int], None] | None = None
"""Set by the TLB issue: ``change_protection(vma, start, end, cp_flags)``."""


def vma_is_anonymous(vma: VmAreaStruct) -> bool:
    """``vma_is_anonymous``: no vm_ops (shared anonymous memory is shmem)."""
    return vma.vm_ops is None and vma.vm_file is None


@kfunc
def mprotect_fixup(mm: MmStruct, vma: VmAreaStruct, prev: VmAreaStruct | None, start: int,
                   end: int, newflags: int) -> VmAreaStruct:
    """``mprotect_fixup``: give ``[start, end)`` of *vma* the flags *newflags*,
    merging or splitting as needed; returns the VMA that now covers the range
    (the next ``prev``). Accounting follows the kernel: a private mapping
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
    if change_protection_hook is not None:
        change_protection_hook(vma, start, end, 0)
    return vma


@kfunc
def do_mprotect_pkey(mm: MmStruct, start: int, length: int, prot: int) -> int:
    """``do_mprotect_pkey`` (pkey -1): returns 0 or raises OSError. As in the
    kernel, VMAs before a hole keep their new protection when ENOMEM is
    returned for the hole."""
    prot &= ~(PROT_GROWSDOWN | PROT_GROWSUP)
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
    try:
        vma = find_vma(mm, start)
        if vma is None or vma.vm_start >= end or vma.vm_start > start:
            raise errno_error(ENOMEM)
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
            prev = mprotect_fixup(mm, vma, prev, nstart, tmp, newflags)
            nstart = prev.vm_end
            if nstart >= end:
                break
        if nstart < end:
            raise errno_error(ENOMEM)
    except OSError:
        mmap_write_unlock(mm)
        raise
    mmap_write_unlock(mm)
    return 0


def nr_pages(start: int, end: int) -> int:
    return (end - start) >> PAGE_SHIFT

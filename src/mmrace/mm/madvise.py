"""madvise, the advice that only changes VMA flags (mm/madvise.c).

Supported: MADV_DONTFORK, MADV_DOFORK, MADV_WIPEONFORK, MADV_KEEPONFORK
(and MADV_NORMAL/RANDOM/SEQUENTIAL, DONTDUMP/DODUMP, which are also
flag-only). Other valid advice is accepted and does nothing yet (the page
work lands with later issues); unknown advice is EINVAL. Advice that
changes only flags takes the mmap write lock, as the kernel does.
"""

from __future__ import annotations

from mmrace.mm.fs_userfaultfd import userfaultfd_remove
from mmrace.mm.internal import errno_error, kfunc
from mmrace.mm.mm_types import (
    PAGE_MASK,
    VM_DONTCOPY,
    VM_DONTDUMP,
    VM_IO,
    VM_RAND_READ,
    VM_SEQ_READ,
    VM_SHARED,
    VM_SPECIAL,
    VM_WIPEONFORK,
    MmStruct,
    VmAreaStruct,
)
from mmrace.mm.mman import (
    MADV_COLD,
    MADV_COLLAPSE,
    MADV_DODUMP,
    MADV_DOFORK,
    MADV_DONTDUMP,
    MADV_DONTFORK,
    MADV_DONTNEED,
    MADV_DONTNEED_LOCKED,
    MADV_FREE,
    MADV_HUGEPAGE,
    MADV_KEEPONFORK,
    MADV_MERGEABLE,
    MADV_NOHUGEPAGE,
    MADV_NORMAL,
    MADV_PAGEOUT,
    MADV_POPULATE_READ,
    MADV_POPULATE_WRITE,
    MADV_RANDOM,
    MADV_REMOVE,
    MADV_SEQUENTIAL,
    MADV_UNMERGEABLE,
    MADV_WILLNEED,
    MADV_WIPEONFORK,
)
from mmrace.mm.mmap import PAGE_ALIGN
from mmrace.mm.mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
from mmrace.mm.vma import find_vma, find_vma_prev, vm_flags_reset, vma_lookup, vma_modify_flags

EINVAL, ENOMEM = 22, 12

_FLAG_ONLY = {MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_DONTFORK, MADV_DOFORK,
              MADV_WIPEONFORK, MADV_KEEPONFORK, MADV_DONTDUMP, MADV_DODUMP}
_VALID = _FLAG_ONLY | {MADV_WILLNEED, MADV_DONTNEED, MADV_FREE, MADV_REMOVE, MADV_MERGEABLE,
                       MADV_UNMERGEABLE, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_COLD,
                       MADV_PAGEOUT, MADV_POPULATE_READ, MADV_POPULATE_WRITE,
                       MADV_DONTNEED_LOCKED, MADV_COLLAPSE}


def madvise_behavior_valid(behavior: int) -> bool:
    """``madvise_behavior_valid``."""
    return behavior in _VALID


@kfunc
def madvise_update_vma(mm: MmStruct, vma: VmAreaStruct, prev: VmAreaStruct | None,
                       start: int, end: int, new_flags: int) -> VmAreaStruct:
    """``madvise_update_vma``: merge/split, then set flags under the VMA
    write lock."""
    if new_flags == vma.vm_flags:
        return vma
    vma = vma_modify_flags(mm, prev, vma, start, end, new_flags)
    vma_start_write(vma)
    vm_flags_reset(vma, new_flags)
    return vma


def _new_flags(vma: VmAreaStruct, behavior: int) -> int:
    flags = int(vma.vm_flags)
    if behavior == MADV_NORMAL:
        return flags & ~(VM_RAND_READ | VM_SEQ_READ)
    if behavior == MADV_SEQUENTIAL:
        return (flags & ~VM_RAND_READ) | VM_SEQ_READ
    if behavior == MADV_RANDOM:
        return (flags & ~VM_SEQ_READ) | VM_RAND_READ
    if behavior == MADV_DONTFORK:
        return flags | VM_DONTCOPY
    if behavior == MADV_DOFORK:
        if flags & VM_IO:
            raise errno_error(EINVAL)
        return flags & ~VM_DONTCOPY
    if behavior == MADV_WIPEONFORK:
        if vma.vm_file is not None or flags & VM_SHARED:
            raise errno_error(EINVAL)
        return flags | VM_WIPEONFORK
    if behavior == MADV_KEEPONFORK:
        return flags & ~VM_WIPEONFORK
    if behavior == MADV_DONTDUMP:
        return flags | VM_DONTDUMP
    if behavior == MADV_DODUMP:
        if flags & VM_SPECIAL:
            raise errno_error(EINVAL)
        return flags & ~VM_DONTDUMP
    return flags


@kfunc
def madvise_dontneed(mm: MmStruct, start: int, end: int) -> int:
    """``madvise_dontneed_free`` -> ``zap_page_range_single`` for each VMA in
    the range, under the mmap read lock (zapping needs only a stable VMA).
    VM_LOCKED and VM_PFNMAP VMAs give EINVAL. A VMA registered with a
    userfaultfd that asked for ``UFFD_FEATURE_EVENT_REMOVE`` first sends
    the REMOVE event (``userfaultfd_remove``, which drops the mmap lock and
    waits for the monitor to read it); the VMA is then looked up again.
    Left out: the per-VMA-lock variant of recent kernels."""
    from mmrace.mm.memory import zap_page_range_single
    from mmrace.mm.mm_types import VM_LOCKED, VM_PFNMAP
    from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock

    mmap_read_lock(mm)
    addr = start
    unmapped = False
    while addr < end:
        vma = find_vma(mm, addr)
        if vma is None or vma.vm_start >= end:
            unmapped = True
            break
        if vma.vm_start > addr:
            unmapped = True
        if vma.vm_flags & (VM_LOCKED | VM_PFNMAP):
            mmap_read_unlock(mm)
            raise errno_error(EINVAL)
        s, e = max(addr, vma.vm_start), min(end, vma.vm_end)
        if not userfaultfd_remove(vma, s, e):
            # The REMOVE event was read with the mmap lock dropped: look again.
            mmap_read_lock(mm)
            vma = vma_lookup(mm, s)
            if vma is None:
                mmap_read_unlock(mm)
                raise errno_error(ENOMEM)
            if vma.vm_flags & (VM_LOCKED | VM_PFNMAP):
                mmap_read_unlock(mm)
                raise errno_error(EINVAL)
            e = min(e, vma.vm_end)
        zap_page_range_single(vma, s, e - s)
        addr = e
    mmap_read_unlock(mm)
    if unmapped:
        raise errno_error(ENOMEM)
    return 0


@kfunc
def do_madvise(mm: MmStruct, start: int, len_in: int, behavior: int) -> int:
    """``do_madvise``: as the kernel, advice is applied to every VMA in the
    range and a hole anywhere in it gives ENOMEM at the end."""
    if not madvise_behavior_valid(behavior):
        raise errno_error(EINVAL)
    if start & ~PAGE_MASK:
        raise errno_error(EINVAL)
    length = PAGE_ALIGN(len_in)
    if len_in and not length:
        raise errno_error(EINVAL)
    end = start + length
    if end < start:
        raise errno_error(EINVAL)
    if end == start:
        return 0
    if behavior in (MADV_DONTNEED, MADV_DONTNEED_LOCKED):
        return madvise_dontneed(mm, start, end)
    if behavior not in _FLAG_ONLY:
        return 0
    mmap_write_lock(mm)
    try:
        unmapped = False
        vma, prev = find_vma_prev(mm, start)
        if vma is not None and start > vma.vm_start:
            prev = vma
        while True:
            if vma is None:
                raise errno_error(ENOMEM)
            if start < vma.vm_start:
                unmapped = True
                start = vma.vm_start
                if start >= end:
                    break
            tmp = min(vma.vm_end, end)
            prev = madvise_update_vma(mm, vma, prev, start, tmp, _new_flags(vma, behavior))
            start = tmp
            if start < prev.vm_end:
                start = prev.vm_end
            if start >= end:
                break
            vma = find_vma(mm, prev.vm_end)
        if unmapped:
            raise errno_error(ENOMEM)
    except OSError:
        mmap_write_unlock(mm)
        raise
    mmap_write_unlock(mm)
    return 0

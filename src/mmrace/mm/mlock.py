"""mlock and munlock, the VMA part (mm/mlock.c).

Left out: RLIMIT_MEMLOCK (the model's tasks have CAP_IPC_LOCK), mlockall,
munlocking and mlocking the folios (fault issue; population goes through
``mm/mmap.py``'s :data:`mm_populate_hook`).
"""

from __future__ import annotations

from mmrace.mm import mmap as _mmap
from mmrace.mm.internal import errno_error, kfunc
from mmrace.mm.mm_types import (
    PAGE_MASK,
    PAGE_SHIFT,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_LOCKONFAULT,
    VM_SPECIAL,
    MmStruct,
    VmAreaStruct,
)
from mmrace.mm.mman import MLOCK_ONFAULT
from mmrace.mm.mmap import PAGE_ALIGN
from mmrace.mm.mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
from mmrace.mm.vma import find_vma, find_vma_prev, vm_flags_reset, vma_lookup, vma_modify_flags

EINVAL, ENOMEM = 22, 12


@kfunc
def mlock_fixup(mm: MmStruct, vma: VmAreaStruct, prev: VmAreaStruct | None, start: int,
                end: int, newflags: int) -> VmAreaStruct:
    """``mlock_fixup``: VM_SPECIAL VMAs are skipped; otherwise merge/split and
    set the flags under the VMA write lock."""
    oldflags = vma.vm_flags
    if newflags == oldflags or oldflags & VM_SPECIAL:
        return vma
    vma = vma_modify_flags(mm, prev, vma, start, end, newflags)
    npages = (end - start) >> PAGE_SHIFT
    if not newflags & VM_LOCKED:
        npages = -npages
    elif oldflags & VM_LOCKED:
        npages = 0
    mm.locked_vm += npages
    vma_start_write(vma)
    vm_flags_reset(vma, newflags)
    return vma


@kfunc
def apply_vma_lock_flags(mm: MmStruct, start: int, length: int, flags: int) -> None:
    """``apply_vma_lock_flags``: VMAs before a hole keep the change; the hole
    gives ENOMEM."""
    end = start + length
    if end < start:
        raise errno_error(EINVAL)
    if end == start:
        return
    vma = vma_lookup(mm, start)
    if vma is None:
        raise errno_error(ENOMEM)
    _, prev = find_vma_prev(mm, vma.vm_start)
    if start > vma.vm_start:
        prev = vma
    nstart = start
    while True:
        vma = find_vma(mm, nstart)
        if vma is None or vma.vm_start >= end:
            break
        if vma.vm_start > nstart:
            raise errno_error(ENOMEM)
        newflags = (vma.vm_flags & ~VM_LOCKED_MASK) | flags
        tmp = min(vma.vm_end, end)
        prev = mlock_fixup(mm, vma, prev, nstart, tmp, newflags)
        nstart = prev.vm_end
        if nstart >= end:
            break
    if nstart < end:
        raise errno_error(ENOMEM)


@kfunc
def do_mlock(mm: MmStruct, start: int, length: int, flags: int) -> int:
    """``do_mlock``: ``mlock``/``mlock2``. Raises OSError."""
    length = PAGE_ALIGN(length + (start & ~PAGE_MASK))
    start &= PAGE_MASK
    mmap_write_lock(mm)
    try:
        apply_vma_lock_flags(mm, start, length, flags)
    except OSError:
        mmap_write_unlock(mm)
        raise
    mmap_write_unlock(mm)
    if _mmap.mm_populate_hook is not None:
        _mmap.mm_populate_hook(mm, start, length)
    return 0


def sys_mlock(mm: MmStruct, start: int, length: int) -> int:
    """``mlock``."""
    return do_mlock(mm, start, length, VM_LOCKED)


def sys_mlock2(mm: MmStruct, start: int, length: int, flags: int) -> int:
    """``mlock2``."""
    if flags & ~MLOCK_ONFAULT:
        raise errno_error(EINVAL)
    vm_flags = VM_LOCKED | (VM_LOCKONFAULT if flags & MLOCK_ONFAULT else 0)
    return do_mlock(mm, start, length, vm_flags)


@kfunc
def sys_munlock(mm: MmStruct, start: int, length: int) -> int:
    """``munlock``."""
    length = PAGE_ALIGN(length + (start & ~PAGE_MASK))
    start &= PAGE_MASK
    mmap_write_lock(mm)
    try:
        apply_vma_lock_flags(mm, start, length, 0)
    except OSError:
        mmap_write_unlock(mm)
        raise
    mmap_write_unlock(mm)
    return 0

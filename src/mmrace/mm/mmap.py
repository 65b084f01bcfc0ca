"""mmap, munmap, brk and stack expansion (mm/mmap.c, mm/util.c and the
``__mmap_region`` part of mm/vma.c).

Left out: hugetlb, file sealing and write-deny, MAP_SHARED_VALIDATE's flag
validation, rlimits (RLIMIT_AS, RLIMIT_DATA, RLIMIT_MEMLOCK), overcommit
accounting beyond the VM_ACCOUNT flag, address randomisation, the bottom-up
fallback of the top-down allocator, uprobes/khugepaged/ksm hooks,
userfaultfd unmap events. ``MAP_POPULATE`` and ``MAP_LOCKED`` call
:data:`mm_populate_hook` (a no-op until faults exist).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.mm.fs_userfaultfd import userfaultfd_unmap_complete
from mmrace.mm.internal import errno_error, kernel_config, kfunc
from mmrace.mm.mm_types import (
    PAGE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_GROWSDOWN,
    VM_LOCKED,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYSHARE,
    VM_MAYWRITE,
    VM_NORESERVE,
    VM_READ,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_SYNC,
    VM_WRITE,
    File,
    MmStruct,
    VmAreaStruct,
    vm_get_page_prot,
)
from mmrace.mm.mman import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_LOCKED,
    MAP_NONBLOCK,
    MAP_NORESERVE,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MAP_SHARED_VALIDATE,
    MAP_SYNC,
    MAP_TYPE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
)
from mmrace.mm.mmap_lock import (
    mmap_assert_locked,
    mmap_assert_write_locked,
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_downgrade,
    mmap_write_lock,
    mmap_write_unlock,
    vma_start_write,
)
from mmrace.mm.pgtable import ptl_lock, ptl_unlock
from mmrace.mm.rmap import __anon_vma_prepare, anon_vma_lock_write, anon_vma_unlock_write
from mmrace.mm.userfaultfd_k import UserfaultfdUnmapCtx
from mmrace.mm.vma import (
    VmaIterator,
    VmaMergeStruct,
    do_vmi_align_munmap,
    find_vma,
    find_vma_intersection,
    find_vma_prev,
    sysctl_max_map_count,
    vm_area_alloc,
    vm_flags_set,
    vma_find,
    vma_iter_store,
    vma_link,
    vma_merge_new_range,
    vma_pages,
    vma_set_page_prot,
)

EPERM, ENOMEM, EFAULT, EEXIST, EINVAL, EOVERFLOW = 1, 12, 14, 17, 22, 75
EACCES = 13

stack_guard_gap = 256 << PAGE_SHIFT
VM_DATA_DEFAULT_FLAGS = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC

mm_populate_hook: Callable[[MmStruct, int, int], None] | None = None
"""Set by the fault issue: populate ``[start, start + len)`` after mmap."""


ULONG_MAX = (1 << 64) - 1


def ulong(x: int) -> int:
    """A syscall argument as the x86-64 ABI passes it, an ``unsigned long``:
    a negative Python int arrives as its two's complement (-4096 is
    0xfffffffffffff000, far above ``TASK_SIZE``)."""
    return x & ULONG_MAX


def PAGE_ALIGN(x: int) -> int:
    return (x + PAGE_SIZE - 1) & PAGE_MASK


def offset_in_page(x: int) -> int:
    return x & (PAGE_SIZE - 1)


def calc_vm_prot_bits(prot: int) -> int:
    """``calc_vm_prot_bits``."""
    return prot & (PROT_READ | PROT_WRITE | PROT_EXEC)  # same bit values as VM_*


def calc_vm_flag_bits(flags: int) -> int:
    """``calc_vm_flag_bits``."""
    out = 0
    if flags & MAP_GROWSDOWN:
        out |= VM_GROWSDOWN
    if flags & MAP_LOCKED:
        out |= VM_LOCKED
    if flags & MAP_SYNC:
        out |= VM_SYNC
    return out


def accountable_mapping(file: File | None, vm_flags: int) -> bool:
    """``accountable_mapping``: private writable mappings are charged."""
    return (vm_flags & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE


@kfunc
def get_unmapped_area(mm: MmStruct, file: File | None, addr: int, length: int, pgoff: int,
                      flags: int) -> int:
    """``mm_get_unmapped_area`` with the top-down allocator
    (``arch_get_unmapped_area_topdown``). Raises OSError."""
    if length > mm.task_size - mm.mmap_min_addr:
        raise errno_error(ENOMEM)
    if flags & MAP_FIXED:
        if offset_in_page(addr):
            raise errno_error(EINVAL, "MAP_FIXED address not page aligned")
        if addr + length > mm.task_size:
            raise errno_error(ENOMEM)
        return addr
    if addr:
        addr = PAGE_ALIGN(addr)
        if (mm.mmap_min_addr <= addr and addr + length <= mm.task_size
                and find_vma_intersection(mm, addr, addr + length) is None):
            return addr
    found = mm.mm_mt.empty_area_rev(mm.mmap_min_addr, mm.mmap_base, length)
    if found is None:
        raise errno_error(ENOMEM)
    return found


def shmem_zero_setup(mm: MmStruct) -> File:
    """``shmem_zero_setup``: shared anonymous memory is a shmem file."""
    return File("/dev/zero (deleted)")


@kfunc
def mmap_region(mm: MmStruct, file: File | None, addr: int, length: int, vm_flags: int,
                pgoff: int) -> int:
    """``mmap_region`` / ``__mmap_region``: unmap what is in the way, then merge
    the new range into a neighbour or link a new VMA, calling the file's
    ``f_op->mmap`` on the new VMA before it is linked (its error fails the
    mmap). The mmap write lock is held. Left out: the ordering trick of
    gathering the old VMAs first and completing their removal after the new
    VMA is in place; ``f_op->mmap_prepare``; the second merge attempt after
    a hook changed the flags; the hook's VM_MAYWRITE warning."""
    mmap_assert_write_locked(mm)
    end = addr + length
    if find_vma_intersection(mm, addr, end) is not None:
        do_vmi_align_munmap(mm, addr, end, unlock=False)
    if accountable_mapping(file, vm_flags):
        vm_flags |= VM_ACCOUNT
    anon_shared = file is None and vm_flags & VM_SHARED
    if anon_shared:
        file = shmem_zero_setup(mm)
        pgoff = 0
    vm_ops = None
    hook = None
    if file is not None:
        vm_flags |= file.special
        vm_ops = file.vm_ops
        hook = file.f_op_mmap
    nxt, prev = find_vma_prev(mm, addr)
    if nxt is not None and nxt.vm_start != end:
        nxt = None
    if prev is not None and prev.vm_end != addr:
        prev = None
    vma: VmAreaStruct | None = None
    if vm_ops is None and hook is None:
        # A file whose ->mmap installs vm_ops is mapped first, then merged
        # (the model keeps such VMAs separate, as VM_SPECIAL ones are).
        vmg = VmaMergeStruct(mm, prev, None, nxt, addr, end, pgoff, vm_flags, file)
        vma = vma_merge_new_range(vmg)
    if vma is None:
        if mm.map_count >= sysctl_max_map_count:
            raise errno_error(ENOMEM, "map count limit")
        vma = vm_area_alloc(mm)
        vma._f_vm_start = addr
        vma._f_vm_end = end
        vma._f_vm_pgoff = pgoff
        vma._f_vm_flags = vm_flags
        vma._f_vm_file = file
        vma._f_vm_ops = vm_ops
        vma._f_vm_page_prot = vm_get_page_prot(vm_flags)
        if hook is not None and file is not None:
            # __mmap_new_file_vma -> mmap_file: the driver's f_op->mmap sees
            # the VMA before it is in the tree (nobody else can reach it).
            err = hook(file, vma)
            if err:
                raise errno_error(-err, "f_op->mmap")
            vm_flags = vma.raw("vm_flags")  # map->flags = vma->vm_flags
        vma_link(mm, vma)
    mm.total_vm += length >> PAGE_SHIFT
    if vm_flags & VM_LOCKED:
        mm.locked_vm += length >> PAGE_SHIFT
    # New (or expanded) VMAs always get soft-dirty status, so the soft-dirty
    # tracker can tell a new mapping from the old contents of the range.
    vm_flags_set(vma, VM_SOFTDIRTY)
    vma_set_page_prot(vma)
    return addr


@kfunc
def do_mmap(mm: MmStruct, file: File | None, addr: int, length: int, prot: int, flags: int,
            pgoff: int) -> tuple[int, bool]:
    """``do_mmap``: argument checks, flags, address, then ``mmap_region``.
    Returns ``(addr, populate)``. Raises OSError. Needs the mmap write lock."""
    if not length:
        raise errno_error(EINVAL, "zero length")
    length = PAGE_ALIGN(length)
    if not length or length > mm.task_size:
        raise errno_error(ENOMEM)
    if pgoff + (length >> PAGE_SHIFT) >= 1 << (64 - PAGE_SHIFT):
        raise errno_error(EOVERFLOW)
    if mm.map_count > sysctl_max_map_count:
        raise errno_error(ENOMEM, "map count limit")
    if not (flags & MAP_FIXED):
        addr = max(addr, 0)
    if flags & MAP_FIXED_NOREPLACE:
        flags |= MAP_FIXED
    addr = get_unmapped_area(mm, file, addr, length, pgoff, flags)
    if flags & MAP_FIXED and addr < mm.mmap_min_addr:
        raise errno_error(EPERM, "below mmap_min_addr")
    if flags & MAP_FIXED_NOREPLACE and find_vma_intersection(mm, addr, addr + length):
        raise errno_error(EEXIST)
    vm_flags = (calc_vm_prot_bits(prot) | calc_vm_flag_bits(flags) | mm.def_flags
                | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC)
    mtype = flags & MAP_TYPE
    if file is not None and not file.can_mmap:
        raise errno_error(19, "the file cannot be mapped")  # ENODEV: no f_op->mmap
    if file is not None:
        if mtype in (MAP_SHARED, MAP_SHARED_VALIDATE):
            vm_flags |= VM_SHARED | VM_MAYSHARE
        elif mtype != MAP_PRIVATE:
            raise errno_error(EINVAL, "bad map type")
    else:
        if mtype in (MAP_SHARED, MAP_SHARED_VALIDATE):
            pgoff = 0
            vm_flags |= VM_SHARED | VM_MAYSHARE
        elif mtype == MAP_PRIVATE:
            pgoff = addr >> PAGE_SHIFT
        else:
            raise errno_error(EINVAL, "bad map type")
    if flags & MAP_NORESERVE:
        vm_flags |= VM_NORESERVE
    addr = mmap_region(mm, file, addr, length, vm_flags, pgoff)
    populate = bool((vm_flags & VM_LOCKED) or (flags & (MAP_POPULATE | MAP_NONBLOCK))
                    == MAP_POPULATE)
    return addr, populate


@kfunc
def vm_mmap_pgoff(mm: MmStruct, file: File | None, addr: int, length: int, prot: int,
                  flags: int, pgoff: int) -> int:
    """``vm_mmap_pgoff``: take the mmap write lock around ``do_mmap``, then
    populate if asked."""
    mmap_write_lock(mm)
    try:
        addr, populate = do_mmap(mm, file, addr, length, prot, flags, pgoff)
    except OSError:
        mmap_write_unlock(mm)
        raise
    mmap_write_unlock(mm)
    if populate and mm_populate_hook is not None:
        mm_populate_hook(mm, addr, PAGE_ALIGN(length))
    return addr


@kfunc
def ksys_mmap_pgoff(mm: MmStruct, addr: int, length: int, prot: int, flags: int,
                    file: File | None, off: int) -> int:
    """``ksys_mmap_pgoff`` (with the offset check of the x86 ``mmap`` entry)."""
    addr, length, off = ulong(addr), ulong(length), ulong(off)
    if offset_in_page(off):
        raise errno_error(EINVAL, "offset not page aligned")
    if not (flags & MAP_ANONYMOUS) and file is None:
        raise errno_error(9, "bad file descriptor")  # EBADF
    if flags & MAP_ANONYMOUS:
        file = None
    return vm_mmap_pgoff(mm, file, addr, length, prot, flags, off >> PAGE_SHIFT)


@kfunc
def do_vmi_munmap(mm: MmStruct, start: int, length: int, unlock: bool,
                  uf: list[UserfaultfdUnmapCtx] | None = None) -> int:
    """``do_vmi_munmap``: checks, then ``do_vmi_align_munmap`` (*uf*: the
    userfaultfd UNMAP events to prepare)."""
    if offset_in_page(start) or start > mm.task_size or length > mm.task_size - start:
        raise errno_error(EINVAL)
    end = start + PAGE_ALIGN(length)
    if end == start:
        raise errno_error(EINVAL)
    return do_vmi_align_munmap(mm, start, end, unlock, uf)


@kfunc
def __vm_munmap(mm: MmStruct, start: int, length: int, unlock: bool = True) -> int:
    """``__vm_munmap``: the munmap syscall. Detaches under the write lock and
    tears down under the downgraded read lock; with the lock dropped, sends
    the userfaultfd UNMAP events (``userfaultfd_unmap_complete``)."""
    uf: list[UserfaultfdUnmapCtx] = []
    mmap_write_lock(mm)
    try:
        ret = do_vmi_munmap(mm, start, length, unlock, uf)
    except OSError:
        mmap_write_unlock(mm)
        raise
    if not unlock:
        mmap_write_unlock(mm)
    userfaultfd_unmap_complete(mm, uf)
    return ret


def vm_munmap(mm: MmStruct, start: int, length: int) -> int:
    """``vm_munmap``."""
    return __vm_munmap(mm, ulong(start), ulong(length), True)


# --- brk ----------------------------------------------------------------------


@kfunc
def do_brk_flags(mm: MmStruct, brkvma: VmAreaStruct | None, addr: int, length: int,
                 flags: int) -> None:
    """``do_brk_flags``: grow the brk VMA, or map a new anonymous VMA."""
    flags |= VM_DATA_DEFAULT_FLAGS | VM_ACCOUNT | mm.def_flags
    if brkvma is not None and brkvma.vm_end == addr:
        vmg = VmaMergeStruct(mm, brkvma, None, None, addr, addr + length,
                             addr >> PAGE_SHIFT, flags)
        if vma_merge_new_range(vmg) is not None:
            mm.total_vm += length >> PAGE_SHIFT
            return
    vma = vm_area_alloc(mm)
    vma._f_vm_start = addr
    vma._f_vm_end = addr + length
    vma._f_vm_pgoff = addr >> PAGE_SHIFT
    vma._f_vm_flags = flags
    vma._f_vm_page_prot = vm_get_page_prot(flags)
    vma_link(mm, vma)
    mm.total_vm += length >> PAGE_SHIFT


def vm_start_gap(vma: VmAreaStruct) -> int:
    """``vm_start_gap``: a stack's start including its guard gap."""
    start = int(vma.vm_start)
    if vma.vm_flags & VM_GROWSDOWN:
        start = max(start - stack_guard_gap, 0)
    return start


@kfunc
def sys_brk(mm: MmStruct, brk: int) -> int:
    """``brk``: returns the new break, or the old one if the request fails
    (the raw syscall reports no errno). Left out: RLIMIT_DATA, randomised
    brk start, ``mm->def_flags`` VM_LOCKED population."""
    mmap_write_lock(mm)
    origbrk = mm.brk
    if brk < mm.start_brk:
        mmap_write_unlock(mm)
        return origbrk
    newbrk = PAGE_ALIGN(brk)
    oldbrk = PAGE_ALIGN(mm.brk)
    if oldbrk == newbrk:
        mm.brk = brk
        mmap_write_unlock(mm)
        return brk
    if brk <= mm.brk:
        vmi = VmaIterator(mm, newbrk)
        brkvma = vma_find(vmi, oldbrk)
        if brkvma is None or brkvma.vm_start >= oldbrk:
            mmap_write_unlock(mm)
            return origbrk
        mm.brk = brk
        do_vmi_align_munmap(mm, newbrk, oldbrk, unlock=True)
        return brk
    vmi = VmaIterator(mm, oldbrk)
    nxt = vma_find(vmi, newbrk + PAGE_SIZE + stack_guard_gap)
    if nxt is not None and newbrk + PAGE_SIZE > vm_start_gap(nxt):
        mmap_write_unlock(mm)
        return origbrk
    _, brkvma = find_vma_prev(mm, oldbrk)
    if brkvma is not None and brkvma.vm_end <= mm.start_brk:
        brkvma = None
    do_brk_flags(mm, brkvma, oldbrk, newbrk - oldbrk, 0)
    mm.brk = brk
    mmap_write_unlock(mm)
    return brk


# --- stack expansion ----------------------------------------------------------


@kfunc
def expand_downwards(vma: VmAreaStruct, address: int) -> int:
    """``expand_downwards``: grow a VM_GROWSDOWN VMA down to *address*.
    Returns 0 or -errno. Since ``stack-expand-write-locked`` (6.5): under the
    mmap write lock and the VMA write lock. Before it: under the mmap *read*
    lock held by the fault, with the anon_vma prepared and write-locked and
    ``mm->page_table_lock`` serialising concurrent expansions around the
    writes of vm_start, vm_pgoff and the VMA tree (the rules of that era
    allow exactly this). Left out: rlimits, accounting, the stack guard of
    the other direction."""
    mm: MmStruct = vma.vm_mm
    write_locked = kernel_config(mm).has("stack-expand-write-locked")
    if write_locked:
        mmap_assert_write_locked(mm)
    else:
        mmap_assert_locked(mm)
    if not vma.vm_flags & VM_GROWSDOWN:
        return -EFAULT
    address &= PAGE_MASK
    if address < mm.mmap_min_addr:
        return -EPERM
    _, prev = find_vma_prev(mm, vma.vm_start)
    if (prev is not None and not prev.vm_flags & VM_GROWSDOWN
            and prev.vm_flags & VM_ACCESS_FLAGS and address - prev.vm_end < stack_guard_gap):
        return -ENOMEM
    if write_locked:
        vma_start_write(vma)
    elif __anon_vma_prepare(vma):
        return -ENOMEM  # the read-locked expansion needed the anon_vma first
    av: Any = vma.anon_vma
    if av is not None:
        anon_vma_lock_write(av)
    if address < vma.vm_start:
        grow = (vma.vm_start - address) >> PAGE_SHIFT
        if not write_locked:
            ptl_lock(mm.page_table_lock)
        mm.total_vm += grow
        vma.vm_pgoff = vma.vm_pgoff - grow
        vma.vm_start = address
        vma_iter_store(mm, vma)
        if not write_locked:
            ptl_unlock(mm.page_table_lock)
    if av is not None:
        anon_vma_unlock_write(av)
    return 0


@kfunc
def expand_stack(mm: MmStruct, addr: int) -> VmAreaStruct | None:
    """``expand_stack``: called with the mmap read lock held; drops it, takes
    the write lock, expands the stack VMA below *addr* and returns it with the
    lock downgraded to read. On failure returns None with no lock held."""
    mmap_read_unlock(mm)
    mmap_write_lock(mm)
    vma, _ = find_vma_prev(mm, addr)
    if vma is not None and vma.vm_start <= addr:
        mmap_write_downgrade(mm)
        return vma
    if vma is not None and expand_downwards(vma, addr) == 0:
        mmap_write_downgrade(mm)
        return vma
    mmap_write_unlock(mm)
    return None


def find_extend_vma_locked(mm: MmStruct, addr: int) -> VmAreaStruct | None:
    """``find_extend_vma_locked``: under the mmap write lock."""
    vma = find_vma(mm, addr)
    if vma is None:
        return None
    if vma.vm_start <= addr:
        return vma
    if expand_downwards(vma, addr) == 0:
        return vma
    return None


__all__ = [
    "do_mmap",
    "expand_downwards",
    "expand_stack",
    "get_unmapped_area",
    "ksys_mmap_pgoff",
    "mmap_read_lock",
    "mmap_region",
    "sys_brk",
    "vm_mmap_pgoff",
    "vm_munmap",
    "vma_pages",
]


@kfunc
def exit_mmap(mm: MmStruct) -> None:
    """``exit_mmap``: zap everything under the mmap read lock (fullmm
    batch), then under the write lock free the page tables and the VMAs."""
    from mmrace.mm.memory import unmap_vmas
    from mmrace.mm.mmap_lock import vma_mark_detached
    from mmrace.mm.mmu_gather import tlb_finish_mmu, tlb_gather_mmu
    from mmrace.mm.vma import VmaIterator, for_each_vma, free_pgtables, remove_vma

    mmap_read_lock(mm)
    vmas = list(for_each_vma(VmaIterator(mm, 0)))
    tlb = tlb_gather_mmu(mm, fullmm=True)
    unmap_vmas(tlb, vmas, 0, mm.task_size)
    mmap_read_unlock(mm)
    mmap_write_lock(mm)
    for v in vmas:
        vma_start_write(v)
    if vmas:
        mm.mm_mt.mas_store_range(0, mm.task_size, None)
    for v in vmas:
        vma_mark_detached(v)
    free_pgtables(mm, vmas, tlb, 0, 0)
    tlb_finish_mmu(tlb)
    for v in vmas:
        remove_vma(v)
    mm.map_count = 0
    mmap_write_unlock(mm)


def _populate(mm: MmStruct, start: int, length: int) -> None:
    from mmrace.mm.gup import __mm_populate

    __mm_populate(mm, start, length)


mm_populate_hook = _populate

"""fork's address-space copy (``dup_mmap`` of mm/mmap.c, ``copy_mm``/
``dup_mm`` of kernel/fork.c).

Locking as in the current kernel: the parent's mmap lock for write, the
child's nested inside it; every parent VMA is write-locked
(``vma_start_write``) before it is copied, so no page fault runs on it
under the per-VMA lock while its PTEs are being write-protected; the
parent's TLB is flushed (``flush_tlb_mm``) before its mmap lock is
released.

userfaultfd (``dup_userfaultfd``, before the VMA's pages are copied): a
registered VMA keeps its registration in the child only with
``UFFD_FEATURE_EVENT_FORK`` (under a new context for the child, announced
to the parent's monitor by a FORK event once both mmap locks are dropped,
``dup_userfaultfd_complete``: fork returns only after the monitor read it);
without it the child's VMA loses its context and ``VM_UFFD_*`` flags, and
``copy_present_pte`` drops the uffd-wp bit of its PTEs.

Left out: ``__mt_dup`` (the child's tree is built VMA by VMA), accounting
and ``VM_ACCOUNT`` charges, uprobes, khugepaged and KSM registration,
mempolicy duplication, failure unwinding.
"""

from __future__ import annotations

from mmrace.mm.fs_userfaultfd import dup_userfaultfd, dup_userfaultfd_complete
from mmrace.mm.internal import kfunc
from mmrace.mm.memory import copy_page_range
from mmrace.mm.mm_types import VM_DONTCOPY, VM_LOCKED_MASK, VM_WIPEONFORK, MmStruct
from mmrace.mm.mmap_lock import (
    mmap_write_lock,
    mmap_write_unlock,
    vma_mark_attached,
    vma_start_write,
)
from mmrace.mm.pgtable import flush_tlb_mm
from mmrace.mm.rmap import anon_vma_fork, i_mmap_lock_write, i_mmap_unlock_write
from mmrace.mm.userfaultfd_k import UserfaultfdForkCtx
from mmrace.mm.vma import VmaIterator, for_each_vma, vm_area_dup


@kfunc
def dup_mmap(mm: MmStruct, oldmm: MmStruct) -> int:
    """``dup_mmap``: copy *oldmm*'s VMAs into the new *mm* (skipping
    ``VM_DONTCOPY``; ``VM_WIPEONFORK`` VMAs get no anon_vma and no pages),
    link them into the anon_vma trees (``anon_vma_fork``) and the files'
    i_mmap trees, and copy the page tables (``copy_page_range``); then
    deliver the userfaultfd FORK events (``dup_userfaultfd_complete``)."""
    uf: list[UserfaultfdForkCtx] = []
    mmap_write_lock(oldmm)
    mmap_write_lock(mm)  # mmap_write_lock_nested(mm, SINGLE_DEPTH_NESTING)
    mm.total_vm = oldmm.total_vm
    mm.locked_vm = 0
    mm.brk, mm.start_brk = oldmm.brk, oldmm.start_brk
    mm.mmap_base = oldmm.mmap_base
    for mpnt in list(for_each_vma(VmaIterator(oldmm, 0))):
        vma_start_write(mpnt)
        flags = mpnt.vm_flags
        if flags & VM_DONTCOPY:
            mm.total_vm -= (mpnt.vm_end - mpnt.vm_start) >> 12
            continue
        tmp = vm_area_dup(mpnt, mm)
        tmp._f_vm_mm = mm
        dup_userfaultfd(tmp, uf)
        if flags & VM_WIPEONFORK:
            tmp._f_anon_vma = None
        else:
            anon_vma_fork(tmp, mpnt)
        tmp._f_vm_flags = tmp.raw("vm_flags") & ~VM_LOCKED_MASK
        f = tmp.raw("vm_file")
        if f is not None:
            i_mmap_lock_write(f.f_mapping)
            tmp._f_shared_rb = True
            f.f_mapping.i_mmap[tmp.serial] = tmp
            i_mmap_unlock_write(f.f_mapping)
        vma_mark_attached(tmp)
        mm.mm_mt.mas_store_range(tmp.raw("vm_start"), tmp.raw("vm_end"), tmp)
        tmp.published = True
        mm.map_count += 1
        ops = tmp.vm_ops
        if ops is not None and ops.open is not None:
            ops.open(tmp)
        if not tmp.vm_flags & VM_WIPEONFORK:
            copy_page_range(tmp, mpnt)
    mmap_write_unlock(mm)
    flush_tlb_mm(oldmm)
    mmap_write_unlock(oldmm)
    dup_userfaultfd_complete(uf)
    return 0


@kfunc
def dup_mm(oldmm: MmStruct, name: str) -> MmStruct:
    """``dup_mm``: a new mm, filled by ``dup_mmap``."""
    mm = MmStruct(name, oldmm.task_size)
    mm.kernel = oldmm.kernel
    mm.has_pinned.value = 0
    dup_mmap(mm, oldmm)
    return mm

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

The mm's lifetime lives here too, as in kernel/fork.c and
include/linux/sched/mm.h: ``mmgrab``/``mmdrop`` count references to the
struct (``mm_count``), ``mmget``/``mmget_not_zero``/``mmput`` count users of
the address space (``mm_users``); the last ``mmput`` runs ``__mmput``
(``exit_mmap``, then ``mmdrop``), the last ``mmdrop`` ``__mmdrop`` (the
struct is freed). Each count change is one visible RMW of its counter that
also reads the mm (``also``), so ``__mmdrop``'s free is ordered against
every later count operation and such an operation on a freed mm is a
use-after-free.
"""

from __future__ import annotations

from mmrace.engine import READ, RMW, ViolationError, current_execution, current_thread, visible
from mmrace.mm.fs_userfaultfd import dup_userfaultfd, dup_userfaultfd_complete
from mmrace.mm.internal import kfunc
from mmrace.mm.locks import kfree
from mmrace.mm.memory import copy_page_range
from mmrace.mm.mm_types import VM_DONTCOPY, VM_LOCKED_MASK, VM_WIPEONFORK, MmStruct
from mmrace.mm.mmap import exit_mmap
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


# --- mm lifetime (kernel/fork.c, include/linux/sched/mm.h) ----------------------


def _count(mm: MmStruct, counter: str, label: str, delta: int, unless_zero: bool) -> int:
    """One atomic update of ``mm->mm_users`` or ``mm->mm_count``: a visible
    RMW of the counter that also reads the mm. Returns the new value (the
    old one, unchanged, when *unless_zero* finds it zero)."""
    var = mm.mm_users if counter == "mm_users" else mm.mm_count
    ev = visible(var, RMW, label, also=((mm, READ),))
    mm.check_alive(label)
    old = var.value
    if unless_zero and old == 0:
        if ev is not None:
            ev.detail = "0: failed"
        return 0
    var.value = old + delta
    if ev is not None:
        ev.detail = f"{old} -> {var.value}"
    if var.value < 0:
        raise ViolationError("refcount", f"{counter} underflow on {mm.name}",
                             f"{label}: {mm.name}->{counter} went below zero")
    return int(var.value)


@kfunc
def mmgrab(mm: MmStruct) -> None:
    """``mmgrab``: keep the struct (not the address space) alive."""
    _count(mm, "mm_count", "atomic_inc(mm_count)", 1, False)


@kfunc
def mmdrop(mm: MmStruct) -> None:
    """``mmdrop``: the last reference frees the struct (``__mmdrop``)."""
    if _count(mm, "mm_count", "atomic_dec_and_test(mm_count)", -1, False) == 0:
        __mmdrop(mm)


@kfunc
def __mmdrop(mm: MmStruct) -> None:
    """``__mmdrop``: free the mm_struct. Left out: the lazy-TLB users
    (``cleanup_lazy_tlbs``), ``mm_free_pgd`` (the model's top-level table is
    part of the struct), ``check_mm``'s rss counters, the context id."""
    kfree(mm)


@kfunc
def mmget(mm: MmStruct) -> None:
    """``mmget``: one more user; the caller already holds one (or the
    struct is the caller's own ``current->mm``)."""
    _count(mm, "mm_users", "atomic_inc(mm_users)", 1, False)


@kfunc
def mmget_not_zero(mm: MmStruct) -> bool:
    """``mmget_not_zero``: take a user reference unless the address space is
    already being torn down (``atomic_inc_not_zero``). The caller keeps the
    struct alive (``mmgrab``); on a freed mm this is a use-after-free."""
    return _count(mm, "mm_users", "atomic_inc_not_zero(mm_users)", 1,
                  True) > 0


@kfunc
def __mmput(mm: MmStruct) -> None:
    """``__mmput``: the address space has no users left: ``exit_mmap``,
    then drop the users' collective ``mm_count`` reference. Left out:
    uprobes, aio, KSM and khugepaged exit hooks, the exe file, the mmlist."""
    th = current_thread()
    mm.teardown_tid = th.tid if th is not None else -1
    exit_mmap(mm)
    mm.teardown_tid = None
    mmdrop(mm)


def _last_put(mm: MmStruct) -> None:
    th = current_thread()
    who = th.name if th is not None else "set-up code"
    event = len(current_execution().events) - 1
    mm.users_gone = f"at event {event} (mmput by {who})" if th is not None else "in set-up"


@kfunc
def mmput(mm: MmStruct) -> None:
    """``mmput``: drop a user reference; the last one tears the address
    space down in the caller's context."""
    if _count(mm, "mm_users", "atomic_dec_and_test(mm_users)", -1, False) == 0:
        _last_put(mm)
        __mmput(mm)


@kfunc
def mmput_async(mm: MmStruct) -> None:
    """``mmput_async``: like ``mmput``, but the last one would queue
    ``__mmput`` to a workqueue (so a caller that may sleep waiting on the
    mm's owner cannot deadlock). Left out: the workqueue; the model runs
    ``__mmput`` in the caller, which only shifts where the teardown's
    operations appear in a trace."""
    if _count(mm, "mm_users", "atomic_dec_and_test(mm_users)", -1, False) == 0:
        _last_put(mm)
        __mmput(mm)


@kfunc
def exit_mm(mm: MmStruct) -> None:
    """kernel/exit.c ``exit_mm``: a task leaves its address space and drops
    its user reference (``mmput``). Left out: the mmap read lock around
    clearing ``current->mm`` (it synchronises with core dumps) and the lazy
    TLB switch."""
    mmput(mm)

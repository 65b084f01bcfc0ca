"""userfaultfd, the write-protect part (fs/userfaultfd.c, mm/userfaultfd.c,
include/linux/userfaultfd_k.h, include/uapi/linux/userfaultfd.h).

A :class:`UserfaultfdCtx` is the file a monitor gets from ``userfaultfd()``.
``UFFDIO_API`` is the handshake; ``UFFDIO_REGISTER`` marks VMAs
``VM_UFFD_MISSING``/``VM_UFFD_WP`` (splitting and merging them under the
mmap write lock); ``UFFDIO_WRITEPROTECT`` sets or clears the uffd-wp bit of
the PTEs with :func:`mwriteprotect_range` (``change_protection`` with
``MM_CP_UFFD_WP``/``MM_CP_UFFD_WP_RESOLVE`` under the mmap *read* lock, flush
deferred to the end of each VMA) and, when un-protecting, wakes the faults
waiting in the range. A write fault on a uffd-wp PTE (``do_wp_page``) and a
fault on a missing page of a ``VM_UFFD_MISSING`` VMA end in
:func:`handle_userfault`: the fault is queued as a message, the fault lock
is dropped, and the thread sleeps until the monitor resolves the range; the
fault then returns ``VM_FAULT_RETRY`` and is retried.

Left out (seams for a later issue): UFFDIO_COPY/ZEROPAGE/CONTINUE/MOVE,
UFFDIO_UNREGISTER, events (fork, remap, remove, unmap) and the
``mmap_changing`` protocol with ``map_changing_lock`` (the counter is read,
nothing raises it yet), minor faults, async wp (``UFFD_FEATURE_WP_ASYNC``),
``UFFD_FEATURE_SIGBUS``/``THREAD_ID``, uffd-wp markers on anonymous
memory (``UFFD_FEATURE_WP_UNPOPULATED``), hugetlb, shmem in MISSING or
MINOR mode (shmem registers for WP, with markers on its empty entries),
markers kept by truncation and MADV_DONTNEED of a present protected page
(``zap_install_uffd_wp_if_needed``), poll, non-blocking read, signals while
waiting.
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import Var
from mmrace.mm.internal import errno_error, kernel_config, kfunc
from mmrace.mm.locks import Spinlock, spin_lock, spin_unlock
from mmrace.mm.mm_types import (
    PAGE_MASK,
    PAGE_SIZE,
    VM_SHARED,
    VM_UFFD_MINOR,
    VM_UFFD_MISSING,
    VM_UFFD_WP,
    MmStruct,
    VmAreaStruct,
)
from mmrace.mm.mm_types import (
    UserfaultfdCtx as _UffdIdentity,
)
from mmrace.mm.mmap_lock import vma_start_write
from mmrace.mm.vma import vm_flags_reset, vma_set_page_prot
from mmrace.sync.completion import Completion, complete, wait_for_completion

EPERM, ENOENT, EAGAIN, ENOMEM, EFAULT, EEXIST, EINVAL = 1, 2, 11, 12, 14, 17, 22

UFFD_API = 0xAA
UFFDIO_REGISTER_MODE_MISSING = 1 << 0
UFFDIO_REGISTER_MODE_WP = 1 << 1
UFFDIO_REGISTER_MODE_MINOR = 1 << 2
UFFDIO_WRITEPROTECT_MODE_WP = 1 << 0
UFFDIO_WRITEPROTECT_MODE_DONTWAKE = 1 << 1
UFFD_EVENT_PAGEFAULT = 0x12
UFFD_PAGEFAULT_FLAG_WRITE = 1 << 0
UFFD_PAGEFAULT_FLAG_WP = 1 << 1
UFFD_FEATURE_PAGEFAULT_FLAG_WP = 1 << 0  # the model's only feature bit

__VM_UFFD_FLAGS = VM_UFFD_MISSING | VM_UFFD_WP | VM_UFFD_MINOR


class UffdMsg:
    """``struct uffd_msg`` for ``UFFD_EVENT_PAGEFAULT``."""

    __slots__ = ("event", "flags", "address")

    def __init__(self, address: int, flags: int) -> None:
        self.event = UFFD_EVENT_PAGEFAULT
        self.flags = flags
        self.address = address

    def __repr__(self) -> str:
        kind = "wp" if self.flags & UFFD_PAGEFAULT_FLAG_WP else "missing"
        w = " write" if self.flags & UFFD_PAGEFAULT_FLAG_WRITE else ""
        return f"uffd_msg(pagefault {kind}{w} at {self.address:#x})"


class UserfaultfdWaitQueue:
    """``struct userfaultfd_wait_queue``: one faulting thread's message and
    the completion it sleeps on."""

    __slots__ = ("msg", "done", "woken")

    def __init__(self, msg: UffdMsg, name: str) -> None:
        self.msg = msg
        self.done = Completion(name)
        self.woken = False


class UserfaultfdCtx(_UffdIdentity):
    """``struct userfaultfd_ctx``: the monitor's file. ``fault_pending_wqh``
    holds faults not yet read, ``fault_wqh`` faults read but not resolved;
    both lists are guarded by ``fault_pending_wqh.lock`` (:attr:`wqh_lock`).
    ``fd_wqh`` counts queued messages for blocking ``read()``."""

    def __init__(self, mm: MmStruct, name: str = "uffd") -> None:
        super().__init__(name)
        self.mm = mm
        self.features = 0
        self.api_done = False
        self.wqh_lock = Spinlock(f"{name}.fault_pending_wqh.lock")
        self.fault_pending_wqh: list[UserfaultfdWaitQueue] = []
        self.fault_wqh: list[UserfaultfdWaitQueue] = []
        self.fd_wqh = Completion(f"{name}.fd_wqh")
        self.mmap_changing = Var(0, f"{name}.mmap_changing")
        self.nr_faults = 0

    def __repr__(self) -> str:
        return self.name


# --- include/linux/userfaultfd_k.h -------------------------------------------------


def userfaultfd_wp(vma: VmAreaStruct) -> bool:
    """``userfaultfd_wp``: *vma* is registered for write-protect tracking."""
    return bool(vma.vm_flags & VM_UFFD_WP)


def userfaultfd_missing(vma: VmAreaStruct) -> bool:
    """``userfaultfd_missing``."""
    return bool(vma.vm_flags & VM_UFFD_MISSING)


def userfaultfd_pte_wp(vma: VmAreaStruct, pte: int) -> bool:
    """``userfaultfd_pte_wp``: a uffd-wp VMA and the PTE's uffd-wp bit."""
    from mmrace.mm.pgtable import pte_uffd_wp

    return userfaultfd_wp(vma) and pte_uffd_wp(pte)


def vma_can_userfault(vma: VmAreaStruct, vm_flags: int) -> bool:
    """``vma_can_userfault``: the model supports private and shared
    anonymous memory, and shmem for write-protect tracking (5.19: "mm/shmem:
    allow uffd wr-protect none pte for file-backed mem"), whose empty
    entries then keep uffd-wp markers."""
    if vma.vm_file is None and vma.vm_ops is None:
        return True
    return vma_is_shmem(vma) and not vm_flags & (VM_UFFD_MISSING | VM_UFFD_MINOR)


def vma_is_shmem(vma: VmAreaStruct) -> bool:
    """``vma_is_shmem``: ``vma->vm_ops == &shmem_vm_ops``."""
    ops = vma.vm_ops
    return ops is not None and ops.name == "shmem_vm_ops"


# --- the fault side (fs/userfaultfd.c) -----------------------------------------------


def userfaultfd_must_wait(vmf: Any, reason: int) -> bool:
    """``userfaultfd_must_wait``: with the fault lock still held and the
    message queued, re-read the PTE locklessly: wait only if the fault is
    still there (empty for MISSING; uffd-wp and not writable for WP). A
    resolve that came first means no wake-up will come, so do not sleep."""
    from mmrace.mm.pgtable import (
        pte_none,
        pte_offset_map,
        pte_uffd_wp,
        pte_unmap,
        pte_write,
        ptep_get_lockless,
    )

    if vmf.pmd is None:
        return True
    pm = pte_offset_map(vmf.pmd, vmf.pmd_index, vmf.address)
    if pm is None:
        return reason == VM_UFFD_MISSING
    pte = ptep_get_lockless(pm.table, pm.index)
    pte_unmap(pm)
    if reason == VM_UFFD_MISSING:
        return pte_none(pte)
    return pte_uffd_wp(pte) and not pte_write(pte)


def release_fault_lock(vmf: Any) -> None:
    """``release_fault_lock``: drop the VMA lock or the mmap read lock the
    fault holds."""
    from mmrace.mm.memory import FAULT_FLAG_VMA_LOCK
    from mmrace.mm.mmap_lock import mmap_read_unlock, vma_end_read

    if vmf.flags & FAULT_FLAG_VMA_LOCK:
        vma_end_read(vmf.vma)
    else:
        mmap_read_unlock(vmf.vma.vm_mm)


@kfunc
def handle_userfault(vmf: Any, reason: int) -> int:
    """``handle_userfault``: queue a page-fault message for the monitor
    (``fault_pending_wqh``, waking a blocked ``read()``), drop the fault
    lock, sleep until :func:`wake_userfault` resolves the range, and return
    ``VM_FAULT_RETRY`` so the fault is retried. Called with the PTL
    released. Without a registered context the fault gets SIGBUS."""
    from mmrace.mm.memory import FAULT_FLAG_WRITE, VM_FAULT_RETRY, VM_FAULT_SIGBUS

    vma = vmf.vma
    ctx = vma.vm_userfaultfd_ctx
    if not isinstance(ctx, UserfaultfdCtx) or not ctx.api_done:
        return VM_FAULT_SIGBUS
    flags = 0
    if vmf.flags & FAULT_FLAG_WRITE:
        flags |= UFFD_PAGEFAULT_FLAG_WRITE
    if reason == VM_UFFD_WP:
        flags |= UFFD_PAGEFAULT_FLAG_WP
    ctx.nr_faults += 1
    uwq = UserfaultfdWaitQueue(UffdMsg(vmf.address & PAGE_MASK, flags),
                               f"{ctx.name}.uwq{ctx.nr_faults}")
    spin_lock(ctx.wqh_lock)
    ctx.fault_pending_wqh.append(uwq)
    spin_unlock(ctx.wqh_lock)
    must_wait = userfaultfd_must_wait(vmf, reason)
    release_fault_lock(vmf)
    if must_wait:
        complete(ctx.fd_wqh)  # wake_up_poll(&ctx->fd_wqh, EPOLLIN)
        wait_for_completion(uwq.done)
    # The waker removed us from the queues; if nobody did, remove ourselves.
    spin_lock(ctx.wqh_lock)
    if uwq in ctx.fault_pending_wqh:
        ctx.fault_pending_wqh.remove(uwq)
    if uwq in ctx.fault_wqh:
        ctx.fault_wqh.remove(uwq)
    spin_unlock(ctx.wqh_lock)
    return VM_FAULT_RETRY


# --- the monitor side ------------------------------------------------------------------


@kfunc
def userfaultfd_ctx_read(ctx: UserfaultfdCtx) -> UffdMsg:
    """``userfaultfd_ctx_read`` (blocking ``read()``): wait for a queued
    fault, move it from ``fault_pending_wqh`` to ``fault_wqh`` and return
    its message."""
    if not ctx.api_done:
        raise errno_error(EINVAL, "userfaultfd read before UFFDIO_API")
    while True:
        wait_for_completion(ctx.fd_wqh)
        spin_lock(ctx.wqh_lock)
        if ctx.fault_pending_wqh:
            uwq = ctx.fault_pending_wqh.pop(0)
            ctx.fault_wqh.append(uwq)
            spin_unlock(ctx.wqh_lock)
            return uwq.msg
        spin_unlock(ctx.wqh_lock)  # already resolved and gone: wait again


@kfunc
def wake_userfault(ctx: UserfaultfdCtx, start: int, length: int) -> None:
    """``wake_userfault``: wake every fault (read or not) whose address is in
    ``[start, start + length)``."""
    end = start + length
    spin_lock(ctx.wqh_lock)
    woken: list[UserfaultfdWaitQueue] = []
    for q in (ctx.fault_pending_wqh, ctx.fault_wqh):
        for uwq in list(q):
            if start <= uwq.msg.address < end:
                q.remove(uwq)
                woken.append(uwq)
    for uwq in woken:
        uwq.woken = True
        complete(uwq.done)
    spin_unlock(ctx.wqh_lock)


@kfunc
def userfaultfd_api(ctx: UserfaultfdCtx, api: int = UFFD_API, features: int = 0) -> int:
    """``UFFDIO_API``: the handshake; returns the supported features."""
    if ctx.api_done:
        raise errno_error(EINVAL, "UFFDIO_API twice")
    if api != UFFD_API:
        raise errno_error(EINVAL, "bad UFFD_API")
    ctx.features = features | UFFD_FEATURE_PAGEFAULT_FLAG_WP
    ctx.api_done = True
    return ctx.features


@kfunc
def userfaultfd_register(ctx: UserfaultfdCtx, start: int, length: int, mode: int) -> None:
    """``UFFDIO_REGISTER``: under the mmap write lock, check that
    ``[start, start + length)`` is fully mapped by VMAs that can userfault
    and are not registered with another context, then give each part the
    ``VM_UFFD_*`` flags of *mode* and the context (``vma_modify_flags_uffd``:
    split or merge, then ``userfaultfd_set_vm_flags``, which also updates
    ``vm_page_prot``)."""
    from mmrace.mm.mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
    from mmrace.mm.vma import (
        VmaMergeStruct,
        find_vma,
        find_vma_prev,
        vm_flags_reset,
        vma_modify,
        vma_set_page_prot,
    )

    if not ctx.api_done:
        raise errno_error(EINVAL, "UFFDIO_REGISTER before UFFDIO_API")
    if not mode or mode & ~(UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP):
        raise errno_error(EINVAL, "bad register mode")
    if start & ~PAGE_MASK or length & ~PAGE_MASK or not length:
        raise errno_error(EINVAL, "unaligned range")
    vm_flags = 0
    if mode & UFFDIO_REGISTER_MODE_MISSING:
        vm_flags |= VM_UFFD_MISSING
    if mode & UFFDIO_REGISTER_MODE_WP:
        vm_flags |= VM_UFFD_WP
    mm = ctx.mm
    end = start + length
    mmap_write_lock(mm)
    try:
        addr = start
        while addr < end:  # check first, change nothing on failure
            vma = find_vma(mm, addr)
            if vma is None or vma.vm_start > addr:
                raise errno_error(EINVAL, f"hole at {addr:#x}")
            if not vma_can_userfault(vma, vm_flags):
                raise errno_error(EINVAL, f"{vma!r} cannot userfault")
            cur = vma.vm_userfaultfd_ctx
            if cur is not None and cur is not ctx:
                raise errno_error(EBUSY_, "registered with another userfaultfd")
            addr = vma.vm_end
        addr = start
        while addr < end:
            vma = find_vma(mm, addr)
            assert vma is not None
            _, prev = find_vma_prev(mm, vma.vm_start)
            if addr > vma.vm_start:
                prev = vma
            new_flags = (vma.vm_flags & ~__VM_UFFD_FLAGS) | vm_flags
            vmg = VmaMergeStruct.from_vma(mm, prev, vma, addr, min(end, vma.vm_end))
            vmg.flags = new_flags
            vmg.uffd_ctx = ctx
            vma = vma_modify(vmg)
            vma_start_write(vma)
            vm_flags_reset(vma, new_flags)
            vma.vm_userfaultfd_ctx = ctx
            vma_set_page_prot(vma)
            addr = vma.vm_end
    finally:
        mmap_write_unlock(mm)


EBUSY_ = 16


@kfunc
def uffd_wp_range(vma: VmAreaStruct, start: int, length: int, enable_wp: bool) -> int:
    """``uffd_wp_range``: ``change_protection`` of one VMA's part with
    ``MM_CP_UFFD_WP`` (protect) or ``MM_CP_UFFD_WP_RESOLVE`` (+
    ``MM_CP_TRY_CHANGE_WRITABLE`` where the VMA allows manual write
    upgrades), in its own ``mmu_gather``: the flush comes at
    ``tlb_finish_mmu``, after every PTE of the part was changed."""
    from mmrace.mm.mmu_gather import tlb_finish_mmu, tlb_gather_mmu
    from mmrace.mm.mprotect import (
        MM_CP_TRY_CHANGE_WRITABLE,
        MM_CP_UFFD_WP,
        MM_CP_UFFD_WP_RESOLVE,
        change_protection,
        vma_wants_manual_pte_write_upgrade,
    )

    cp = MM_CP_UFFD_WP if enable_wp else MM_CP_UFFD_WP_RESOLVE
    if not enable_wp and vma_wants_manual_pte_write_upgrade(vma):
        cp |= MM_CP_TRY_CHANGE_WRITABLE
    tlb = tlb_gather_mmu(vma.vm_mm)
    ret = change_protection(tlb, vma, start, start + length, cp)
    tlb_finish_mmu(tlb)
    return ret


@kfunc
def mwriteprotect_range(ctx: UserfaultfdCtx, start: int, length: int, enable_wp: bool) -> int:
    """``mwriteprotect_range``: under the mmap *read* lock (as today and in
    5.10), refuse while ``mmap_changing``; every VMA of the range must be
    registered for uffd-wp (else ENOENT); :func:`uffd_wp_range` each part.
    With the ``uffd-wp-mmap-write-lock`` proposal, protecting takes the mmap
    lock for write instead."""
    from mmrace.mm.mmap_lock import (
        mmap_read_lock,
        mmap_read_unlock,
        mmap_write_lock,
        mmap_write_unlock,
    )
    from mmrace.mm.vma import find_vma

    mm = ctx.mm
    end = start + length
    write = enable_wp and kernel_config(mm).has("uffd-wp-mmap-write-lock")
    if write:
        mmap_write_lock(mm)
    else:
        mmap_read_lock(mm)
    err = 0
    try:
        if ctx.mmap_changing.load():
            return -EAGAIN
        err = -ENOENT
        addr = start
        while addr < end:
            vma = find_vma(mm, addr)
            if vma is None or vma.vm_start >= end:
                break
            if not userfaultfd_wp(vma):
                err = -ENOENT
                break
            s = max(vma.vm_start, start)
            e = min(vma.vm_end, end)
            uffd_wp_range(vma, s, e - s, enable_wp)
            err = 0
            addr = e
    finally:
        if write:
            mmap_write_unlock(mm)
        else:
            mmap_read_unlock(mm)
    return err


@kfunc
def userfaultfd_writeprotect(ctx: UserfaultfdCtx, start: int, length: int, mode: int) -> None:
    """``UFFDIO_WRITEPROTECT``: protect (``MODE_WP``) or un-protect the
    range, then, when un-protecting without ``MODE_DONTWAKE``, wake the
    faults waiting in it. Raises OSError."""
    if not ctx.api_done:
        raise errno_error(EINVAL, "UFFDIO_WRITEPROTECT before UFFDIO_API")
    if mode & ~(UFFDIO_WRITEPROTECT_MODE_WP | UFFDIO_WRITEPROTECT_MODE_DONTWAKE):
        raise errno_error(EINVAL, "bad writeprotect mode")
    enable_wp = bool(mode & UFFDIO_WRITEPROTECT_MODE_WP)
    if enable_wp and mode & UFFDIO_WRITEPROTECT_MODE_DONTWAKE:
        raise errno_error(EINVAL, "MODE_WP with MODE_DONTWAKE")
    if start & ~PAGE_MASK or length & ~PAGE_MASK or not length:
        raise errno_error(EINVAL, "unaligned range")
    ret = mwriteprotect_range(ctx, start, length, enable_wp)
    if ret < 0:
        raise errno_error(-ret, "UFFDIO_WRITEPROTECT")
    if not enable_wp and not mode & UFFDIO_WRITEPROTECT_MODE_DONTWAKE:
        wake_userfault(ctx, start, length)


# --- mremap (the REMAP event is for the events issue) -------------------------------


@kfunc
def mremap_userfaultfd_prep(vma: VmAreaStruct, vm_ctx: Any) -> None:
    """``mremap_userfaultfd_prep``: called by mremap for the VMA the pages
    moved into, with the mmap lock held for write. A context with
    ``UFFD_FEATURE_EVENT_REMAP`` would be recorded in *vm_ctx* (a
    ``vm_userfaultfd_ctx`` holder with a ``ctx`` attribute), its
    ``mmap_changing`` raised and a REMAP event queued by
    :func:`mremap_userfaultfd_complete`. The model's ``UFFDIO_API`` offers
    no such feature, so, as the kernel does without it, the new VMA loses
    its context and its ``VM_UFFD_*`` flags (``userfaultfd_reset_ctx``; a
    shared uffd-wp VMA gets its ``vm_page_prot`` back)."""
    if vma.vm_userfaultfd_ctx is None:
        return
    vma_start_write(vma)
    vma.vm_userfaultfd_ctx = None
    flags = vma.vm_flags
    vm_flags_reset(vma, flags & ~__VM_UFFD_FLAGS)
    if flags & VM_SHARED and flags & VM_UFFD_WP:
        vma_set_page_prot(vma)


@kfunc
def mremap_userfaultfd_complete(vm_ctx: Any, from_: int, to: int, length: int) -> None:
    """``mremap_userfaultfd_complete``: after mremap dropped the mmap lock,
    deliver the REMAP event ``from_ -> to`` to the context recorded by
    :func:`mremap_userfaultfd_prep` (none in the model yet: no context
    asks for REMAP events, so there is nothing to deliver)."""
    assert vm_ctx.ctx is None, "UFFD_EVENT_REMAP is not modelled: no context records it"


def new_userfaultfd(mm: MmStruct, name: str = "uffd") -> UserfaultfdCtx:
    """``userfaultfd(2)``: a new context for *mm* (API handshake not done)."""
    return UserfaultfdCtx(mm, name)


__all__ = [
    "UFFDIO_REGISTER_MODE_MISSING",
    "UFFDIO_REGISTER_MODE_WP",
    "UffdMsg",
    "UserfaultfdCtx",
    "handle_userfault",
    "mwriteprotect_range",
    "userfaultfd_wp",
]

_ = (PAGE_SIZE, EPERM, ENOMEM, EFAULT, EEXIST)

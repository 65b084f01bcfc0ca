"""userfaultfd, the monitor's file (fs/userfaultfd.c): page faults handed to
the monitor, the non-cooperative events, ``read()``, wake-ups and the
``UFFDIO_API`` handshake.

This module holds the parts of fs/userfaultfd.c that core mm calls into --
``handle_userfault`` from the fault path, ``dup_userfaultfd`` from fork,
``mremap_userfaultfd_prep``/``_complete`` from mremap,
``userfaultfd_unmap_prep``/``_complete`` from munmap, ``userfaultfd_remove``
from ``MADV_DONTNEED`` -- so that those callers (``vma``, ``fork``,
``madvise``, ``mmap``) can import it without importing the VMA code
themselves import. The ioctls that fill, move, protect and register
(which need the VMA and page-table code) are in :mod:`mmrace.mm.userfaultfd`,
next to the mm/userfaultfd.c functions they call.

**Events.** Each event first raises ``mmap_changing`` (the era's way:
:mod:`mmrace.mm.userfaultfd_k`) under the lock that makes the change atomic
for the monitor (fork, mremap and munmap: ``mmap_lock`` for write;
``userfaultfd_remove``: ``mmap_lock`` for read), then, with the change done
and the locks dropped, queues its message on ``event_wqh`` and sleeps
(``userfaultfd_event_wait_completion``) until the monitor has read it; it
then lowers ``mmap_changing``. ``read()`` returns pending page faults first,
then events, each queue first in first out, as the kernel does.

**The monitor-view oracle.** A context whose monitor stated
``expect_consistent_view()`` reports, through the machine's hooks
(:mod:`mmrace.arch.hooks`), every event raised and read and every fill or
move ioctl's start and effect; :mod:`mmrace.oracles.userfaultfd` turns a
crossing into a ``uffd-view`` violation.

Left out: ``poll()`` for several readers (:func:`userfaultfd_poll_wait` is a
single reader's), non-blocking reads, signals while waiting, the context's
refcount, ``UFFD_FEATURE_SIGBUS``/``THREAD_ID``, hugetlb, fork failure
(``dup_userfaultfd_fail``).
"""

from __future__ import annotations

from typing import Any

from mmrace.arch.hooks import emit, has_hooks
from mmrace.engine import READ, WAIT, WRITE, visible
from mmrace.mm.internal import errno_error, kfunc
from mmrace.mm.locks import spin_lock, spin_unlock
from mmrace.mm.mm_types import (
    FAULT_FLAG_VMA_LOCK,
    FAULT_FLAG_WRITE,
    PAGE_MASK,
    VM_FAULT_NOPAGE,
    VM_FAULT_RETRY,
    VM_FAULT_SIGBUS,
    VM_UFFD_MINOR,
    VM_UFFD_MISSING,
    VM_UFFD_WP,
    MmStruct,
    VmAreaStruct,
)
from mmrace.mm.mmap_lock import (
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_unlock,
    vma_end_read,
    vma_start_write,
)
from mmrace.mm.pgtable import (
    pte_none,
    pte_offset_map,
    pte_uffd_wp,
    pte_unmap,
    pte_write,
    ptep_get_lockless,
)
from mmrace.mm.userfaultfd_k import (
    EINVAL,
    UFFD_API,
    UFFD_EVENT_FORK,
    UFFD_EVENT_PAGEFAULT,
    UFFD_EVENT_REMAP,
    UFFD_EVENT_REMOVE,
    UFFD_EVENT_UNMAP,
    UFFD_FEATURE_EVENT_FORK,
    UFFD_FEATURE_EVENT_REMAP,
    UFFD_FEATURE_EVENT_REMOVE,
    UFFD_FEATURE_EVENT_UNMAP,
    UFFD_FEATURE_MINOR_SHMEM,
    UFFD_FEATURE_MOVE,
    UFFD_FEATURES_KNOWN,
    UFFD_FEATURES_MODELLED,
    UFFD_PAGEFAULT_FLAG_MINOR,
    UFFD_PAGEFAULT_FLAG_WP,
    UFFD_PAGEFAULT_FLAG_WRITE,
    VM_UFFD_FLAGS,
    UffdMsg,
    UserfaultfdCtx,
    UserfaultfdForkCtx,
    UserfaultfdUnmapCtx,
    UserfaultfdWaitQueue,
    VmUserfaultfdCtx,
    mmap_changing_dec,
    mmap_changing_inc,
    uffd_has,
    vma_uffd_ctx,
)
from mmrace.sync.completion import complete, wait_for_completion

# --- the monitor-view hooks (see mmrace.oracles.userfaultfd) -------------------------


_VIEW_KIND = {"uffd-event-raise": WRITE, "uffd-event-read": WRITE,
              "uffd-ioctl-begin": READ, "uffd-ioctl-effect": READ}


def uffd_view_emit(ctx: UserfaultfdCtx, fact: str, *args: Any,
                   addrs: tuple[int, ...] = ()) -> None:
    """Report *fact* to the monitor-view oracle when the monitor of *ctx*
    stated that it expects a consistent view: one marker operation on
    ``ctx.view`` (events WRITE it, ioctls READ it) inside which the oracle's
    hook runs -- once per address of *addrs* for an effect. The oracle
    relates events and ioctls that touch no common object (an event's
    counter raise, an ioctl's PTE write); the markers make exactly those
    pairs dependent, so that DPOR tries both of their orders. Each marker
    sits on the side of its operation that keeps the oracle from ever
    claiming an order the operations did not have: the raise marker after
    the raise, the read marker before the dequeue, the begin marker after
    the ``mmap_changing`` check, the effect marker before the PTE write."""
    if not ctx.view_expected:
        return
    visible(ctx.view, _VIEW_KIND[fact], fact)
    if has_hooks(fact):
        if fact == "uffd-ioctl-effect":
            for addr in addrs:
                emit(fact, ctx, *args, addr)
        else:
            emit(fact, ctx, *args)


class UffdIoctl:
    """One fill or move ioctl in flight, as the monitor-view oracle follows
    it: *name* (``UFFDIO_COPY``, ...), when it last passed its
    ``mmap_changing`` check (``began_at``, set by the oracle)."""

    __slots__ = ("name", "began_at")

    def __init__(self, name: str) -> None:
        self.name = name
        self.began_at = -1


# --- the fault side -----------------------------------------------------------------------


def userfaultfd_must_wait(vmf: Any, reason: int) -> bool:
    """``userfaultfd_must_wait``: with the fault lock still held and the
    message queued, re-read the PTE locklessly: wait only if the fault is
    still there (empty for MISSING and MINOR; uffd-wp and not writable for
    WP). A resolve that came first means no wake-up will come."""
    if vmf.pmd is None:
        return True
    pm = pte_offset_map(vmf.pmd, vmf.pmd_index, vmf.address)
    if pm is None:
        return reason != VM_UFFD_WP
    pte = ptep_get_lockless(pm.table, pm.index)
    pte_unmap(pm)
    if reason != VM_UFFD_WP:
        return pte_none(pte)
    return pte_uffd_wp(pte) and not pte_write(pte)


def release_fault_lock(vmf: Any) -> None:
    """``release_fault_lock``: drop the VMA lock or the mmap read lock the
    fault holds."""
    if vmf.flags & FAULT_FLAG_VMA_LOCK:
        vma_end_read(vmf.vma)
    else:
        mmap_read_unlock(vmf.vma.vm_mm)


@kfunc
def handle_userfault(vmf: Any, reason: int) -> int:
    """``handle_userfault``: queue a page-fault message for the monitor
    (``fault_pending_wqh``, waking a blocked ``read()``), drop the fault
    lock, sleep until ``wake_userfault`` resolves the range, and return
    ``VM_FAULT_RETRY`` so the fault is retried. Called with the PTL
    released. Without a registered context the fault gets SIGBUS; a
    released (closed) context gets ``VM_FAULT_NOPAGE`` (the fault retries
    and finds the VMA unregistered)."""
    vma = vmf.vma
    ctx = vma_uffd_ctx(vma)
    if ctx is None or not ctx.api_done:
        return VM_FAULT_SIGBUS
    if ctx.released.load():
        return VM_FAULT_NOPAGE
    flags = 0
    if vmf.flags & FAULT_FLAG_WRITE:
        flags |= UFFD_PAGEFAULT_FLAG_WRITE
    if reason == VM_UFFD_WP:
        flags |= UFFD_PAGEFAULT_FLAG_WP
    if reason == VM_UFFD_MINOR:
        flags |= UFFD_PAGEFAULT_FLAG_MINOR
    ctx.nr_faults += 1
    uwq = UserfaultfdWaitQueue(UffdMsg(UFFD_EVENT_PAGEFAULT, vmf.address & PAGE_MASK, flags),
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


# --- events ---------------------------------------------------------------------------------


def _new_event(ctx: UserfaultfdCtx, event: int) -> UserfaultfdWaitQueue:
    """The message and wait-queue entry of an event about to be raised (the
    kernel's ``ewq`` on the waiter's stack, made at the raise so that the
    oracle can follow it from there)."""
    ctx.nr_events += 1
    return UserfaultfdWaitQueue(UffdMsg(event), f"{ctx.name}.ewq{ctx.nr_events}")


def uffd_event_raise(ctx: UserfaultfdCtx, ewq: UserfaultfdWaitQueue, *,
                     write_lock: bool = True) -> None:
    """Raise ``mmap_changing`` for *ewq*'s event (the era's way) and tell
    the oracle the event exists from now on."""
    mmap_changing_inc(ctx, write_lock=write_lock)
    uffd_view_emit(ctx, "uffd-event-raise", ewq)


@kfunc
def userfaultfd_event_wait_completion(ctx: UserfaultfdCtx, ewq: UserfaultfdWaitQueue) -> None:
    """``userfaultfd_event_wait_completion``: queue the event on
    ``event_wqh``, wake a blocked ``read()``, and sleep until the monitor has
    read it (or closed the file); if a FORK event was not delivered, undo
    the child's registration (``userfaultfd_release_new``). Then lower
    ``mmap_changing``."""
    spin_lock(ctx.event_lock)
    released = ctx.closed
    if not released:
        ctx.event_wqh.append(ewq)
    spin_unlock(ctx.event_lock)
    if not released:
        complete(ctx.fd_wqh)  # wake_up_poll(&ctx->fd_wqh, EPOLLIN)
        wait_for_completion(ewq.done)  # TASK_KILLABLE until userfaultfd_event_complete
    if ewq.msg.event == UFFD_EVENT_FORK and not ewq.woken:
        new = ewq.msg.ufd
        assert isinstance(new, UserfaultfdCtx)
        userfaultfd_release_new(new)
    mmap_changing_dec(ctx)


def userfaultfd_event_complete(ctx: UserfaultfdCtx, ewq: UserfaultfdWaitQueue) -> None:
    """``userfaultfd_event_complete``: the monitor read the event (called
    with ``event_wqh.lock`` held): take it off the queue, wake its waiter."""
    ctx.event_wqh.remove(ewq)
    ewq.woken = True
    complete(ewq.done)


@kfunc
def userfaultfd_release_new(ctx: UserfaultfdCtx) -> None:
    """``userfaultfd_release_new``: the FORK event was never delivered: the
    child's VMAs, which point to the new context, are unregistered (under
    the child's mmap write lock; the tree is read as a debugger would,
    since that lock excludes every writer of it)."""
    mm = ctx.mm
    mmap_write_lock(mm)
    for _s, _e, vma in mm.mm_mt.entries():
        if vma.raw("vm_userfaultfd_ctx") is ctx:
            userfaultfd_reset_ctx(vma)
    mmap_write_unlock(mm)


def userfaultfd_reset_ctx(vma: VmAreaStruct) -> None:
    """``userfaultfd_reset_ctx`` (``userfaultfd_set_ctx(vma, NULL, 0)``):
    write-lock the VMA, drop its context and its ``VM_UFFD_*`` flags. A VMA
    being built (fork's copy) is not visible yet and is written directly."""
    if not vma.published:
        vma._f_vm_userfaultfd_ctx = None
        vma._f_vm_flags = vma.raw("vm_flags") & ~VM_UFFD_FLAGS
        return
    vma_start_write(vma)
    vma.vm_userfaultfd_ctx = None
    vma.vm_flags_ = vma.vm_flags & ~VM_UFFD_FLAGS  # vm_flags_reset


@kfunc
def dup_userfaultfd(vma: VmAreaStruct, fcs: list[UserfaultfdForkCtx]) -> int:
    """``dup_userfaultfd`` (fork, for the child's copy *vma* of a parent
    VMA, under both mmap write locks): without ``UFFD_FEATURE_EVENT_FORK``
    the child's VMA loses the context and its ``VM_UFFD_*`` flags; with it,
    the first VMA of each parent context makes a new context for the child
    (same features) and raises the parent's ``mmap_changing`` for the FORK
    event that :func:`dup_userfaultfd_complete` sends. Returns 0."""
    octx = vma.raw("vm_userfaultfd_ctx")
    if not isinstance(octx, UserfaultfdCtx):
        return 0
    if not octx.features & UFFD_FEATURE_EVENT_FORK:
        userfaultfd_reset_ctx(vma)
        return 0
    ctx = None
    for fctx in fcs:
        if fctx.orig is octx:
            ctx = fctx.new
            break
    if ctx is None:
        mm = vma.raw("vm_mm")
        ctx = UserfaultfdCtx(mm, f"{octx.name}.fork{octx.nr_events + 1}")
        ctx.features = octx.features
        ctx.api_done = True
        ctx.view_expected = octx.view_expected
        fctx = UserfaultfdForkCtx(octx, ctx)
        fctx.ewq = _new_event(octx, UFFD_EVENT_FORK)
        fctx.ewq.msg.ufd = ctx
        uffd_event_raise(octx, fctx.ewq)
        fcs.append(fctx)
    vma._f_vm_userfaultfd_ctx = ctx
    return 0


@kfunc
def dup_userfaultfd_complete(fcs: list[UserfaultfdForkCtx]) -> None:
    """``dup_userfaultfd_complete`` (end of ``dup_mmap``, locks dropped):
    send each FORK event to the parent's monitor and wait until it is read."""
    for fctx in fcs:
        assert fctx.ewq is not None
        userfaultfd_event_wait_completion(fctx.orig, fctx.ewq)
    fcs.clear()


@kfunc
def mremap_userfaultfd_prep(vma: VmAreaStruct, vm_ctx: VmUserfaultfdCtx) -> None:
    """``mremap_userfaultfd_prep`` (mremap moving *vma*'s pages, under the
    mmap write lock): with ``UFFD_FEATURE_EVENT_REMAP`` remember the context
    in *vm_ctx* and raise its ``mmap_changing``; without it the VMA loses
    its registration."""
    ctx = vma_uffd_ctx(vma)
    if ctx is None:
        return
    if ctx.features & UFFD_FEATURE_EVENT_REMAP:
        vm_ctx.ctx = ctx
        ewq = _new_event(ctx, UFFD_EVENT_REMAP)
        # Until complete() knows from/to, the event covers the whole space.
        ewq.msg.from_, ewq.msg.len = 0, ctx.mm.task_size
        vm_ctx.ewq = ewq
        uffd_event_raise(ctx, ewq)
    else:
        userfaultfd_reset_ctx(vma)


@kfunc
def mremap_userfaultfd_complete(vm_ctx: VmUserfaultfdCtx, from_: int, to: int,
                                len_: int) -> None:
    """``mremap_userfaultfd_complete`` (mmap lock dropped): send the REMAP
    event (``from``, ``to``, ``len``) and wait until it is read."""
    ctx = vm_ctx.ctx
    if ctx is None:
        return
    ewq = vm_ctx.ewq if vm_ctx.ewq is not None else _new_event(ctx, UFFD_EVENT_REMAP)
    vm_ctx.ewq = None
    ewq.msg.from_, ewq.msg.to, ewq.msg.len = from_, to, len_
    userfaultfd_event_wait_completion(ctx, ewq)


@kfunc
def mremap_userfaultfd_fail(vm_ctx: VmUserfaultfdCtx) -> None:
    """``mremap_userfaultfd_fail``: the move failed after the prep: no event
    is sent; ``mmap_changing`` is lowered again, as upstream 0496a59745b0
    (2026, Mike Rapoport, "Fixes: df2cc96e7701") does; before it the
    counter stayed raised and every later fill ioctl failed with
    ``-EAGAIN``. Not a switch: no scenario makes mremap fail after the
    prep."""
    ctx = vm_ctx.ctx
    if ctx is None:
        return
    vm_ctx.ewq = None
    mmap_changing_dec(ctx)


@kfunc
def userfaultfd_remove(vma: VmAreaStruct, start: int, end: int) -> bool:
    """``userfaultfd_remove`` (``MADV_DONTNEED``, called with the mmap lock
    held for *read*): with ``UFFD_FEATURE_EVENT_REMOVE`` raise
    ``mmap_changing`` -- from 6.9 under ``map_changing_lock`` held for
    write, which waits for every fill or move ioctl between its check and
    its effect; with the seed-001 proposal ``uffd-remove-increment-only``
    without it -- drop the mmap lock, send the REMOVE event for
    ``[start, end)`` and wait until the monitor read it. Returns False
    when it dropped the mmap lock (the caller looks the VMA up again)."""
    mm = vma.vm_mm
    ctx = vma_uffd_ctx(vma)
    if ctx is None or not ctx.features & UFFD_FEATURE_EVENT_REMOVE:
        return True
    ewq = _new_event(ctx, UFFD_EVENT_REMOVE)
    ewq.msg.start, ewq.msg.end = start, end
    uffd_event_raise(ctx, ewq,
                     write_lock=not uffd_has(ctx.mm, "uffd-remove-increment-only"))
    mmap_read_unlock(mm)
    userfaultfd_event_wait_completion(ctx, ewq)
    return False


@kfunc
def userfaultfd_unmap_prep(vma: VmAreaStruct, start: int, end: int,
                           unmaps: list[UserfaultfdUnmapCtx]) -> int:
    """``userfaultfd_unmap_prep`` (munmap, for each VMA in ``[start, end)``,
    under the mmap write lock): with ``UFFD_FEATURE_EVENT_UNMAP`` raise the
    context's ``mmap_changing`` once per context and range and remember the
    UNMAP event. Returns 0."""
    ctx = vma_uffd_ctx(vma)
    if ctx is None or not ctx.features & UFFD_FEATURE_EVENT_UNMAP:
        return 0
    for u in unmaps:  # has_unmap_ctx
        if u.ctx is ctx and u.start == start and u.end == end:
            return 0
    u = UserfaultfdUnmapCtx(ctx, start, end)
    u.ewq = _new_event(ctx, UFFD_EVENT_UNMAP)
    u.ewq.msg.start, u.ewq.msg.end = start, end
    uffd_event_raise(ctx, u.ewq)
    unmaps.append(u)
    return 0


@kfunc
def userfaultfd_unmap_complete(mm: MmStruct, unmaps: list[UserfaultfdUnmapCtx]) -> None:
    """``userfaultfd_unmap_complete`` (munmap, mmap lock dropped): send each
    UNMAP event and wait until it is read."""
    for u in unmaps:
        assert u.ewq is not None
        userfaultfd_event_wait_completion(u.ctx, u.ewq)
    unmaps.clear()


# --- the monitor's side: read, poll, wake -----------------------------------------------------


@kfunc
def userfaultfd_ctx_read(ctx: UserfaultfdCtx) -> UffdMsg:
    """``userfaultfd_ctx_read`` (a blocking ``read()`` of one message):
    wait for a queued message; a page fault (first in, first out) moves from
    ``fault_pending_wqh`` to ``fault_wqh`` and its message is returned;
    otherwise the oldest event: reading it completes it
    (``userfaultfd_event_complete``), which lets the thread that raised it
    go on. A FORK message carries the child's new context (``ufd``).
    Returns a copy of the message, as ``copy_to_user`` does."""
    if not ctx.api_done:
        raise errno_error(EINVAL, "userfaultfd read before UFFDIO_API")
    while True:
        wait_for_completion(ctx.fd_wqh)
        spin_lock(ctx.wqh_lock)
        if ctx.fault_pending_wqh:
            uwq = ctx.fault_pending_wqh.pop(0)
            ctx.fault_wqh.append(uwq)
            spin_unlock(ctx.wqh_lock)
            return uwq.msg.copy()
        spin_unlock(ctx.wqh_lock)
        spin_lock(ctx.event_lock)
        if ctx.event_wqh:
            ewq = ctx.event_wqh[0]
            uffd_view_emit(ctx, "uffd-event-read", ewq)
            # resolve_userfault_fork makes the child's file descriptor here;
            # the user layer wraps msg.ufd, nothing another thread sees.
            userfaultfd_event_complete(ctx, ewq)
            spin_unlock(ctx.event_lock)
            return ewq.msg.copy()
        spin_unlock(ctx.event_lock)  # a fault resolved before it was read: wait again


@kfunc
def userfaultfd_poll_wait(ctx: UserfaultfdCtx) -> None:
    """``poll()`` on the file until ``EPOLLIN`` (a page fault or an event is
    pending), without reading it: one visible WAIT on ``fd_wqh``, ordered
    after the wake-up that queued the message. Only for a monitor with one
    reading thread: another reader could take the message again, which a
    wait here cannot see."""
    if not ctx.api_done:
        raise errno_error(EINVAL, "poll before UFFDIO_API")
    visible(ctx.fd_wqh, WAIT, "userfaultfd_poll (EPOLLIN)",
            guard=lambda: bool(ctx.fault_pending_wqh or ctx.event_wqh))


@kfunc
def wake_userfault(ctx: UserfaultfdCtx, start: int, length: int) -> None:
    """``wake_userfault``/``__wake_userfault``: wake every fault (read or
    not) whose address is in ``[start, start + length)``; *length* 0 wakes
    all (``userfaultfd_release``)."""
    end = start + length
    spin_lock(ctx.wqh_lock)
    woken: list[UserfaultfdWaitQueue] = []
    for q in (ctx.fault_pending_wqh, ctx.fault_wqh):
        for uwq in list(q):
            if not length or start <= uwq.msg.address < end:
                q.remove(uwq)
                woken.append(uwq)
    for uwq in woken:
        uwq.woken = True
        complete(uwq.done)
    spin_unlock(ctx.wqh_lock)


@kfunc
def userfaultfd_release_wake(ctx: UserfaultfdCtx) -> None:
    """The wake-ups of ``userfaultfd_release`` (after ``released`` is set
    and every VMA unregistered): wake every waiting fault, and every event
    waiter, which then finds its event undelivered."""
    wake_userfault(ctx, 0, 0)
    spin_lock(ctx.event_lock)
    ctx.closed = True
    pending = list(ctx.event_wqh)
    ctx.event_wqh.clear()
    for ewq in pending:
        complete(ewq.done)  # wake_up_all(&ctx->event_wqh): not read
    spin_unlock(ctx.event_lock)


# --- the handshake ------------------------------------------------------------------------


def uffd_api_available_features(mm: MmStruct) -> int:
    """``uffd_api_available_features`` of the model and release: the
    features the model implements, less ``UFFD_FEATURE_MOVE`` before 6.8
    and ``MINOR_SHMEM`` before 5.14."""
    f = UFFD_FEATURES_MODELLED
    if not uffd_has(mm, "uffdio-move"):
        f &= ~UFFD_FEATURE_MOVE
    if not uffd_has(mm, "uffdio-continue"):
        f &= ~UFFD_FEATURE_MINOR_SHMEM
    return f


@kfunc
def userfaultfd_api(ctx: UserfaultfdCtx, api: int = UFFD_API, features: int = 0) -> int:
    """``UFFDIO_API``: the handshake; enables the requested *features* and
    returns every feature the kernel has. EINVAL for a bad API, a second
    handshake, or a feature this release does not have. A feature the
    kernel has but the model does not implement (SIGBUS, THREAD_ID,
    WP_ASYNC, ...) is refused with NotImplementedError, never silently."""
    if api != UFFD_API:
        raise errno_error(EINVAL, "bad UFFD_API")
    if ctx.api_done:
        raise errno_error(EINVAL, "UFFDIO_API twice")
    available = uffd_api_available_features(ctx.mm)
    if features & ~UFFD_FEATURES_KNOWN:
        raise errno_error(EINVAL, f"unknown userfaultfd features {features:#x}")
    unmodelled = features & UFFD_FEATURES_KNOWN & ~UFFD_FEATURES_MODELLED
    if unmodelled:
        raise NotImplementedError(f"userfaultfd features {unmodelled:#x} are not modelled")
    if features & ~available:
        raise errno_error(EINVAL, f"features {features & ~available:#x} not in this release")
    ctx.features = features
    ctx.api_done = True
    return available


def new_userfaultfd(mm: MmStruct, name: str = "uffd") -> UserfaultfdCtx:
    """``userfaultfd(2)``: a new context for *mm* (API handshake not done)."""
    return UserfaultfdCtx(mm, name)


__all__ = [
    "UffdIoctl",
    "dup_userfaultfd",
    "dup_userfaultfd_complete",
    "handle_userfault",
    "mremap_userfaultfd_complete",
    "mremap_userfaultfd_prep",
    "new_userfaultfd",
    "userfaultfd_api",
    "userfaultfd_ctx_read",
    "userfaultfd_remove",
    "userfaultfd_unmap_complete",
    "userfaultfd_unmap_prep",
    "wake_userfault",
]

_ = (VM_UFFD_MISSING, UFFD_EVENT_REMAP, UFFD_EVENT_UNMAP)

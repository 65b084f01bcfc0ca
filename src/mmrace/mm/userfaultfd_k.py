"""userfaultfd's shared definitions (include/linux/userfaultfd_k.h, the uapi
of include/uapi/linux/userfaultfd.h, and ``struct userfaultfd_ctx``, which
the header holds since 6.9).

The context is the monitor's file: the fault queues (``fault_pending_wqh``,
``fault_wqh``), the **event queue** (``event_wqh``), ``fd_wqh`` that a
blocking ``read()`` sleeps on, the requested ``features``, and the
``mmap_changing`` protocol: a non-cooperative event (fork, mremap, munmap,
``MADV_DONTNEED``) raises ``mmap_changing`` before it changes the address
space and lowers it once the monitor has read the event; the fill and move
ioctls fail with ``-EAGAIN`` while it is raised. How it is raised and read
changed over four eras (``mmrace.fixes.userfaultfd``), all decided here:

* before 4.18 there is no counter (``uffd-mmap-changing`` off);
* 4.18: a bool, set with ``WRITE_ONCE`` and cleared by whoever's event is
  read first, checked under ``mmap_lock``;
* 5.15 (``uffd-mmap-changing-atomic``): an ``atomic_t`` counter;
* 6.9 (``uffd-map-changing-lock``): the counter is raised under
  ``map_changing_lock`` held for write and read under it held for read, so
  the ioctls can stop relying on ``mmap_lock`` (the per-VMA-lock era,
  ``uffd-per-vma-locks``, of the same release). The seed-001 proposal
  ``uffd-remove-increment-only`` makes ``userfaultfd_remove`` raise it
  without the write lock.

Left out: the refcount of the context (it lives as long as the execution),
``UFFD_FEATURE_SIGBUS``/``THREAD_ID``/``WP_ASYNC``/``WP_UNPOPULATED``/
``POISON``, hugetlb, PTE markers.
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import SharedObject, Var
from mmrace.mm.internal import kernel_config
from mmrace.mm.locks import RwSemaphore, Spinlock, down_read, down_write, up_read, up_write
from mmrace.mm.mm_types import (
    VM_UFFD_MINOR,
    VM_UFFD_MISSING,
    VM_UFFD_WP,
    MmStruct,
    VmAreaStruct,
)
from mmrace.mm.mm_types import UserfaultfdCtx as _UffdIdentity
from mmrace.mm.pgtable import pte_uffd_wp
from mmrace.sync.atomic import Atomic, atomic_dec, atomic_inc, atomic_read
from mmrace.sync.completion import Completion

# --- errno values the ioctls return -------------------------------------------------

EPERM, ENOENT, ESRCH, EIO, EBADF, EAGAIN, ENOMEM, EFAULT = 1, 2, 3, 5, 9, 11, 12, 14
EBUSY, EEXIST, EINVAL, ENOSPC, ENOTTY = 16, 17, 22, 28, 25

# --- include/uapi/linux/userfaultfd.h -----------------------------------------------

UFFD_API = 0xAA

UFFD_EVENT_PAGEFAULT = 0x12
UFFD_EVENT_FORK = 0x13
UFFD_EVENT_REMAP = 0x14
UFFD_EVENT_REMOVE = 0x15
UFFD_EVENT_UNMAP = 0x16
UFFD_EVENT_NAMES = {UFFD_EVENT_PAGEFAULT: "PAGEFAULT", UFFD_EVENT_FORK: "FORK",
                    UFFD_EVENT_REMAP: "REMAP", UFFD_EVENT_REMOVE: "REMOVE",
                    UFFD_EVENT_UNMAP: "UNMAP"}

UFFD_PAGEFAULT_FLAG_WRITE = 1 << 0
UFFD_PAGEFAULT_FLAG_WP = 1 << 1
UFFD_PAGEFAULT_FLAG_MINOR = 1 << 2

UFFD_FEATURE_PAGEFAULT_FLAG_WP = 1 << 0
UFFD_FEATURE_EVENT_FORK = 1 << 1
UFFD_FEATURE_EVENT_REMAP = 1 << 2
UFFD_FEATURE_EVENT_REMOVE = 1 << 3
UFFD_FEATURE_MISSING_HUGETLBFS = 1 << 4
UFFD_FEATURE_MISSING_SHMEM = 1 << 5
UFFD_FEATURE_EVENT_UNMAP = 1 << 6
UFFD_FEATURE_SIGBUS = 1 << 7
UFFD_FEATURE_THREAD_ID = 1 << 8
UFFD_FEATURE_MINOR_HUGETLBFS = 1 << 9
UFFD_FEATURE_MINOR_SHMEM = 1 << 10
UFFD_FEATURE_EXACT_ADDRESS = 1 << 11
UFFD_FEATURE_WP_HUGETLBFS_SHMEM = 1 << 12
UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
UFFD_FEATURE_POISON = 1 << 14
UFFD_FEATURE_WP_ASYNC = 1 << 15
UFFD_FEATURE_MOVE = 1 << 16
UFFD_FEATURES_KNOWN = (1 << 17) - 1
UFFD_FEATURES_MODELLED = (UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_EVENT_FORK
                          | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE
                          | UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_MINOR_SHMEM
                          | UFFD_FEATURE_MOVE)

UFFDIO_REGISTER_MODE_MISSING = 1 << 0
UFFDIO_REGISTER_MODE_WP = 1 << 1
UFFDIO_REGISTER_MODE_MINOR = 1 << 2
UFFDIO_COPY_MODE_DONTWAKE = 1 << 0
UFFDIO_COPY_MODE_WP = 1 << 1
UFFDIO_ZEROPAGE_MODE_DONTWAKE = 1 << 0
UFFDIO_WRITEPROTECT_MODE_WP = 1 << 0
UFFDIO_WRITEPROTECT_MODE_DONTWAKE = 1 << 1
UFFDIO_CONTINUE_MODE_DONTWAKE = 1 << 0
UFFDIO_CONTINUE_MODE_WP = 1 << 1
UFFDIO_MOVE_MODE_DONTWAKE = 1 << 0
UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES = 1 << 1

__VM_UFFD_FLAGS = VM_UFFD_MISSING | VM_UFFD_WP | VM_UFFD_MINOR
VM_UFFD_FLAGS = __VM_UFFD_FLAGS

# mfill_atomic modes (uffd_flags_t) and its WP flag
MFILL_ATOMIC_COPY, MFILL_ATOMIC_ZEROPAGE, MFILL_ATOMIC_CONTINUE = 0, 1, 2
MFILL_ATOMIC_WP = 1 << 8
MFILL_MODE_NAMES = {MFILL_ATOMIC_COPY: "UFFDIO_COPY", MFILL_ATOMIC_ZEROPAGE: "UFFDIO_ZEROPAGE",
                    MFILL_ATOMIC_CONTINUE: "UFFDIO_CONTINUE"}


# --- messages and wait queues ---------------------------------------------------------


class UffdMsg:
    """``struct uffd_msg``: *event* and its argument. Page faults carry
    ``address`` and ``flags``; FORK ``ufd`` (the child's context, turned
    into a file descriptor when read); REMAP ``from_``, ``to``, ``len``;
    REMOVE and UNMAP ``start`` and ``end``."""

    __slots__ = ("event", "flags", "address", "ufd", "from_", "to", "len", "start", "end")

    def __init__(self, event: int = UFFD_EVENT_PAGEFAULT, address: int = 0, flags: int = 0) -> None:
        self.event = event
        self.flags = flags
        self.address = address
        self.ufd: Any = None
        self.from_ = self.to = self.len = 0
        self.start = self.end = 0

    @property
    def name(self) -> str:
        return UFFD_EVENT_NAMES.get(self.event, hex(self.event))

    def copy(self) -> UffdMsg:
        """The copy ``read()`` hands to userland (``copy_to_user``)."""
        m = UffdMsg(self.event, self.address, self.flags)
        m.ufd = self.ufd
        m.from_, m.to, m.len = self.from_, self.to, self.len
        m.start, m.end = self.start, self.end
        return m

    def ranges(self, ctx: UserfaultfdCtx) -> list[tuple[int, int]]:
        """The address ranges a non-cooperative event is about (FORK: the
        whole address space of the monitored mm)."""
        if self.event == UFFD_EVENT_FORK:
            return [(0, ctx.mm.task_size)]
        if self.event == UFFD_EVENT_REMAP:
            return [(self.from_, self.from_ + self.len), (self.to, self.to + self.len)]
        if self.event in (UFFD_EVENT_REMOVE, UFFD_EVENT_UNMAP):
            return [(self.start, self.end)]
        return []

    def __repr__(self) -> str:
        if self.event == UFFD_EVENT_PAGEFAULT:
            kind = ("wp" if self.flags & UFFD_PAGEFAULT_FLAG_WP else
                    "minor" if self.flags & UFFD_PAGEFAULT_FLAG_MINOR else "missing")
            w = " write" if self.flags & UFFD_PAGEFAULT_FLAG_WRITE else ""
            return f"uffd_msg(pagefault {kind}{w} at {self.address:#x})"
        if self.event == UFFD_EVENT_FORK:
            return f"uffd_msg(fork, ufd={self.ufd!r})"
        if self.event == UFFD_EVENT_REMAP:
            return f"uffd_msg(remap {self.from_:#x} -> {self.to:#x}, len {self.len:#x})"
        return f"uffd_msg({self.name.lower()} [{self.start:#x}, {self.end:#x}))"


class UserfaultfdWaitQueue:
    """``struct userfaultfd_wait_queue``: a faulting thread's message (or a
    non-cooperative event's) and the completion its thread sleeps on until
    it is resolved (a fault) or read (an event)."""

    __slots__ = ("msg", "done", "woken", "raised_at", "read_at")

    def __init__(self, msg: UffdMsg, name: str) -> None:
        self.msg = msg
        self.done = Completion(name)
        self.woken = False
        self.raised_at = -1  # for the monitor-view oracle: when it was raised
        self.read_at = -1  # ... and when the monitor read it (-1: not yet)


class UserfaultfdCtx(_UffdIdentity):
    """``struct userfaultfd_ctx``: the monitor's file. ``fault_pending_wqh``
    holds faults not yet read, ``fault_wqh`` faults read but not resolved
    (both under ``fault_pending_wqh.lock``, :attr:`wqh_lock`);
    ``event_wqh`` events not yet read (under :attr:`event_lock`).
    ``fd_wqh`` counts queued messages for a blocking ``read()``."""

    def __init__(self, mm: MmStruct, name: str = "uffd") -> None:
        super().__init__(name)
        self.mm = mm
        self.features = 0
        self.api_done = False  # UFFD_FEATURE_INITIALIZED / UFFD_STATE_RUNNING
        self.released = Var(False, f"{name}.released")
        self.closed = False  # the file descriptor was closed (ioctls get EBADF)
        self.wqh_lock = Spinlock(f"{name}.fault_pending_wqh.lock")
        self.fault_pending_wqh: list[UserfaultfdWaitQueue] = []
        self.fault_wqh: list[UserfaultfdWaitQueue] = []
        self.event_lock = Spinlock(f"{name}.event_wqh.lock")
        self.event_wqh: list[UserfaultfdWaitQueue] = []
        self.fd_wqh = Completion(f"{name}.fd_wqh")
        # A bool before 5.15 (WRITE_ONCE / READ_ONCE), an atomic_t after:
        # then two raisers' atomic_inc (and the readers' atomic_dec) are
        # result-less and commute (mmrace.sync.atomic's per-CPU slots).
        self.mmap_changing: Var[int] | Atomic = (
            Atomic(0, f"{name}.mmap_changing") if uffd_has(mm, "uffd-mmap-changing-atomic")
            else Var(0, f"{name}.mmap_changing"))
        self.map_changing_lock = RwSemaphore(f"{name}.map_changing_lock",
                                             "&ctx->map_changing_lock")
        self.nr_faults = 0
        self.nr_events = 0
        # The monitor promised itself a consistent view (the uffd-view
        # oracle, mmrace.oracles.userfaultfd): report events and effects,
        # each as a marker operation on ``view`` (see uffd_view_emit).
        self.view_expected = False
        self.view = SharedObject(f"{name}.view")

    def __repr__(self) -> str:
        return self.name


class VmUserfaultfdCtx:
    """``struct vm_userfaultfd_ctx``: what ``mremap_userfaultfd_prep`` fills
    in for ``mremap_userfaultfd_complete`` (mremap's ``uf``). The model
    also keeps the REMAP event raised by the prep (the kernel builds its
    message on the stack in the complete step) in ``ewq``."""

    __slots__ = ("ctx", "ewq")

    def __init__(self, ctx: UserfaultfdCtx | None = None) -> None:
        self.ctx = ctx
        self.ewq: UserfaultfdWaitQueue | None = None


class UserfaultfdUnmapCtx:
    """``struct userfaultfd_unmap_ctx``: one UNMAP event to send."""

    __slots__ = ("ctx", "start", "end", "ewq")

    def __init__(self, ctx: UserfaultfdCtx, start: int, end: int) -> None:
        self.ctx = ctx
        self.start = start
        self.end = end
        self.ewq: UserfaultfdWaitQueue | None = None


class UserfaultfdForkCtx:
    """``struct userfaultfd_fork_ctx``: the parent's context and the new
    one made for the child."""

    __slots__ = ("orig", "new", "ewq")

    def __init__(self, orig: UserfaultfdCtx, new: UserfaultfdCtx) -> None:
        self.orig = orig
        self.new = new
        self.ewq: UserfaultfdWaitQueue | None = None


# --- include/linux/userfaultfd_k.h inline helpers ------------------------------------------


def vma_uffd_ctx(vma: VmAreaStruct) -> UserfaultfdCtx | None:
    """``vma->vm_userfaultfd_ctx.ctx``."""
    ctx = vma.vm_userfaultfd_ctx
    return ctx if isinstance(ctx, UserfaultfdCtx) else None


def userfaultfd_wp(vma: VmAreaStruct) -> bool:
    """``userfaultfd_wp``: *vma* is registered for write-protect tracking."""
    return bool(vma.vm_flags & VM_UFFD_WP)


def userfaultfd_missing(vma: VmAreaStruct) -> bool:
    """``userfaultfd_missing``."""
    return bool(vma.vm_flags & VM_UFFD_MISSING)


def userfaultfd_minor(vma: VmAreaStruct) -> bool:
    """``userfaultfd_minor``."""
    return bool(vma.vm_flags & VM_UFFD_MINOR)


def userfaultfd_armed(vma: VmAreaStruct) -> bool:
    """``userfaultfd_armed``: registered in any mode."""
    return bool(vma.vm_flags & __VM_UFFD_FLAGS)


def vma_has_uffd_without_event_remap(vma: VmAreaStruct) -> bool:
    """``vma_has_uffd_without_event_remap``: *vma* is registered with a
    userfaultfd that does not take REMAP events, so a move (mremap) must
    clear the uffd-wp bits of what it moves: the monitor will not learn
    where the pages went."""
    ctx = vma_uffd_ctx(vma)
    return ctx is not None and not ctx.features & UFFD_FEATURE_EVENT_REMAP


def userfaultfd_pte_wp(vma: VmAreaStruct, pte: int) -> bool:
    """``userfaultfd_pte_wp``: a uffd-wp VMA and the PTE's uffd-wp bit."""
    return userfaultfd_wp(vma) and pte_uffd_wp(pte)


# --- the mmap_changing protocol, era by era ---------------------------------------------


def uffd_has(mm: MmStruct, slug: str) -> bool:
    """Whether switch *slug* holds for the system *mm* belongs to."""
    return bool(kernel_config(mm).has(slug))


def changing_lock_in_use(ctx: UserfaultfdCtx) -> bool:
    """``map_changing_lock`` exists: the 6.9 rwsem (or the seed proposal,
    a review variant of the same patch)."""
    return (uffd_has(ctx.mm, "uffd-map-changing-lock")
            or uffd_has(ctx.mm, "uffd-remove-increment-only"))


def mmap_changing_read(ctx: UserfaultfdCtx) -> bool:
    """``READ_ONCE(ctx->mmap_changing)`` (4.18) / ``atomic_read`` (5.15):
    one visible read; False without the counter (before 4.18: nothing to
    read, no scheduling point)."""
    if not uffd_has(ctx.mm, "uffd-mmap-changing"):
        return False
    v = ctx.mmap_changing
    return bool(atomic_read(v) if isinstance(v, Atomic) else v.load())


def mmap_changing_value(ctx: UserfaultfdCtx) -> int:
    """The value of ``ctx->mmap_changing`` as a debugger would see it (no
    operation): the bool (0/1) or the atomic's total."""
    v = ctx.mmap_changing
    return v.value() if isinstance(v, Atomic) else int(v.value)


def mmap_changing_inc(ctx: UserfaultfdCtx, *, write_lock: bool = True) -> None:
    """Raise ``mmap_changing`` for an event about to happen:
    ``WRITE_ONCE(true)`` in the bool era, ``atomic_inc`` from 5.15, inside
    ``down_write(map_changing_lock)`` from 6.9 (*write_lock* False: the
    seed proposal's bare increment in ``userfaultfd_remove``). Nothing
    before 4.18."""
    mm = ctx.mm
    if not uffd_has(mm, "uffd-mmap-changing"):
        return
    locked = write_lock and changing_lock_in_use(ctx)
    if locked:
        down_write(ctx.map_changing_lock)
    v = ctx.mmap_changing
    if isinstance(v, Atomic):
        atomic_inc(v)
    else:
        v.store(1)
    if locked:
        up_write(ctx.map_changing_lock)


def mmap_changing_dec(ctx: UserfaultfdCtx) -> None:
    """Lower ``mmap_changing`` once the event was read (the end of
    ``userfaultfd_event_wait_completion``): ``WRITE_ONCE(false)`` in the
    bool era -- even if another event is still unread, the race 5.15 fixed
    -- ``atomic_dec`` after. Never under ``map_changing_lock``."""
    mm = ctx.mm
    if not uffd_has(mm, "uffd-mmap-changing"):
        return
    v = ctx.mmap_changing
    if isinstance(v, Atomic):
        atomic_dec(v)
    else:
        v.store(0)


def map_changing_read_lock(ctx: UserfaultfdCtx) -> None:
    """``down_read(&ctx->map_changing_lock)`` where the era has it."""
    if changing_lock_in_use(ctx):
        down_read(ctx.map_changing_lock)


def map_changing_read_unlock(ctx: UserfaultfdCtx) -> None:
    """``up_read(&ctx->map_changing_lock)`` where the era has it."""
    if changing_lock_in_use(ctx):
        up_read(ctx.map_changing_lock)


__all__ = [
    "UFFDIO_REGISTER_MODE_MINOR",
    "UFFDIO_REGISTER_MODE_MISSING",
    "UFFDIO_REGISTER_MODE_WP",
    "UffdMsg",
    "UserfaultfdCtx",
    "VmUserfaultfdCtx",
    "userfaultfd_missing",
    "userfaultfd_pte_wp",
    "userfaultfd_wp",
]

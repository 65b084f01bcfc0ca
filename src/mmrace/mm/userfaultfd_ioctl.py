"""The ``UFFDIO_*`` ioctl handlers (fs/userfaultfd.c): argument checks with
the kernel's errnos, the early ``mmap_changing`` check, the wake-up of the
faults a fill resolved, registration, and ``close()``.

They live apart from :mod:`mmrace.mm.fs_userfaultfd` (the rest of
fs/userfaultfd.c) because they need the VMA and page-table code of
:mod:`mmrace.mm.userfaultfd` (mm/userfaultfd.c), which the callers of the
protocol side -- the VMA code among them -- must not import.

Every handler raises ``OSError`` with the kernel's errno; the fill and move
handlers raise :class:`UffdIoctlError`, whose ``result`` is what the kernel
writes back (the bytes done before an ``EAGAIN`` for a short operation).

Left out: ``UFFDIO_POISON``, ``UFFDIO_API``'s ioctl bitmaps, hugetlb
alignment, the ``mmget_not_zero`` check (``ESRCH``).
"""

from __future__ import annotations

import os

from mmrace.mm.fs_userfaultfd import userfaultfd_release_wake, wake_userfault
from mmrace.mm.internal import errno_error, kfunc
from mmrace.mm.memory import vma_is_anonymous
from mmrace.mm.mm_types import (
    PAGE_MASK,
    VM_MAYWRITE,
    VM_UFFD_MINOR,
    VM_UFFD_MISSING,
    VM_UFFD_WP,
    MmStruct,
    VmAreaStruct,
)
from mmrace.mm.mmap_lock import mmap_write_lock, mmap_write_unlock, vma_start_write
from mmrace.mm.shmem import vma_is_shmem
from mmrace.mm.userfaultfd import (
    CopySource,
    UserPtr,
    mfill_atomic_continue,
    mfill_atomic_copy,
    mfill_atomic_zeropage,
    move_pages,
    mwriteprotect_range,
    uffd_wp_range,
)
from mmrace.mm.userfaultfd_k import (
    EAGAIN,
    EBADF,
    EBUSY,
    EFAULT,
    EINVAL,
    EPERM,
    MFILL_ATOMIC_WP,
    UFFDIO_CONTINUE_MODE_DONTWAKE,
    UFFDIO_CONTINUE_MODE_WP,
    UFFDIO_COPY_MODE_DONTWAKE,
    UFFDIO_COPY_MODE_WP,
    UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES,
    UFFDIO_MOVE_MODE_DONTWAKE,
    UFFDIO_REGISTER_MODE_MINOR,
    UFFDIO_REGISTER_MODE_MISSING,
    UFFDIO_REGISTER_MODE_WP,
    UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
    UFFDIO_WRITEPROTECT_MODE_WP,
    UFFDIO_ZEROPAGE_MODE_DONTWAKE,
    VM_UFFD_FLAGS,
    UserfaultfdCtx,
    mmap_changing_read,
    uffd_has,
    userfaultfd_missing,
    userfaultfd_wp,
)
from mmrace.mm.vma import (
    VmaIterator,
    VmaMergeStruct,
    find_vma,
    find_vma_prev,
    for_each_vma,
    vm_flags_reset,
    vma_modify,
    vma_set_page_prot,
)


class UffdIoctlError(OSError):
    """A fill or move ioctl's failure: ``errno`` as the kernel returns it,
    and ``result``, what it wrote back in the argument's last field (the
    bytes done before an ``EAGAIN`` for a short operation, else -errno)."""

    def __init__(self, err: int, what: str, result: int | None = None) -> None:
        super().__init__(err, os.strerror(err) + (f": {what}" if what else ""))
        self.result = -err if result is None else result


def _fail(ret: int, what: str) -> UffdIoctlError:
    return UffdIoctlError(-ret, what)


# --- the ioctls -------------------------------------------------------------


def validate_unaligned_range(mm: MmStruct, start: int, length: int) -> int:
    """``validate_unaligned_range``: 0 or ``-EINVAL`` (length not a whole
    number of pages, zero, or the range beyond the task size)."""
    if length & ~PAGE_MASK or not length or start < 0:
        return -EINVAL
    if start >= mm.task_size or length > mm.task_size - start:
        return -EINVAL
    return 0


def validate_range(mm: MmStruct, start: int, length: int) -> int:
    """``validate_range``: also the start page-aligned."""
    if start & ~PAGE_MASK:
        return -EINVAL
    return validate_unaligned_range(mm, start, length)


def _usable(ctx: UserfaultfdCtx, what: str) -> None:
    """``userfaultfd_ioctl``'s gate: a closed file is ``EBADF`` (the fd is
    gone), one before the ``UFFDIO_API`` handshake ``EINVAL``."""
    if ctx.closed:
        raise errno_error(EBADF, f"{what} on a closed userfaultfd")
    if not ctx.api_done:
        raise errno_error(EINVAL, f"{what} before UFFDIO_API")


def _check(ret: int, what: str) -> None:
    if ret < 0:
        raise _fail(ret, what)


def _fill_done(ctx: UserfaultfdCtx, ret: int, start: int, length: int, dontwake: bool,
               what: str) -> int:
    """The common end of the fill and move ioctls: report an error, wake the
    faults in the range filled, and turn a short result into ``-EAGAIN``."""
    if ret < 0:
        raise UffdIoctlError(-ret, what)
    if not dontwake:
        wake_userfault(ctx, start, ret)
    if ret != length:
        raise UffdIoctlError(EAGAIN, f"{what}: {ret} of {length} bytes done", ret)
    return ret


@kfunc
def userfaultfd_copy(ctx: UserfaultfdCtx, dst: int, src: CopySource, length: int,
                     mode: int = 0) -> int:
    """``UFFDIO_COPY``: fill ``[dst, dst + length)`` with copies of *src*
    (a value for every word, a list of words, or a :class:`UserPtr`) and
    wake the faults there unless ``MODE_DONTWAKE``; ``MODE_WP`` maps the
    pages uffd-wp. Returns *length*; raises :class:`UffdIoctlError`
    (``EAGAIN`` while ``mmap_changing``, ``EEXIST`` on a populated page,
    ``ENOENT`` outside a registered VMA, ``EINVAL`` for bad arguments)."""
    _usable(ctx, "UFFDIO_COPY")
    if mmap_changing_read(ctx):
        raise UffdIoctlError(EAGAIN, "UFFDIO_COPY: non-cooperative event pending")
    if isinstance(src, UserPtr):
        _check(validate_unaligned_range(ctx.mm, src.addr, length), "UFFDIO_COPY src")
    elif not isinstance(src, int) and not all(isinstance(w, int) for w in src):
        raise errno_error(EFAULT, "UFFDIO_COPY: src is neither a value, words nor a UserPtr")
    _check(validate_range(ctx.mm, dst, length), "UFFDIO_COPY dst")
    if mode & ~(UFFDIO_COPY_MODE_DONTWAKE | UFFDIO_COPY_MODE_WP):
        raise errno_error(EINVAL, "UFFDIO_COPY: bad mode")
    flags = MFILL_ATOMIC_WP if mode & UFFDIO_COPY_MODE_WP else 0
    ret = mfill_atomic_copy(ctx, dst, src, length, flags)
    return _fill_done(ctx, ret, dst, length, bool(mode & UFFDIO_COPY_MODE_DONTWAKE),
                      "UFFDIO_COPY")


@kfunc
def userfaultfd_zeropage(ctx: UserfaultfdCtx, start: int, length: int, mode: int = 0) -> int:
    """``UFFDIO_ZEROPAGE``: map the zero page over ``[start, start +
    length)``; errors as ``UFFDIO_COPY``."""
    _usable(ctx, "UFFDIO_ZEROPAGE")
    if mmap_changing_read(ctx):
        raise UffdIoctlError(EAGAIN, "UFFDIO_ZEROPAGE: non-cooperative event pending")
    _check(validate_range(ctx.mm, start, length), "UFFDIO_ZEROPAGE")
    if mode & ~UFFDIO_ZEROPAGE_MODE_DONTWAKE:
        raise errno_error(EINVAL, "UFFDIO_ZEROPAGE: bad mode")
    ret = mfill_atomic_zeropage(ctx, start, length)
    return _fill_done(ctx, ret, start, length, bool(mode & UFFDIO_ZEROPAGE_MODE_DONTWAKE),
                      "UFFDIO_ZEROPAGE")


@kfunc
def userfaultfd_continue(ctx: UserfaultfdCtx, start: int, length: int, mode: int = 0) -> int:
    """``UFFDIO_CONTINUE`` (5.14 for shmem, ``uffdio-continue``): map the
    pages the page cache already holds over ``[start, start + length)`` of
    a shmem VMA registered for minor faults; ``EFAULT`` where it holds
    none, ``EEXIST`` where a PTE is already there."""
    if not uffd_has(ctx.mm, "uffdio-continue"):
        raise errno_error(EINVAL, "UFFDIO_CONTINUE: no such ioctl before 5.14")
    _usable(ctx, "UFFDIO_CONTINUE")
    if mmap_changing_read(ctx):
        raise UffdIoctlError(EAGAIN, "UFFDIO_CONTINUE: non-cooperative event pending")
    _check(validate_range(ctx.mm, start, length), "UFFDIO_CONTINUE")
    if mode & ~(UFFDIO_CONTINUE_MODE_DONTWAKE | UFFDIO_CONTINUE_MODE_WP):
        raise errno_error(EINVAL, "UFFDIO_CONTINUE: bad mode")
    flags = MFILL_ATOMIC_WP if mode & UFFDIO_CONTINUE_MODE_WP else 0
    ret = mfill_atomic_continue(ctx, start, length, flags)
    return _fill_done(ctx, ret, start, length, bool(mode & UFFDIO_CONTINUE_MODE_DONTWAKE),
                      "UFFDIO_CONTINUE")


@kfunc
def userfaultfd_move(ctx: UserfaultfdCtx, dst: int, src: int, length: int, mode: int = 0,
                     current_mm: MmStruct | None = None) -> int:
    """``UFFDIO_MOVE`` (6.8, ``uffdio-move``): move the anonymous pages of
    ``[src, src + length)`` to ``[dst, dst + length)`` without copying;
    only from a task of the monitored process (*current_mm*, else
    ``EINVAL``); ``EBUSY`` for a shared or pinned page, ``EEXIST`` for a
    populated destination, ``ENOENT`` for a source hole unless
    ``MODE_ALLOW_SRC_HOLES``."""
    if not uffd_has(ctx.mm, "uffdio-move"):
        raise errno_error(EINVAL, "UFFDIO_MOVE: no such ioctl before 6.8")
    _usable(ctx, "UFFDIO_MOVE")
    if mmap_changing_read(ctx):
        raise UffdIoctlError(EAGAIN, "UFFDIO_MOVE: non-cooperative event pending")
    mm = ctx.mm
    if current_mm is not None and current_mm is not mm:
        raise errno_error(EINVAL, "UFFDIO_MOVE across processes")
    _check(validate_range(mm, dst, length), "UFFDIO_MOVE dst")
    _check(validate_range(mm, src, length), "UFFDIO_MOVE src")
    if mode & ~(UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES | UFFDIO_MOVE_MODE_DONTWAKE):
        raise errno_error(EINVAL, "UFFDIO_MOVE: bad mode")
    ret = move_pages(ctx, dst, src, length, mode)
    return _fill_done(ctx, ret, dst, length, bool(mode & UFFDIO_MOVE_MODE_DONTWAKE),
                      "UFFDIO_MOVE")


@kfunc
def userfaultfd_writeprotect(ctx: UserfaultfdCtx, start: int, length: int, mode: int) -> None:
    """``UFFDIO_WRITEPROTECT``: protect (``MODE_WP``) or un-protect the
    range, then, when un-protecting without ``MODE_DONTWAKE``, wake the
    faults waiting in it. ``EAGAIN`` while ``mmap_changing``, ``ENOENT``
    where the range is not registered for uffd-wp. Raises OSError."""
    _usable(ctx, "UFFDIO_WRITEPROTECT")
    if mmap_changing_read(ctx):
        raise errno_error(EAGAIN, "UFFDIO_WRITEPROTECT: non-cooperative event pending")
    _check(validate_range(ctx.mm, start, length), "UFFDIO_WRITEPROTECT")
    if mode & ~(UFFDIO_WRITEPROTECT_MODE_WP | UFFDIO_WRITEPROTECT_MODE_DONTWAKE):
        raise errno_error(EINVAL, "bad writeprotect mode")
    enable_wp = bool(mode & UFFDIO_WRITEPROTECT_MODE_WP)
    if enable_wp and mode & UFFDIO_WRITEPROTECT_MODE_DONTWAKE:
        raise errno_error(EINVAL, "MODE_WP with MODE_DONTWAKE")
    ret = mwriteprotect_range(ctx, start, length, enable_wp)
    if ret < 0:
        raise errno_error(-ret, "UFFDIO_WRITEPROTECT")
    if not enable_wp and not mode & UFFDIO_WRITEPROTECT_MODE_DONTWAKE:
        wake_userfault(ctx, start, length)


@kfunc
def userfaultfd_wake(ctx: UserfaultfdCtx, start: int, length: int) -> None:
    """``UFFDIO_WAKE``: wake the faults waiting in the range (after fills
    done with ``MODE_DONTWAKE``)."""
    _usable(ctx, "UFFDIO_WAKE")
    _check(validate_range(ctx.mm, start, length), "UFFDIO_WAKE")
    wake_userfault(ctx, start, length)


# --- registration -------------------------------------------------------------------------------


def vma_can_userfault(vma: VmAreaStruct, vm_flags: int) -> bool:
    """``vma_can_userfault``: anonymous memory for MISSING and WP (not
    MINOR); shmem for MINOR and WP (5.19: "mm/shmem: allow uffd wr-protect
    none pte for file-backed mem": its empty entries then keep uffd-wp
    markers). The model refuses, as not modelled, MISSING on shmem
    (``shmem_mfill_atomic_pte``); other files cannot userfault."""
    if vma_is_anonymous(vma) and vma.vm_ops is None:
        return not vm_flags & VM_UFFD_MINOR
    if vma_is_shmem(vma):
        if vm_flags & VM_UFFD_MISSING:
            raise NotImplementedError("userfaultfd MISSING registration of shmem "
                                      "(shmem_mfill_atomic_pte) is not modelled")
        return True
    return False


def _register_flags(ctx: UserfaultfdCtx, mode: int) -> int:
    modes = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP
    if uffd_has(ctx.mm, "uffdio-continue"):
        modes |= UFFDIO_REGISTER_MODE_MINOR
    if not mode or mode & ~modes:
        raise errno_error(EINVAL, "bad register mode")
    vm_flags = 0
    if mode & UFFDIO_REGISTER_MODE_MISSING:
        vm_flags |= VM_UFFD_MISSING
    if mode & UFFDIO_REGISTER_MODE_WP:
        vm_flags |= VM_UFFD_WP
    if mode & UFFDIO_REGISTER_MODE_MINOR:
        vm_flags |= VM_UFFD_MINOR
    return vm_flags


def _modify_uffd(mm: MmStruct, vma: VmAreaStruct, addr: int, end: int, new_flags: int,
                 new_ctx: UserfaultfdCtx | None) -> VmAreaStruct:
    """``vma_modify_flags_uffd`` then ``userfaultfd_set_ctx``: split or merge
    so that one VMA covers ``[addr, min(end, vm_end))``, then give it
    *new_flags* and *new_ctx* under its write lock."""
    _, prev = find_vma_prev(mm, vma.vm_start)
    if addr > vma.vm_start:
        prev = vma
    vmg = VmaMergeStruct.from_vma(mm, prev, vma, addr, min(end, vma.vm_end))
    vmg.flags = new_flags
    vmg.uffd_ctx = new_ctx
    vma = vma_modify(vmg)
    vma_start_write(vma)
    vma.vm_userfaultfd_ctx = new_ctx
    vm_flags_reset(vma, new_flags)
    vma_set_page_prot(vma)
    return vma


@kfunc
def userfaultfd_register(ctx: UserfaultfdCtx, start: int, length: int, mode: int) -> None:
    """``UFFDIO_REGISTER``: under the mmap write lock, check that
    ``[start, start + length)`` is mapped by VMAs that can userfault in
    *mode* (``EINVAL``), may be written (``EPERM``), and are not registered
    with another context (``EBUSY``); then give each part the
    ``VM_UFFD_*`` flags and the context (split or merged,
    ``userfaultfd_register_range``)."""
    _usable(ctx, "UFFDIO_REGISTER")
    vm_flags = _register_flags(ctx, mode)
    _check(validate_range(ctx.mm, start, length), "UFFDIO_REGISTER")
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
            if not vma.vm_flags & VM_MAYWRITE:
                raise errno_error(EPERM, f"{vma!r} may not be written")
            cur = vma.vm_userfaultfd_ctx
            if cur is not None and cur is not ctx:
                raise errno_error(EBUSY, "registered with another userfaultfd")
            addr = vma.vm_end
        addr = start
        while addr < end:
            vma = find_vma(mm, addr)
            assert vma is not None
            new_flags = (vma.vm_flags & ~VM_UFFD_FLAGS) | vm_flags
            vma = _modify_uffd(mm, vma, addr, end, new_flags, ctx)
            addr = vma.vm_end
    finally:
        mmap_write_unlock(mm)


@kfunc
def userfaultfd_clear_vma(mm: MmStruct, vma: VmAreaStruct, start: int,
                          end: int) -> VmAreaStruct:
    """``userfaultfd_clear_vma``: un-protect what uffd-wp protected, then
    unregister ``[start, end)`` of *vma* (split or merged)."""
    if userfaultfd_wp(vma):
        uffd_wp_range(vma, start, min(end, vma.vm_end) - start, False)
    return _modify_uffd(mm, vma, start, end, vma.vm_flags & ~VM_UFFD_FLAGS, None)


@kfunc
def userfaultfd_unregister(ctx: UserfaultfdCtx, start: int, length: int) -> None:
    """``UFFDIO_UNREGISTER``: under the mmap write lock, refuse a range
    registered through another context (``EINVAL``), then wake the missing
    faults of each registered part and unregister it."""
    _usable(ctx, "UFFDIO_UNREGISTER")
    _check(validate_range(ctx.mm, start, length), "UFFDIO_UNREGISTER")
    mm = ctx.mm
    end = start + length
    mmap_write_lock(mm)
    try:
        vma = find_vma(mm, start)
        if vma is None or vma.vm_start >= end:
            raise errno_error(EINVAL, "nothing mapped in the range")
        addr = start
        while vma is not None and vma.vm_start < end:
            cur = vma.vm_userfaultfd_ctx
            if cur is not None and cur is not ctx:
                raise errno_error(EINVAL, "registered through another userfaultfd")
            vma = find_vma(mm, vma.vm_end)
        vma = find_vma(mm, start)
        while vma is not None and vma.vm_start < end:
            addr = max(addr, vma.vm_start)
            if vma.vm_userfaultfd_ctx is None:
                vma = find_vma(mm, vma.vm_end)
                continue
            if userfaultfd_missing(vma):
                wake_userfault(ctx, addr, min(end, vma.vm_end) - addr)
            vma = userfaultfd_clear_vma(mm, vma, addr, end)
            addr = vma.vm_end
            vma = find_vma(mm, addr)
    finally:
        mmap_write_unlock(mm)


@kfunc
def userfaultfd_release(ctx: UserfaultfdCtx) -> None:
    """``userfaultfd_release`` (``close()``): mark the context released,
    unregister every VMA it has (``userfaultfd_release_all``, under the
    mmap write lock), then wake every waiting fault and event. Later
    ioctls on the file get ``EBADF``."""
    if ctx.closed:
        raise errno_error(EBADF, "userfaultfd already closed")
    ctx.released.store(True)
    mm = ctx.mm
    mmap_write_lock(mm)
    vmi = VmaIterator(mm, 0)
    mine = [v for v in for_each_vma(vmi) if v.vm_userfaultfd_ctx is ctx]
    for v in mine:
        userfaultfd_clear_vma(mm, v, v.vm_start, v.vm_end)
    mmap_write_unlock(mm)
    userfaultfd_release_wake(ctx)


__all__ = [
    "UffdIoctlError",
    "userfaultfd_continue",
    "userfaultfd_copy",
    "userfaultfd_move",
    "userfaultfd_register",
    "userfaultfd_release",
    "userfaultfd_unregister",
    "userfaultfd_wake",
    "userfaultfd_writeprotect",
    "userfaultfd_zeropage",
]

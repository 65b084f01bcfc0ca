"""A userfaultfd file descriptor, as a monitor uses it.

``p.userfaultfd(features)`` (``userfaultfd(2)`` and ``UFFDIO_API``) returns
a :class:`Userfaultfd`; its methods are the ioctls, ``read()``, ``poll()``
and ``close()``, callable from set-up code or from any scenario thread (a
monitor is usually another thread, often of another process)::

    uffd = p.userfaultfd(UFFD_FEATURE_EVENT_REMOVE)
    uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
    uffd.expect_consistent_view()          # the uffd-view oracle
    msg = uffd.read()                      # the next fault or event
    uffd.copy(a, 7, PAGE_SIZE)             # every word 7; or a list of words,
    uffd.copy(a, UserBuffer(m, buf), PAGE_SIZE)   # or the monitor's memory
    uffd.zeropage(a, PAGE_SIZE); uffd.continue_(a, PAGE_SIZE)
    uffd.move(dst, src, PAGE_SIZE); uffd.writeprotect(a, PAGE_SIZE, True)

Failures raise ``OSError`` with the kernel's errno (the fill and move ioctls
``UffdIoctlError``, whose ``result`` is the bytes done before an
``EAGAIN``); an ioctl on a closed descriptor is ``EBADF``.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from mmrace.engine import current_thread
from mmrace.mm.fs_userfaultfd import (
    userfaultfd_ctx_read,
    userfaultfd_poll_wait,
)
from mmrace.mm.mm_types import MmStruct
from mmrace.mm.userfaultfd import UserPtr
from mmrace.mm.userfaultfd_ioctl import (
    userfaultfd_continue,
    userfaultfd_copy,
    userfaultfd_move,
    userfaultfd_register,
    userfaultfd_release,
    userfaultfd_unregister,
    userfaultfd_wake,
    userfaultfd_writeprotect,
    userfaultfd_zeropage,
)
from mmrace.mm.userfaultfd_k import (
    UFFD_EVENT_FORK,
    UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
    UFFDIO_WRITEPROTECT_MODE_WP,
    UffdMsg,
    UserfaultfdCtx,
)

if TYPE_CHECKING:
    from mmrace.user.process import Process


class UserBuffer:
    """``UFFDIO_COPY``'s source when it is memory of a process (the
    monitor's buffer at *addr*): the kernel copies it with
    ``copy_from_user``, faulting it in if needed (the copy retry)."""

    def __init__(self, process: Process, addr: int) -> None:
        self.process = process
        self.addr = addr


def _current_mm(default: MmStruct) -> MmStruct:
    """``current->mm``: the mm of the scenario thread running, or *default*
    from set-up code."""
    th = current_thread()
    if th is None:
        return default
    mm: MmStruct = th.locals.get("user.mm", default)
    return mm


class Userfaultfd:
    """A userfaultfd file descriptor (after ``UFFDIO_API``). *owner* is the
    process that created it (None for the child's descriptor of a FORK
    event)."""

    def __init__(self, ctx: UserfaultfdCtx, owner: Process | None = None) -> None:
        self.ctx = ctx
        self.owner = owner

    def __repr__(self) -> str:
        return f"<userfaultfd {self.ctx.name}>"

    # -- registration ---------------------------------------------------------------

    def register(self, addr: int, length: int, mode: int) -> None:
        """``UFFDIO_REGISTER`` with ``UFFDIO_REGISTER_MODE_MISSING``,
        ``_WP`` (anonymous memory) or ``_MINOR`` (shmem, from 5.14)."""
        userfaultfd_register(self.ctx, addr, length, mode)

    def unregister(self, addr: int, length: int) -> None:
        """``UFFDIO_UNREGISTER``."""
        userfaultfd_unregister(self.ctx, addr, length)

    # -- the ioctls ------------------------------------------------------------------

    def copy(self, dst: int, src: int | list[int] | UserBuffer, length: int,
             mode: int = 0) -> int:
        """``UFFDIO_COPY`` of *src* -- a value (every word), a list of words,
        or a :class:`UserBuffer` -- into ``[dst, dst + length)``. Returns
        the bytes copied."""
        source: Any = src
        if isinstance(src, UserBuffer):
            source = UserPtr(src.process.mm, src.addr)
        return userfaultfd_copy(self.ctx, dst, source, length, mode)

    def zeropage(self, dst: int, length: int, mode: int = 0) -> int:
        """``UFFDIO_ZEROPAGE``."""
        return userfaultfd_zeropage(self.ctx, dst, length, mode)

    def continue_(self, dst: int, length: int, mode: int = 0) -> int:
        """``UFFDIO_CONTINUE``: map the page-cache pages (minor faults)."""
        return userfaultfd_continue(self.ctx, dst, length, mode)

    def move(self, dst: int, src: int, length: int, mode: int = 0) -> int:
        """``UFFDIO_MOVE`` of ``[src, src + length)`` to *dst* (a thread of
        the monitored process only). Returns the bytes moved."""
        return userfaultfd_move(self.ctx, dst, src, length, mode, _current_mm(self.ctx.mm))

    def writeprotect(self, addr: int, length: int, protect: bool = True,
                     wake: bool = True) -> None:
        """``UFFDIO_WRITEPROTECT``: protect, or un-protect (waking the faults
        waiting in the range unless *wake* is False: ``MODE_DONTWAKE``)."""
        mode = UFFDIO_WRITEPROTECT_MODE_WP if protect else 0
        if not protect and not wake:
            mode |= UFFDIO_WRITEPROTECT_MODE_DONTWAKE
        userfaultfd_writeprotect(self.ctx, addr, length, mode)

    def wake(self, addr: int, length: int) -> None:
        """``UFFDIO_WAKE``."""
        userfaultfd_wake(self.ctx, addr, length)

    # -- the file --------------------------------------------------------------------------

    def read(self) -> UffdMsg:
        """Blocking ``read()`` of the next message: a page fault
        (``.address``, ``.flags``) or an event (``.event``: FORK with
        ``.ufd``, the child's descriptor; REMAP ``.from_``/``.to``/``.len``;
        REMOVE and UNMAP ``.start``/``.end``)."""
        self._check_open()
        msg = userfaultfd_ctx_read(self.ctx)
        if msg.event == UFFD_EVENT_FORK:
            msg.ufd = Userfaultfd(msg.ufd)  # the child's new file descriptor
        return msg

    def poll(self) -> None:
        """``poll()`` until a message is pending (one reading thread only)."""
        self._check_open()
        userfaultfd_poll_wait(self.ctx)

    def close(self) -> None:
        """``close()``: unregister everything, wake every waiter."""
        userfaultfd_release(self.ctx)

    def _check_open(self) -> None:
        if self.ctx.closed:
            raise OSError(errno.EBADF, "Bad file descriptor: userfaultfd closed")

    # -- the monitor-view oracle -----------------------------------------------------------

    def expect_consistent_view(self) -> None:
        """State the non-cooperative monitor's promise for this descriptor
        (and the ones its FORK events create): no fill or move ioctl takes
        effect in the range of an event the monitor has not read yet, or
        after it read it if the ioctl started before. A crossing is a
        ``uffd-view`` violation. The ``System`` installed the oracle; if it
        was built with ``oracles_off=("uffd-view",)`` this does nothing (no
        markers, no report), so one scenario runs with and without it."""
        if "uffd-view" in self.ctx.mm.oracles_off:
            return
        self.ctx.view_expected = True


__all__ = ["UserBuffer", "Userfaultfd"]

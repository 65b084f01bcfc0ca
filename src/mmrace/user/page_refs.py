"""What a scenario uses to take references on its own pages: GUP as a
driver would call it, ``vmsplice(2)`` into a pipe and ``read(2)`` back, and
``/proc/PID/mem``. :class:`PageRefCalls` is a base of
:class:`~mmrace.user.process.Process`, so ``p.pipe()`` and, from a thread,
``t.vmsplice(fd, addr, length)`` work like the other syscalls (failures
raise ``OSError`` with the kernel's errno).

The pages handed out are the kernel's folios: keep them to read through the
reference (:meth:`PageRefCalls.read_page`, what a device or the
``gup_test`` ioctl sees) and release them with ``put_page`` (a
``get_user_pages`` reference) or ``unpin`` (a ``pin_user_pages`` pin).
"""

from __future__ import annotations

import errno as _errno
from typing import TYPE_CHECKING, Any

from mmrace.mm.gup import (
    FOLL_FORCE,
    FOLL_LONGTERM,
    FOLL_WRITE,
    get_user_pages_unlocked,
    pin_user_pages_unlocked,
    put_user_page,
)
from mmrace.mm.mm_types import PAGE_SIZE, File, MmStruct
from mmrace.mm.page_alloc import WORD_SIZE, Folio, folio_read_word
from mmrace.mm.pipe import PipeFile, create_pipe_files, pipe_read, vmsplice_to_pipe
from mmrace.mm.proc_base import mem_rw

if TYPE_CHECKING:
    from mmrace.user.process import System



class PageRefCalls:
    """GUP, pipes and ``/proc/PID/mem`` for a process (mixed into
    ``Process``, whose ``mm``, ``fds`` and ``system`` these use)."""

    pid: int
    mm: MmStruct
    fds: dict[int, File]
    system: System

    # -- get_user_pages / pin_user_pages, as a driver calls them -----------------

    def get_user_pages(self, addr: int, npages: int = 1, write: bool = False,
                       force: bool = False) -> list[Any]:
        """``get_user_pages_unlocked`` (``FOLL_GET``, plus ``FOLL_WRITE`` /
        ``FOLL_FORCE``): the pages, possibly fewer than asked (a short
        count); ``OSError(EFAULT)`` if not even the first could be taken.
        Release each with :meth:`put_page`."""
        flags = (FOLL_WRITE if write else 0) | (FOLL_FORCE if force else 0)
        return get_user_pages_unlocked(self.mm, addr, npages, flags)

    def pin_user_pages(self, addr: int, npages: int = 1, write: bool = False,
                       longterm: bool = False) -> list[Any]:
        """``pin_user_pages_unlocked`` (``FOLL_PIN``, plus ``FOLL_WRITE`` /
        ``FOLL_LONGTERM``): like :meth:`get_user_pages`, but a DMA pin (an
        RDMA or io_uring fixed buffer with ``longterm``). Release with
        ``unpin``."""
        flags = (FOLL_WRITE if write else 0) | (FOLL_LONGTERM if longterm else 0)
        return pin_user_pages_unlocked(self.mm, addr, npages, flags)

    def put_page(self, pages: Folio | list[Any]) -> None:
        """``put_page`` of each ``get_user_pages`` reference."""
        for page in pages if isinstance(pages, list) else [pages]:
            put_user_page(page)

    def read_page(self, page: Folio, offset: int = 0) -> int:
        """The word at byte *offset* of a page held by a reference or pin,
        read through the kernel mapping (what the device of a DMA pin sees:
        one visible load, whatever the process maps now)."""
        if not 0 <= offset < PAGE_SIZE or offset % WORD_SIZE:
            raise ValueError(f"offset {offset:#x} is not a word of a {PAGE_SIZE}-byte page")
        return folio_read_word(page, 0, offset // WORD_SIZE)

    # -- pipes and vmsplice ----------------------------------------------------------

    def _install_fd(self, f: File) -> int:
        fd = 3 + len(self.fds)
        self.fds[fd] = f
        return fd

    def pipe(self) -> tuple[int, int]:
        """``pipe(2)``: ``(read fd, write fd)`` of a new pipe."""
        self._nr_pipes = getattr(self, "_nr_pipes", 0) + 1
        r, w = create_pipe_files(f"pipe{self.pid}.{self._nr_pipes}")
        return self._install_fd(r), self._install_fd(w)

    def _pipe_end(self, fd: int, write: bool) -> PipeFile:
        f = self.fds.get(fd)
        if f is None or not isinstance(f, PipeFile) or f.fmode_write != write:
            raise OSError(_errno.EBADF, "Bad file descriptor"
                          + ("" if isinstance(f, PipeFile) or f is None else " (not a pipe)"))
        return f

    def vmsplice(self, fd: int, addr: int, length: int) -> int:
        """``vmsplice(2)`` of ``[addr, addr+length)`` into the pipe whose
        write end is *fd*: queues references to the pages themselves (no
        copy). Returns the bytes queued. ``EFAULT`` for an unmapped or
        unreadable range, ``EBADF`` for anything but a pipe's write end,
        ``EAGAIN`` when the pipe is full (the model does not block)."""
        return vmsplice_to_pipe(self._pipe_end(fd, True), self.mm, addr, length)

    def read(self, fd: int, nbytes: int | None = None) -> list[int]:
        """``read(2)`` from the read end *fd* of a pipe: the words queued
        (up to *nbytes*), copied from their pages as they are now.
        ``EAGAIN`` for an empty pipe (the model does not block)."""
        return pipe_read(self._pipe_end(fd, False), nbytes)

    # -- /proc/PID/mem ------------------------------------------------------------------

    def proc_mem_write(self, addr: int, value: int) -> None:
        """A write of the word *value* at *addr* of this process through
        ``/proc/PID/mem`` (``FOLL_FORCE``: also into read-only private
        mappings, by breaking COW). ``OSError(EIO)`` if nothing is mapped
        there that GUP can take."""
        mem_rw(self.mm, addr, value, True)

    def proc_mem_read(self, addr: int) -> int:
        """A read of the word at *addr* of this process through
        ``/proc/PID/mem``."""
        return mem_rw(self.mm, addr, 0, False)


__all__ = ["PageRefCalls"]

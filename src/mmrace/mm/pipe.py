"""Pipes and ``vmsplice`` (fs/pipe.c, fs/splice.c).

A pipe is a ring of buffers, each a page reference with an offset and a
length, under ``pipe->mutex``. ``vmsplice(2)`` into a pipe
(``vmsplice_to_pipe``) does not copy: it takes a ``FOLL_GET`` reference on
each user page (``iov_iter_get_pages2`` -> ``get_user_pages_fast`` without
``FOLL_WRITE``) and queues the page itself; ``read(2)`` (``pipe_read``)
copies from the page *at read time* and drops the reference when a buffer
is used up. So whatever is written to the page between the vmsplice and the
read is what the reader gets: the "COW can break either way" leak
(CVE-2020-29374) when the page changed owners meanwhile.

Left out: blocking (a vmsplice into a full pipe and a read of an empty one
fail with ``EAGAIN``, as with ``SPLICE_F_NONBLOCK``/``O_NONBLOCK``), signals
and ``SIGPIPE``, ``write(2)`` into the pipe, ``vmsplice_to_user`` (vmsplice
on the read end), buffer stealing (``SPLICE_F_GIFT``), merging of small
writes, ``F_SETPIPE_SZ``, closing (buffers keep their references until the
execution ends), pages of large folios (refused with ``EINVAL``: the model's
GUP hands out folios, not subpages). The GUP is the slow path (``get_user_pages_unlocked``),
the one GUP-fast falls back to for a read-only PTE in 5.8.
"""

from __future__ import annotations

from mmrace.engine import READ
from mmrace.mm.gup import get_user_pages_unlocked, put_user_page
from mmrace.mm.internal import errno_error, kfunc
from mmrace.mm.mm_types import PAGE_MASK, PAGE_SIZE, File, MmStruct
from mmrace.mm.page_alloc import WORD_SIZE, Folio, visible_contents
from mmrace.sync import Mutex, mutex_init, mutex_lock, mutex_unlock

PIPE_DEF_BUFFERS = 16
EAGAIN, EBADF, EFAULT, EINVAL = 11, 9, 14, 22


class PipeBuffer:
    """``struct pipe_buffer`` with ``user_page_pipe_buf_ops``: a referenced
    page, and the byte range of it that is queued."""

    __slots__ = ("page", "offset", "len")

    def __init__(self, page: Folio, offset: int, length: int) -> None:
        self.page = page
        self.offset = offset
        self.len = length


class PipeInodeInfo:
    """``struct pipe_inode_info``: the buffer ring (``bufs``, oldest first,
    at most ``max_usage``) and ``mutex``, which every change of the ring
    holds, so the ring itself needs no footprint of its own."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mutex: Mutex = mutex_init(f"{name}.mutex", "pipe->mutex")
        self.bufs: list[PipeBuffer] = []
        self.max_usage = PIPE_DEF_BUFFERS


class PipeFile(File):
    """One end of a pipe: a ``struct file`` whose ``private_data`` is the
    pipe, opened for reading (``FMODE_READ``) or writing (``FMODE_WRITE``).
    It cannot be mapped."""

    can_mmap = False

    def __init__(self, pipe: PipeInodeInfo, write: bool) -> None:
        super().__init__(f"{pipe.name}[{'w' if write else 'r'}]")
        self.pipe = pipe
        self.fmode_write = write


def create_pipe_files(name: str) -> tuple[PipeFile, PipeFile]:
    """``create_pipe_files``: a new pipe's read and write ends."""
    pipe = PipeInodeInfo(name)
    return PipeFile(pipe, False), PipeFile(pipe, True)


def _word_aligned(value: int, what: str) -> None:
    if value % WORD_SIZE:
        raise errno_error(EINVAL, f"{what} {value:#x} is not a multiple of the model's "
                                  f"{WORD_SIZE}-byte word")


@kfunc
def iter_to_pipe(pipe: PipeInodeInfo, mm: MmStruct, addr: int, length: int) -> int:
    """``iter_to_pipe``: grab the pages of ``[addr, addr+length)`` and queue
    each as a buffer until the pipe is full. Returns the bytes queued, or
    -errno if the first page could not be grabbed. Pages grabbed beyond the
    pipe's room are released again (``add_to_pipe`` failing)."""
    total = 0
    while length:
        room = pipe.max_usage - len(pipe.bufs)
        if room <= 0:
            break
        start = addr & ~PAGE_MASK
        npages = min((start + length + PAGE_SIZE - 1) // PAGE_SIZE, room)
        try:
            pages = get_user_pages_unlocked(mm, addr & PAGE_MASK, npages, 0)
        except OSError as e:
            return total or -(e.errno or EFAULT)
        for i, page in enumerate(pages):
            if page.order:  # the model's GUP hands out folios, not subpages
                for rest in pages[i:]:
                    put_user_page(rest)
                return total or -EINVAL
            n = min(PAGE_SIZE - start, length)
            pipe.bufs.append(PipeBuffer(page, start, n))
            total += n
            addr += n
            length -= n
            start = 0
        if len(pages) < npages:
            break
    return total


@kfunc
def vmsplice_to_pipe(file: PipeFile, mm: MmStruct, addr: int, length: int) -> int:
    """``vmsplice_to_pipe`` under ``pipe_lock``: queue references to the
    user pages of ``[addr, addr+length)``. Returns the bytes queued; raises
    ``OSError`` (``EFAULT``: the range is not mapped readable; ``EAGAIN``:
    the pipe is full)."""
    pipe = file.pipe
    _word_aligned(addr, "vmsplice address")
    _word_aligned(length, "vmsplice length")
    if not length:
        return 0
    mutex_lock(pipe.mutex)
    try:
        if len(pipe.bufs) >= pipe.max_usage:  # wait_for_space, as with SPLICE_F_NONBLOCK
            raise errno_error(EAGAIN, "vmsplice into a full pipe")
        ret = iter_to_pipe(pipe, mm, addr, length)
    finally:
        mutex_unlock(pipe.mutex)
    if ret < 0:
        raise errno_error(-ret, f"vmsplice at {addr:#x}")
    return ret


@kfunc
def pipe_read(file: PipeFile, nbytes: int | None = None) -> list[int]:
    """``pipe_read`` under ``__pipe_lock``: copy up to *nbytes* (all that is
    queued when None) out of the buffers' pages as they are *now*
    (``copy_page_to_iter``: one visible read of each page), releasing each
    buffer that is used up (``put_page``). Returns the words read; raises
    ``OSError(EAGAIN)`` for an empty pipe."""
    pipe = file.pipe
    if nbytes is not None:
        _word_aligned(nbytes, "read length")
    out: list[int] = []
    mutex_lock(pipe.mutex)
    try:
        if not pipe.bufs:
            raise errno_error(EAGAIN, "read from an empty pipe")
        want = sum(b.len for b in pipe.bufs) if nbytes is None else nbytes
        while want and pipe.bufs:
            buf = pipe.bufs[0]
            n = min(buf.len, want)
            page = buf.page
            visible_contents(page, READ, "copy_page_to_iter")
            first = buf.offset // WORD_SIZE
            words = page.contents.words[0]  # sparse: untouched words read 0
            out.extend(words.get(w, 0) for w in range(first, first + n // WORD_SIZE))
            buf.offset += n
            buf.len -= n
            want -= n
            if not buf.len:
                pipe.bufs.pop(0)
                put_user_page(page)  # pipe_buf_release
    finally:
        mutex_unlock(pipe.mutex)
    return out


__all__ = [
    "PIPE_DEF_BUFFERS",
    "PipeBuffer",
    "PipeFile",
    "PipeInodeInfo",
    "create_pipe_files",
    "pipe_read",
    "vmsplice_to_pipe",
]

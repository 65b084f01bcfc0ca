"""``/proc/PID/mem`` (fs/proc/base.c ``mem_rw``) and the remote access it
uses (``__access_remote_vm``, which upstream lives in mm/memory.c; it is
kept here, next to its one caller in the model, to leave memory.py to the
fault paths).

A write to ``/proc/PID/mem`` is how ptrace-like tools poke another
process: ``access_remote_vm`` with ``FOLL_FORCE | FOLL_WRITE`` grabs the
page through ``get_user_pages_remote`` (``FOLL_GET``) under the target's
mmap read lock and stores into it through the kernel mapping. ``FOLL_FORCE``
lets it write to a read-only private mapping: GUP breaks COW first, so the
write lands in a private anonymous copy, never in the page cache or the
zero page (the eras of that rule are in :mod:`mmrace.mm.gup`).

Left out: the ``proc_mem.force_override`` boot option (``FOLL_FORCE`` is
always used), ``mm_access``/ptrace permission checks, ``vm_ops->access``
for ``VM_IO|VM_PFNMAP`` mappings (such a write fails), accesses wider than
one word, and ``set_page_dirty_lock``'s folio lock (the dirty flag is
bookkeeping the model sets directly).
"""

from __future__ import annotations

from mmrace.mm.gup import FOLL_FORCE, FOLL_WRITE, get_user_pages_remote, put_user_page
from mmrace.mm.internal import errno_error, kfunc
from mmrace.mm.mm_types import PAGE_MASK, MmStruct
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.mm.page_alloc import WORD_SIZE, folio_read_word, folio_write_word

EIO, EINVAL = 5, 22


@kfunc
def __access_remote_vm(mm: MmStruct, addr: int, value: int, write: bool) -> tuple[int, int]:
    """``__access_remote_vm`` of one word: ``(bytes done, value read)``;
    0 bytes when no page could be grabbed."""
    gup_flags = FOLL_FORCE | (FOLL_WRITE if write else 0)
    mmap_read_lock(mm)
    try:
        pages = get_user_pages_remote(mm, addr & PAGE_MASK, 1, gup_flags)
    except OSError:
        mmap_read_unlock(mm)  # no vm_ops->access fallback in the model
        return 0, 0
    page = pages[0]
    if page.order:  # the model's GUP hands out folios, not subpages
        put_user_page(page)
        mmap_read_unlock(mm)
        return 0, 0
    word = (addr & ~PAGE_MASK) // WORD_SIZE
    if write:
        folio_write_word(page, 0, word, value)  # copy_to_user_page
        if not page.anon:
            page.dirty = True  # set_page_dirty_lock
        got = value
    else:
        got = folio_read_word(page, 0, word)  # copy_from_user_page
    put_user_page(page)
    mmap_read_unlock(mm)
    return WORD_SIZE, got


@kfunc
def mem_rw(mm: MmStruct, addr: int, value: int, write: bool) -> int:
    """``mem_rw``: read or write the word at *addr* of *mm* as
    ``/proc/PID/mem`` does; returns the word (read) or *value* (write).
    Raises ``OSError(EIO)`` when nothing could be transferred (an unmapped
    address, a ``VM_IO``/``VM_PFNMAP`` mapping, a shared mapping without
    write permission), ``OSError(EINVAL)`` for an address that is not
    word-aligned (the model's granularity)."""
    if addr % WORD_SIZE:
        raise errno_error(EINVAL, f"/proc/PID/mem offset {addr:#x} is not a multiple of the "
                                  f"model's {WORD_SIZE}-byte word")
    done, got = __access_remote_vm(mm, addr, value, write)
    if not done:
        raise errno_error(EIO, f"/proc/PID/mem {'write' if write else 'read'} at {addr:#x}")
    return got


__all__ = ["mem_rw"]

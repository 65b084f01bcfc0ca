"""A block-device ``O_DIRECT`` read into user memory, the user of GUP-fast
that the MADV_FREE race was found with (block/fops.c's
``__blkdev_direct_IO_simple``, block/bio.c's ``bio_iov_iter_get_pages`` and
``bio_release_pages``).

The buffer's pages are taken with ``get_user_pages_fast(FOLL_WRITE)`` (as
``iov_iter_get_pages`` did up to 6.x; newer kernels pin them, which the
model can do too), the device writes into them by DMA -- not through the
page tables, so no PTE becomes dirty -- and on completion each page is
marked dirty (``set_page_dirty_lock``) and released.

Left out: the bio, the block device and its queue, partial and
multi-page I/O, polling, async completion.
"""

from __future__ import annotations

from mmrace.mm.gup import FOLL_WRITE, get_user_pages_fast, put_user_page
from mmrace.mm.internal import kfunc
from mmrace.mm.mm_types import MmStruct
from mmrace.mm.page_alloc import Folio, folio_lock, folio_unlock, folio_write_word
from mmrace.mm.pgtable import peek_pte, pte_pfn
from mmrace.mm.rmap import folio_mark_dirty


@kfunc
def bio_iov_iter_get_pages(mm: MmStruct, addr: int) -> Folio:
    """``bio_iov_iter_get_pages``: the buffer's page, referenced, for writing
    (GUP-fast, falling back to the slow path)."""
    return get_user_pages_fast(mm, addr, 1, FOLL_WRITE)[0]


@kfunc
def bio_release_pages(folio: Folio) -> None:
    """``bio_release_pages(bio, mark_dirty=true)``: a read completed: mark the
    page dirty under its lock (``set_page_dirty_lock``) and drop the
    reference."""
    folio_lock(folio)
    folio_mark_dirty(folio)
    folio_unlock(folio)
    put_user_page(folio)


@kfunc
def blkdev_direct_io_read(mm: MmStruct, addr: int, word: int, value: int) -> None:
    """``__blkdev_direct_IO_simple`` for a read of one block into the page
    at *addr*: take the page, let the device write *value* into *word* of
    it (DMA: a store to the page itself, no page-table access), release."""
    folio = bio_iov_iter_get_pages(mm, addr)
    idx = 0
    if folio.order:
        idx = pte_pfn(peek_pte(mm, addr)) - folio.pfn  # which page of the THP
    folio_write_word(folio, idx, word, value)
    bio_release_pages(folio)

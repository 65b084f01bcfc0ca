"""Truncation (mm/truncate.c, ``unmap_mapping_range`` of mm/memory.c).

``unmap_mapping_range`` zaps every mapping of a file range while holding
only ``i_mmap_rwsem`` for read: no mmap lock, no VMA lock. This is why page
tables may only be freed once a VMA is unreachable through the rmap.

Left out: ``i_rwsem`` and ``invalidate_lock``, partial-page zeroing,
writeback waits, large folios in the page cache.
"""

from __future__ import annotations

from mmrace.engine import RMW, visible
from mmrace.mm.internal import kfunc
from mmrace.mm.memory import ZapDetails, zap_page_range_single
from mmrace.mm.mm_types import PAGE_SHIFT, AddressSpace, File
from mmrace.mm.page_alloc import folio_lock, folio_mapped, folio_put, folio_unlock
from mmrace.mm.rmap import i_mmap_lock_read, i_mmap_unlock_read


@kfunc
def unmap_mapping_range(mapping: AddressSpace, holebegin: int, holelen: int,
                        even_cows: bool) -> None:
    """``unmap_mapping_range``: zap ``[holebegin, holebegin + holelen)`` (file
    offsets; 0 length is to EOF) in every VMA mapping the file, under
    ``i_mmap_rwsem`` (read) alone. Private COW copies survive unless
    *even_cows*."""
    first = holebegin >> PAGE_SHIFT
    last = (1 << 52) if holelen == 0 else (holebegin + holelen - 1) >> PAGE_SHIFT
    details = ZapDetails(even_cows)
    i_mmap_lock_read(mapping)
    for _, vma in sorted(mapping.i_mmap.items()):
        vstart, vend, pgoff = vma.vm_start, vma.vm_end, vma.vm_pgoff
        vlast = pgoff + ((vend - vstart) >> PAGE_SHIFT) - 1
        lo, hi = max(first, pgoff), min(last, vlast)
        if lo > hi:
            continue
        start = vstart + ((lo - pgoff) << PAGE_SHIFT)
        end = vstart + ((hi - pgoff + 1) << PAGE_SHIFT)
        zap_page_range_single(vma, start, end - start, details)
    i_mmap_unlock_read(mapping)


@kfunc
def truncate_inode_pages(mapping: AddressSpace, lstart: int) -> None:
    """``truncate_inode_pages_range``: drop the page-cache folios from
    *lstart* on (each under its folio lock), releasing the cache's reference."""
    first = (lstart + (1 << PAGE_SHIFT) - 1) >> PAGE_SHIFT
    for index in sorted(i for i in mapping.i_pages if i >= first):
        folio = mapping.i_pages[index]
        folio_lock(folio)
        if folio_mapped(folio):
            unmap_mapping_range(mapping, index << PAGE_SHIFT, 1 << PAGE_SHIFT, False)
        visible(mapping, RMW, f"filemap_remove_folio({index})")
        del mapping.i_pages[index]
        folio.mapping = None
        folio_unlock(folio)
        folio_put(folio)


@kfunc
def truncate_pagecache(file: File, newsize: int) -> None:
    """``truncate_setsize`` + ``truncate_pagecache``: unmap, drop the cache,
    unmap again (for pages faulted in meanwhile)."""
    mapping = file.f_mapping
    holebegin = (newsize + (1 << PAGE_SHIFT) - 1) & ~((1 << PAGE_SHIFT) - 1)
    file.size = newsize
    unmap_mapping_range(mapping, holebegin, 0, True)
    truncate_inode_pages(mapping, newsize)
    unmap_mapping_range(mapping, holebegin, 0, True)

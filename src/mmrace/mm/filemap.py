"""A small page cache (mm/filemap.c): ``filemap_fault`` finds or creates the
folio for a file offset; the page cache holds one reference per folio.

Left out: readahead, ``invalidate_lock``, fault-around (``map_pages``),
writeback and dirty accounting, shadow entries, large folios in the cache,
dropping the mmap lock while waiting for I/O (no I/O: pages are created
zeroed and up to date).
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import READ, RMW, visible
from mmrace.mm.internal import kfunc
from mmrace.mm.mm_types import PAGE_SHIFT, AddressSpace
from mmrace.mm.page_alloc import Folio, folio_alloc, folio_get, folio_lock

VM_FAULT_SIGBUS = 0x2
VM_FAULT_LOCKED = 0x200


@kfunc
def filemap_get_folio(mapping: AddressSpace, index: int) -> Folio | None:
    """``filemap_get_folio``: the cached folio at *index* with a reference, or None."""
    visible(mapping, READ, f"filemap_get_folio({index})")
    folio: Folio | None = mapping.i_pages.get(index)
    if folio is not None:
        folio_get(folio)
    return folio


@kfunc
def filemap_add_folio(mapping: AddressSpace, index: int) -> Folio:
    """``__filemap_get_folio(FGP_CREAT)``: find or add the folio at *index*;
    returns it with a reference for the caller (the cache keeps its own)."""
    visible(mapping, RMW, f"filemap_add_folio({index})")
    folio: Folio | None = mapping.i_pages.get(index)
    if folio is not None:
        folio_get(folio)
        return folio
    folio = folio_alloc(0, f"{mapping.name}[{index}]")
    folio.mapping = mapping
    folio.index = index
    folio.uptodate = True
    mapping.i_pages[index] = folio  # the page cache's reference
    folio_get(folio)  # the caller's
    return folio


@kfunc
def filemap_fault(vmf: Any) -> tuple[int, Folio | None]:
    """``filemap_fault``: the page-cache folio for ``vmf->pgoff``, locked and
    referenced (``VM_FAULT_LOCKED``), or ``VM_FAULT_SIGBUS`` beyond EOF."""
    file = vmf.vma.vm_file
    mapping = file.f_mapping
    size = (file.size + (1 << PAGE_SHIFT) - 1) >> PAGE_SHIFT
    if vmf.pgoff >= size:
        return VM_FAULT_SIGBUS, None
    folio = filemap_add_folio(mapping, vmf.pgoff)
    folio_lock(folio)
    return VM_FAULT_LOCKED, folio

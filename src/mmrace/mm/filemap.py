"""A small page cache (mm/filemap.c): ``filemap_fault`` finds or creates the
folio for a file offset; the page cache holds one reference per page of a
folio. A large folio (shmem's, ``mm/shmem.py``) sits at every index it
covers. ``filemap_map_pages`` is fault-around: on a read fault it maps the
cached, up-to-date folios around the address by PTEs -- or a PMD-sized
folio by one huge PMD (``filemap_map_pmd`` -> ``do_set_pmd``).

A file's data live in its folios; a folio written back and reclaimed
(``mm/vmscan.py``) leaves its words in ``mapping.backing`` -- the file's
blocks on disk -- from which a new folio for that index is filled.

Left out: readahead, ``invalidate_lock``, writeback as I/O (it is
synchronous), dirty accounting, shadow entries, ``mmap_miss``, dropping
the mmap lock while waiting for I/O.
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import READ, RMW, execution_local, visible
from mmrace.mm.internal import kfunc
from mmrace.mm.memory import VM_FAULT_NOPAGE, VmFault, do_set_pmd
from mmrace.mm.mm_types import PAGE_SHIFT, AddressSpace
from mmrace.mm.page_alloc import (
    Folio,
    folio_alloc,
    folio_get,
    folio_lock,
    folio_put,
    folio_ref_add,
    folio_try_get,
    folio_trylock,
    folio_unlock,
)
from mmrace.mm.pgtable import (
    PageTable,
    pfn_pte,
    pmd_none,
    pmd_trans_huge,
    pmdp_get,
    pte_alloc,
    pte_index,
    pte_mkyoung,
    pte_none,
    pte_offset_map_lock,
    pte_unmap_unlock,
    ptep_get,
    set_pte_at,
    vm_prot_to_pte,
)
from mmrace.mm.rmap import folio_add_file_rmap_ptes

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
    data = mapping.backing.get(index)
    if data is not None:  # read from "disk" (synchronous, before anyone sees it)
        folio.contents.words[0] = dict(data)
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


# --- fault-around ---------------------------------------------------------------------------

FAULT_AROUND_BYTES = 65536
"""The kernel's default ``fault_around_bytes`` (debugfs): 16 pages."""


class _FaultAround:
    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = FAULT_AROUND_BYTES


def set_fault_around_bytes(nbytes: int) -> None:
    """Write ``/sys/kernel/debug/fault_around_bytes`` (rounded down to a
    power-of-two number of pages; one page disables fault-around)."""
    if nbytes < 1 << PAGE_SHIFT or nbytes > 512 << PAGE_SHIFT:
        raise ValueError(f"fault_around_bytes must be 4096..2097152, not {nbytes}")
    pages = 1 << ((nbytes >> PAGE_SHIFT).bit_length() - 1)
    execution_local("mm.fault_around", _FaultAround).bytes = pages << PAGE_SHIFT


def fault_around_pages() -> int:
    """``fault_around_pages``."""
    fa: _FaultAround = execution_local("mm.fault_around", _FaultAround)
    return fa.bytes >> PAGE_SHIFT


@kfunc
def next_uptodate_folio(mapping: AddressSpace, cursor: list[int], end_pgoff: int,
                        max_idx: int) -> Folio | None:
    """``next_uptodate_folio``: the next cached folio at or after
    ``cursor[0]`` (up to *end_pgoff*) that is up to date and could be
    referenced and locked at once, still in *mapping* and inside the file;
    returned locked and referenced, ``cursor`` set to (the index found, the
    next index to search). Each xarray step is one visible read."""
    while True:
        ev = visible(mapping, READ, f"xas_find({cursor[0]:#x})")
        found = [i for i in mapping.i_pages if cursor[0] <= i <= end_pgoff]
        if not found:
            return None
        index = min(found)
        folio: Folio = mapping.i_pages[index]
        if ev is not None:
            ev.detail = folio.name
        cursor[0] = folio.index + folio.nr_pages
        cursor[1] = index
        if not folio_try_get(folio):
            continue
        if not folio.uptodate or not folio_trylock(folio):
            folio_put(folio)
            continue
        if folio.mapping is not mapping or index >= max_idx:
            folio_unlock(folio)
            folio_put(folio)
            continue
        return folio


@kfunc
def filemap_map_pmd(vmf: VmFault, folio: Folio) -> bool:
    """``filemap_map_pmd``: nothing to do under a huge PMD; a PMD-sized folio
    over an empty PMD is mapped by ``do_set_pmd`` (the reference passes to
    the mapping); otherwise make sure a PTE table is there. True if done."""
    assert vmf.pmd is not None
    mm = vmf.vma.vm_mm
    pmdval = pmdp_get(vmf.pmd, vmf.pmd_index)
    if pmd_trans_huge(pmdval):
        folio_unlock(folio)
        folio_put(folio)
        return True
    if pmd_none(pmdval) and folio.order == 9 and do_set_pmd(vmf, folio) == 0:
        folio_unlock(folio)
        return True
    pte_alloc(mm, vmf.pmd, vmf.pmd_index)
    return False


@kfunc
def filemap_map_folio_range(vmf: VmFault, table: object, folio: Folio, start: int, addr: int,
                            nr_pages: int) -> int:
    """``filemap_map_folio_range`` / ``set_pte_range``: map pages
    ``start..start+nr_pages`` of *folio* at *addr* by PTEs wherever the PTE
    is empty (PTL held): each run gets its PTEs, one rmap update and one
    reference per page. ``VM_FAULT_NOPAGE`` if the faulting address was
    among them."""
    assert isinstance(table, PageTable)
    vma = vmf.vma
    mm = vma.vm_mm
    prot = vm_prot_to_pte(vma.vm_page_prot)
    ret = 0
    run: list[tuple[int, int, int]] = []  # (page index, address, pte index)

    def flush() -> None:
        nonlocal ret
        if not run:
            return
        for idx, a, pi in run:
            set_pte_at(mm, a, table, pi, pte_mkyoung(pfn_pte(folio.pfn + idx, prot)))
        folio_add_file_rmap_ptes(folio, run[0][0], len(run), vma)
        folio_ref_add(folio, len(run))
        mm.rss += len(run)
        if any(a == vmf.address for _, a, _ in run):
            ret = VM_FAULT_NOPAGE
        run.clear()

    for k in range(nr_pages):
        a = addr + (k << PAGE_SHIFT)
        pi = pte_index(a)
        # An entry never touched is none; filling it needs the PTL we hold.
        if (pi in table.entries or pi in table.slots) and not pte_none(ptep_get(table, pi)):
            flush()
            continue
        run.append((start + k, a, pi))
    flush()
    return ret


@kfunc
def filemap_map_pages(vmf: VmFault, start_pgoff: int, end_pgoff: int) -> int:
    """``filemap_map_pages`` (``->map_pages``, called under RCU): map the
    cached folios of ``[start_pgoff, end_pgoff]`` -- a PMD-sized one by a
    huge PMD when possible (``filemap_map_pmd``), the rest by PTEs under
    the PTL. Returns ``VM_FAULT_NOPAGE`` if the faulting page got mapped."""
    vma = vmf.vma
    file = vma.vm_file
    mapping = file.f_mapping
    mm = vma.vm_mm
    max_idx = (file.size + (1 << PAGE_SHIFT) - 1) >> PAGE_SHIFT
    cursor = [start_pgoff, start_pgoff]
    folio = next_uptodate_folio(mapping, cursor, end_pgoff, max_idx)
    if folio is None:
        return 0
    if filemap_map_pmd(vmf, folio):
        return VM_FAULT_NOPAGE
    assert vmf.pmd is not None
    addr0 = vma.vm_start + ((start_pgoff - vma.vm_pgoff) << PAGE_SHIFT)
    pm = pte_offset_map_lock(mm, vmf.pmd, vmf.pmd_index, addr0)
    if pm is None:
        folio_unlock(folio)
        folio_put(folio)
        return 0
    end_pgoff = min(end_pgoff, max_idx - 1)
    ret = 0
    while folio is not None:
        index = cursor[1]
        nr = min(folio.index + folio.nr_pages - 1, end_pgoff) - index + 1
        if nr > 0:
            addr = vma.vm_start + ((index - vma.vm_pgoff) << PAGE_SHIFT)
            ret |= filemap_map_folio_range(vmf, pm.table, folio, index - folio.index, addr, nr)
        folio_unlock(folio)
        folio_put(folio)
        folio = next_uptodate_folio(mapping, cursor, end_pgoff, max_idx)
    pte_unmap_unlock(pm)
    return ret

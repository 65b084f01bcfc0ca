"""tmpfs / shmem files whose page cache may hold PMD-sized folios
(mm/shmem.c, with ``truncate_inode_partial_folio`` / ``truncate_inode_folio``
of mm/truncate.c and the page-cache ``split_huge_page`` of
mm/huge_memory.c).

A :class:`ShmemFile` is a tmpfs file with the mount's ``huge=`` option
(``never``, ``always``, ``within_size``, ``advise``). ``shmem_get_folio``
finds the folio for an index or adds a new one: a PMD-sized folio when the
option allows it, the aligned 512-page block is free in the cache and the
faulting VMA can map it by PMD; else a single page. A large folio sits at
each of its 512 indices and the cache holds 512 references to it.

``ftruncate`` and ``fallocate(FALLOC_FL_PUNCH_HOLE)`` go through
``shmem_undo_range``: whole folios in the range are unmapped (under
``i_mmap_rwsem`` alone) and deleted; a large folio cut by the range's end
is zeroed there and split (``split_folio``: unmap it everywhere -- a PMD
mapping is split, i.e. cleared -- freeze its refcount, and cut it into
512 small folios), so that the pages past the cut can go.

userfaultfd minor faults (5.14, ``uffdio-continue``): a fault in a VMA
registered ``UFFDIO_REGISTER_MODE_MINOR`` at an offset the page cache
already holds goes to the monitor (``handle_userfault(vmf, VM_UFFD_MINOR)``)
instead of being mapped, and ``UFFDIO_CONTINUE`` maps the cached page
(``shmem_get_folio`` with ``SGP_NOALLOC``: :func:`shmem_get_folio_noalloc`).
``System.memfd_create`` makes such a file (a :class:`ShmemFile`).

Left out: swap for shmem (shmem folios are not reclaimed), ``fallocate``
preallocation, ``huge=`` sysfs override (``shmem_enabled``), mTHP sizes,
``memfd`` seals, xattrs, quota, the ``SGP_*`` modes beyond a plain fault
and ``SGP_NOALLOC``, userfaultfd MISSING faults on shmem
(``shmem_mfill_atomic_pte``: registering shmem for MISSING is refused as
not modelled; WP is modelled, with markers on empty entries).
"""

from __future__ import annotations

import errno as _errno
from typing import Any

from mmrace.engine import RMW, WRITE, visible
from mmrace.mm import huge_memory
from mmrace.mm.filemap import filemap_get_folio, filemap_map_pages
from mmrace.mm.fs_userfaultfd import handle_userfault
from mmrace.mm.internal import errno_error, kfunc
from mmrace.mm.memory import VmFault
from mmrace.mm.mm_types import (
    PAGE_SHIFT,
    PAGE_SIZE,
    VM_FAULT_LOCKED,
    VM_FAULT_SIGBUS,
    VM_HUGEPAGE,
    VM_UFFD_MINOR,
    File,
    VmAreaStruct,
    VmOperations,
)
from mmrace.mm.page_alloc import (
    HPAGE_PMD_ORDER,
    WORD_SIZE,
    Folio,
    FolioContents,
    folio_alloc,
    folio_lock,
    folio_mapcount,
    folio_put,
    folio_put_refs,
    folio_ref_count,
    folio_ref_freeze,
    folio_ref_unfreeze,
    folio_test_flag,
    folio_try_get,
    folio_unlock,
    mem_state,
    visible_contents,
)
from mmrace.mm.rmap import (
    TTU_IGNORE_MLOCK,
    TTU_RMAP_LOCKED,
    TTU_SPLIT_HUGE_PMD,
    TTU_SYNC,
    folio_mark_dirty,
    i_mmap_lock_read,
    i_mmap_unlock_read,
    try_to_unmap,
)
from mmrace.mm.truncate import unmap_mapping_range
from mmrace.mm.userfaultfd_k import userfaultfd_minor

SHMEM_HUGE = ("never", "always", "within_size", "advise")
HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


def shmem_vm_ops() -> VmOperations:
    """``shmem_vm_ops``: ``->fault`` is ``shmem_fault``, ``->map_pages`` the
    page cache's ``filemap_map_pages``."""
    ops = VmOperations("shmem_vm_ops", fault=shmem_fault)
    ops.map_pages = filemap_map_pages  # type: ignore[attr-defined]
    return ops


class ShmemFile(File):
    """A tmpfs file (its inode and an open file) with the mount's ``huge=``
    option."""

    def __init__(self, path: str, size: int, huge: str = "never") -> None:
        if huge not in SHMEM_HUGE:
            raise ValueError(f"tmpfs huge={huge!r} is not one of {', '.join(SHMEM_HUGE)}")
        super().__init__(path, size, shmem_vm_ops())
        self.huge = huge


def shmem_huge_allowed(file: ShmemFile, index: int, vm_flags: int) -> bool:
    """``shmem_huge_global_enabled`` for the mount option: ``always``;
    ``within_size`` if the aligned block ends inside the file; ``advise``
    for a ``MADV_HUGEPAGE`` VMA (``within_size`` falls through to it)."""
    if file.huge == "always":
        return True
    if file.huge == "within_size":
        end = (index // HPAGE_PMD_NR + 1) * HPAGE_PMD_NR
        if (file.size + PAGE_SIZE - 1) >> PAGE_SHIFT >= end:
            return True
    if file.huge in ("within_size", "advise"):
        return bool(vm_flags & VM_HUGEPAGE)
    return False


@kfunc
def shmem_get_folio(file: ShmemFile, index: int, vma: Any = None, address: int = 0) -> Folio:
    """``shmem_get_folio_gfp`` (SGP_CACHE): the folio at *index* with a
    reference, adding a new zeroed one (``shmem_alloc_and_add_folio``) if
    the cache has none -- PMD-sized if allowed and its aligned block is
    free and fits the faulting VMA. One visible RMW of the mapping (the
    xarray lock); the new folio is private until then."""
    mapping = file.f_mapping
    vm_flags = vma.vm_flags if vma is not None else 0
    huge = shmem_huge_allowed(file, index, vm_flags) and (
        vma is None or huge_memory.thp_vma_suitable_order(vma, address))
    aligned = index - index % HPAGE_PMD_NR
    # filemap_get_entry: the lookup and folio_try_get + xas_reload are one
    # step here -- a folio still in the cache holds the cache's references,
    # so one referenced while it is there is not freed; a folio that left
    # the cache since the peek is looked up again.
    folio: Folio | None = mapping.i_pages.get(index)
    while True:
        also = ((folio, RMW),) if folio is not None else ()
        ev = visible(mapping, RMW, f"shmem_get_folio({index:#x})", also=also)
        now: Folio | None = mapping.i_pages.get(index)
        if now is folio:
            break
        folio = now
    if folio is not None:
        folio.check_alive("folio_try_get")
        folio._refcount += 1
        return folio
    if huge and not any(aligned + i in mapping.i_pages for i in range(HPAGE_PMD_NR)):
        folio = folio_alloc(HPAGE_PMD_ORDER, f"{mapping.name}[{aligned:#x}+512]")
        folio.index = aligned
    else:
        folio = folio_alloc(0, f"{mapping.name}[{index:#x}]")
        folio.index = index
    folio.mapping = mapping
    folio.uptodate = True
    folio.swapbacked = True
    for i in range(folio.nr_pages):
        mapping.i_pages[folio.index + i] = folio
    folio._refcount += folio.nr_pages  # the cache's references, then ours (1)
    if ev is not None:
        ev.detail = folio.name
    return folio


@kfunc
def shmem_fault(vmf: VmFault) -> tuple[int, Folio | None]:
    """``shmem_fault``: SIGBUS beyond EOF; in a VMA registered for
    userfaultfd minor faults, a page the cache already holds goes to the
    monitor (``shmem_get_folio_gfp``'s lockless ``filemap_get_entry``, then
    ``handle_userfault(vmf, VM_UFFD_MINOR)``: the fault returns with the
    fault lock dropped); else the folio for the offset, locked, with a
    reference (``VM_FAULT_LOCKED``); a folio that left the cache while the
    fault waited for its lock is looked up again (the ``folio->mapping``
    check of ``shmem_get_folio_gfp``, which starts over from its lookup)."""
    vma = vmf.vma
    file = vma.vm_file
    if vmf.pgoff >= (file.size + PAGE_SIZE - 1) >> PAGE_SHIFT:
        return VM_FAULT_SIGBUS, None
    while True:
        if userfaultfd_minor(vma):
            cached = filemap_get_folio(file.f_mapping, vmf.pgoff)
            if cached is not None:
                folio_put(cached)
                return handle_userfault(vmf, VM_UFFD_MINOR), None
        folio = shmem_get_folio(file, vmf.pgoff, vma, vmf.address)
        folio_lock(folio)
        if folio.mapping is file.f_mapping:
            return VM_FAULT_LOCKED, folio
        # Truncated, or replaced by a collapse, while we waited for the lock.
        folio_unlock(folio)
        folio_put(folio)


def vma_is_shmem(vma: VmAreaStruct) -> bool:
    """``vma_is_shmem``: the VMA maps a tmpfs/memfd file."""
    return isinstance(vma.vm_file, ShmemFile)


@kfunc
def shmem_get_folio_noalloc(file: ShmemFile, index: int) -> Folio | int | None:
    """``shmem_get_folio(inode, index, 0, &folio, SGP_NOALLOC)``: the cached
    folio at *index* (a large folio for any of its pages), locked and
    referenced -- looked up again if it left the cache while we waited for
    its lock; None if the cache has none (nothing is allocated:
    ``UFFDIO_CONTINUE`` maps only what the page cache has); ``-EINVAL``
    beyond EOF."""
    if index >= (file.size + PAGE_SIZE - 1) >> PAGE_SHIFT:
        return -_errno.EINVAL
    while True:
        folio = filemap_get_folio(file.f_mapping, index)
        if folio is None:
            return None
        folio_lock(folio)
        if folio.mapping is file.f_mapping:
            return folio
        # Truncated, or replaced by a collapse, while we waited for the lock.
        folio_unlock(folio)
        folio_put(folio)


# --- splitting a page-cache folio ----------------------------------------------------------------


def _split_folio_objects(folio: Folio) -> list[Folio]:
    """``__split_huge_page`` on the model's objects: *folio* becomes its
    first page; each other page becomes a new order-0 folio at its frame,
    with its data and the folio's flags; returns the new ones. The caller
    froze the refcount and holds the cache's lock (nobody can look)."""
    st = mem_state()
    words = folio.contents.words
    tails: list[Folio] = []
    for i in range(1, folio.nr_pages):
        t = Folio(f"{folio.mapping.name}[{folio.index + i:#x}]", 0, folio.pfn + i)
        t._refcount = 0
        t.contents.words = [words[i]]
        t.mapping, t.index = folio.mapping, folio.index + i
        t.uptodate, t.dirty, t.swapbacked = folio.uptodate, folio.dirty, folio.swapbacked
        t.referenced, t.active = folio.referenced, folio.active
        st.mem_map[t.pfn] = t
        st.live[t.serial] = t
        tails.append(t)
    folio.order = 0
    folio.nr_pages = 1
    folio.anon_exclusive = folio.anon_exclusive[:1]
    folio.page_mapcount = []
    contents = FolioContents(folio, 1)
    contents.words = [words[0]]
    folio.contents = contents
    return tails


@kfunc
def split_folio(folio: Folio) -> int:
    """``split_folio`` (``split_huge_page_to_list_to_order`` to order 0) of
    a locked large page-cache folio the caller holds a reference to: under
    ``i_mmap_rwsem`` (read) unmap it everywhere (``unmap_folio``:
    ``try_to_unmap`` with ``TTU_SPLIT_HUGE_PMD`` -- file pages are simply
    left unmapped, to fault back), then, under the xarray lock, freeze its
    refcount at the caller's plus the cache's references and cut it into
    order-0 folios. 0, or -EAGAIN if anyone else holds it (a GUP pin, a
    mapping that came back) or -EBUSY if it was truncated."""
    mapping = folio.mapping
    if mapping is None:
        return -_errno.EBUSY
    extra = folio.nr_pages  # the page cache's references
    if folio_mapcount(folio) != folio_ref_count(folio) - extra - 1:
        return -_errno.EAGAIN  # can_split_folio: a pin or a racing lookup
    i_mmap_lock_read(mapping)
    try_to_unmap(folio, TTU_RMAP_LOCKED | TTU_SYNC | TTU_SPLIT_HUGE_PMD | TTU_IGNORE_MLOCK,
                 split_pmd=huge_memory.split_huge_pmd_locked)
    visible(mapping, RMW, "xas_lock (split)")
    ret = -_errno.EAGAIN
    if folio_ref_freeze(folio, 1 + extra):
        tails = _split_folio_objects(folio)
        for t in tails:
            mapping.i_pages[t.index] = t
            t._refcount = 1  # the cache's (they are unlocked and unmapped)
        folio_ref_unfreeze(folio, 2)  # the cache's and the caller's
        ret = 0
    i_mmap_unlock_read(mapping)
    return ret


# --- truncation and hole punching ----------------------------------------------------------


@kfunc
def filemap_remove_folio(folio: Folio) -> None:
    """``filemap_remove_folio``: under the xarray lock delete the locked
    *folio* from the page cache and drop the cache's references."""
    mapping = folio.mapping
    visible(mapping, RMW, f"filemap_remove_folio({folio.index:#x})")
    for i in range(folio.nr_pages):
        if mapping.i_pages.get(folio.index + i) is folio:
            del mapping.i_pages[folio.index + i]
    folio.mapping = None
    folio_put_refs(folio, folio.nr_pages)


@kfunc
def truncate_inode_folio(mapping: Any, folio: Folio) -> None:
    """``truncate_inode_folio``: unmap a still-mapped folio
    (``unmap_mapping_folio``: its range, private COW copies spared) and
    remove it from the cache."""
    if folio.mapping is not mapping:
        return
    if folio_mapcount(folio):
        unmap_mapping_range(mapping, folio.index << PAGE_SHIFT, folio.nr_pages << PAGE_SHIFT,
                            False)
    filemap_remove_folio(folio)


def folio_zero_range(folio: Folio, offset: int, length: int) -> None:
    """``folio_zero_range``: zero the bytes ``[offset, offset + length)`` of
    *folio* (the model zeroes whole words; one visible write)."""
    visible_contents(folio, WRITE, "folio_zero_range")
    stride = WORD_SIZE
    for b in range(offset - offset % stride, offset + length, stride):
        if offset <= b and b + stride <= offset + length:
            folio.contents.words[b // PAGE_SIZE][(b % PAGE_SIZE) // stride] = 0


@kfunc
def truncate_inode_partial_folio(folio: Folio, lstart: int, lend: int) -> bool:
    """``truncate_inode_partial_folio``: the locked *folio* overlaps
    ``[lstart, lend]``: drop it if it lies inside; else zero the overlap
    and, for a large folio, split it so the pages inside can go. False if a
    large dirty folio could not be split (it stays, zeroed there)."""
    pos = folio.index << PAGE_SHIFT
    size = folio.nr_pages << PAGE_SHIFT
    offset = max(lstart - pos, 0)
    length = size - offset if pos + size <= lend + 1 else lend + 1 - pos - offset
    if length == size:
        truncate_inode_folio(folio.mapping, folio)
        return True
    folio_zero_range(folio, offset, length)
    if not folio.order:
        return True
    if split_folio(folio) == 0:
        return True
    if folio_test_flag(folio, "dirty", "folio_test_dirty"):
        return False
    truncate_inode_folio(folio.mapping, folio)
    return True


def _lookup_lock(mapping: Any, index: int, end: int | None = None) -> Folio | None:
    """The first cached folio at an index in ``[index, end)`` (just *index*
    without *end*), referenced and locked, still in *mapping*
    (``shmem_get_partial_folio`` / ``find_lock_entries``: one visible
    lookup of the xarray, then the folio). The reference is speculative
    (``folio_try_get``, under RCU in the kernel): the folio may have left
    the cache and been freed since the lookup -- a ``collapse_file``
    replacing it, say -- and then the lookup is made again, as it is when
    the locked folio turns out truncated (``mapping`` no longer this
    one)."""
    while True:
        visible(mapping, RMW, f"find_lock_entries({index:#x})")
        if end is None:
            folio: Folio | None = mapping.i_pages.get(index)
        else:
            present = [i for i in mapping.i_pages if index <= i < end]
            folio = mapping.i_pages[min(present)] if present else None
        if folio is None:
            return None
        if not folio_try_get(folio):
            continue
        folio_lock(folio)
        if folio.mapping is mapping:
            return folio
        folio_unlock(folio)
        folio_put(folio)


@kfunc
def shmem_undo_range(file: ShmemFile, lstart: int, lend: int) -> None:
    """``shmem_undo_range``: remove the page cache of bytes ``[lstart, lend]``:
    the folios entirely inside first, then the partial ones at each end
    (``truncate_inode_partial_folio``), then what is left inside (the
    small folios a split produced)."""
    mapping = file.f_mapping
    start = (lstart + PAGE_SIZE - 1) >> PAGE_SHIFT
    end = (lend + 1) >> PAGE_SHIFT  # exclusive

    def whole_pass() -> None:
        index = start
        while index < end:
            folio = _lookup_lock(mapping, index, end)
            if folio is None:
                return
            nxt = folio.index + folio.nr_pages
            if folio.index >= start and nxt <= end:
                truncate_inode_folio(mapping, folio)
            folio_unlock(folio)
            folio_put(folio)
            index = max(nxt, index + 1)

    whole_pass()
    head = _lookup_lock(mapping, lstart >> PAGE_SHIFT)
    same_folio = (lstart >> PAGE_SHIFT) == (lend >> PAGE_SHIFT)
    if head is not None:
        same_folio = lend < ((head.index + head.nr_pages) << PAGE_SHIFT)
        folio_mark_dirty(head)
        if not truncate_inode_partial_folio(head, lstart, lend):
            start = head.index + head.nr_pages
            if same_folio:
                end = head.index
        folio_unlock(head)
        folio_put(head)
    if not same_folio and lend < file_size_max(file):
        tail = _lookup_lock(mapping, lend >> PAGE_SHIFT)
        if tail is not None:
            folio_mark_dirty(tail)
            if not truncate_inode_partial_folio(tail, lstart, lend):
                end = tail.index
            folio_unlock(tail)
            folio_put(tail)
    whole_pass()


def file_size_max(file: ShmemFile) -> int:
    """A byte offset past every cached page (for "to the end" ranges)."""
    last = max(file.f_mapping.i_pages, default=-1)
    return (last + 1) << PAGE_SHIFT


@kfunc
def shmem_truncate_range(file: ShmemFile, lstart: int, lend: int) -> None:
    """``shmem_truncate_range``."""
    shmem_undo_range(file, lstart, lend)


@kfunc
def shmem_setattr_size(file: ShmemFile, newsize: int) -> None:
    """``shmem_setattr`` with ATTR_SIZE (``ftruncate``): shrinking unmaps
    the pages past the new end everywhere (``even_cows``), truncates the
    cache, and unmaps again for COW copies made meanwhile."""
    oldsize = file.size
    file.size = newsize
    if newsize >= oldsize:
        return
    holebegin = (newsize + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    mapping = file.f_mapping
    unmap_mapping_range(mapping, holebegin, 0, True)
    shmem_truncate_range(file, newsize, max(oldsize, file_size_max(file)) - 1)
    unmap_mapping_range(mapping, holebegin, 0, True)


@kfunc
def shmem_fallocate(file: ShmemFile, mode: int, offset: int, length: int) -> None:
    """``shmem_fallocate`` with ``FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE``:
    unmap the whole pages of the hole (private COW copies spared), then
    remove them from the cache. Other modes: EOPNOTSUPP (preallocation is
    left out)."""
    if mode != FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE:
        raise errno_error(_errno.EOPNOTSUPP, "fallocate mode")
    if offset < 0 or length <= 0:
        raise errno_error(_errno.EINVAL, "fallocate range")
    mapping = file.f_mapping
    unmap_start = (offset + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    unmap_end = ((offset + length) & ~(PAGE_SIZE - 1)) - 1
    if unmap_end > unmap_start:
        unmap_mapping_range(mapping, unmap_start, 1 + unmap_end - unmap_start, False)
    shmem_truncate_range(file, offset, offset + length - 1)


__all__ = [
    "FALLOC_FL_KEEP_SIZE",
    "FALLOC_FL_PUNCH_HOLE",
    "ShmemFile",
    "shmem_fallocate",
    "shmem_get_folio",
    "shmem_get_folio_noalloc",
    "shmem_setattr_size",
    "split_folio",
    "vma_is_shmem",
]

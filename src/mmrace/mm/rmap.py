"""Reverse mapping (mm/rmap.c, include/linux/rmap.h, include/linux/fs.h).

The lock wrappers record the held lock for the rule checker. anon_vmas form
fork trees sharing the root's rwsem; ``anon_vma_chain`` links connect VMAs
and anon_vmas (``anon_vma_prepare``, ``anon_vma_clone``, ``anon_vma_fork``,
``unlink_anon_vmas``). Folio rmap functions keep ``_mapcount`` and
``PageAnonExclusive``; ``rmap_walk`` visits every VMA that may map a folio,
under the anon_vma or i_mmap rwsem, for ``try_to_unmap`` and
``folio_mkclean``.

Left out: ``find_mergeable_anon_vma`` (a new anon_vma is always allocated),
anon_vma reuse in ``anon_vma_clone``, the interval trees' pgoff indexing
(membership dicts iterated in VMA order), swap entries (``try_to_unmap`` of
an anonymous folio fails: the model has no swap), large-folio
entire-mapcounts, mlock accounting, KSM.
"""

from __future__ import annotations

from typing import Any

from mmrace.mm.internal import held, kfunc
from mmrace.mm.locks import down_read, down_write, down_write_trylock, up_read, up_write
from mmrace.mm.rules_check import check_lock_state


def _took(sem: Any, mode: str, owner: Any) -> None:
    h = held()
    h.rwsem[sem.serial] = mode
    h.names[sem.serial] = sem.name
    h.rmap[sem.serial] = owner
    check_lock_state(f"rmap lock ({mode})", rmap=owner)


def _dropped(sem: Any, owner: Any) -> None:
    h = held()
    h.rwsem.pop(sem.serial, None)
    h.rmap.pop(sem.serial, None)


@kfunc
def i_mmap_lock_write(mapping: Any) -> None:
    """``i_mmap_lock_write``."""
    down_write(mapping.i_mmap_rwsem)
    _took(mapping.i_mmap_rwsem, "W", mapping)


@kfunc
def i_mmap_unlock_write(mapping: Any) -> None:
    """``i_mmap_unlock_write``."""
    _dropped(mapping.i_mmap_rwsem, mapping)
    up_write(mapping.i_mmap_rwsem)
    check_lock_state("i_mmap_unlock_write", rmap=mapping)


@kfunc
def i_mmap_lock_read(mapping: Any) -> None:
    """``i_mmap_lock_read``."""
    down_read(mapping.i_mmap_rwsem)
    _took(mapping.i_mmap_rwsem, "R", mapping)


@kfunc
def i_mmap_unlock_read(mapping: Any) -> None:
    """``i_mmap_unlock_read``."""
    _dropped(mapping.i_mmap_rwsem, mapping)
    up_read(mapping.i_mmap_rwsem)
    check_lock_state("i_mmap_unlock_read", rmap=mapping)


@kfunc
def anon_vma_lock_write(anon_vma: Any) -> None:
    """``anon_vma_lock_write``: the root's rwsem (shared by the fork tree)."""
    down_write(anon_vma.rwsem)
    _took(anon_vma.rwsem, "W", anon_vma)


@kfunc
def anon_vma_unlock_write(anon_vma: Any) -> None:
    """``anon_vma_unlock_write``."""
    _dropped(anon_vma.rwsem, anon_vma)
    up_write(anon_vma.rwsem)
    check_lock_state("anon_vma_unlock_write", rmap=anon_vma)


@kfunc
def anon_vma_lock_read(anon_vma: Any) -> None:
    """``anon_vma_lock_read``."""
    down_read(anon_vma.rwsem)
    _took(anon_vma.rwsem, "R", anon_vma)


@kfunc
def anon_vma_unlock_read(anon_vma: Any) -> None:
    """``anon_vma_unlock_read``."""
    _dropped(anon_vma.rwsem, anon_vma)
    up_read(anon_vma.rwsem)
    check_lock_state("anon_vma_unlock_read", rmap=anon_vma)


# --- anon_vma lifetime and chains ------------------------------------------------------

from mmrace.engine import READ, RMW, WRITE  # noqa: E402
from mmrace.mm.locks import kfree  # noqa: E402
from mmrace.mm.mm_types import PAGE_SHIFT, AnonVma, AnonVmaChain  # noqa: E402
from mmrace.mm.page_alloc import folio_mapped  # noqa: E402


def _avc_anon_vma(avc: Any) -> AnonVma:
    """The anon_vma of a chain link (hand-built test states may link the
    anon_vma itself)."""
    if isinstance(avc, AnonVma):
        return avc
    av: AnonVma = avc.anon_vma
    return av


def anon_vma_alloc(mm: Any, root: AnonVma | None = None) -> AnonVma:
    """``anon_vma_alloc``: a new anon_vma (its own root unless *root*)."""
    mm.anon_vma_serial = getattr(mm, "anon_vma_serial", 0) + 1
    return AnonVma(f"{mm.name}.anon_vma{mm.anon_vma_serial}", root)


def anon_vma_chain_link(vma: Any, avc: AnonVmaChain, anon_vma: AnonVma) -> None:
    """``anon_vma_chain_link``: under the anon_vma (root) lock."""
    anon_vma.access(WRITE, "anon_vma_interval_tree_insert")
    anon_vma.rb_root[vma.serial] = avc
    vma.anon_vma_chain = [*vma.anon_vma_chain, avc]


@kfunc
def __anon_vma_prepare(vma: Any) -> int:
    """``__anon_vma_prepare``: give *vma* an anon_vma on its first anonymous
    fault. Called with the mmap lock held (read is enough); the anon_vma
    field is set under ``mm->page_table_lock`` (its NULL -> non-NULL rule).
    Returns 0."""
    from mmrace.mm.pgtable import ptl_lock, ptl_unlock

    mm = vma.vm_mm
    anon_vma = anon_vma_alloc(mm)
    avc = AnonVmaChain(vma, anon_vma)
    anon_vma_lock_write(anon_vma)
    ptl_lock(mm.page_table_lock)
    if vma.anon_vma is None:
        vma.anon_vma = anon_vma
        anon_vma_chain_link(vma, avc, anon_vma)
        anon_vma.num_active_vmas += 1
        allocated = None
    else:
        allocated = anon_vma
    ptl_unlock(mm.page_table_lock)
    anon_vma_unlock_write(anon_vma)
    if allocated is not None:
        put_anon_vma(allocated)
    return 0


def anon_vma_prepare(vma: Any) -> int:
    """``anon_vma_prepare``."""
    if vma.anon_vma is not None:
        return 0
    return __anon_vma_prepare(vma)


@kfunc
def anon_vma_clone(dst: Any, src: Any) -> int:
    """``anon_vma_clone``: link *dst* to every anon_vma *src* is linked to
    (under the root's rwsem). Left out: reuse of an anon_vma with no VMAs
    and one child."""
    chain = list(src.raw("anon_vma_chain"))
    if not chain:
        return 0
    root = _avc_anon_vma(chain[0]).root
    anon_vma_lock_write(root)
    for pavc in reversed(chain):
        av = _avc_anon_vma(pavc)
        anon_vma_chain_link(dst, AnonVmaChain(dst, av), av)
    anon_vma_unlock_write(root)
    if dst.raw("anon_vma") is not None:
        dst.raw("anon_vma").num_active_vmas += 1
    return 0


@kfunc
def anon_vma_fork(vma: Any, pvma: Any) -> int:
    """``anon_vma_fork``: the child VMA *vma* is linked to all of the parent
    VMA's anon_vmas and gets its own anon_vma under the same root (so COW
    copies it makes are not found from the parent's). Returns 0."""
    pav = pvma.anon_vma
    if pav is None:
        return 0
    vma.anon_vma = None
    anon_vma_clone(vma, pvma)
    mm = vma.raw("vm_mm")
    anon_vma = anon_vma_alloc(mm, pav.root)
    anon_vma.parent = pav
    get_anon_vma(pav.root)
    vma.anon_vma = anon_vma
    anon_vma_lock_write(anon_vma)
    anon_vma_chain_link(vma, AnonVmaChain(vma, anon_vma), anon_vma)
    pav.num_children += 1
    anon_vma.num_active_vmas += 1
    anon_vma_unlock_write(anon_vma)
    return 0


def get_anon_vma(anon_vma: AnonVma) -> None:
    """``get_anon_vma``."""
    anon_vma.access(RMW, "get_anon_vma")
    anon_vma.refcount += 1


@kfunc
def put_anon_vma(anon_vma: AnonVma) -> None:
    """``put_anon_vma``: on the last reference free it, then drop its
    reference on the root (``__put_anon_vma``)."""
    anon_vma.access(RMW, "put_anon_vma")
    anon_vma.refcount -= 1
    if anon_vma.refcount:
        return
    root = anon_vma.root
    kfree(anon_vma)
    if root is not anon_vma:
        put_anon_vma(root)


@kfunc
def unlink_anon_vmas(vma: Any) -> None:
    """``unlink_anon_vmas``: remove *vma* from every anon_vma tree it is in
    (under the root rwsem), then drop the anon_vmas left empty."""
    chain = list(vma.raw("anon_vma_chain"))
    if not chain:
        return
    root = _avc_anon_vma(chain[0]).root
    anon_vma_lock_write(root)
    empty: list[AnonVma] = []
    for avc in chain:
        av = _avc_anon_vma(avc)
        av.access(WRITE, "anon_vma_interval_tree_remove")
        av.rb_root.pop(vma.serial, None)
        if not av.rb_root and av.refcount > 0:
            av.parent.num_children -= 1
            empty.append(av)
    own = vma.raw("anon_vma")
    if own is not None:
        own.num_active_vmas -= 1
    vma.anon_vma_chain = []
    anon_vma_unlock_write(root)
    for av in empty:
        put_anon_vma(av)


# --- folio rmap --------------------------------------------------------------------------


def linear_page_index(vma: Any, address: int) -> int:
    """``linear_page_index``: the page offset *address* has in *vma*'s object."""
    return int(((address - vma.vm_start) >> PAGE_SHIFT) + vma.vm_pgoff)


def vma_address(vma: Any, pgoff: int) -> int | None:
    """``vma_address``: where page *pgoff* would be mapped in *vma*, or None."""
    start, end = vma.vm_start, vma.vm_end
    addr = start + ((pgoff - vma.vm_pgoff) << PAGE_SHIFT)
    return addr if start <= addr < end else None


@kfunc
def folio_add_new_anon_rmap(folio: Any, vma: Any, address: int, exclusive: bool) -> None:
    """``folio_add_new_anon_rmap``: a new anonymous folio gets its first
    mapping (``_mapcount`` 0 -> 1), ``PageAnon`` with ``mapping`` =
    ``vma->anon_vma``, PG_swapbacked, and ``PageAnonExclusive`` if
    *exclusive* (RMAP_EXCLUSIVE). A PMD-sized folio is mapped entirely (by
    one PMD: ``_entire_mapcount`` 1), every page exclusive."""
    folio.access(WRITE, "folio_add_new_anon_rmap")
    folio.anon = True
    folio.swapbacked = True
    folio.mapping = vma.anon_vma
    folio.index = linear_page_index(vma, address)
    folio._mapcount = 1
    if folio.order:
        folio._entire_mapcount = 1
        folio.anon_exclusive = [exclusive] * folio.nr_pages
    else:
        folio.anon_exclusive[0] = exclusive


@kfunc
def folio_add_anon_rmap_pte(folio: Any, idx: int, vma: Any, address: int) -> None:
    """``folio_add_anon_rmap_pte``: one more mapping of an anonymous page."""
    from mmrace.mm.page_alloc import folio_inc_mapcount

    folio_inc_mapcount(folio, "folio_add_anon_rmap_pte", idx)


@kfunc
def folio_add_file_rmap_pte(folio: Any, idx: int, vma: Any) -> None:
    """``folio_add_file_rmap_pte``: one more mapping of a page-cache page."""
    from mmrace.mm.page_alloc import folio_inc_mapcount

    folio_inc_mapcount(folio, "folio_add_file_rmap_pte", idx)


@kfunc
def folio_remove_rmap_pte(folio: Any, idx: int, vma: Any) -> None:
    """``folio_remove_rmap_pte``: one mapping fewer (never below zero)."""
    from mmrace.mm.page_alloc import folio_dec_mapcount

    folio_dec_mapcount(folio, "folio_remove_rmap_pte", idx)


@kfunc
def folio_try_dup_anon_rmap_pte(folio: Any, idx: int, src_vma: Any) -> int:
    """``folio_try_dup_anon_rmap_pte`` (fork): -EBUSY if the page is exclusive
    and may be DMA-pinned (the caller must copy it instead); otherwise it
    becomes shared (``PageAnonExclusive`` cleared) and gains a mapping.
    Which kernels copy at all is the ``fork-copy-pinned`` fix. Before
    ``PageAnonExclusive`` (the ``cow-reuse`` eras before ``anon_exclusive``,
    5.9-5.18 ``copy_present_page``) any anon page that may be pinned is
    copied, exclusive or not; the model still clears the bit on sharing."""
    from mmrace.mm.internal import kernel_config
    from mmrace.mm.page_alloc import (
        ClearPageAnonExclusive,
        PageAnonExclusive,
        folio_inc_mapcount,
    )

    cfg = kernel_config(src_vma.raw("vm_mm"))
    if cfg.policy("cow-reuse") != "anon_exclusive":
        if cfg.has("fork-copy-pinned") and folio_needs_cow_for_dma(src_vma, folio):
            return -16
        if PageAnonExclusive(folio, idx):
            ClearPageAnonExclusive(folio, idx)
    elif PageAnonExclusive(folio, idx):
        if cfg.has("fork-copy-pinned") and folio_needs_cow_for_dma(src_vma, folio):
            return -16
        ClearPageAnonExclusive(folio, idx)
    folio_inc_mapcount(folio, "folio_try_dup_anon_rmap_pte", idx)
    return 0


def folio_needs_cow_for_dma(vma: Any, folio: Any) -> bool:
    """``folio_needs_cow_for_dma``: the mm has pinned pages (MMF_HAS_PINNED)
    and the folio may be pinned."""
    from mmrace.mm.page_alloc import folio_maybe_dma_pinned

    mm = vma.raw("vm_mm")
    if not mm.has_pinned.load():
        return False
    return folio_maybe_dma_pinned(folio)


@kfunc
def folio_move_anon_rmap(folio: Any, vma: Any) -> None:
    """``folio_move_anon_rmap``: an exclusively owned page moves to the
    faulting VMA's own anon_vma (so rmap walks need not search the parent's)."""
    folio.access(WRITE, "folio_move_anon_rmap")
    folio.mapping = vma.anon_vma


@kfunc
def folio_add_anon_rmap_ptes(folio: Any, idx: int, nr: int, vma: Any, address: int,
                             exclusive: bool) -> None:
    """``folio_add_anon_rmap_ptes``: *nr* pages from *idx* of an anonymous
    folio gain a PTE mapping each (a PMD split, a swap-in of a cached
    folio); with RMAP_EXCLUSIVE they are marked ``PageAnonExclusive``. One
    visible RMW."""
    folio_inc_mapcount(folio, "folio_add_anon_rmap_ptes", idx, nr)
    if exclusive:
        for i in range(idx, idx + nr):
            folio.anon_exclusive[i] = True


@kfunc
def folio_add_file_rmap_ptes(folio: Any, idx: int, nr: int, vma: Any) -> None:
    """``folio_add_file_rmap_ptes``: *nr* pages from *idx* of a page-cache
    folio gain a PTE mapping each (``filemap_map_pages``)."""
    folio_inc_mapcount(folio, "folio_add_file_rmap_ptes", idx, nr)


@kfunc
def folio_remove_rmap_ptes(folio: Any, idx: int, nr: int, vma: Any) -> None:
    """``folio_remove_rmap_ptes``: *nr* PTE mappings fewer. Left out: the
    deferred-split queue for partially mapped anonymous folios."""
    folio_dec_mapcount(folio, "folio_remove_rmap_ptes", idx, nr)


@kfunc
def folio_add_file_rmap_pmd(folio: Any, vma: Any) -> None:
    """``folio_add_file_rmap_pmd``: a PMD-sized page-cache folio gains a
    PMD mapping (``_entire_mapcount`` and the total, one visible RMW)."""
    folio_entire_mapcount_add(folio, 1, "folio_add_file_rmap_pmd")


@kfunc
def folio_remove_rmap_pmd(folio: Any, vma: Any) -> None:
    """``folio_remove_rmap_pmd``: a PMD mapping fewer."""
    folio_entire_mapcount_add(folio, -1, "folio_remove_rmap_pmd")


@kfunc
def folio_try_dup_anon_rmap_pmd(folio: Any, src_vma: Any) -> int:
    """``folio_try_dup_anon_rmap_pmd`` (fork of a huge PMD): -EBUSY if the
    folio is exclusive and may be pinned (the caller splits the PMD and
    copies page by page instead); otherwise every page becomes shared and
    the folio gains a PMD mapping."""
    if PageAnonExclusive(folio, 0):
        if (kernel_config(src_vma.raw("vm_mm")).has("fork-copy-pinned")
                and folio_needs_cow_for_dma(src_vma, folio)):
            return -16
        folio.access(WRITE, "ClearPageAnonExclusive (all pages)")
        folio.anon_exclusive = [False] * folio.nr_pages
    folio_entire_mapcount_add(folio, 1, "folio_try_dup_anon_rmap_pmd")
    return 0


@kfunc
def folio_try_share_anon_rmap_pte(folio: Any, idx: int) -> int:
    """``folio_try_share_anon_rmap_pte``: before a PTE of an exclusive
    anonymous page is replaced by a swap or migration entry (cleared
    first), give up exclusivity -- unless the page may be pinned
    (-EBUSY). The clear-then-check order pairs with GUP-fast's
    pin-then-recheck: one of them sees the other."""
    if folio_maybe_dma_pinned(folio):
        return -16
    ClearPageAnonExclusive(folio, idx)
    return 0


# --- rmap walks -----------------------------------------------------------------------------

TTU_SPLIT_HUGE_PMD = 0x4
TTU_IGNORE_MLOCK = 0x8
TTU_SYNC = 0x10
TTU_BATCH_FLUSH = 0x40
TTU_RMAP_LOCKED = 0x80


class RmapWalkControl:
    """``struct rmap_walk_control``: ``rmap_one(folio, vma, address) -> bool``
    (False stops the walk)."""

    def __init__(self, rmap_one: Any, name: str) -> None:
        self.rmap_one = rmap_one
        self.name = name


def vma_address_range(vma: Any, pgoff: int, nr_pages: int) -> int | None:
    """``vma_address(vma, pgoff, nr_pages)``: where the first page of the
    range ``[pgoff, pgoff + nr_pages)`` that falls in *vma* is mapped, or
    None if the range misses *vma*."""
    start, end, vpgoff = vma.vm_start, vma.vm_end, vma.vm_pgoff
    if pgoff >= vpgoff:
        addr = start + ((pgoff - vpgoff) << PAGE_SHIFT)
        return int(addr) if addr < end else None
    if pgoff + nr_pages - 1 >= vpgoff:
        return int(start)
    return None


def _walk_vmas(folio: Any, rwc: RmapWalkControl, vmas: list[Any]) -> None:
    for vma in vmas:
        addr = vma_address_range(vma, folio.index, folio.nr_pages)
        if addr is not None and not rwc.rmap_one(folio, vma, addr):
            break


@kfunc
def rmap_walk(folio: Any, rwc: RmapWalkControl, locked: bool = False) -> None:
    """``rmap_walk`` (``rmap_walk_locked`` with *locked*): visit every VMA
    that may map *folio*, holding the anon_vma root rwsem (read) or the
    file's ``i_mmap_rwsem`` (read) -- or, *locked*, with the caller
    holding it."""
    from mmrace.mm.page_alloc import folio_test_anon

    if folio_test_anon(folio):
        av = folio.mapping
        if av is None:
            return
        if not locked:
            anon_vma_lock_read(av)
        av.check_alive("rmap_walk_anon")
        _walk_vmas(folio, rwc, [avc.vma for _, avc in sorted(av.rb_root.items())])
        if not locked:
            anon_vma_unlock_read(av)
        return
    mapping = folio.mapping
    if mapping is None:
        return
    if not locked:
        i_mmap_lock_read(mapping)
    _walk_vmas(folio, rwc, [vma for _, vma in sorted(mapping.i_mmap.items())])
    if not locked:
        i_mmap_unlock_read(mapping)


# --- the rmap actors: unmap, referenced, mkclean ---------------------------------------------

from mmrace.mm.internal import kernel_config  # noqa: E402
from mmrace.mm.mm_types import VM_LOCKED, VM_SHARED, VM_UFFD_WP  # noqa: E402
from mmrace.mm.page_alloc import (  # noqa: E402
    ClearPageAnonExclusive,
    PageAnonExclusive,
    folio_dec_mapcount,
    folio_entire_mapcount_add,
    folio_inc_mapcount,
    folio_mapcount,
    folio_maybe_dma_pinned,
    folio_put,
    folio_ref_count,
    folio_test_flag,
    folio_test_set_flag,
)
from mmrace.mm.page_vma_mapped import (  # noqa: E402
    PVMW_SYNC,
    PageVmaMappedWalk,
    page_vma_mapped_walk,
    page_vma_mapped_walk_done,
)
from mmrace.mm.pgtable import (  # noqa: E402
    pmd_dirty,
    pmd_mkclean,
    pmd_write,
    pmd_wrprotect,
    pmdp_invalidate,
    pmdp_test_and_clear_young,
    pte_dirty,
    pte_mkclean,
    pte_pfn,
    pte_soft_dirty,
    pte_uffd_wp,
    pte_write,
    pte_wrprotect,
    ptep_clear_flush,
    ptep_get,
    ptep_test_and_clear_young,
    set_pmd_at,
    set_pte_at_cleared,
)
from mmrace.mm.swapfile import swap_duplicate, swap_free  # noqa: E402
from mmrace.mm.swapops import (  # noqa: E402
    PTE_MARKER_UFFD_WP,
    make_pte_marker,
    make_readable_exclusive_migration_entry,
    make_readable_migration_entry,
    make_writable_migration_entry,
    pte_swp_mkexclusive,
    pte_swp_mksoft_dirty,
    pte_swp_mkuffd_wp,
    swp_entry_to_pte,
)

SplitPmd = Any
"""``split_huge_pmd_locked(vma, address, pmd_table, pmd_index, freeze)``,
passed in by callers that unmap large folios (``mm/huge_memory.py``)."""


def folio_mark_dirty(folio: Any) -> None:
    """``folio_mark_dirty``: set PG_dirty (one visible RMW)."""
    folio_test_set_flag(folio, "dirty", True, "folio_mark_dirty")


@kfunc
def try_to_unmap_one(folio: Any, vma: Any, address: int, flags: int,
                     split_pmd: SplitPmd = None) -> bool:
    """``try_to_unmap_one``: for each PTE of *vma* mapping *folio* (found by
    ``page_vma_mapped_walk`` under the rmap lock and the PTL), clear it
    with a flush (``ptep_clear_flush``; the model does not batch reclaim's
    flushes), move the dirty bit to the folio, then

    * file folio: drop the mapping (a uffd-wp protected PTE leaves a
      uffd-wp marker: ``pte_install_uffd_wp_if_needed``);
    * anonymous, swap-backed: install a swap entry for ``folio->swap``
      (``swap_duplicate``), giving up exclusivity first
      (``folio_try_share_anon_rmap_pte``: a possibly pinned exclusive page
      stays mapped);
    * anonymous, lazy-free (MADV_FREE, ``!PG_swapbacked``): discard the
      page if it is still clean; with the fix
      ``madv-free-reclaim-gup-refcount`` only if nothing but the isolation
      and the mappings hold a reference (a GUP pin means a DMA write may
      still come) -- otherwise restore the PTE and make the folio
      swap-backed again.

    A PMD mapping is split first when *flags* has ``TTU_SPLIT_HUGE_PMD``
    (with the caller's *split_pmd*); otherwise the walk gives up. Returns
    False if it had to give up (the folio stays mapped). Left out: mlock
    (VM_LOCKED VMAs are skipped), hugetlb, the discard of a PMD-mapped
    lazy-free THP, batched TLB flushing, mmu notifiers."""
    mm = vma.raw("vm_mm")
    if vma.vm_flags & VM_LOCKED and not flags & TTU_IGNORE_MLOCK:
        return False
    ret = True
    pvmw = PageVmaMappedWalk(folio, vma, address, PVMW_SYNC if flags & TTU_SYNC else 0)
    while page_vma_mapped_walk(pvmw):
        if pvmw.pte is None:
            assert pvmw.pmd_table is not None
            if flags & TTU_SPLIT_HUGE_PMD and split_pmd is not None:
                split_pmd(vma, pvmw.address, pvmw.pmd_table, pvmw.pmd_index, False)
                page_vma_mapped_walk_done(pvmw)
                pvmw = PageVmaMappedWalk(folio, vma, address,
                                         PVMW_SYNC if flags & TTU_SYNC else 0)
                continue
            page_vma_mapped_walk_done(pvmw)
            ret = False
            break
        table, index = pvmw.pte.table, pvmw.pte_index
        addr = pvmw.address
        idx = pte_pfn(ptep_get(table, index)) - folio.pfn
        anon_exclusive = bool(folio.anon) and PageAnonExclusive(folio, idx)
        pteval = ptep_clear_flush(vma, addr, table, index)
        if pte_dirty(pteval):
            folio_mark_dirty(folio)
        if folio.anon:
            if not folio_test_flag(folio, "swapbacked", "folio_test_swapbacked"):
                if _lazyfree_discardable(folio, vma):
                    mm.rss -= 1
                else:
                    # Redirtied, or referenced by someone who may still
                    # write to it: put the PTE back; it must be swapped now.
                    set_pte_at_cleared(mm, addr, table, index, pteval, pteval)
                    folio_test_set_flag(folio, "swapbacked", True, "folio_set_swapbacked")
                    page_vma_mapped_walk_done(pvmw)
                    ret = False
                    break
            else:
                entry = folio.swap
                if entry is None or swap_duplicate(entry) < 0:
                    set_pte_at_cleared(mm, addr, table, index, pteval, pteval)
                    page_vma_mapped_walk_done(pvmw)
                    ret = False
                    break
                if anon_exclusive and folio_try_share_anon_rmap_pte(folio, idx):
                    swap_free(entry)
                    set_pte_at_cleared(mm, addr, table, index, pteval, pteval)
                    page_vma_mapped_walk_done(pvmw)
                    ret = False
                    break
                swp_pte = swp_entry_to_pte(entry)
                if anon_exclusive:
                    swp_pte = pte_swp_mkexclusive(swp_pte)
                if pte_soft_dirty(pteval):
                    swp_pte = pte_swp_mksoft_dirty(swp_pte)
                if pte_uffd_wp(pteval):
                    swp_pte = pte_swp_mkuffd_wp(swp_pte)
                set_pte_at_cleared(mm, addr, table, index, swp_pte, pteval)
                mm.rss -= 1
        else:
            # pte_install_uffd_wp_if_needed: a write-protected page of a
            # file-backed uffd-wp VMA leaves a marker, not an empty entry.
            if pte_uffd_wp(pteval) and vma.vm_flags & VM_UFFD_WP:
                set_pte_at_cleared(mm, addr, table, index,
                                   make_pte_marker(PTE_MARKER_UFFD_WP), pteval)
            mm.rss -= 1
        folio_remove_rmap_pte(folio, idx, vma)
        folio_put(folio)
    return ret


def _lazyfree_discardable(folio: Any, vma: Any) -> bool:
    """The MADV_FREE check of ``try_to_unmap_one`` (the PTE is already
    cleared and flushed): may the clean lazy-free page be dropped?"""
    if not kernel_config(vma.raw("vm_mm")).has("madv-free-reclaim-gup-refcount"):
        # Before 5.18: only PG_dirty decides. A reference taken by GUP for
        # a DMA write that has not happened yet goes unnoticed.
        return not folio_test_flag(folio, "dirty", "folio_test_dirty")
    # Synchronise with GUP-fast: clear PTE; barrier; read refcount -- and it
    # takes its reference, then re-reads the PTE (sequentially consistent
    # here: each is one visible operation).
    ref_count = folio_ref_count(folio)
    map_count = folio_mapcount(folio)
    return ref_count == 1 + map_count and not folio_test_flag(folio, "dirty", "folio_test_dirty")


@kfunc
def try_to_unmap(folio: Any, flags: int = 0, split_pmd: SplitPmd = None) -> None:
    """``try_to_unmap``: unmap *folio* from every VMA (caller holds the folio
    lock); check ``folio_mapped`` afterwards. With ``TTU_RMAP_LOCKED`` the
    caller holds the rmap lock."""

    def one(f: Any, vma: Any, addr: int) -> bool:
        return try_to_unmap_one(f, vma, addr, flags, split_pmd)

    rmap_walk(folio, RmapWalkControl(one, "try_to_unmap"), locked=bool(flags & TTU_RMAP_LOCKED))


@kfunc
def folio_referenced_one(folio: Any, vma: Any, address: int, acc: list[int]) -> bool:
    """``folio_referenced_one``: clear the accessed bit of every mapping of
    *folio* in *vma* (``ptep_clear_young_notify`` / ``pmdp_...``), counting
    those that had it; a VM_LOCKED VMA stops the walk (the folio is
    mlocked). ``acc`` is (referenced, vm_flags)."""
    pvmw = PageVmaMappedWalk(folio, vma, address)
    flags = vma.vm_flags
    while page_vma_mapped_walk(pvmw):
        if flags & VM_LOCKED:
            page_vma_mapped_walk_done(pvmw)
            acc[1] |= VM_LOCKED
            return False
        if pvmw.pte is not None:
            if ptep_test_and_clear_young(vma, pvmw.address, pvmw.pte.table, pvmw.pte_index):
                acc[0] += 1
        else:
            assert pvmw.pmd_table is not None
            if pmdp_test_and_clear_young(vma, pvmw.address, pvmw.pmd_table, pvmw.pmd_index):
                acc[0] += 1
    acc[1] |= flags
    return True


@kfunc
def folio_referenced(folio: Any) -> tuple[int, int]:
    """``folio_referenced``: how many mappings had the accessed bit (now
    cleared), and the union of the flags of the VMAs walked. The caller
    holds the folio lock. Left out: reclaim's trylock of the rmap lock
    (``rwc.try_lock``: a contended lock counts as referenced); the model
    waits for it."""
    acc = [0, 0]
    if not folio_mapcount(folio):
        return 0, 0

    def one(f: Any, vma: Any, addr: int) -> bool:
        return folio_referenced_one(f, vma, addr, acc)

    rmap_walk(folio, RmapWalkControl(one, "folio_referenced"))
    return acc[0], acc[1]


@kfunc
def page_mkclean_one(folio: Any, vma: Any, address: int, acc: list[int]) -> bool:
    """``page_vma_mkclean_one``: write-protect and clean every mapping of
    *folio* in a shared *vma* that is writable or dirty (``ptep_clear_flush``
    then ``set_pte_at``; a huge PMD with ``pmdp_invalidate``), so the next
    write faults and redirties the folio; ``acc[0]`` counts the entries
    cleaned and ``acc[1]`` those that were dirty."""
    if not vma.vm_flags & VM_SHARED:
        return True
    mm = vma.raw("vm_mm")
    pvmw = PageVmaMappedWalk(folio, vma, address, PVMW_SYNC)
    while page_vma_mapped_walk(pvmw):
        addr = pvmw.address
        if pvmw.pte is not None:
            table, index = pvmw.pte.table, pvmw.pte_index
            entry = ptep_get(table, index)
            if not pte_dirty(entry) and not pte_write(entry):
                continue
            entry = ptep_clear_flush(vma, addr, table, index)
            set_pte_at_cleared(mm, addr, table, index, pte_mkclean(pte_wrprotect(entry)), entry)
            acc[1] += pte_dirty(entry)
        else:
            assert pvmw.pmd_table is not None
            entry = ptep_get(pvmw.pmd_table, pvmw.pmd_index)
            if not pmd_dirty(entry) and not pmd_write(entry):
                continue
            entry = pmdp_invalidate(vma, addr, pvmw.pmd_table, pvmw.pmd_index)
            set_pmd_at(mm, addr, pvmw.pmd_table, pvmw.pmd_index,
                       pmd_mkclean(pmd_wrprotect(entry)))
            acc[1] += pmd_dirty(entry)
        acc[0] += 1
    return True


@kfunc
def folio_mkclean(folio: Any) -> int:
    """``folio_mkclean``: write-protect every shared mapping of a locked
    file folio (before writeback); returns how many of them were dirty
    (``folio_clear_dirty_for_io`` then keeps the folio dirty)."""
    if folio.anon or folio.mapping is None:
        return 0
    acc = [0, 0]

    def one(f: Any, vma: Any, addr: int) -> bool:
        return page_mkclean_one(f, vma, addr, acc)

    rmap_walk(folio, RmapWalkControl(one, "folio_mkclean"))
    return acc[1]


# --- migration entries (try_to_migrate of mm/rmap.c) ------------------------------------------


@kfunc
def try_to_migrate_one(folio: Any, vma: Any, address: int, flags: int) -> bool:
    """``try_to_migrate_one``: replace each PTE mapping *folio* in *vma* by a
    migration entry for the same page (writable, readable-exclusive or
    readable, as the PTE was), after clearing it with a flush; an exclusive
    anonymous page that may be pinned is left mapped (the walk gives up).
    The mapping's rmap count and reference go; ``remove_migration_ptes``
    installs the new folio's PTEs. Left out: PMD migration entries (a
    PMD mapping makes the walk give up), device-private pages, soft-dirty
    and uffd-wp bits are carried, young/dirty bits are not."""
    mm = vma.raw("vm_mm")
    ret = True
    pvmw = PageVmaMappedWalk(folio, vma, address, PVMW_SYNC if flags & TTU_SYNC else 0)
    while page_vma_mapped_walk(pvmw):
        if pvmw.pte is None:
            page_vma_mapped_walk_done(pvmw)
            ret = False
            break
        table, index = pvmw.pte.table, pvmw.pte_index
        addr = pvmw.address
        idx = pte_pfn(ptep_get(table, index)) - folio.pfn
        anon_exclusive = bool(folio.anon) and PageAnonExclusive(folio, idx)
        pteval = ptep_clear_flush(vma, addr, table, index)
        if pte_dirty(pteval):
            folio_mark_dirty(folio)
        if anon_exclusive and folio_try_share_anon_rmap_pte(folio, idx):
            set_pte_at_cleared(mm, addr, table, index, pteval, pteval)
            page_vma_mapped_walk_done(pvmw)
            ret = False
            break
        pfn = folio.pfn + idx
        if pte_write(pteval):
            entry = make_writable_migration_entry(pfn)
        elif anon_exclusive:
            entry = make_readable_exclusive_migration_entry(pfn)
        else:
            entry = make_readable_migration_entry(pfn)
        swp_pte = swp_entry_to_pte(entry)
        if pte_soft_dirty(pteval):
            swp_pte = pte_swp_mksoft_dirty(swp_pte)
        if pte_uffd_wp(pteval):
            swp_pte = pte_swp_mkuffd_wp(swp_pte)
        set_pte_at_cleared(mm, addr, table, index, swp_pte, pteval)
        folio_remove_rmap_pte(folio, idx, vma)
        folio_put(folio)
    return ret


@kfunc
def try_to_migrate(folio: Any, flags: int = 0) -> None:
    """``try_to_migrate``: replace every mapping of the locked *folio* by
    migration entries (check ``folio_mapped`` afterwards)."""

    def one(f: Any, vma: Any, addr: int) -> bool:
        return try_to_migrate_one(f, vma, addr, flags)

    rmap_walk(folio, RmapWalkControl(one, "try_to_migrate"),
              locked=bool(flags & TTU_RMAP_LOCKED))


# --- UFFDIO_MOVE helpers ---------------------------------------------------------------------


@kfunc
def anon_vma_trylock_write(anon_vma: Any) -> bool:
    """``anon_vma_trylock_write``: the root's rwsem for write, if free."""
    if down_write_trylock(anon_vma.rwsem):
        _took(anon_vma.rwsem, "W", anon_vma)
        return True
    return False


@kfunc
def folio_get_anon_vma(folio: Any) -> AnonVma | None:
    """``folio_get_anon_vma``: a reference on the anon_vma of a mapped
    anonymous folio (``READ_ONCE(folio->mapping)``, then
    ``atomic_inc_not_zero`` of its refcount), or None when the folio is not
    anonymous, not mapped, or its anon_vma is going away. Left out: the RCU
    read section (the model frees an anon_vma at once, and a freed one is
    reported as a use-after-free by ``access``)."""
    folio.access(READ, "READ_ONCE(folio->mapping)")
    anon_vma = folio.mapping if folio.anon else None
    if anon_vma is None or not folio_mapped(folio):
        return None
    anon_vma.access(RMW, "atomic_inc_not_zero(anon_vma->refcount)")
    if anon_vma.refcount == 0:
        return None
    anon_vma.refcount += 1
    if not folio_mapped(folio):
        put_anon_vma(anon_vma)
        return None
    return anon_vma  # type: ignore[no-any-return]

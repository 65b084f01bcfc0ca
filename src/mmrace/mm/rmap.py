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


def _took(sem: Any, mode: str) -> None:
    h = held()
    h.rwsem[sem.serial] = mode
    h.names[sem.serial] = sem.name


@kfunc
def i_mmap_lock_write(mapping: Any) -> None:
    """``i_mmap_lock_write``."""
    down_write(mapping.i_mmap_rwsem)
    _took(mapping.i_mmap_rwsem, "W")


@kfunc
def i_mmap_unlock_write(mapping: Any) -> None:
    """``i_mmap_unlock_write``."""
    held().rwsem.pop(mapping.i_mmap_rwsem.serial, None)
    up_write(mapping.i_mmap_rwsem)


@kfunc
def i_mmap_lock_read(mapping: Any) -> None:
    """``i_mmap_lock_read``."""
    down_read(mapping.i_mmap_rwsem)
    _took(mapping.i_mmap_rwsem, "R")


@kfunc
def i_mmap_unlock_read(mapping: Any) -> None:
    """``i_mmap_unlock_read``."""
    held().rwsem.pop(mapping.i_mmap_rwsem.serial, None)
    up_read(mapping.i_mmap_rwsem)


@kfunc
def anon_vma_lock_write(anon_vma: Any) -> None:
    """``anon_vma_lock_write``: the root's rwsem (shared by the fork tree)."""
    down_write(anon_vma.rwsem)
    _took(anon_vma.rwsem, "W")


@kfunc
def anon_vma_unlock_write(anon_vma: Any) -> None:
    """``anon_vma_unlock_write``."""
    held().rwsem.pop(anon_vma.rwsem.serial, None)
    up_write(anon_vma.rwsem)


@kfunc
def anon_vma_lock_read(anon_vma: Any) -> None:
    """``anon_vma_lock_read``."""
    down_read(anon_vma.rwsem)
    _took(anon_vma.rwsem, "R")


@kfunc
def anon_vma_unlock_read(anon_vma: Any) -> None:
    """``anon_vma_unlock_read``."""
    held().rwsem.pop(anon_vma.rwsem.serial, None)
    up_read(anon_vma.rwsem)


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
    ``vma->anon_vma``, and ``PageAnonExclusive`` if *exclusive* (RMAP_EXCLUSIVE)."""
    folio.access(WRITE, "folio_add_new_anon_rmap")
    folio.anon = True
    folio.mapping = vma.anon_vma
    folio.index = linear_page_index(vma, address)
    folio._mapcount = 1
    folio.anon_exclusive[0] = exclusive


@kfunc
def folio_add_anon_rmap_pte(folio: Any, idx: int, vma: Any, address: int) -> None:
    """``folio_add_anon_rmap_pte``: one more mapping of an anonymous page."""
    from mmrace.mm.page_alloc import folio_inc_mapcount

    folio_inc_mapcount(folio, "folio_add_anon_rmap_pte")


@kfunc
def folio_add_file_rmap_pte(folio: Any, idx: int, vma: Any) -> None:
    """``folio_add_file_rmap_pte``: one more mapping of a page-cache page."""
    from mmrace.mm.page_alloc import folio_inc_mapcount

    folio_inc_mapcount(folio, "folio_add_file_rmap_pte")


@kfunc
def folio_remove_rmap_pte(folio: Any, idx: int, vma: Any) -> None:
    """``folio_remove_rmap_pte``: one mapping fewer (never below zero)."""
    from mmrace.mm.page_alloc import folio_dec_mapcount

    folio_dec_mapcount(folio, "folio_remove_rmap_pte")


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
    folio_inc_mapcount(folio, "folio_try_dup_anon_rmap_pte")
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


# --- rmap walks -----------------------------------------------------------------------------


class RmapWalkControl:
    """``struct rmap_walk_control``: ``rmap_one(folio, vma, address) -> bool``
    (False stops the walk)."""

    def __init__(self, rmap_one: Any, name: str) -> None:
        self.rmap_one = rmap_one
        self.name = name


@kfunc
def rmap_walk(folio: Any, rwc: RmapWalkControl) -> None:
    """``rmap_walk``: visit every VMA that may map *folio*, holding the
    anon_vma root rwsem (read) or the file's ``i_mmap_rwsem`` (read)."""
    from mmrace.mm.page_alloc import folio_test_anon

    if folio_test_anon(folio):
        av = folio.mapping
        if av is None:
            return
        anon_vma_lock_read(av)
        av.check_alive("rmap_walk_anon")
        for _, avc in sorted(av.rb_root.items()):
            vma = avc.vma
            addr = vma_address(vma, folio.index)
            if addr is not None and not rwc.rmap_one(folio, vma, addr):
                break
        anon_vma_unlock_read(av)
        return
    mapping = folio.mapping
    if mapping is None:
        return
    i_mmap_lock_read(mapping)
    for _, vma in sorted(mapping.i_mmap.items()):
        addr = vma_address(vma, folio.index)
        if addr is not None and not rwc.rmap_one(folio, vma, addr):
            break
    i_mmap_unlock_read(mapping)


def page_vma_mapped_walk(folio: Any, vma: Any, address: int) -> Any:
    """``page_vma_mapped_walk`` (one page): the locked PTE mapping *folio* at
    *address* in *vma*, or None."""
    from mmrace.mm.pgtable import pte_offset_map_lock, pte_pfn, pte_present, ptep_get, walk_to_pmd
    from mmrace.mm.pgtable import pte_unmap_unlock as _unlock

    mm = vma.raw("vm_mm")
    found = walk_to_pmd(mm, address)
    if found is None:
        return None
    pm = pte_offset_map_lock(mm, found[0], found[1], address)
    if pm is None:
        return None
    pte = ptep_get(pm.table, pm.index)
    if not pte_present(pte) or not (folio.pfn <= pte_pfn(pte) < folio.pfn + folio.nr_pages):
        _unlock(pm)
        return None
    return pm


@kfunc
def try_to_unmap_one(folio: Any, vma: Any, address: int) -> bool:
    """``try_to_unmap_one``: clear the PTE (with a flush), drop the mapping
    and its reference. Anonymous pages would need swap entries: the model
    has no swap, so they are left mapped."""
    from mmrace.mm.page_alloc import folio_put
    from mmrace.mm.pgtable import pte_unmap_unlock, ptep_clear_flush

    if folio.anon:
        return False
    pm = page_vma_mapped_walk(folio, vma, address)
    if pm is None:
        return True
    ptep_clear_flush(vma, address, pm.table, pm.index)
    folio_remove_rmap_pte(folio, 0, vma)
    vma.raw("vm_mm").rss -= 1
    pte_unmap_unlock(pm)
    folio_put(folio)
    return True


@kfunc
def try_to_unmap(folio: Any) -> None:
    """``try_to_unmap``: unmap *folio* from every VMA (caller holds the folio lock)."""
    rmap_walk(folio, RmapWalkControl(try_to_unmap_one, "try_to_unmap"))


@kfunc
def page_mkclean_one(folio: Any, vma: Any, address: int) -> bool:
    """``page_vma_mkclean_one``: write-protect and clean a shared mapping."""
    from mmrace.mm.mm_types import VM_SHARED
    from mmrace.mm.pgtable import (
        flush_tlb_page,
        pte_mkclean,
        pte_unmap_unlock,
        pte_wrprotect,
        ptep_get_and_clear,
        set_pte_at,
    )

    if not vma.vm_flags & VM_SHARED:
        return True
    pm = page_vma_mapped_walk(folio, vma, address)
    if pm is None:
        return True
    mm = vma.raw("vm_mm")
    old = ptep_get_and_clear(mm, address, pm.table, pm.index)
    flush_tlb_page(vma, address)
    set_pte_at(mm, address, pm.table, pm.index, pte_mkclean(pte_wrprotect(old)))
    pte_unmap_unlock(pm)
    return True


@kfunc
def folio_mkclean(folio: Any) -> None:
    """``folio_mkclean``: write-protect every shared mapping of a file folio
    (before writeback)."""
    if folio.anon or folio.mapping is None:
        return
    rmap_walk(folio, RmapWalkControl(page_mkclean_one, "folio_mkclean"))


@kfunc
def anon_vma_trylock_write(anon_vma: Any) -> bool:
    """``anon_vma_trylock_write``: the root's rwsem for write, if free."""
    if down_write_trylock(anon_vma.rwsem):
        _took(anon_vma.rwsem, "W")
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

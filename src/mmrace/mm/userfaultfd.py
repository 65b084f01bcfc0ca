"""userfaultfd's page-table side (mm/userfaultfd.c).

The ``UFFDIO_*`` handlers that call it are in
:mod:`mmrace.mm.userfaultfd_ioctl`, the protocol (events, faults, ``read()``)
in :mod:`mmrace.mm.fs_userfaultfd`, the context and flags in
:mod:`mmrace.mm.userfaultfd_k`; the names callers used to import from here
(``handle_userfault``, ``mremap_userfaultfd_prep``, ...) still can be.

**Fill ioctls** (``UFFDIO_COPY``, ``UFFDIO_ZEROPAGE``, ``UFFDIO_CONTINUE``:
:func:`mfill_atomic`): lock the destination VMA -- before 6.9 the mmap lock
for read, from 6.9 (``uffd-per-vma-locks``) its per-VMA lock, falling back
to the mmap lock when ``lock_vma_under_rcu`` fails or an anon_vma must be
prepared (``uffd_mfill_lock``) -- then check ``mmap_changing`` (from 6.9
under ``map_changing_lock`` held for read) and fail with ``-EAGAIN`` while a
non-cooperative event is pending; install each page with
``mfill_atomic_install_pte`` under the PTL (``-EEXIST`` if the PTE is not
empty). ``UFFDIO_COPY`` reads the source with page faults disabled while the
locks are held; if that fails it drops every lock, copies with faults
allowed, and starts over -- relocking and rechecking ``mmap_changing``.

**Move** (``UFFDIO_MOVE``, 6.8: :func:`move_pages`): lock both VMAs
(``uffd_move_lock``: the destination's per-VMA lock, the source's only by
``lock_vma_under_rcu``, else both under the mmap lock), check
``mmap_changing``, and for each page (``move_pages_pte``) read both PTEs,
lock the source folio and its anon_vma, then under both PTLs
(``double_pt_lock``, in a fixed order) recheck both PTEs and the
destination PMD, refuse a pinned or shared (not ``PageAnonExclusive``) page
with ``-EBUSY``, clear and flush the source PTE, recheck the pin
(GUP-fast may have pinned it meanwhile), move the rmap
(``folio_move_anon_rmap``, ``folio->index``) and set the destination PTE.
Until 6.9 (``uffd-move-src-folio-unpinned``) the rmap moved *before* the
clear, so a pin that came in between left the page mapped at the source
with an rmap that points at the destination.

**Write-protect** (``mwriteprotect_range``) keeps the mmap read lock in
every era: it walks several VMAs.

Sources of ``UFFDIO_COPY`` are values (the monitor's private buffer: a
word, or a list of words) or a :class:`UserPtr` into a process's memory.

A source PTE that is a migration entry waits for the migration
(``migration_entry_wait``) and tries the page again, as the kernel does.

Left out: hugetlb, THP (a huge destination PMD is ``-EEXIST`` as in the
kernel; moving a transparent huge page, PMD- or PTE-mapped, raises
``NotImplementedError``), shmem ``UFFDIO_COPY``/``ZEROPAGE`` (refused as not
modelled), ``UFFDIO_POISON``, uffd-wp markers on anonymous memory
(``UFFD_FEATURE_WP_UNPOPULATED``; shmem's markers are modelled, in
``change_protection``, and a fill may overwrite one), swap entries in
``move_pages_pte`` (``move_swap_pte``: ``NotImplementedError``), the batched
``move_present_ptes`` of the newest kernels (one page at a time here), mmu
notifiers, memcg charging, the ``mmget_not_zero`` check (``-ESRCH``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmrace.engine import READ, WRITE
from mmrace.mm.fs_userfaultfd import (
    UffdIoctl,
    dup_userfaultfd,
    dup_userfaultfd_complete,
    handle_userfault,
    mremap_userfaultfd_complete,
    mremap_userfaultfd_fail,
    mremap_userfaultfd_prep,
    new_userfaultfd,
    uffd_view_emit,
    userfaultfd_api,
    userfaultfd_ctx_read,
    userfaultfd_remove,
    userfaultfd_unmap_complete,
    userfaultfd_unmap_prep,
    wake_userfault,
)
from mmrace.mm.internal import kernel_config, kfunc
from mmrace.mm.memory import (
    _map_count,
    do_user_addr_fault,
    mk_pte,
    vm_normal_page,
    vma_is_anonymous,
)
from mmrace.mm.migrate import migration_entry_wait
from mmrace.mm.mm_types import (
    PAGE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    VM_ACCESS_FLAGS,
    VM_HUGETLB,
    VM_IO,
    VM_LOCKED,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_SHARED,
    VM_UFFD_WP,
    VM_WRITE,
    MmStruct,
    VmAreaStruct,
)
from mmrace.mm.mmap_lock import (
    lock_vma_under_rcu,
    mmap_assert_locked,
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_unlock,
    vma_end_read,
    vma_start_read_locked,
)
from mmrace.mm.mmu_gather import tlb_finish_mmu, tlb_gather_mmu
from mmrace.mm.mprotect import (
    MM_CP_TRY_CHANGE_WRITABLE,
    MM_CP_UFFD_WP,
    MM_CP_UFFD_WP_RESOLVE,
    change_protection,
    vma_wants_manual_pte_write_upgrade,
)
from mmrace.mm.page_alloc import (
    WORDS_PER_PAGE,
    Folio,
    PageAnonExclusive,
    folio_alloc,
    folio_get,
    folio_lock,
    folio_maybe_dma_pinned,
    folio_put,
    folio_test_anon,
    folio_trylock,
    folio_unlock,
    is_zero_pfn,
    my_zero_pfn,
    pfn_folio,
    visible_contents,
)
from mmrace.mm.pgtable import (
    PageTable,
    PteMap,
    __pte_alloc,
    pfn_pte,
    pmd_alloc,
    pmd_none,
    pmd_present,
    pmd_same,
    pmd_trans_huge,
    pmdp_get,
    pmdp_get_lockless,
    pte_alloc,
    pte_mkdirty,
    pte_mkspecial,
    pte_mkuffd_wp,
    pte_mkwrite,
    pte_none,
    pte_offset_map,
    pte_offset_map_lock,
    pte_offset_map_nolock,
    pte_pfn,
    pte_present,
    pte_same,
    pte_unmap,
    pte_unmap_unlock,
    ptep_clear_flush,
    ptep_get,
    ptep_get_lockless,
    ptl_lock,
    ptl_unlock,
    pud_alloc,
    set_pte_at,
    update_mmu_cache,
    vm_prot_to_pte,
    walk_to_pmd,
)
from mmrace.mm.rmap import (
    anon_vma_lock_write,
    anon_vma_prepare,
    anon_vma_trylock_write,
    anon_vma_unlock_write,
    folio_add_file_rmap_pte,
    folio_add_new_anon_rmap,
    folio_get_anon_vma,
    folio_move_anon_rmap,
    linear_page_index,
    put_anon_vma,
)
from mmrace.mm.rules_check import exception_path_enter, exception_path_leave
from mmrace.mm.shmem import shmem_get_folio_noalloc, vma_is_shmem
from mmrace.mm.swapops import (
    is_migration_entry,
    is_pte_marker,
    non_swap_entry,
    pte_to_swp_entry,
)
from mmrace.mm.userfaultfd_k import (
    EAGAIN,
    EBUSY,
    EEXIST,
    EFAULT,
    EINVAL,
    ENOENT,
    MFILL_ATOMIC_CONTINUE,
    MFILL_ATOMIC_COPY,
    MFILL_ATOMIC_WP,
    MFILL_ATOMIC_ZEROPAGE,
    MFILL_MODE_NAMES,
    UFFD_API,
    UFFD_EVENT_PAGEFAULT,
    UFFD_FEATURE_PAGEFAULT_FLAG_WP,
    UFFD_PAGEFAULT_FLAG_WP,
    UFFD_PAGEFAULT_FLAG_WRITE,
    UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES,
    UFFDIO_REGISTER_MODE_MINOR,
    UFFDIO_REGISTER_MODE_MISSING,
    UFFDIO_REGISTER_MODE_WP,
    UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
    UFFDIO_WRITEPROTECT_MODE_WP,
    UffdMsg,
    UserfaultfdCtx,
    VmUserfaultfdCtx,
    changing_lock_in_use,
    map_changing_read_lock,
    map_changing_read_unlock,
    mmap_changing_read,
    uffd_has,
    userfaultfd_missing,
    userfaultfd_pte_wp,
    userfaultfd_wp,
)
from mmrace.mm.vma import find_vma, vma_lookup
from mmrace.sync import rcu_read_lock, rcu_read_unlock

# --- sources -------------------------------------------------------------------------------


class UserPtr:
    """An address in a process's memory used as ``UFFDIO_COPY``'s source:
    ``copy_from_user`` reads it through *mm*'s page tables."""

    __slots__ = ("mm", "addr")

    def __init__(self, mm: MmStruct, addr: int) -> None:
        self.mm = mm
        self.addr = addr

    def __repr__(self) -> str:
        return f"UserPtr({self.mm.name}, {self.addr:#x})"


CopySource = int | Sequence[int] | UserPtr


def _user_pte(mm: MmStruct, addr: int) -> int:
    """The PTE mapping *addr*, read without locks as the CPU's access of
    ``copy_from_user`` does (the model's hardware walker reads inside an
    RCU read section, which keeps the tables from being freed): one
    visible read per level."""
    rcu_read_lock()
    pte = 0
    found = walk_to_pmd(mm, addr)
    if found is not None:
        pm = pte_offset_map(found[0], found[1], addr)
        if pm is not None:
            pte = ptep_get_lockless(pm.table, pm.index)
            pte_unmap(pm)
    rcu_read_unlock()
    return pte


@kfunc
def copy_from_user_page(folio: Folio, src: CopySource, offset: int, nofault: bool) -> bool:
    """``copy_from_user`` of one page at byte *offset* of *src* into the new
    *folio* (nobody else can see it yet: writing it is no visible
    operation). A value or a list of words is the caller's private buffer:
    no other thread writes it, so reading it is no scheduling point either.
    A :class:`UserPtr` is read through the page tables (one visible read of
    each entry and one of the source page); if the page is not mapped the
    copy fails with page faults disabled (*nofault*), or faults it in with
    them allowed. False if the copy failed (``-EFAULT``)."""
    contents = folio.contents
    # The page's words are sparse (a word never stored reads 0): keep only
    # the words that are not zero.
    if isinstance(src, int):
        contents.words[0] = dict.fromkeys(range(WORDS_PER_PAGE), src) if src else {}
        return True
    if not isinstance(src, UserPtr):
        base = (offset // PAGE_SIZE) * WORDS_PER_PAGE
        chunk = [int(w) for w in src[base:base + WORDS_PER_PAGE]]
        contents.words[0] = {i: w for i, w in enumerate(chunk) if w}
        return True
    addr = src.addr + offset
    for _ in range(2):
        pte = _user_pte(src.mm, addr)
        if pte_present(pte) and pte & 0x4:  # _PAGE_USER
            page = pfn_folio(pte_pfn(pte))
            visible_contents(page, READ, "copy_from_user (read)")
            contents.words[0] = dict(page.contents.words[pte_pfn(pte) - page.pfn])
            return True
        if nofault:
            return False
        try:
            do_user_addr_fault(src.mm, addr & PAGE_MASK, False)
        except OSError:
            return False
    return False


# --- locking the destination -----------------------------------------------------------------


def _err(ret: int | VmAreaStruct) -> int:
    return ret if isinstance(ret, int) else 0


@kfunc
def find_vma_and_prepare_anon(mm: MmStruct, addr: int) -> VmAreaStruct | int:
    """``find_vma_and_prepare_anon`` (mmap lock held): the VMA containing
    *addr* (``-ENOENT`` if none), with an anon_vma if it is private."""
    mmap_assert_locked(mm)
    vma = vma_lookup(mm, addr)
    if vma is None:
        return -ENOENT
    if not vma.vm_flags & VM_SHARED:
        anon_vma_prepare(vma)
    return vma


@kfunc
def uffd_lock_vma(mm: MmStruct, address: int) -> VmAreaStruct | int:
    """``uffd_lock_vma``: ``lock_vma_under_rcu``; a private VMA without an
    anon_vma, or a failed lookup, falls back to the mmap read lock, prepares
    the anon_vma and read-locks the VMA there (``vma_start_read_locked``).
    Returns the read-locked VMA or ``-ENOENT``/``-EAGAIN``."""
    vma = lock_vma_under_rcu(mm, address)
    if vma is not None:
        if not vma.vm_flags & VM_SHARED and vma.anon_vma is None:
            vma_end_read(vma)
        else:
            return vma
    mmap_read_lock(mm)
    found = find_vma_and_prepare_anon(mm, address)
    if not isinstance(found, int) and not vma_start_read_locked(found):
        found = -EAGAIN
    mmap_read_unlock(mm)
    return found


def validate_dst_vma(dst_vma: VmAreaStruct, dst_end: int) -> bool:
    """``validate_dst_vma``: the range lies in *dst_vma* and it is
    registered (with any context: the kernel checks no more)."""
    return dst_end <= dst_vma.vm_end and dst_vma.vm_userfaultfd_ctx is not None


def uffd_per_vma(mm: MmStruct) -> bool:
    """The 6.9 per-VMA-lock era of the fill and move ioctls."""
    return uffd_has(mm, "uffd-per-vma-locks")


@kfunc
def uffd_mfill_lock(dst_mm: MmStruct, dst_start: int, length: int) -> VmAreaStruct | int:
    """``uffd_mfill_lock``: the destination VMA, locked (its per-VMA lock
    from 6.9, the mmap read lock before), or ``-ENOENT`` (no VMA, the range
    leaves it, or it is not registered) / ``-EAGAIN``."""
    if uffd_per_vma(dst_mm):
        vma = uffd_lock_vma(dst_mm, dst_start)
        if isinstance(vma, int) or validate_dst_vma(vma, dst_start + length):
            return vma
        vma_end_read(vma)
        return -ENOENT
    mmap_read_lock(dst_mm)
    found = find_vma_and_prepare_anon(dst_mm, dst_start)
    if not isinstance(found, int):
        if validate_dst_vma(found, dst_start + length):
            return found
        found = -ENOENT
    mmap_read_unlock(dst_mm)
    return found


@kfunc
def uffd_mfill_unlock(vma: VmAreaStruct) -> None:
    """``uffd_mfill_unlock``."""
    if uffd_per_vma(vma.raw("vm_mm")):
        vma_end_read(vma)
    else:
        mmap_read_unlock(vma.vm_mm)


# --- filling ------------------------------------------------------------------------------------


def pte_none_mostly(pte: int) -> bool:
    """``pte_none_mostly``: empty, or holding only a PTE marker."""
    return pte_none(pte) or is_pte_marker(pte)


class MfillState:
    """What ``mfill_atomic`` carries between pages and across its retry:
    the context, the ioctl (for the monitor-view oracle), the mode and
    source, and the folio whose copy failed under the lock."""

    __slots__ = ("ctx", "op", "flags", "src", "folio")

    def __init__(self, ctx: UserfaultfdCtx, flags: int, src: CopySource | None) -> None:
        self.ctx = ctx
        self.op = UffdIoctl(MFILL_MODE_NAMES[flags & 0xFF])
        self.flags = flags
        self.src = src
        self.folio: Folio | None = None


@kfunc
def mm_alloc_pmd(mm: MmStruct, address: int) -> tuple[PageTable, int]:
    """``mm_alloc_pmd``: the PMD entry of *address*, allocating upper tables."""
    pud, ui = pud_alloc(mm, address)
    return pmd_alloc(mm, pud, ui, address)


def _file_over_size(vma: VmAreaStruct, addr: int) -> bool:
    """``mfill_file_over_size`` (PTL held)."""
    f = vma.vm_file
    if f is None:
        return False
    max_off = int(f.size + PAGE_SIZE - 1) >> PAGE_SHIFT
    return bool(linear_page_index(vma, addr) >= max_off)


@kfunc
def mfill_atomic_install_pte(state: MfillState, dst_pmd: PageTable, mi: int,
                             dst_vma: VmAreaStruct, dst_addr: int, folio: Folio,
                             idx: int = 0) -> int:
    """``mfill_atomic_install_pte``: under the PTL, map page *idx* of
    *folio* at *dst_addr* if the PTE is still empty (``-EEXIST``
    otherwise): dirty, writable if the VMA is (a page-cache page only in a
    shared mapping), uffd-wp with ``MFILL_ATOMIC_WP``; a new page gets the
    exclusive anon rmap, a page-cache page (``UFFDIO_CONTINUE``, possibly of
    a large folio) the file rmap and is unlocked. Returns 0 or -errno."""
    mm = dst_vma.vm_mm
    writable = bool(dst_vma.vm_flags & VM_WRITE)
    vm_shared = bool(dst_vma.vm_flags & VM_SHARED)
    # folio_mapping of a page we allocated or hold locked: stable, no operation.
    page_in_cache = folio.mapping is not None and not folio.anon
    pte = pte_mkdirty(pfn_pte(folio.pfn + idx, vm_prot_to_pte(dst_vma.vm_page_prot)))
    if page_in_cache and not vm_shared:
        writable = False
    if writable:
        pte = pte_mkwrite(pte)
    if state.flags & MFILL_ATOMIC_WP:
        pte = pte_mkuffd_wp(pte)
    pm = pte_offset_map_lock(mm, dst_pmd, mi, dst_addr)
    if pm is None:
        return -EAGAIN
    if _file_over_size(dst_vma, dst_addr):
        pte_unmap_unlock(pm)
        return -EFAULT
    if not pte_none_mostly(ptep_get(pm.table, pm.index)):
        # A uffd-wp marker may be overwritten (a range registered for MINOR
        # and WP, protected while the page was not yet mapped).
        pte_unmap_unlock(pm)
        return -EEXIST
    if page_in_cache:
        folio_add_file_rmap_pte(folio, idx, dst_vma)
    else:
        folio_add_new_anon_rmap(folio, dst_vma, dst_addr, True)
    _map_count(mm, 1)
    uffd_view_emit(state.ctx, "uffd-ioctl-effect", state.op, addrs=(dst_addr,))
    set_pte_at(mm, dst_addr, pm.table, pm.index, pte)
    if page_in_cache:
        folio_unlock(folio)
    update_mmu_cache(dst_vma, dst_addr, pm.table, pm.index)
    pte_unmap_unlock(pm)
    return 0


@kfunc
def mfill_atomic_pte_copy(state: MfillState, dst_pmd: PageTable, mi: int,
                          dst_vma: VmAreaStruct, dst_addr: int, offset: int) -> int:
    """``mfill_atomic_pte_copy``: allocate a page and copy the source into
    it with page faults disabled; if that fails keep the page in the state
    and return ``-ENOENT`` (the caller copies again with faults allowed and
    retries); then install it."""
    if state.folio is None:
        folio = folio_alloc(0)
        assert state.src is not None
        if not copy_from_user_page(folio, state.src, offset, nofault=True):
            state.folio = folio
            return -ENOENT
    else:
        folio = state.folio
        state.folio = None
    folio.uptodate = True  # __folio_mark_uptodate: the page is still ours alone
    ret = mfill_atomic_install_pte(state, dst_pmd, mi, dst_vma, dst_addr, folio)
    if ret:
        folio_put(folio)
    return ret


@kfunc
def mfill_atomic_pte_zeropage(state: MfillState, dst_pmd: PageTable, mi: int,
                              dst_vma: VmAreaStruct, dst_addr: int) -> int:
    """``mfill_atomic_pte_zeropage``: map the shared zero page (special,
    read-only) if the PTE is still empty."""
    mm = dst_vma.vm_mm
    pte = pte_mkspecial(pfn_pte(my_zero_pfn(), vm_prot_to_pte(dst_vma.vm_page_prot)))
    pm = pte_offset_map_lock(mm, dst_pmd, mi, dst_addr)
    if pm is None:
        return -EAGAIN
    if not pte_none(ptep_get(pm.table, pm.index)):
        pte_unmap_unlock(pm)
        return -EEXIST
    uffd_view_emit(state.ctx, "uffd-ioctl-effect", state.op, addrs=(dst_addr,))
    set_pte_at(mm, dst_addr, pm.table, pm.index, pte)
    update_mmu_cache(dst_vma, dst_addr, pm.table, pm.index)
    pte_unmap_unlock(pm)
    return 0


@kfunc
def mfill_atomic_pte_continue(state: MfillState, dst_pmd: PageTable, mi: int,
                              dst_vma: VmAreaStruct, dst_addr: int) -> int:
    """``mfill_atomic_pte_continue``: map the page the page cache already
    holds at this offset (``-EFAULT`` if it holds none, ``-EINVAL``
    beyond EOF); of a large folio, the page at the offset
    (``folio_file_page``)."""
    pgoff = linear_page_index(dst_vma, dst_addr)
    folio = shmem_get_folio_noalloc(dst_vma.vm_file, pgoff)
    if isinstance(folio, int):
        return folio
    if folio is None:
        return -EFAULT
    ret = mfill_atomic_install_pte(state, dst_pmd, mi, dst_vma, dst_addr, folio,
                                   pgoff - folio.index)
    if ret:
        folio_unlock(folio)
        folio_put(folio)
    return ret


def mfill_atomic_pte(state: MfillState, dst_pmd: PageTable, mi: int, dst_vma: VmAreaStruct,
                     dst_addr: int, offset: int) -> int:
    """``mfill_atomic_pte``: dispatch on the mode."""
    mode = state.flags & 0xFF
    if mode == MFILL_ATOMIC_CONTINUE:
        return mfill_atomic_pte_continue(state, dst_pmd, mi, dst_vma, dst_addr)
    if dst_vma.vm_flags & VM_SHARED:
        raise NotImplementedError(f"{MFILL_MODE_NAMES[mode]} into shmem "
                                  "(shmem_mfill_atomic_pte) is not modelled")
    if mode == MFILL_ATOMIC_COPY:
        return mfill_atomic_pte_copy(state, dst_pmd, mi, dst_vma, dst_addr, offset)
    return mfill_atomic_pte_zeropage(state, dst_pmd, mi, dst_vma, dst_addr)


def mmap_lock_era(ctx: UserfaultfdCtx) -> bool:
    """Before 6.9: the ioctls hold ``mmap_lock`` and check ``mmap_changing``
    right after taking it, before looking the VMA up."""
    return not uffd_per_vma(ctx.mm) and not changing_lock_in_use(ctx)


@kfunc
def mfill_lock_and_check(state: MfillState, dst_start: int,
                         length: int) -> tuple[VmAreaStruct | None, int]:
    """The start of ``mfill_atomic`` (and of its retry): lock the
    destination and check ``mmap_changing``. Before 6.9: ``mmap_read_lock``,
    the check, then the VMA lookup (``find_dst_vma``, ``anon_vma_prepare``);
    from 6.9: ``uffd_mfill_lock``, then ``down_read(map_changing_lock)`` and
    the check. Returns the locked VMA and 0 (or an error from the checks
    that follow the lookup, still locked), or (None, -errno) with nothing
    held."""
    ctx = state.ctx
    mm = ctx.mm
    if mmap_lock_era(ctx):
        mmap_read_lock(mm)
        if mmap_changing_read(ctx):
            mmap_read_unlock(mm)
            return None, -EAGAIN
        uffd_view_emit(ctx, "uffd-ioctl-begin", state.op)
        found = find_vma_and_prepare_anon(mm, dst_start)
        if isinstance(found, int) or not validate_dst_vma(found, dst_start + length):
            mmap_read_unlock(mm)
            return None, found if isinstance(found, int) else -ENOENT
        return found, _mfill_checks(state, found)
    vma = uffd_mfill_lock(mm, dst_start, length)
    if isinstance(vma, int):
        return None, vma
    map_changing_read_lock(ctx)
    if mmap_changing_read(ctx):
        map_changing_read_unlock(ctx)
        uffd_mfill_unlock(vma)
        return None, -EAGAIN
    uffd_view_emit(ctx, "uffd-ioctl-begin", state.op)
    return vma, _mfill_checks(state, vma)


def _mfill_checks(state: MfillState, dst_vma: VmAreaStruct) -> int:
    """The checks of ``mfill_atomic`` once the VMA is locked and
    ``mmap_changing`` was found clear: 0 or ``-EINVAL``."""
    mode = state.flags & 0xFF
    if vma_is_anonymous(dst_vma) and dst_vma.vm_flags & VM_SHARED:
        return -EINVAL
    if state.flags & MFILL_ATOMIC_WP and not dst_vma.vm_flags & VM_UFFD_WP:
        return -EINVAL
    if not vma_is_anonymous(dst_vma) and not vma_is_shmem(dst_vma):
        return -EINVAL
    if mode == MFILL_ATOMIC_CONTINUE and not vma_is_shmem(dst_vma):
        return -EINVAL
    return 0


@kfunc
def mfill_atomic(ctx: UserfaultfdCtx, dst_start: int, src: CopySource | None, length: int,
                 flags: int) -> int:
    """``mfill_atomic``: fill ``[dst_start, dst_start + length)`` page by page
    under the destination's lock and ``map_changing_lock`` (read), failing
    with ``-EAGAIN`` while ``mmap_changing`` is raised -- also after the
    retry that copies the source with the locks dropped. Returns the bytes
    filled, or -errno if none were."""
    dst_mm = ctx.mm
    state = MfillState(ctx, flags, src)
    copied = 0
    dst_addr = dst_start
    err = 0
    while True:  # retry:
        dst_vma, err = mfill_lock_and_check(state, dst_start, length)
        if dst_vma is None:
            break
        locked = True
        while not err and dst_addr < dst_start + length:
            dst_pmd, mi = mm_alloc_pmd(dst_mm, dst_addr)
            pmdval = pmdp_get_lockless(dst_pmd, mi)
            if pmd_none(pmdval):
                __pte_alloc(dst_mm, dst_pmd, mi)
            pmdval = pmdp_get_lockless(dst_pmd, mi)
            if not pmd_present(pmdval) or pmd_trans_huge(pmdval):
                err = -EEXIST
                break
            err = mfill_atomic_pte(state, dst_pmd, mi, dst_vma, dst_addr, copied)
            if err == -ENOENT:
                # Copy again with the locks dropped and page faults allowed,
                # then start over: relock, recheck mmap_changing.
                map_changing_read_unlock(ctx)
                uffd_mfill_unlock(dst_vma)
                locked = False
                assert state.folio is not None and state.src is not None
                ok = copy_from_user_page(state.folio, state.src, copied, nofault=False)
                err = 0 if ok else -EFAULT
                break
            if not err:
                dst_addr += PAGE_SIZE
                copied += PAGE_SIZE
        if locked:
            map_changing_read_unlock(ctx)
            uffd_mfill_unlock(dst_vma)
            break
        if err:
            break
    if state.folio is not None:
        folio_put(state.folio)
    return copied if copied else err


def mfill_atomic_copy(ctx: UserfaultfdCtx, dst_start: int, src: CopySource, length: int,
                      flags: int) -> int:
    """``mfill_atomic_copy``."""
    return mfill_atomic(ctx, dst_start, src, length, flags | MFILL_ATOMIC_COPY)


def mfill_atomic_zeropage(ctx: UserfaultfdCtx, start: int, length: int) -> int:
    """``mfill_atomic_zeropage``."""
    return mfill_atomic(ctx, start, None, length, MFILL_ATOMIC_ZEROPAGE)


def mfill_atomic_continue(ctx: UserfaultfdCtx, start: int, length: int, flags: int) -> int:
    """``mfill_atomic_continue``."""
    return mfill_atomic(ctx, start, None, length, flags | MFILL_ATOMIC_CONTINUE)


# --- write-protect -----------------------------------------------------------------------------


@kfunc
def uffd_wp_range(vma: VmAreaStruct, start: int, length: int, enable_wp: bool) -> int:
    """``uffd_wp_range``: ``change_protection`` of one VMA's part with
    ``MM_CP_UFFD_WP`` (protect) or ``MM_CP_UFFD_WP_RESOLVE`` (+
    ``MM_CP_TRY_CHANGE_WRITABLE`` where the VMA allows manual write
    upgrades), in its own ``mmu_gather``: the flush comes at
    ``tlb_finish_mmu``, after every PTE of the part was changed."""
    cp = MM_CP_UFFD_WP if enable_wp else MM_CP_UFFD_WP_RESOLVE
    if not enable_wp and vma_wants_manual_pte_write_upgrade(vma):
        cp |= MM_CP_TRY_CHANGE_WRITABLE
    tlb = tlb_gather_mmu(vma.vm_mm)
    ret = change_protection(tlb, vma, start, start + length, cp)
    tlb_finish_mmu(tlb)
    return int(ret)


@kfunc
def mwriteprotect_range(ctx: UserfaultfdCtx, start: int, length: int, enable_wp: bool) -> int:
    """``mwriteprotect_range``: under the mmap *read* lock (every era: it
    walks several VMAs) and, from 6.9, ``map_changing_lock`` for read,
    refuse while ``mmap_changing``; every VMA of the range must be
    registered for uffd-wp (else ``-ENOENT``); :func:`uffd_wp_range` each
    part. With the ``uffd-wp-mmap-write-lock`` proposal, protecting takes
    the mmap lock for write instead."""
    mm = ctx.mm
    end = start + length
    write = enable_wp and kernel_config(mm).has("uffd-wp-mmap-write-lock")
    if write:
        mmap_write_lock(mm)
    else:
        mmap_read_lock(mm)
    map_changing_read_lock(ctx)
    err = 0
    try:
        if mmap_changing_read(ctx):
            return -EAGAIN
        err = -ENOENT
        addr = start
        while addr < end:
            vma = find_vma(mm, addr)
            if vma is None or vma.vm_start >= end:
                break
            if not userfaultfd_wp(vma):
                err = -ENOENT
                break
            s = max(vma.vm_start, start)
            e = min(vma.vm_end, end)
            err = uffd_wp_range(vma, s, e - s, enable_wp)
            if err < 0:
                break
            err = 0
            addr = e
    finally:
        map_changing_read_unlock(ctx)
        if write:
            mmap_write_unlock(mm)
        else:
            mmap_read_unlock(mm)
    return err


# --- move -----------------------------------------------------------------------------------


@kfunc
def double_pt_lock(ptl1: Any, ptl2: Any) -> None:
    """``double_pt_lock``: both PTLs in one global order (the kernel's is
    the locks' addresses; the model's their serials), the second nested;
    one lock when both PTEs share a table."""
    if ptl1.serial > ptl2.serial:
        ptl1, ptl2 = ptl2, ptl1
    ptl_lock(ptl1)
    if ptl1 is not ptl2:
        ptl_lock(ptl2, nested=True)


@kfunc
def double_pt_unlock(ptl1: Any, ptl2: Any) -> None:
    """``double_pt_unlock``."""
    ptl_unlock(ptl1)
    if ptl1 is not ptl2:
        ptl_unlock(ptl2)


def is_pte_pages_stable(dst: PteMap, src: PteMap, orig_dst_pte: int, orig_src_pte: int,
                        dst_pmd: PageTable, dmi: int, dst_pmdval: int) -> bool:
    """``is_pte_pages_stable`` (both PTLs held): both PTEs unchanged, and the
    destination PMD still points to the same PTE table (a 6.13 recheck,
    for PTE-table reclaim; nothing in the model frees an empty PTE table
    under a VMA lock, so without it the model would behave the same)."""
    return (pte_same(ptep_get(src.table, src.index), orig_src_pte)
            and pte_same(ptep_get(dst.table, dst.index), orig_dst_pte)
            and pmd_same(dst_pmdval, pmdp_get_lockless(dst_pmd, dmi)))


def _move_folio_rmap(folio: Folio, dst_vma: VmAreaStruct, dst_addr: int) -> None:
    """``folio_move_anon_rmap`` and ``WRITE_ONCE(folio->index, ...)``: the
    page's reverse mapping now names the destination VMA and offset."""
    folio_move_anon_rmap(folio, dst_vma)
    folio.access(WRITE, "WRITE_ONCE(folio->index)")
    folio.index = linear_page_index(dst_vma, dst_addr)


@kfunc
def move_present_pte(op: UffdIoctl, ctx: UserfaultfdCtx, mm: MmStruct,
                     dst_vma: VmAreaStruct, src_vma: VmAreaStruct, dst_addr: int,
                     src_addr: int, dst: PteMap, src: PteMap, orig_dst_pte: int,
                     orig_src_pte: int, dst_pmd: PageTable, dmi: int, dst_pmdval: int,
                     src_folio: Folio) -> int:
    """``move_present_pte`` (folio and anon_vma locked): under both PTLs,
    recheck; refuse a large, possibly pinned or not exclusive page
    (``-EBUSY``); clear and flush the source PTE; if GUP-fast pinned the
    page meanwhile, put the PTE back (``-EBUSY``); else move the rmap and
    map the page at the destination, dirty and writable. Before
    ``uffd-move-src-folio-unpinned`` (6.9) the rmap moved before the clear
    and stayed moved when the pin made the move fail."""
    fixed = uffd_has(mm, "uffd-move-src-folio-unpinned")
    assert dst.ptl is not None and src.ptl is not None
    double_pt_lock(dst.ptl, src.ptl)
    err = 0
    if not is_pte_pages_stable(dst, src, orig_dst_pte, orig_src_pte, dst_pmd, dmi,
                               dst_pmdval):
        err = -EAGAIN
    elif (src_folio.order or folio_maybe_dma_pinned(src_folio)
            or not PageAnonExclusive(src_folio, 0)):
        err = -EBUSY
    else:
        if not fixed:
            _move_folio_rmap(src_folio, dst_vma, dst_addr)
        orig_src_pte = ptep_clear_flush(src_vma, src_addr, src.table, src.index)
        if folio_maybe_dma_pinned(src_folio):  # pinned from under us: put it back
            set_pte_at(mm, src_addr, src.table, src.index, orig_src_pte)
            err = -EBUSY
        else:
            if fixed:
                _move_folio_rmap(src_folio, dst_vma, dst_addr)
            pte = pte_mkwrite(pte_mkdirty(mk_pte(src_folio, dst_vma)))
            uffd_view_emit(ctx, "uffd-ioctl-effect", op, addrs=(dst_addr, src_addr))
            set_pte_at(mm, dst_addr, dst.table, dst.index, pte)
    double_pt_unlock(dst.ptl, src.ptl)
    return err


@kfunc
def move_zeropage_pte(op: UffdIoctl, ctx: UserfaultfdCtx, mm: MmStruct,
                      dst_vma: VmAreaStruct, src_vma: VmAreaStruct, dst_addr: int,
                      src_addr: int, dst: PteMap, src: PteMap, orig_dst_pte: int,
                      orig_src_pte: int, dst_pmd: PageTable, dmi: int,
                      dst_pmdval: int) -> int:
    """``move_zeropage_pte``: a shared-zero-page PTE moves as a new zero-page
    PTE at the destination (no folio to lock)."""
    assert dst.ptl is not None and src.ptl is not None
    double_pt_lock(dst.ptl, src.ptl)
    err = 0
    if not is_pte_pages_stable(dst, src, orig_dst_pte, orig_src_pte, dst_pmd, dmi,
                               dst_pmdval):
        err = -EAGAIN
    else:
        zero = pte_mkspecial(pfn_pte(my_zero_pfn(), vm_prot_to_pte(dst_vma.vm_page_prot)))
        ptep_clear_flush(src_vma, src_addr, src.table, src.index)
        uffd_view_emit(ctx, "uffd-ioctl-effect", op, addrs=(dst_addr, src_addr))
        set_pte_at(mm, dst_addr, dst.table, dst.index, zero)
    double_pt_unlock(dst.ptl, src.ptl)
    return err


@kfunc
def move_pages_pte(op: UffdIoctl, ctx: UserfaultfdCtx, mm: MmStruct, dst_pmd: PageTable,
                   dmi: int, src_pmd: PageTable, smi: int, dst_vma: VmAreaStruct,
                   src_vma: VmAreaStruct, dst_addr: int, src_addr: int, mode: int) -> int:
    """``move_pages_pte``: read the destination PTE (``-EEXIST`` unless
    empty) and the source PTE (a hole is ``-ENOENT``, or skipped with
    ``ALLOW_SRC_HOLES``), each under its PTL; take a reference on the
    source folio (``-EBUSY`` unless it is ``PageAnonExclusive``) and its
    lock and its anon_vma's lock -- by trylock under RCU, else dropping the
    PTE maps, sleeping for the lock and starting over -- then
    :func:`move_present_pte`. Returns 0 (one page moved or a hole skipped)
    or -errno; ``-EAGAIN`` makes the caller try the page again."""
    src_folio: Folio | None = None
    src_folio_pte = 0
    src_anon_vma: Any = None
    wait_migration = False
    dst: PteMap | None = None
    src: PteMap | None = None
    ret = 0
    while True:  # retry:
        dst = pte_offset_map_nolock(mm, dst_pmd, dmi, dst_addr)
        if dst is None:
            ret = -EAGAIN
            break
        dst_pmdval = dst.pmdval
        src = pte_offset_map_nolock(mm, src_pmd, smi, src_addr)
        if src is None:
            ret = -EAGAIN
            break
        if (pmd_none(pmdp_get(dst_pmd, dmi)) or pmd_none(pmdp_get(src_pmd, smi))
                or pmd_trans_huge(pmdp_get(dst_pmd, dmi))
                or pmd_trans_huge(pmdp_get(src_pmd, smi))):
            ret = -EINVAL
            break
        assert dst.ptl is not None and src.ptl is not None
        ptl_lock(dst.ptl)
        orig_dst_pte = ptep_get(dst.table, dst.index)
        ptl_unlock(dst.ptl)
        if not pte_none(orig_dst_pte):
            ret = -EEXIST
            break
        ptl_lock(src.ptl)
        orig_src_pte = ptep_get(src.table, src.index)
        ptl_unlock(src.ptl)
        if pte_none(orig_src_pte):
            ret = 0 if mode & UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES else -ENOENT
            break
        if src_folio is not None and not pte_same(src_folio_pte, orig_src_pte):
            ret = -EAGAIN
            break
        if not pte_present(orig_src_pte):
            entry = pte_to_swp_entry(orig_src_pte)
            if not non_swap_entry(entry):
                raise NotImplementedError("UFFDIO_MOVE of a swapped-out page (move_swap_pte) "
                                          "is not modelled")
            # A migration entry: wait for the migration (below, with the PTE
            # maps dropped; nothing else is held yet) and try again.
            wait_migration = is_migration_entry(entry)
            ret = -EAGAIN if wait_migration else -EFAULT
            break
        if is_zero_pfn(pte_pfn(orig_src_pte)):
            ret = move_zeropage_pte(op, ctx, mm, dst_vma, src_vma, dst_addr, src_addr, dst,
                                    src, orig_dst_pte, orig_src_pte, dst_pmd, dmi, dst_pmdval)
            break
        if src_folio is None:
            # Take a reference under the PTL so the page is not freed under us.
            ptl_lock(src.ptl)
            if not pte_same(orig_src_pte, ptep_get(src.table, src.index)):
                ptl_unlock(src.ptl)
                ret = -EAGAIN
                break
            folio = vm_normal_page(src_vma, src_addr, orig_src_pte)
            if folio is None or not PageAnonExclusive(folio, 0):
                ptl_unlock(src.ptl)
                ret = -EBUSY
                break
            folio_get(folio)
            src_folio = folio
            src_folio_pte = orig_src_pte
            ptl_unlock(src.ptl)
            if not folio_trylock(folio):
                pte_unmap(src)
                pte_unmap(dst)
                src = dst = None
                folio_lock(folio)  # now we can sleep
                continue
            if not folio_test_anon(folio):
                ret = -EBUSY
                break
        if src_folio.order:
            raise NotImplementedError(
                "UFFDIO_MOVE of a page of a large folio (split_folio of an anonymous "
                "folio) is not modelled")
        if src_anon_vma is None:
            # folio_referenced walks the anon_vma without the folio lock:
            # serialize against it with the anon_vma lock.
            src_anon_vma = folio_get_anon_vma(src_folio)
            if src_anon_vma is None:
                ret = -EAGAIN  # unmapped from under us
                break
            if not anon_vma_trylock_write(src_anon_vma):
                pte_unmap(src)
                pte_unmap(dst)
                src = dst = None
                anon_vma_lock_write(src_anon_vma)  # now we can sleep
                continue
        ret = move_present_pte(op, ctx, mm, dst_vma, src_vma, dst_addr, src_addr, dst, src,
                               orig_dst_pte, orig_src_pte, dst_pmd, dmi, dst_pmdval, src_folio)
        break
    if src_anon_vma is not None:
        anon_vma_unlock_write(src_anon_vma)
        put_anon_vma(src_anon_vma)
    if src_folio is not None:
        folio_unlock(src_folio)
        folio_put(src_folio)
    if src is not None:
        pte_unmap(src)
    if dst is not None:
        pte_unmap(dst)
    if wait_migration:
        migration_entry_wait(mm, src_pmd, smi, src_addr)
    return ret


def vma_move_compatible(vma: VmAreaStruct) -> bool:
    """``vma_move_compatible``."""
    return not vma.vm_flags & (VM_PFNMAP | VM_IO | VM_HUGETLB | VM_MIXEDMAP)


def validate_move_areas(ctx: UserfaultfdCtx, src_vma: VmAreaStruct,
                        dst_vma: VmAreaStruct) -> int:
    """``validate_move_areas``: same access flags and protection, both
    mlocked or neither, writable, movable, anonymous, and the destination
    registered with *ctx*: 0 or ``-EINVAL``."""
    if ((src_vma.vm_flags & VM_ACCESS_FLAGS) != (dst_vma.vm_flags & VM_ACCESS_FLAGS)
            or src_vma.vm_page_prot != dst_vma.vm_page_prot):
        return -EINVAL
    if (src_vma.vm_flags & VM_LOCKED) != (dst_vma.vm_flags & VM_LOCKED):
        return -EINVAL
    if not src_vma.vm_flags & VM_WRITE:
        return -EINVAL
    if not vma_move_compatible(src_vma) or not vma_move_compatible(dst_vma):
        return -EINVAL
    if dst_vma.vm_userfaultfd_ctx is not ctx:
        return -EINVAL
    if not vma_is_anonymous(src_vma) or not vma_is_anonymous(dst_vma):
        return -EINVAL
    return 0


@kfunc
def find_vmas_mm_locked(mm: MmStruct, dst_start: int,
                        src_start: int) -> tuple[VmAreaStruct, VmAreaStruct] | int:
    """``find_vmas_mm_locked`` (mmap lock held): the destination VMA (with
    an anon_vma) and the source VMA, or ``-ENOENT``."""
    vma = find_vma_and_prepare_anon(mm, dst_start)
    if isinstance(vma, int):
        return vma
    if vma.vm_start <= src_start < vma.vm_end:
        return vma, vma
    src_vma = vma_lookup(mm, src_start)
    if src_vma is None:
        return -ENOENT
    return vma, src_vma


@kfunc
def uffd_move_lock(mm: MmStruct, dst_start: int,
                   src_start: int) -> tuple[VmAreaStruct, VmAreaStruct] | int:
    """``uffd_move_lock``: before 6.9 the mmap read lock; from 6.9 the
    destination's per-VMA lock (``uffd_lock_vma``) and the source's only
    through ``lock_vma_under_rcu`` -- falling back to ``uffd_lock_vma``'s
    mmap lock while holding the destination's VMA lock could deadlock with
    a writer that write-locks the source and waits for the destination --
    else drop it and take both under the mmap read lock."""
    if not uffd_per_vma(mm):
        mmap_read_lock(mm)
        found = find_vmas_mm_locked(mm, dst_start, src_start)
        if isinstance(found, int):
            mmap_read_unlock(mm)
        return found
    dst_vma = uffd_lock_vma(mm, dst_start)
    if isinstance(dst_vma, int):
        return dst_vma
    if dst_vma.vm_start <= src_start < dst_vma.vm_end:
        return dst_vma, dst_vma
    src_vma = lock_vma_under_rcu(mm, src_start)
    if src_vma is not None:
        return dst_vma, src_vma
    vma_end_read(dst_vma)
    mmap_read_lock(mm)
    found = find_vmas_mm_locked(mm, dst_start, src_start)
    if not isinstance(found, int):
        dst_vma, src_vma = found
        if not vma_start_read_locked(dst_vma):
            found = -EAGAIN
        elif src_vma is not dst_vma and not vma_start_read_locked(src_vma):
            vma_end_read(dst_vma)
            found = -EAGAIN
    mmap_read_unlock(mm)
    return found


@kfunc
def uffd_move_unlock(dst_vma: VmAreaStruct, src_vma: VmAreaStruct) -> None:
    """``uffd_move_unlock``."""
    mm = dst_vma.raw("vm_mm")
    if not uffd_per_vma(mm):
        mmap_read_unlock(mm)
        return
    vma_end_read(src_vma)
    if src_vma is not dst_vma:
        vma_end_read(dst_vma)


@kfunc
def move_pages(ctx: UserfaultfdCtx, dst_start: int, src_start: int, length: int,
               mode: int) -> int:
    """``move_pages``: lock both VMAs and check ``mmap_changing`` (6.8:
    ``mmap_read_lock``, the check, the lookup; 6.9: ``uffd_move_lock``, then
    the check under ``map_changing_lock``), validate the areas, then move
    page by page (``move_pages_pte``, retried on ``-EAGAIN``). Returns the
    bytes moved, or -errno if none were.

    The whole call is the code path of the locking rules' documented
    exception ``uffd_move_lock`` (``mm/rules.py``): holding only the two
    VMA read locks, ``move_pages_pte`` takes the source folio's anon_vma
    lock for write, a lock state the table has no row for."""
    exception_path_enter("uffd_move_lock")
    try:
        return _move_pages(ctx, dst_start, src_start, length, mode)
    finally:
        exception_path_leave("uffd_move_lock")


def _move_pages(ctx: UserfaultfdCtx, dst_start: int, src_start: int, length: int,
                mode: int) -> int:
    mm = ctx.mm
    op = UffdIoctl("UFFDIO_MOVE")
    err = 0
    if mmap_lock_era(ctx):  # 6.8: the check first, under mmap_lock
        mmap_read_lock(mm)
        if mmap_changing_read(ctx):
            mmap_read_unlock(mm)
            return -EAGAIN
        uffd_view_emit(ctx, "uffd-ioctl-begin", op)
        found = find_vmas_mm_locked(mm, dst_start, src_start)
        if isinstance(found, int):
            mmap_read_unlock(mm)
            return found
    else:
        found = uffd_move_lock(mm, dst_start, src_start)
        if isinstance(found, int):
            return found
        map_changing_read_lock(ctx)
        if mmap_changing_read(ctx):
            err = -EAGAIN
        else:
            uffd_view_emit(ctx, "uffd-ioctl-begin", op)
    dst_vma, src_vma = found
    moved = 0
    if not err:
        if (src_vma.vm_flags & VM_SHARED or src_start + length > src_vma.vm_end
                or dst_vma.vm_flags & VM_SHARED or dst_start + length > dst_vma.vm_end):
            err = -EINVAL
        else:
            err = validate_move_areas(ctx, src_vma, dst_vma)
    src_addr, dst_addr = src_start, dst_start
    while not err and src_addr < src_start + length:
        found_pmd = walk_to_pmd(mm, src_addr)  # mm_find_pmd
        if found_pmd is None:
            if not mode & UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES:
                err = -ENOENT
                break
            found_pmd = mm_alloc_pmd(mm, src_addr)
        src_pmd, smi = found_pmd
        dst_pmd, dmi = mm_alloc_pmd(mm, dst_addr)
        if pmd_trans_huge(pmdp_get_lockless(dst_pmd, dmi)):
            err = -EEXIST
            break
        src_pmdval = pmdp_get(src_pmd, smi)
        if pmd_trans_huge(src_pmdval):  # pmd_trans_huge_lock(src_pmd) succeeds
            raise NotImplementedError(
                "UFFDIO_MOVE of a PMD-mapped transparent huge page (move_pages_huge_pmd, "
                "or split_huge_pmd and split_folio) is not modelled")
        if pmd_none(src_pmdval):
            if not mode & UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES:
                err = -ENOENT
                break
            __pte_alloc(mm, src_pmd, smi)
        pte_alloc(mm, dst_pmd, dmi)
        err = move_pages_pte(op, ctx, mm, dst_pmd, dmi, src_pmd, smi, dst_vma, src_vma,
                             dst_addr, src_addr, mode)
        if err == -EAGAIN:
            err = 0
            continue
        if err:
            break
        src_addr += PAGE_SIZE
        dst_addr += PAGE_SIZE
        moved += PAGE_SIZE
    map_changing_read_unlock(ctx)
    uffd_move_unlock(dst_vma, src_vma)
    return moved if moved else err


__all__ = [
    "UFFDIO_REGISTER_MODE_MINOR",
    "UFFDIO_REGISTER_MODE_MISSING",
    "UFFDIO_REGISTER_MODE_WP",
    "UFFDIO_WRITEPROTECT_MODE_DONTWAKE",
    "UFFDIO_WRITEPROTECT_MODE_WP",
    "UFFD_API",
    "UFFD_EVENT_PAGEFAULT",
    "UFFD_FEATURE_PAGEFAULT_FLAG_WP",
    "UFFD_PAGEFAULT_FLAG_WP",
    "UFFD_PAGEFAULT_FLAG_WRITE",
    "CopySource",
    "UffdMsg",
    "UserPtr",
    "UserfaultfdCtx",
    "VmUserfaultfdCtx",
    "dup_userfaultfd",
    "dup_userfaultfd_complete",
    "handle_userfault",
    "mfill_atomic",
    "move_pages",
    "mremap_userfaultfd_complete",
    "mremap_userfaultfd_fail",
    "mremap_userfaultfd_prep",
    "mwriteprotect_range",
    "new_userfaultfd",
    "userfaultfd_api",
    "userfaultfd_ctx_read",
    "userfaultfd_missing",
    "userfaultfd_pte_wp",
    "userfaultfd_remove",
    "userfaultfd_unmap_complete",
    "userfaultfd_unmap_prep",
    "userfaultfd_wp",
    "wake_userfault",
]

"""mremap: moving, growing and shrinking a mapping with the page tables it
carries (mm/mremap.c as of Linux 6.16, upstream commit 000c0691ec6a; with
``copy_vma`` / ``vma_merge_extend`` of mm/vma.c, in ``mm/vma.py``, and
``move_huge_pmd`` of mm/huge_memory.c, in ``mm/huge_memory.py``).

One function per kernel function, named as the kernel names them. The
structure is 6.16's: the syscall fills a :class:`VmaRemapStruct` and
``do_mremap`` dispatches to ``mremap_to`` (a new address is implied:
``MREMAP_FIXED`` or ``MREMAP_DONTUNMAP``) or ``mremap_at`` (shrink in place,
grow in place, or move when it cannot grow); a move is ``move_vma``:
``copy_vma`` makes the destination VMA, ``move_page_tables`` moves the
entries (whole PUD or PMD tables when the extent allows, ``move_ptes``
otherwise), then the source is unmapped (or, with ``MREMAP_DONTUNMAP``,
kept with its tables emptied and its anon_vma chain dropped).

Locking, as the kernel does it: the mmap lock held for write throughout;
the source VMA write-locked before anything moves (``move_vma``), the
destination when it is linked (``vma_link``) or merged into; the rmap locks
(``i_mmap_rwsem`` and the anon_vma root lock, write) around each move when
``need_rmap_locks`` and around every whole-table move; both page-table
locks of a move, source first, the second with ``SINGLE_DEPTH_NESTING``;
the TLB flush of the old range before the old page-table lock is dropped
whenever a present entry moved. Every entry write goes through the
page-table rule checks (``mm/pgtable.py``, judged by ``mm/rules_check.py``),
so moving a table is held to the ``table`` alternatives of the ``pmd`` and
``pud`` rules of ``mm/rules.py`` (mmap W + VMA W + rmap W since 5.14).

Historical behaviour (``mmrace.fixes``, ``fixes/mremap.py``):
``mremap-flush-before-ptl-drop`` (4.19) and ``mremap-pgtable-move-rmap-lock``
(5.14) change ``move_ptes`` and ``should_take_rmap_locks``;
``mremap-thp-rmap-lock`` (3.15) the rmap locks around ``move_huge_pmd``.

Left out: hugetlb, mseal (``can_modify_vma``), KSM, uprobes, mmu notifiers,
memory-failure and VM_ACCOUNT charging (``security_vm_enough_memory_mm``
always succeeds, nothing is uncharged), RLIMIT_AS (``may_expand_vm``) and
RLIMIT_MEMLOCK (``mlock_future_ok``: the model's tasks have CAP_IPC_LOCK),
the exec stack move (``for_stack``), ``vm_ops->mremap``, large-folio PTE
batching (one PTE at a time), PUD-sized leaves and PMD migration entries,
the userfaultfd unmap events of the munmaps, exec_vm/stack_vm/data_vm, and
``locked_vm`` on the unmap side. x86 enabled ``HAVE_MOVE_PMD`` and
``HAVE_MOVE_PUD`` in 5.11; the model moves whole tables on every release.
"""

from __future__ import annotations

from mmrace.mm import mmap as mmap_mod
from mmrace.mm.fs_userfaultfd import (
    mremap_userfaultfd_complete,
    mremap_userfaultfd_fail,
    mremap_userfaultfd_prep,
)
from mmrace.mm.huge_memory import HPAGE_PMD_SIZE, move_huge_pmd, split_huge_pmd
from mmrace.mm.internal import errno_error, kernel_config, kfunc
from mmrace.mm.mm_types import (
    PAGE_SHIFT,
    VM_ACCOUNT,
    VM_DONTEXPAND,
    VM_LOCKED,
    VM_LOCKED_MASK,
    VM_MAYSHARE,
    VM_PFNMAP,
    VM_SHARED,
    MmStruct,
    VmAreaStruct,
)
from mmrace.mm.mman import (
    MAP_FIXED,
    MAP_SHARED,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
)
from mmrace.mm.mmap import PAGE_ALIGN, do_vmi_munmap, get_unmapped_area, offset_in_page
from mmrace.mm.mmap_lock import mmap_write_lock_killable, mmap_write_unlock, vma_start_write
from mmrace.mm.pgtable import (
    _PAGE_TABLE,
    LEVEL_PMD,
    LEVEL_PTE,
    LEVEL_SHIFT,
    PMD_MASK,
    PMD_SIZE,
    PUD_MASK,
    PUD_SIZE,
    PageTable,
    flush_tlb_range,
    pfn_pte,
    pgd_none,
    pgd_offset,
    pgdp_get,
    pmd_alloc,
    pmd_index,
    pmd_leaf,
    pmd_lock,
    pmd_none,
    pmd_present,
    pmd_trans_huge,
    pmdp_get,
    pte_alloc,
    pte_clear,
    pte_clear_uffd_wp,
    pte_dirty,
    pte_lockptr,
    pte_mksoft_dirty,
    pte_none,
    pte_offset_map_lock,
    pte_offset_map_nolock,
    pte_present,
    pte_unmap,
    pte_unmap_unlock,
    ptep_get,
    ptep_get_and_clear,
    ptl_lock,
    ptl_unlock,
    pud_alloc,
    pud_index,
    pud_none,
    pudp_get,
    set_pmd_at,
    set_pte_at,
    table_of,
)
from mmrace.mm.rmap import (
    anon_vma_lock_write,
    anon_vma_unlock_write,
    i_mmap_lock_write,
    i_mmap_unlock_write,
    unlink_anon_vmas,
)
from mmrace.mm.swapops import (
    is_swap_pte,
    pte_marker_uffd_wp,
    pte_swp_clear_uffd_wp,
    pte_swp_mksoft_dirty,
)
from mmrace.mm.userfaultfd_k import VmUserfaultfdCtx, vma_has_uffd_without_event_remap
from mmrace.mm.vma import (
    copy_vma,
    find_vma_intersection,
    find_vma_prev,
    sysctl_max_map_count,
    vm_flags_clear,
    vm_flags_set,
    vma_lookup,
    vma_merge_extend,
)

EPERM, EINTR, EAGAIN, ENOMEM, EFAULT, EINVAL = 1, 4, 11, 12, 14, 22

ULONG_MASK = (1 << 64) - 1  # syscall arguments are unsigned long

# enum mremap_type
MREMAP_INVALID, MREMAP_NO_RESIZE, MREMAP_SHRINK, MREMAP_EXPAND = 0, 1, 2, 3
# enum pgt_entry
NORMAL_PMD, HPAGE_PMD, NORMAL_PUD, HPAGE_PUD = 0, 1, 2, 3


def page_align(length: int) -> int:
    """``PAGE_ALIGN`` of an unsigned long: wraps to 0 past the top."""
    return PAGE_ALIGN(length) & ULONG_MASK


class VmaRemapStruct:
    """``struct vma_remap_struct``: one mremap operation, threaded through
    it. Lengths are page aligned by ``do_mremap``; ``vma`` is the VMA at
    ``addr`` (invalidated and reloaded around each unmap)."""

    __slots__ = ("mm", "addr", "old_len", "new_len", "flags", "new_addr", "uf", "vma",
                 "delta", "mlocked", "remap_type", "mmap_locked", "charged")

    def __init__(self, mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int,
                 new_addr: int) -> None:
        self.mm = mm  # current->mm
        self.addr = addr
        self.old_len = old_len
        self.new_len = new_len
        self.flags = flags
        self.new_addr = new_addr
        self.uf = VmUserfaultfdCtx()
        self.vma: VmAreaStruct | None = None
        self.delta = 0
        self.mlocked = False
        self.remap_type = MREMAP_INVALID
        self.mmap_locked = False
        self.charged = 0


class PagetableMoveControl:
    """``struct pagetable_move_control`` (``PAGETABLE_MOVE``): move the page
    tables of ``[old_addr, old_addr + len_in)`` of *old* to *new_addr* in
    *new*. ``need_flush`` is the pre-4.19 deferred flush
    (``mremap-flush-before-ptl-drop`` off)."""

    __slots__ = ("old", "new", "old_addr", "old_end", "new_addr", "len_in",
                 "need_rmap_locks", "for_stack", "need_flush")

    def __init__(self, old: VmAreaStruct, new: VmAreaStruct, old_addr: int, new_addr: int,
                 length: int, need_rmap_locks: bool = False) -> None:
        self.old = old
        self.new = new
        self.old_addr = old_addr
        self.old_end = old_addr + length
        self.new_addr = new_addr
        self.len_in = length
        self.need_rmap_locks = need_rmap_locks
        self.for_stack = False
        self.need_flush = False


def _has(mm: MmStruct, slug: str) -> bool:
    return bool(kernel_config(mm).has(slug))


# --- walking the old tables, allocating the new ones -------------------------------------


@kfunc
def get_old_pud(mm: MmStruct, addr: int) -> tuple[PageTable, int] | None:
    """``get_old_pud``: the PUD entry of *addr* (one visible read per level),
    None where an upper entry is empty. Left out: bad entries."""
    pgd, gi = pgd_offset(mm, addr)
    e = pgdp_get(pgd, gi)
    if pgd_none(e):
        return None
    pud = table_of(e)
    ui = pud_index(addr)
    if pud_none(pudp_get(pud, ui)):
        return None
    return pud, ui


@kfunc
def get_old_pmd(mm: MmStruct, addr: int) -> tuple[PageTable, int] | None:
    """``get_old_pmd``: the PMD entry of *addr*, None if it (or a level above)
    is empty."""
    found = get_old_pud(mm, addr)
    if found is None:
        return None
    pud, ui = found
    # pmd_offset re-reads the PUD entry just read: only mremap changes a
    # present upper entry, under the mmap write lock we hold, so the re-read
    # races with nothing and needs no scheduling point.
    pmd = table_of(pud.entries[ui])
    mi = pmd_index(addr)
    if pmd_none(pmdp_get(pmd, mi)):
        return None
    return pmd, mi


@kfunc
def alloc_new_pud(mm: MmStruct, addr: int) -> tuple[PageTable, int]:
    """``alloc_new_pud``: the PUD entry of *addr*, allocating the PUD table.
    (Allocations never fail in the model.)"""
    return pud_alloc(mm, addr)


@kfunc
def alloc_new_pmd(mm: MmStruct, addr: int) -> tuple[PageTable, int]:
    """``alloc_new_pmd``: the PMD entry of *addr*, allocating the tables above."""
    pud, ui = alloc_new_pud(mm, addr)
    return pmd_alloc(mm, pud, ui, addr)


# --- the rmap locks ------------------------------------------------------------------------


@kfunc
def take_rmap_locks(vma: VmAreaStruct) -> None:
    """``take_rmap_locks``: the file's ``i_mmap_rwsem``, then the anon_vma
    (root) lock, both for write, so that an rmap walk sees every moved entry
    at its old place or at its new one, never at neither."""
    f = vma.vm_file
    if f is not None:
        i_mmap_lock_write(f.f_mapping)
    av = vma.anon_vma
    if av is not None:
        anon_vma_lock_write(av)


@kfunc
def drop_rmap_locks(vma: VmAreaStruct) -> None:
    """``drop_rmap_locks``: in the reverse order."""
    av = vma.anon_vma
    if av is not None:
        anon_vma_unlock_write(av)
    f = vma.vm_file
    if f is not None:
        i_mmap_unlock_write(f.f_mapping)


# --- moving entries --------------------------------------------------------------------------


def move_soft_dirty_pte(pte: int) -> int:
    """``move_soft_dirty_pte``: a moved entry is soft-dirty (a present one,
    or a swap or migration entry), so a soft-dirty tracker sees that the
    page moved."""
    if pte_present(pte):
        return pte_mksoft_dirty(pte)
    if is_swap_pte(pte):
        return pte_swp_mksoft_dirty(pte)
    return pte


def flush_tlb_batched_pending(mm: MmStruct) -> None:
    """``flush_tlb_batched_pending`` (mm/rmap.c): flush what reclaim's batched
    unmap (``TTU_BATCH_FLUSH``) left pending for *mm* before PTEs move, so no
    stale entry it left survives the move. Nothing in the model batches
    unmap flushes yet (``mm->tlb_flush_batched`` is never raised), so there
    is nothing to flush and the read of the counter races with nothing: no
    visible operation. The reclaim that batches must fill this in."""


def _rebase(table: PageTable, base: int) -> None:
    """Model bookkeeping for a moved table: the addresses it and the tables
    below it map (``PageTable.base`` has no kernel counterpart, so this is
    no visible operation)."""
    table.base = base
    if table.level == LEVEL_PTE:
        return
    span = 1 << LEVEL_SHIFT[table.level]
    for i in sorted(table.entries):
        e = table.entries[i]
        if table.level == LEVEL_PMD and pmd_trans_huge(e):
            deposit = table.deposited.get(i)
            if deposit is not None:
                deposit.base = base + i * span
            continue
        _rebase(table_of(e), base + i * span)


def _populate(mm: MmStruct, addr: int, table: PageTable, index: int, child: PageTable) -> None:
    """``pmd_populate`` / ``pud_populate``: point an empty entry at *child*."""
    _rebase(child, addr)
    set_pmd_at(mm, addr, table, index, pfn_pte(child.pfn, _PAGE_TABLE))


@kfunc
def move_ptes(pmc: PagetableMoveControl, extent: int, old_pmd: tuple[PageTable, int],
              new_pmd: tuple[PageTable, int]) -> int:
    """``move_ptes``: move the PTEs of ``[old_addr, old_addr + extent)``.
    With the rmap locks when ``need_rmap_locks``; the old PTE table mapped
    and locked (``pte_offset_map_lock``), the new one mapped without its
    pmd recheck (the mmap write lock keeps it) and locked nested when it is
    another table; each entry ``ptep_get``, ``ptep_get_and_clear``, made
    soft-dirty (and not uffd-wp, for a VMA whose userfaultfd takes no REMAP
    events) and ``set_pte_at`` at the new place; if a present entry moved,
    the old range is flushed before the locks are dropped: the old lock
    keeps ``folio_mkclean`` out, the new one keeps the page from being
    unmapped and freed (truncation takes it) while a CPU may still reach
    it through the old address.

    Before ``mremap-flush-before-ptl-drop`` (4.19) only a dirty entry
    forced that flush, and only after the new lock was dropped; a clean
    one's was deferred to the end of ``move_page_tables``.

    Returns 0, or -EAGAIN when the old PMD no longer points to a PTE table
    (the caller re-reads it). Lazy MMU mode is an x86 no-op."""
    vma = pmc.old
    mm: MmStruct = vma.vm_mm
    need_clear_uffd_wp = vma_has_uffd_without_event_remap(vma)
    fixed = _has(mm, "mremap-flush-before-ptl-drop")
    old_addr = pmc.old_addr
    new_addr = pmc.new_addr
    old_end = old_addr + extent
    err = 0
    if pmc.need_rmap_locks:
        take_rmap_locks(vma)
    old = pte_offset_map_lock(mm, old_pmd[0], old_pmd[1], old_addr)
    if old is None:
        err = -EAGAIN
    else:
        new = pte_offset_map_nolock(mm, new_pmd[0], new_pmd[1], new_addr)
        if new is None:
            pte_unmap_unlock(old)
            err = -EAGAIN
        else:
            assert old.ptl is not None and new.ptl is not None
            nested = new.ptl is not old.ptl
            if nested:
                ptl_lock(new.ptl, nested=True)
            flush_tlb_batched_pending(mm)
            force_flush = False
            for i in range(extent >> PAGE_SHIFT):
                oi = old.index + i
                if oi not in old.table.entries and oi not in old.table.slots:
                    # Never touched: none, and filling it needs the old PTL,
                    # which we hold, so no visible read is needed.
                    continue
                a = old_addr + (i << PAGE_SHIFT)
                old_pte = ptep_get(old.table, oi)
                if pte_none(old_pte):
                    continue
                if pte_present(old_pte) and fixed:
                    force_flush = True
                pte = ptep_get_and_clear(mm, a, old.table, oi)
                if not fixed and pte_present(pte) and pte_dirty(pte):
                    force_flush = True
                pte = move_soft_dirty_pte(pte)
                if need_clear_uffd_wp and pte_marker_uffd_wp(pte):
                    continue  # the marker is dropped: the new entry stays none
                if need_clear_uffd_wp:
                    if pte_present(pte):
                        pte = pte_clear_uffd_wp(pte)
                    elif is_swap_pte(pte):
                        pte = pte_swp_clear_uffd_wp(pte)
                set_pte_at(mm, new_addr + (i << PAGE_SHIFT), new.table, new.index + i, pte)
            if fixed and force_flush:
                flush_tlb_range(vma, old_end - extent, old_end)
            if nested:
                ptl_unlock(new.ptl)
            pte_unmap(new)
            if not fixed:
                if force_flush:
                    flush_tlb_range(vma, old_end - extent, old_end)
                else:
                    pmc.need_flush = True
            pte_unmap_unlock(old)
    if pmc.need_rmap_locks:
        drop_rmap_locks(vma)
    return err


@kfunc
def move_normal_pmd(pmc: PagetableMoveControl, old_pmd: tuple[PageTable, int],
                    new_pmd: tuple[PageTable, int]) -> bool:
    """``move_normal_pmd``: move a whole PTE table: under the old PMD lock
    and (nested) the new one, clear the old PMD entry, point the new one at
    the table, flush the old range. Only the PMD locks: walkers of the
    table itself (``pte_offset_map_lock``) notice the move by rechecking the
    PMD, or are kept out by the rmap locks (``move_pgt_entry``). False (not
    moved) if the new entry is not empty, for a VMA whose userfaultfd takes
    no REMAP events (its uffd-wp bits must be cleared one by one), or if the
    old entry is not a table any more."""
    vma = pmc.old
    mm: MmStruct = vma.vm_mm
    nt, ni = new_pmd
    ot, oi = old_pmd
    if not pmd_none(pmdp_get(nt, ni)):
        return False  # the kernel warns: free_pgtables should have freed it
    if vma_has_uffd_without_event_remap(vma):
        return False
    old_ptl = pmd_lock(mm, ot)
    new_ptl = pte_lockptr(mm, nt)
    if new_ptl is not old_ptl:
        ptl_lock(new_ptl, nested=True)
    pmd = pmdp_get(ot, oi)
    res = False
    if pmd_present(pmd) and not pmd_leaf(pmd):  # else: racing with collapse
        pte_clear(mm, pmc.old_addr, ot, oi)
        res = True
        _populate(mm, pmc.new_addr, nt, ni, table_of(pmd))
        flush_tlb_range(vma, pmc.old_addr, pmc.old_addr + PMD_SIZE)
    if new_ptl is not old_ptl:
        ptl_unlock(new_ptl)
    ptl_unlock(old_ptl)
    return res


@kfunc
def move_normal_pud(pmc: PagetableMoveControl, old_pud: tuple[PageTable, int],
                    new_pud: tuple[PageTable, int]) -> bool:
    """``move_normal_pud``: move a whole PMD table: under the PUD lock (x86:
    ``mm->page_table_lock``, one lock for both entries) clear the old PUD
    entry, point the new one at the table, flush the old range. This is the
    move "above the PMD" that the ``pgtables`` rule covers: mmap W, VMA W
    and the rmap locks."""
    vma = pmc.old
    mm: MmStruct = vma.vm_mm
    nt, ni = new_pud
    ot, oi = old_pud
    if not pud_none(pudp_get(nt, ni)):
        return False
    if vma_has_uffd_without_event_remap(vma):
        return False
    ptl = mm.page_table_lock  # pud_lock / pud_lockptr
    ptl_lock(ptl)
    pud = pudp_get(ot, oi)
    pte_clear(mm, pmc.old_addr, ot, oi)
    _populate(mm, pmc.new_addr, nt, ni, table_of(pud))
    flush_tlb_range(vma, pmc.old_addr, pmc.old_addr + PUD_SIZE)
    ptl_unlock(ptl)
    return True


def get_extent(entry: int, pmc: PagetableMoveControl) -> int:
    """``get_extent``: how much of the move the next *entry*-sized step can
    cover: up to the next boundary of that size at both the old and the new
    address, and no further than the end."""
    if entry in (HPAGE_PMD, NORMAL_PMD):
        mask, size = PMD_MASK, PMD_SIZE
    else:
        mask, size = PUD_MASK, PUD_SIZE
    old_addr, new_addr = pmc.old_addr, pmc.new_addr
    extent = ((old_addr + size) & mask) - old_addr
    extent = min(extent, pmc.old_end - old_addr)
    return min(extent, ((new_addr + size) & mask) - new_addr)


def should_take_rmap_locks(pmc: PagetableMoveControl, entry: int) -> bool:
    """``should_take_rmap_locks``: always for a whole-table move (a walker
    may hold the lock of the table being moved), else ``need_rmap_locks``.

    Switches: before ``mremap-pgtable-move-rmap-lock`` (5.14) a table move
    took them only when ``need_rmap_locks``; before ``mremap-thp-rmap-lock``
    (3.15) a huge PMD moved without them."""
    mm: MmStruct = pmc.old.vm_mm
    if entry in (NORMAL_PMD, NORMAL_PUD) and _has(mm, "mremap-pgtable-move-rmap-lock"):
        return True
    if entry == HPAGE_PMD and not _has(mm, "mremap-thp-rmap-lock"):
        return False
    return pmc.need_rmap_locks


@kfunc
def move_pgt_entry(pmc: PagetableMoveControl, entry: int, old_entry: tuple[PageTable, int],
                   new_entry: tuple[PageTable, int]) -> bool:
    """``move_pgt_entry``: one whole-entry move, with the rmap locks when
    :func:`should_take_rmap_locks` says so. True if it moved."""
    need_rmap_locks = should_take_rmap_locks(pmc, entry)
    if need_rmap_locks:
        take_rmap_locks(pmc.old)
    if entry == NORMAL_PMD:
        moved = move_normal_pmd(pmc, old_entry, new_entry)
    elif entry == NORMAL_PUD:
        moved = move_normal_pud(pmc, old_entry, new_entry)
    elif entry == HPAGE_PMD:
        moved = move_huge_pmd(pmc.old, pmc.old_addr, pmc.new_addr, old_entry, new_entry)
    else:
        moved = False  # HPAGE_PUD: the model has no PUD leaves
    if need_rmap_locks:
        drop_rmap_locks(pmc.old)
    return moved


def can_align_down(pmc: PagetableMoveControl, vma: VmAreaStruct, addr_to_align: int,
                   mask: int) -> bool:
    """``can_align_down``: aligning *addr_to_align* down to *mask* stays
    clear of every mapping (the address must be the VMA's start)."""
    addr_masked = addr_to_align & mask
    if not pmc.for_stack and vma.vm_start != addr_to_align:
        return False
    if pmc.for_stack and addr_masked >= vma.vm_start:
        return True
    return find_vma_intersection(vma.vm_mm, addr_masked, vma.vm_start) is None


def can_realign_addr(pmc: PagetableMoveControl, pagetable_mask: int) -> bool:
    """``can_realign_addr``: the move reaches the next table boundary, both
    addresses are equally misaligned, and aligning both down hits nothing."""
    align_mask = ~pagetable_mask
    old_align = pmc.old_addr & align_mask
    new_align = pmc.new_addr & align_mask
    old_align_next = (align_mask + 1) - old_align
    if pmc.len_in < old_align_next or old_align == 0 or old_align != new_align:
        return False
    return (can_align_down(pmc, pmc.old, pmc.old_addr, pagetable_mask)
            and can_align_down(pmc, pmc.new, pmc.new_addr, pagetable_mask))


def try_realign_addr(pmc: PagetableMoveControl, pagetable_mask: int) -> None:
    """``try_realign_addr``: start the move at the table boundary below, so
    that whole tables move (``old_end`` is unchanged)."""
    if can_realign_addr(pmc, pagetable_mask):
        pmc.old_addr &= pagetable_mask
        pmc.new_addr &= pagetable_mask


def pmc_progress(pmc: PagetableMoveControl) -> int:
    """``pmc_progress``: bytes of the requested range moved so far."""
    orig_old_addr = pmc.old_end - pmc.len_in
    return 0 if pmc.old_addr < orig_old_addr else pmc.old_addr - orig_old_addr


@kfunc
def move_page_tables(pmc: PagetableMoveControl) -> int:
    """``move_page_tables``: walk the range a PUD, a PMD or a PTE table at a
    time: a whole PUD entry when the extent is a PUD and the tables allow
    (``move_normal_pud``), else a whole PMD entry when it is a PMD
    (``move_normal_pmd``, or ``move_huge_pmd`` for a leaf), else the PTEs
    (``move_ptes``, after allocating the new PTE table), re-reading the old
    PMD when ``move_ptes`` found it changed. Returns the bytes moved; less
    than asked means failure (a huge PMD moved only in part: the model
    cannot split it)."""
    if not pmc.len_in:
        return 0
    mm: MmStruct = pmc.old.vm_mm
    try_realign_addr(pmc, PMD_MASK)
    # flush_cache_range and the mmu notifiers: nothing to do on x86 / not modelled
    while pmc.old_addr < pmc.old_end:
        extent = get_extent(NORMAL_PUD, pmc)
        old_pud = get_old_pud(mm, pmc.old_addr)
        if old_pud is None:
            pmc.old_addr += extent
            pmc.new_addr += extent
            continue
        new_pud = alloc_new_pud(mm, pmc.new_addr)
        if extent == PUD_SIZE and move_pgt_entry(pmc, NORMAL_PUD, old_pud, new_pud):
            pmc.old_addr += extent
            pmc.new_addr += extent
            continue
        extent = get_extent(NORMAL_PMD, pmc)
        old_pmd = get_old_pmd(mm, pmc.old_addr)
        if old_pmd is None:
            pmc.old_addr += extent
            pmc.new_addr += extent
            continue
        new_pmd = alloc_new_pmd(mm, pmc.new_addr)
        while True:  # again:
            if pmd_trans_huge(pmdp_get(*old_pmd)):
                if extent == HPAGE_PMD_SIZE and move_pgt_entry(pmc, HPAGE_PMD, old_pmd,
                                                               new_pmd):
                    break
                # Only part of the THP moves: map it by PTEs and move those.
                split_huge_pmd(pmc.old, old_pmd[0], old_pmd[1], pmc.old_addr)
            elif extent == PMD_SIZE and move_pgt_entry(pmc, NORMAL_PMD, old_pmd, new_pmd):
                break
            if pmd_none(pmdp_get(*old_pmd)):
                break
            if pte_alloc(pmc.new.vm_mm, new_pmd[0], new_pmd[1]):
                return _finish(pmc)  # out of memory: the caller undoes the move
            if move_ptes(pmc, extent, old_pmd, new_pmd) >= 0:
                break
        pmc.old_addr += extent
        pmc.new_addr += extent
    return _finish(pmc)


def _finish(pmc: PagetableMoveControl) -> int:
    """The end of ``move_page_tables``; before ``mremap-flush-before-ptl-drop``
    the flush ``move_ptes`` deferred came here, after every lock was dropped."""
    if pmc.need_flush:
        flush_tlb_range(pmc.old, pmc.old_end - pmc.len_in, pmc.old_end)
        pmc.need_flush = False
    return pmc_progress(pmc)


# --- the remap operation ------------------------------------------------------------------


def vrm_set_delta(vrm: VmaRemapStruct) -> None:
    """``vrm_set_delta``."""
    vrm.delta = abs(vrm.old_len - vrm.new_len)


def vrm_remap_type(vrm: VmaRemapStruct) -> int:
    """``vrm_remap_type``: no resize, shrink or expand."""
    if vrm.delta == 0:
        return MREMAP_NO_RESIZE
    if vrm.old_len > vrm.new_len:
        return MREMAP_SHRINK
    return MREMAP_EXPAND


def vrm_overlaps(vrm: VmaRemapStruct) -> bool:
    """``vrm_overlaps``: the old and new ranges overlap."""
    end_old = vrm.addr + vrm.old_len
    end_new = vrm.new_addr + vrm.new_len
    return end_old > vrm.new_addr and end_new > vrm.addr


def vrm_implies_new_addr(vrm: VmaRemapStruct) -> bool:
    """``vrm_implies_new_addr``: ``MREMAP_FIXED`` or ``MREMAP_DONTUNMAP``."""
    return bool(vrm.flags & (MREMAP_FIXED | MREMAP_DONTUNMAP))


@kfunc
def vrm_set_new_addr(vrm: VmaRemapStruct) -> int:
    """``vrm_set_new_addr``: the destination from ``get_unmapped_area`` (fixed
    for ``MREMAP_FIXED``, a hint for ``MREMAP_DONTUNMAP`` alone, else the
    allocator's choice). ``security_mmap_addr`` refuses a fixed address
    below ``mmap_min_addr`` (EPERM). Returns 0 or -errno."""
    vma = vrm.vma
    assert vma is not None
    pgoff = vma.vm_pgoff + ((vrm.addr - vma.vm_start) >> PAGE_SHIFT)
    new_addr = vrm.new_addr if vrm_implies_new_addr(vrm) else 0
    map_flags = 0
    if vrm.flags & MREMAP_FIXED:
        map_flags |= MAP_FIXED
    if vma.vm_flags & VM_MAYSHARE:
        map_flags |= MAP_SHARED
    try:
        res = get_unmapped_area(vrm.mm, vma.vm_file, new_addr, vrm.new_len, pgoff, map_flags)
    except OSError as e:
        return -int(e.errno or ENOMEM)
    if res < vrm.mm.mmap_min_addr:
        return -EPERM
    vrm.new_addr = res
    return 0


def vrm_calc_charge(vrm: VmaRemapStruct) -> bool:
    """``vrm_calc_charge``: the pages an accountable (``VM_ACCOUNT``) move or
    growth charges: the new length for ``MREMAP_DONTUNMAP``, else the delta.
    The model has no overcommit limit: the charge always succeeds."""
    assert vrm.vma is not None
    if not vrm.vma.vm_flags & VM_ACCOUNT:
        return True
    if vrm.flags & MREMAP_DONTUNMAP:
        vrm.charged = vrm.new_len >> PAGE_SHIFT
    else:
        vrm.charged = vrm.delta >> PAGE_SHIFT
    return True


def vrm_uncharge(vrm: VmaRemapStruct) -> None:
    """``vrm_uncharge``."""
    vrm.charged = 0


def vrm_stat_account(vrm: VmaRemapStruct, nbytes: int) -> None:
    """``vrm_stat_account``: ``total_vm`` (and ``locked_vm`` for a locked
    VMA, noting that it must be populated) grow by *nbytes*."""
    assert vrm.vma is not None
    pages = nbytes >> PAGE_SHIFT
    mm = vrm.mm
    mm.total_vm += pages  # vm_stat_account: written under mmap W
    if vrm.vma.vm_flags & VM_LOCKED:
        mm.locked_vm += pages
        vrm.mlocked = True


def prep_move_vma(vrm: VmaRemapStruct) -> int:
    """``prep_move_vma``: room for the splits the unmap may need, and the
    VMA's ``may_split`` agreeing to a split at each end that is not the
    VMA's. Returns 0 or -errno."""
    vma = vrm.vma
    assert vma is not None
    if vrm.mm.map_count >= sysctl_max_map_count - 3:
        return -ENOMEM
    ops = vma.vm_ops
    if ops is not None and ops.may_split is not None:
        err = 0
        if vma.vm_start != vrm.addr:
            err = ops.may_split(vma, vrm.addr)
        if not err and vma.vm_end != vrm.addr + vrm.old_len:
            err = ops.may_split(vma, vrm.addr + vrm.old_len)
        if err:
            return int(err)
    return 0


@kfunc
def unmap_source_vma(vrm: VmaRemapStruct) -> None:
    """``unmap_source_vma``: unmap the old range (best effort: a failure is
    ignored). An accountable move clears ``VM_ACCOUNT`` first, so the unmap
    uncharges nothing, and sets it again on the parts of the VMA left on
    either side."""
    mm = vrm.mm
    addr, length = vrm.addr, vrm.old_len
    vma = vrm.vma
    assert vma is not None
    accountable_move = bool(vma.vm_flags & VM_ACCOUNT) and not vrm.flags & MREMAP_DONTUNMAP
    vm_start = vm_end = 0
    if accountable_move:
        vm_flags_clear(vma, VM_ACCOUNT)
        vm_start, vm_end = vma.vm_start, vma.vm_end
    vrm.vma = None  # invalidated
    try:
        do_vmi_munmap(mm, addr, length, False)
    except OSError:
        return  # OOM splitting the VMA: the kernel just fixes the accounting
    if accountable_move:
        end = addr + length
        nxt, prev = find_vma_prev(mm, addr)
        if vm_start < addr and prev is not None:
            vm_flags_set(prev, VM_ACCOUNT)
        if vm_end > end and nxt is not None:
            vm_flags_set(nxt, VM_ACCOUNT)


@kfunc
def copy_vma_and_data(vrm: VmaRemapStruct) -> tuple[int, VmAreaStruct | None]:
    """``copy_vma_and_data``: ``copy_vma`` the destination, move the page
    tables, and on failure move what moved back (with the rmap locks) and
    point *vrm* at the destination, so that it is the one unmapped. On
    success the userfaultfd REMAP hook runs. Returns ``(err, new_vma)``."""
    vma = vrm.vma
    assert vma is not None
    new_pgoff = vma.vm_pgoff + ((vrm.addr - vma.vm_start) >> PAGE_SHIFT)
    new_vma, vma, need_rmap_locks = copy_vma(vma, vrm.new_addr, vrm.new_len, new_pgoff)
    if new_vma is None:
        vrm_uncharge(vrm)
        return -ENOMEM, None
    vrm.vma = vma
    pmc = PagetableMoveControl(vma, new_vma, vrm.addr, vrm.new_addr, vrm.old_len,
                               need_rmap_locks)
    moved_len = move_page_tables(pmc)
    err = -ENOMEM if moved_len < vrm.old_len else 0
    if err:
        revert = PagetableMoveControl(new_vma, vma, vrm.new_addr, vrm.addr, moved_len, True)
        move_page_tables(revert)
        vrm.vma = new_vma
        vrm.old_len = vrm.new_len
        vrm.addr = vrm.new_addr
    else:
        mremap_userfaultfd_prep(new_vma, vrm.uf)
    return err, new_vma


@kfunc
def dontunmap_complete(vrm: VmaRemapStruct, new_vma: VmAreaStruct) -> None:
    """``dontunmap_complete``: the old VMA stays, empty: it loses
    ``VM_LOCKED``/``VM_LOCKONFAULT`` and ``VM_ACCOUNT`` (all of it, even if
    only part was moved), and, when all of it moved, its anon_vma chain
    (``unlink_anon_vmas``, which also clears ``vma->anon_vma``: a later
    fault prepares a new one)."""
    vma = vrm.vma
    assert vma is not None
    start, end = vrm.addr, vrm.addr + vrm.old_len
    old_start, old_end = vma.vm_start, vma.vm_end
    vm_flags_clear(vma, VM_LOCKED_MASK | VM_ACCOUNT)
    if new_vma is not vma and start == old_start and end == old_end:
        av = vma.anon_vma
        unlink_anon_vmas(vma)
        if av is not None:
            # unlink_anon_vmas clears vma->anon_vma under the root lock; the
            # model's helper does not, so it is done here under that lock
            # (the VMA is write-locked: nobody looks at it in between).
            anon_vma_lock_write(av)
            vma.anon_vma = None
            anon_vma_unlock_write(av)


@kfunc
def move_vma(vrm: VmaRemapStruct) -> int:
    """``move_vma``: checks and charge, write-lock the source VMA ("we don't
    want racing faults"), copy the VMA and its page tables, account the new
    length, then unmap the source (or, with ``MREMAP_DONTUNMAP``, empty it).
    Returns the new address or -errno."""
    err = prep_move_vma(vrm)
    if err:
        return err
    if not vrm_calc_charge(vrm):
        return -ENOMEM
    assert vrm.vma is not None
    vma_start_write(vrm.vma)
    err, new_vma = copy_vma_and_data(vrm)
    if err and new_vma is None:
        return err
    assert new_vma is not None
    vrm_stat_account(vrm, vrm.new_len)
    if not err and vrm.flags & MREMAP_DONTUNMAP:
        dontunmap_complete(vrm, new_vma)
    else:
        unmap_source_vma(vrm)
    return err if err else vrm.new_addr


@kfunc
def remap_is_valid(vrm: VmaRemapStruct) -> int:
    """``remap_is_valid``: the VMA may be moved or resized: no duplicate of a
    private mapping (``old_len`` 0), no ``MREMAP_DONTUNMAP`` of a
    ``VM_DONTEXPAND``/``VM_PFNMAP`` VMA (EINVAL), the range within the VMA
    (EFAULT), no pgoff overflow (EINVAL), no growth of such a VMA (EFAULT).
    Returns 0 or -errno."""
    vma = vrm.vma
    assert vma is not None
    flags = vma.vm_flags
    if not vrm.old_len and not flags & (VM_SHARED | VM_MAYSHARE):
        return -EINVAL
    if vrm.flags & MREMAP_DONTUNMAP and flags & (VM_DONTEXPAND | VM_PFNMAP):
        return -EINVAL
    if vrm.old_len > vma.vm_end - vrm.addr:
        return -EFAULT
    if vrm.new_len == vrm.old_len:
        return 0
    pgoff = vma.vm_pgoff + ((vrm.addr - vma.vm_start) >> PAGE_SHIFT)
    if pgoff + (vrm.new_len >> PAGE_SHIFT) > ULONG_MASK:
        return -EINVAL
    if flags & (VM_DONTEXPAND | VM_PFNMAP):
        return -EFAULT
    # mlock_future_ok (EAGAIN) and may_expand_vm (ENOMEM): no limits modelled
    return 0


@kfunc
def shrink_vma(vrm: VmaRemapStruct, drop_lock: bool) -> int:
    """``shrink_vma``: unmap the tail ``[addr + new_len, addr + old_len)``;
    with *drop_lock* the unmap releases the mmap lock (after downgrading
    it, as munmap does), else the VMA at ``addr`` is looked up again.
    Returns 0 or -errno."""
    mm = vrm.mm
    vrm.vma = None
    try:
        do_vmi_munmap(mm, vrm.addr + vrm.new_len, vrm.delta, drop_lock)
    except OSError as e:
        return -int(e.errno or ENOMEM)
    if drop_lock:
        vrm.mmap_locked = False
    else:
        vrm.vma = vma_lookup(mm, vrm.addr)
        if vrm.vma is None:
            return -EFAULT
    return 0


@kfunc
def mremap_to(vrm: VmaRemapStruct) -> int:
    """``mremap_to``: move to a given address (``MREMAP_FIXED``, unmapping
    what is there first) or to a hinted one (``MREMAP_DONTUNMAP``),
    shrinking first if asked. Returns the new address or -errno."""
    mm = vrm.mm
    task_size = mm.task_size
    if vrm.new_len > task_size or vrm.new_addr > task_size - vrm.new_len:
        return -EINVAL
    if vrm_overlaps(vrm):
        return -EINVAL
    if vrm.flags & MREMAP_FIXED:
        vrm.vma = None
        try:
            do_vmi_munmap(mm, vrm.new_addr, vrm.new_len, False)
        except OSError as e:
            return -int(e.errno or ENOMEM)
        vrm.vma = vma_lookup(mm, vrm.addr)
        if vrm.vma is None:
            return -EFAULT
    if vrm.remap_type == MREMAP_SHRINK:
        err = shrink_vma(vrm, False)
        if err:
            return err
        vrm.old_len = vrm.new_len
    err = remap_is_valid(vrm)
    if err:
        return err
    # MREMAP_DONTUNMAP: may_expand_vm for old_len more pages (no limit modelled)
    err = vrm_set_new_addr(vrm)
    if err:
        return err
    return move_vma(vrm)


@kfunc
def vma_expandable(vma: VmAreaStruct, delta: int) -> bool:
    """``vma_expandable``: nothing is mapped in the *delta* bytes after the
    VMA and the grown VMA fits the address space."""
    end = vma.vm_end + delta
    if end > ULONG_MASK:
        return False
    mm = vma.vm_mm
    if find_vma_intersection(mm, vma.vm_end, end) is not None:
        return False
    try:
        get_unmapped_area(mm, None, vma.vm_start, end - vma.vm_start, 0, MAP_FIXED)
    except OSError:
        return False
    return True


def vrm_can_expand_in_place(vrm: VmaRemapStruct) -> bool:
    """``vrm_can_expand_in_place``: the range ends at the VMA's end and the
    VMA can grow there."""
    assert vrm.vma is not None
    if vrm.vma.vm_end - vrm.addr != vrm.old_len:
        return False
    return vma_expandable(vrm.vma, vrm.delta)


def check_mremap_params(vrm: VmaRemapStruct) -> int:
    """``check_mremap_params``: known flags, aligned ``addr``, a non-zero
    new length; with a new address implied, an aligned one, ``MREMAP_MAYMOVE``,
    no resize with ``MREMAP_DONTUNMAP`` (EINVAL), and room for the worst
    case of splits (ENOMEM). Returns 0 or -errno."""
    flags = vrm.flags
    if flags & ~(MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP):
        return -EINVAL
    if offset_in_page(vrm.addr):
        return -EINVAL
    if not page_align(vrm.new_len):
        return -EINVAL
    if not vrm_implies_new_addr(vrm):
        return 0
    if offset_in_page(vrm.new_addr):
        return -EINVAL
    if not flags & MREMAP_MAYMOVE:
        return -EINVAL
    if flags & MREMAP_DONTUNMAP and vrm.old_len != vrm.new_len:
        return -EINVAL
    # The kernel reads current->mm->map_count here before it takes the mmap
    # lock: a racy heuristic (prep_move_vma rechecks under the lock), so the
    # read bypasses the mm.map_count rule, whose readers hold the mmap lock.
    # No visible operation: the value only decides ENOMEM at the
    # max_map_count limit, which no scenario approaches.
    if vrm.mm._map_count + 2 >= sysctl_max_map_count - 3:
        return -ENOMEM
    return 0


@kfunc
def expand_vma_in_place(vrm: VmaRemapStruct) -> int:
    """``expand_vma_in_place``: grow the VMA by merging the new range into it
    (and into the next VMA if that becomes adjacent and compatible:
    ``vma_merge_extend``). ENOMEM if no merge is possible."""
    assert vrm.vma is not None
    if not vrm_calc_charge(vrm):
        return -ENOMEM
    vma = vma_merge_extend(vrm.mm, vrm.vma, vrm.delta)
    if vma is None:
        vrm_uncharge(vrm)
        return -ENOMEM
    vrm.vma = vma
    vrm_stat_account(vrm, vrm.delta)
    return 0


@kfunc
def expand_vma(vrm: VmaRemapStruct) -> int:
    """``expand_vma``: grow in place if the range ends the VMA and the space
    after it is free, else move (only with ``MREMAP_MAYMOVE``: ENOMEM).
    Returns the (new) address or -errno."""
    addr = vrm.addr
    err = remap_is_valid(vrm)
    if err:
        return err
    if vrm_can_expand_in_place(vrm):
        err = expand_vma_in_place(vrm)
        if err:
            return err
        if vrm.mlocked:
            vrm.new_addr = addr  # populate the grown part after unlocking
        return addr
    if not vrm.flags & MREMAP_MAYMOVE:
        return -ENOMEM
    err = vrm_set_new_addr(vrm)
    if err:
        return err
    return move_vma(vrm)


@kfunc
def mremap_at(vrm: VmaRemapStruct) -> int:
    """``mremap_at``: resize in place where possible (a shrink always is: the
    tail is unmapped and the mmap lock dropped), else move."""
    if vrm.remap_type == MREMAP_NO_RESIZE:
        return vrm.addr
    if vrm.remap_type == MREMAP_SHRINK:
        err = shrink_vma(vrm, True)
        return err if err else vrm.addr
    return expand_vma(vrm)


def notify_uffd(vrm: VmaRemapStruct, failed: bool) -> None:
    """``notify_uffd`` (mm/mremap.c of 6.17; 6.16 called
    ``mremap_userfaultfd_complete`` with the result either way, which sends
    nothing for an error): after the mmap lock is dropped, send the REMAP
    event ``addr -> new_addr`` of ``old_len`` bytes that
    ``mremap_userfaultfd_prep`` raised, and wait until the monitor read
    it; on failure ``mremap_userfaultfd_fail`` lowers ``mmap_changing``
    instead. (The munmaps' UNMAP events are left out: see the module
    docstring.) In the model nothing fails after the prep, so the failure
    path only runs when the prep did not."""
    if failed:
        mremap_userfaultfd_fail(vrm.uf)
    else:
        mremap_userfaultfd_complete(vrm.uf, vrm.addr, vrm.new_addr, vrm.old_len)


@kfunc
def do_mremap(vrm: VmaRemapStruct) -> int:
    """``do_mremap``: check the arguments, take the mmap lock for write
    (killable), find the VMA at ``addr`` (EFAULT), and move or resize; after
    unlocking, populate the grown part of a locked VMA and complete the
    userfaultfd REMAP hook. Returns the new address or -errno."""
    mm = vrm.mm
    res = check_mremap_params(vrm)
    if res:
        return res
    vrm.old_len = page_align(vrm.old_len)
    vrm.new_len = page_align(vrm.new_len)
    vrm_set_delta(vrm)
    if mmap_write_lock_killable(mm):
        return -EINTR
    vrm.mmap_locked = True
    vrm.vma = vma_lookup(mm, vrm.addr)
    if vrm.vma is None:
        res = -EFAULT
    else:
        vrm.remap_type = vrm_remap_type(vrm)
        res = mremap_to(vrm) if vrm_implies_new_addr(vrm) else mremap_at(vrm)
    if vrm.mmap_locked:
        mmap_write_unlock(mm)
        vrm.mmap_locked = False
        if res >= 0 and vrm.mlocked and vrm.new_len > vrm.old_len:
            hook = mmap_mod.mm_populate_hook
            if hook is not None:
                hook(mm, vrm.new_addr + vrm.old_len, vrm.delta)
    notify_uffd(vrm, res < 0)
    return res


@kfunc
def sys_mremap(mm: MmStruct, addr: int, old_len: int, new_len: int, flags: int,
               new_addr: int = 0) -> int:
    """``SYSCALL_DEFINE5(mremap)``: the arguments as unsigned longs; returns
    the (new) address of the mapping or raises ``OSError`` with the errno."""
    vrm = VmaRemapStruct(mm, addr & ULONG_MASK, old_len & ULONG_MASK, new_len & ULONG_MASK,
                         flags & ULONG_MASK, new_addr & ULONG_MASK)
    res = do_mremap(vrm)
    if res < 0:
        raise errno_error(-res, "mremap")
    return res


__all__ = [
    "MREMAP_DONTUNMAP",
    "MREMAP_FIXED",
    "MREMAP_MAYMOVE",
    "PagetableMoveControl",
    "VmaRemapStruct",
    "do_mremap",
    "move_page_tables",
    "move_ptes",
    "sys_mremap",
]

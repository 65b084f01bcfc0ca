"""khugepaged and MADV_COLLAPSE: collapsing 512 small pages into one
PMD-sized folio, and retracting the page tables that mapped them
(mm/khugepaged.c, with ``madvise_collapse`` and ``pmdp_collapse_flush``).

Two collapses, as in the kernel:

* **anonymous** (``hpage_collapse_scan_pmd`` -> ``collapse_huge_page``):
  under the mmap write lock, the VMA write lock and the anon_vma lock,
  clear the PMD (``pmdp_collapse_flush``), isolate the small folios from the
  now detached PTE table, copy them into a new THP, and map it with one
  huge PMD; the old table is deposited with it;
* **shmem** (``hpage_collapse_scan_file`` -> ``collapse_file``): lock the
  small folios of the 512 indices, unmap them everywhere (``try_to_unmap``),
  copy them into a new large folio that replaces them in the page cache,
  then ``retract_page_tables``: in every VMA mapping the range, free the
  now empty PTE table so the next fault maps the folio with a huge PMD.
  ``collapse_pte_mapped_thp`` does the same for one mm where the large
  folio is already in the cache and still mapped by PTEs (clearing them
  first), and installs the huge PMD for MADV_COLLAPSE (``set_huge_pmd``).

How a retraction is done is the point of the seed (004) and changed
twice (``mmrace.fixes.khugepaged``):

=====================  =====================================  ==================
era                    retraction holds                       table freed
=====================  =====================================  ==================
before 6.1             mmap W (``retract_page_tables`` also   at once
                       i_mmap W); ``collapse_pte_mapped_thp``
                       only mmap W + the PMD lock
6.1 (seed's fix)       mmap W + i_mmap W + anon_vma W         at once, after
                       (``collapse_and_free_pmd``)            ``tlb_remove_table_sync_one``
6.6                    i_mmap R (or mmap R) + PMD lock +      ``pte_free_defer``
                       PTE lock                               (RCU)
=====================  =====================================  ==================

and walkers follow the matching reader protocol (``mm/pgtable.py``: before
6.5 a PMD that points to a table is taken as stable). Before 6.6 a
retraction that cannot take an mm's mmap lock queues the address
(``khugepaged_add_pte_mapped_thp``) for khugepaged's next pass
(``khugepaged_collapse_pte_mapped_thps``).

The cost of a collapse: the PTE-level work -- scanning 512 entries,
clearing them, the PTEs of a detached table -- is one visible operation
each time (see ``ptes_get_locked`` and the comments at each place). So is
each step the collapse takes on every small folio in turn where no thread
can tell one operation from 512 (``_folios_op``; each call site says why):
the scans' look at the folios, the anonymous isolation, the copy, the
release of the old folios. An anonymous collapse of 512 pages costs 68
visible operations. A shmem collapse still makes, per folio, its locked
lookup (with the LRU isolation, and for an unmapped folio the refcount
check), and for a mapped folio its ``try_to_unmap`` (the shared rmap walk,
about 20 operations) and the refcount check under the xarray lock: those
interleave with lookups, faults and truncation as the kernel's loop does.
``per_folio_steps()`` restores one operation per folio and step, the
model the batching is checked against
(``tests/mm/test_khugepaged_batch.py``).

Left out: the mm_slot list and scan cursor (a scenario names the mm and
address to scan: :func:`khugepaged_scan`), ``khugepaged_pages_to_scan``
and sleeping, NUMA node choice, memcg charging, allocation failure (a THP
is always available), ``__collapse_huge_page_swapin`` (a swap entry in the
range fails the scan: ``SCAN_EXCEED_SWAP_PTE``), regular files
(``CONFIG_READ_ONLY_THP_FOR_FS``: only shmem collapses), the zero page in
the range, mTHP orders, mmu notifiers (the model has no secondary MMU, so
"mm/khugepaged: invoke MMU notifiers in shmem/file collapse paths" has
nothing to notify), hwpoison (``SCAN_COPY_MC``), ``collapse_file``'s 6.1
order of replacing page-cache entries (the model follows the current one
in every era: copy first, then one store under the xarray lock).
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Any

from mmrace.engine import READ, RMW, Event, ViolationError, execution_local, visible
from mmrace.fixes import KernelConfig
from mmrace.mm import huge_memory
from mmrace.mm.internal import errno_error, kernel_config, kfunc
from mmrace.mm.memory import VmFault, do_set_pmd, vm_normal_page, vma_is_anonymous
from mmrace.mm.mm_types import (
    PAGE_SHIFT,
    VM_HUGEPAGE,
    VM_SHARED,
    VM_SPECIAL,
    VM_UFFD_MINOR,
    VM_UFFD_MISSING,
    VM_UFFD_WP,
    MmStruct,
    VmAreaStruct,
)
from mmrace.mm.mmap_lock import (
    mmap_assert_locked,
    mmap_assert_write_locked,
    mmap_read_lock,
    mmap_read_trylock,
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_trylock,
    mmap_write_unlock,
    vma_start_write,
    vma_try_start_write,
)
from mmrace.mm.mmu_gather import tlb_remove_table_sync_one
from mmrace.mm.page_alloc import (
    HPAGE_PMD_ORDER,
    PAGE_READ,
    Accesses,
    Folio,
    folio_alloc,
    folio_free_footprint,
    folio_get,
    folio_lock,
    folio_put,
    folio_put_refs,
    folio_put_refs_in_op,
    folio_try_get,
    folio_unlock,
    folio_unlock_in_op,
    free_folio,
    free_folio_in_op,
    visible_contents,
)
from mmrace.mm.pgtable import (
    PMD_SIZE,
    PageTable,
    check_retract_free,
    mk_huge_pmd,
    mm_dec_nr_ptes,
    pgtable_trans_huge_deposit,
    pmd_lock,
    pmd_none,
    pmd_populate,
    pmd_present,
    pmd_trans_huge,
    pmdp_collapse_flush,
    pmdp_get,
    pmdp_get_lockless,
    pte_free,
    pte_free_defer,
    pte_lockptr,
    pte_mkdirty,
    pte_offset_map_lock,
    pte_offset_map_nolock,
    pte_pfn,
    pte_present,
    pte_uffd_wp,
    pte_unmap,
    pte_unmap_unlock,
    pte_write,
    pte_young,
    ptes_clear_locked,
    ptes_get_locked,
    ptl_lock,
    ptl_unlock,
    set_pmd_at,
    table_of,
    vm_prot_to_pte,
    walk_to_pmd,
)
from mmrace.mm.rmap import (
    TTU_BATCH_FLUSH,
    TTU_IGNORE_MLOCK,
    anon_vma_lock_write,
    anon_vma_unlock_write,
    folio_add_new_anon_rmap,
    i_mmap_lock_read,
    i_mmap_lock_write,
    i_mmap_unlock_read,
    i_mmap_unlock_write,
    linear_page_index,
    try_to_unmap,
)
from mmrace.mm.shmem import ShmemFile, shmem_huge_allowed
from mmrace.mm.swapops import is_swap_pte
from mmrace.mm.vma import find_vma, vma_lookup
from mmrace.mm.vmscan import folio_isolate_lru, folio_isolate_lru_in_op, folio_putback_lru
from mmrace.sync import lockdep_assert_held_write

HPAGE_PMD_NR = 1 << HPAGE_PMD_ORDER
HPAGE_PMD_SIZE = PMD_SIZE
HPAGE_PMD_MASK = ~(HPAGE_PMD_SIZE - 1)
MAX_PTE_MAPPED_THP = 8
"""``MAX_PTE_MAPPED_THP``: the per-mm queue of addresses retraction left
for khugepaged's next pass (before 6.6)."""


class ScanResult(IntEnum):
    """``enum scan_result``: why a scan or collapse stopped."""

    SCAN_FAIL = 0
    SCAN_SUCCEED = 1
    SCAN_PMD_NULL = 2
    SCAN_PMD_NONE = 3
    SCAN_PMD_MAPPED = 4
    SCAN_EXCEED_NONE_PTE = 5
    SCAN_EXCEED_SWAP_PTE = 6
    SCAN_EXCEED_SHARED_PTE = 7
    SCAN_PTE_NON_PRESENT = 8
    SCAN_PTE_UFFD_WP = 9
    SCAN_PTE_MAPPED_HUGEPAGE = 10
    SCAN_PAGE_RO = 11
    SCAN_LACK_REFERENCED_PAGE = 12
    SCAN_PAGE_NULL = 13
    SCAN_SCAN_ABORT = 14
    SCAN_PAGE_COUNT = 15
    SCAN_PAGE_LRU = 16
    SCAN_PAGE_LOCK = 17
    SCAN_PAGE_ANON = 18
    SCAN_PAGE_COMPOUND = 19
    SCAN_ANY_PROCESS = 20
    SCAN_VMA_NULL = 21
    SCAN_VMA_CHECK = 22
    SCAN_ADDRESS_RANGE = 23
    SCAN_DEL_PAGE_LRU = 24
    SCAN_ALLOC_HUGE_PAGE_FAIL = 25
    SCAN_CGROUP_CHARGE_FAIL = 26
    SCAN_TRUNCATED = 27
    SCAN_PAGE_HAS_PRIVATE = 28
    SCAN_STORE_FAILED = 29
    SCAN_COPY_MC = 30
    SCAN_PAGE_FILLED = 31


S = ScanResult


class CollapseControl:
    """``struct collapse_control``: who collapses (khugepaged respects the
    sysfs limits and wants referenced pages; MADV_COLLAPSE does not)."""

    __slots__ = ("is_khugepaged",)

    def __init__(self, is_khugepaged: bool) -> None:
        self.is_khugepaged = is_khugepaged


class KhugepagedSettings:
    """``/sys/kernel/mm/transparent_hugepage/khugepaged/``: the scan limits
    (defaults of ``khugepaged_init``)."""

    __slots__ = ("max_ptes_none", "max_ptes_swap", "max_ptes_shared")

    def __init__(self) -> None:
        self.max_ptes_none = HPAGE_PMD_NR - 1
        self.max_ptes_swap = HPAGE_PMD_NR // 8
        self.max_ptes_shared = HPAGE_PMD_NR // 2


def khugepaged_settings() -> KhugepagedSettings:
    st: KhugepagedSettings = execution_local("mm.khugepaged", KhugepagedSettings)
    return st


class KhugepagedMmSlot:
    """``struct khugepaged_mm_slot`` of an mm khugepaged scans: before 6.6,
    the addresses whose retraction waited for the mmap lock."""

    __slots__ = ("pte_mapped_thp",)

    def __init__(self) -> None:
        self.pte_mapped_thp: list[int] = []


def mm_slot(mm: MmStruct) -> KhugepagedMmSlot:
    """The mm's slot (``mm_slot_lookup``), created on first use
    (``__khugepaged_enter``)."""
    slots: dict[int, KhugepagedMmSlot] = execution_local("mm.khugepaged.slots", dict)
    slot = slots.get(mm.serial)
    if slot is None:
        slot = slots[mm.serial] = KhugepagedMmSlot()
    return slot


def _retract_rcu(mm: MmStruct) -> bool:
    """Whether *mm*'s kernel retracts under the PMD and PTE locks and frees
    by RCU (6.6: ``retract-pgtable-rcu``)."""
    return bool(kernel_config(mm).has("retract-pgtable-rcu"))


# --- checks --------------------------------------------------------------------------------


def userfaultfd_armed(vma: VmAreaStruct) -> bool:
    """``userfaultfd_armed``: registered with userfaultfd in any mode."""
    return bool(vma.vm_flags & (VM_UFFD_MISSING | VM_UFFD_WP | VM_UFFD_MINOR))


def userfaultfd_wp(vma: VmAreaStruct) -> bool:
    """``userfaultfd_wp``."""
    return bool(vma.vm_flags & VM_UFFD_WP)


def hugepage_vma_check(vma: VmAreaStruct, vm_flags: int, enforce_sysfs: bool) -> bool:
    """``thp_vma_allowable_order(vma, vm_flags, TVA_ENFORCE_SYSFS or 0,
    PMD_ORDER)`` for a collapse (``hugepage_vma_check`` before 6.8): not
    disabled (MADV_NOHUGEPAGE), not special; a shmem VMA by its mount's
    ``huge=`` option -- which MADV_COLLAPSE overrides (``shmem_huge_force``)
    -- an anonymous one by ``transparent_hugepage/enabled`` (khugepaged
    only) and only once it has an anon_vma. Other files: no (left out)."""
    if huge_memory.vma_thp_disabled(vma, vm_flags) or vm_flags & VM_SPECIAL:
        return False
    file = vma.vm_file
    if file is not None:
        if not isinstance(file, ShmemFile):
            return False
        if not enforce_sysfs:
            return True
        return shmem_huge_allowed(file, vma.vm_pgoff, vm_flags)
    if enforce_sysfs:
        enabled = huge_memory.thp_settings().enabled
        if enabled == "never" or (enabled == "madvise" and not vm_flags & VM_HUGEPAGE):
            return False
    return vma.anon_vma is not None


def hpage_collapse_test_exit(mm: MmStruct) -> bool:
    """``hpage_collapse_test_exit``: the address space is going away
    (``mm_users`` is 0; one visible read)."""
    return bool(mm.mm_users.load() == 0)


@kfunc
def find_pmd_or_thp_or_none(mm: MmStruct, address: int) -> tuple[ScanResult, PageTable | None,
                                                                 int]:
    """``find_pmd_or_thp_or_none``: walk to the PMD entry (``mm_find_pmd``)
    and classify it (read once, ``pmdp_get_lockless``): a table
    (SCAN_SUCCEED), none, a huge PMD (SCAN_PMD_MAPPED) or nothing there."""
    found = walk_to_pmd(mm, address)
    if found is None:
        return S.SCAN_PMD_NULL, None, 0
    pmd, mi = found
    pmde = pmdp_get_lockless(pmd, mi)
    if pmd_none(pmde):
        return S.SCAN_PMD_NONE, pmd, mi
    if not pmd_present(pmde):
        return S.SCAN_PMD_NULL, pmd, mi
    if pmd_trans_huge(pmde):
        return S.SCAN_PMD_MAPPED, pmd, mi
    return S.SCAN_SUCCEED, pmd, mi


def check_pmd_still_valid(mm: MmStruct, address: int, pmd: PageTable, mi: int) -> ScanResult:
    """``check_pmd_still_valid``: the PMD entry still points to a table."""
    result, new_pmd, new_mi = find_pmd_or_thp_or_none(mm, address)
    if result != S.SCAN_SUCCEED:
        return result
    if new_pmd is not pmd or new_mi != mi:
        return S.SCAN_FAIL
    return S.SCAN_SUCCEED


@kfunc
def hugepage_vma_revalidate(mm: MmStruct, address: int, expect_anon: bool,
                            cc: CollapseControl) -> tuple[ScanResult, VmAreaStruct | None]:
    """``hugepage_vma_revalidate``: after the mmap lock was dropped, find
    the VMA again and check it may still be collapsed at *address*."""
    if hpage_collapse_test_exit(mm):
        return S.SCAN_ANY_PROCESS, None
    vma = find_vma(mm, address)
    if vma is None or vma.vm_start > address:
        return S.SCAN_VMA_NULL, None
    if not huge_memory.thp_vma_suitable_order(vma, address):
        return S.SCAN_ADDRESS_RANGE, vma
    if not hugepage_vma_check(vma, vma.vm_flags, cc.is_khugepaged):
        return S.SCAN_VMA_CHECK, vma
    if expect_anon and (vma.anon_vma is None or not vma_is_anonymous(vma)):
        return S.SCAN_PAGE_ANON, vma
    return S.SCAN_SUCCEED, vma


def _folio_snapshot(folio: Folio, label: str) -> None:
    """One visible read of the folio's state for a scan's checks (LRU and
    lock flags, refcount, mapcount): the scan is a hint -- every check is
    made again, locked, before anything is changed -- and these reads are
    consecutive, on one object, so one operation stands for them."""
    folio.access(READ, label)


# --- one operation for a step of every small folio ------------------------------------------

_per_folio_steps = [False]


@contextmanager
def per_folio_steps() -> Iterator[None]:
    """Within this block, a collapse makes one visible operation per small
    folio and step (the scan's look, the isolation, the copy, the release)
    instead of one for all the folios: the finer model the batched steps
    are checked against (``tests/mm/test_khugepaged_batch.py``) and
    measured by (``bench/khugepaged.py``). Not for scenarios."""
    saved = _per_folio_steps[0]
    _per_folio_steps[0] = True
    try:
        yield
    finally:
        _per_folio_steps[0] = saved


def _batched() -> bool:
    return not _per_folio_steps[0]


def _distinct(folios: list[Folio]) -> list[Folio]:
    seen: set[int] = set()
    out: list[Folio] = []
    for f in folios:
        if f.serial not in seen:
            seen.add(f.serial)
            out.append(f)
    return out


def _folios_op(folios: list[Folio], kind: int, label: str,
               extra: Accesses = (), speculative: bool = False) -> Event | None:
    """One visible operation of *kind* on every folio of *folios* (and the
    *extra* accesses), checked for use-after-free unless *speculative* (a
    look under RCU: ``struct page`` outlives the folio): a step the
    collapse takes on each small folio in turn, made at once where no
    thread can tell the difference (each call site says why)."""
    first, rest = folios[0], folios[1:]
    ev = visible(first, kind, label, also=tuple((f, kind) for f in rest) + extra)
    for f in folios if not speculative else ():
        f.check_alive(label)
    if ev is not None:
        ev.detail = f"{len(folios)} folios"
    return ev


def _contents_read_op(folios: list[Folio], label: str) -> None:
    """One whole-page read (``copy_mc_*highpage``'s source) of each of
    *folios* in one visible operation."""
    first, rest = folios[0], folios[1:]
    ev = visible(first.contents, PAGE_READ, label,
                 also=tuple((f.contents, PAGE_READ) for f in rest))
    for f in folios:
        f.check_alive(label)
    if ev is not None:
        ev.detail = f"{len(folios)} pages"


def is_refcount_suitable(folio: Folio) -> bool:
    """``is_refcount_suitable``: nothing but the mappings (and the swap
    cache) holds the folio -- no GUP pin, no other reference. Reads the
    fields; the caller made the visible operation."""
    expected = folio._mapcount
    if folio.swapcache:
        expected += folio.nr_pages
    return bool(folio._refcount == expected)


# --- anonymous collapse ---------------------------------------------------------------------


@kfunc
def hpage_collapse_scan_pmd(mm: MmStruct, vma: VmAreaStruct, address: int,
                            cc: CollapseControl) -> tuple[ScanResult, bool]:
    """``hpage_collapse_scan_pmd``: under the mmap read lock (held on
    entry), look at the 512 PTEs of an anonymous range under their lock:
    empty ones (at most ``max_ptes_none`` for khugepaged; a registered
    userfaultfd allows none), uffd-wp ones (refused), the folios (anonymous,
    on the LRU, unlocked, not pinned: the refcount equals the mapcount;
    shared ones at most ``max_ptes_shared``), one writable and, for
    khugepaged, one referenced. If it may, collapse (``collapse_huge_page``,
    which drops the mmap lock). Returns the result and whether the mmap
    lock is still held."""
    result, pmd, mi = find_pmd_or_thp_or_none(mm, address)
    if result != S.SCAN_SUCCEED:
        return result, True
    assert pmd is not None
    pm = pte_offset_map_lock(mm, pmd, mi, address)
    if pm is None:
        return S.SCAN_PMD_NULL, True
    st = khugepaged_settings()
    ptes = ptes_get_locked(pm.table, pm.index, HPAGE_PMD_NR, "ptep_get (512)")
    none_or_zero = HPAGE_PMD_NR - len(ptes)
    unmapped = shared = referenced = 0
    writable = False
    result = S.SCAN_SUCCEED
    if none_or_zero and (userfaultfd_armed(vma) or (
            cc.is_khugepaged and none_or_zero > st.max_ptes_none)):
        result = S.SCAN_EXCEED_NONE_PTE
    if result == S.SCAN_SUCCEED and _batched():
        # The scan's look at each folio (LRU and lock flags, refcount) is a
        # hint -- collapse_huge_page checks all of it again under the mmap,
        # anon_vma and folio locks before changing anything -- and changes
        # nothing, so no other thread can tell when it happened: one
        # visible read of every folio the table maps stands for the 512.
        # (With the PTL held the entries cannot change, so the folios named
        # before the operation are the ones read.)
        mapped = [vm_normal_page(vma, address + ((idx - pm.index) << PAGE_SHIFT), ptes[idx])
                  for idx in sorted(ptes) if not is_swap_pte(ptes[idx])]
        looked = _distinct([f for f in mapped if f is not None])
        if looked:
            _folios_op(looked, READ, "folio_test_lru, folio_test_locked, folio_ref_count")
    seen: set[int] = set()
    for idx in sorted(ptes) if result == S.SCAN_SUCCEED else ():
        pteval = ptes[idx]
        a = address + ((idx - pm.index) << PAGE_SHIFT)
        if is_swap_pte(pteval):
            unmapped += 1
            result = S.SCAN_EXCEED_SWAP_PTE  # swap-in is left out (module docstring)
            break
        if pte_uffd_wp(pteval):
            result = S.SCAN_PTE_UFFD_WP
            break
        if pte_write(pteval):
            writable = True
        folio = vm_normal_page(vma, a, pteval)
        if folio is None:
            result = S.SCAN_PAGE_NULL
            break
        if folio.serial not in seen and not _batched():
            seen.add(folio.serial)
            _folio_snapshot(folio, "folio_test_lru, folio_test_locked, folio_ref_count")
        if not folio.anon:
            result = S.SCAN_PAGE_ANON
            break
        if folio._mapcount > 1:  # folio_likely_mapped_shared
            shared += 1
            if cc.is_khugepaged and shared > st.max_ptes_shared:
                result = S.SCAN_EXCEED_SHARED_PTE
                break
        if folio.isolated:
            result = S.SCAN_PAGE_LRU
            break
        if folio.locked:
            result = S.SCAN_PAGE_LOCK
            break
        if not is_refcount_suitable(folio):
            result = S.SCAN_PAGE_COUNT
            break
        if cc.is_khugepaged and (pte_young(pteval) or folio.referenced):
            referenced += 1
    if result == S.SCAN_SUCCEED:
        if not writable:
            result = S.SCAN_PAGE_RO
        elif cc.is_khugepaged and not referenced:
            result = S.SCAN_LACK_REFERENCED_PAGE
    pte_unmap_unlock(pm)
    if result == S.SCAN_SUCCEED:
        return collapse_huge_page(mm, address, referenced, unmapped, cc), False
    return result, True


def _isolate_one(folio: Folio, made_op: bool = False) -> ScanResult:
    """``folio_trylock``, ``is_refcount_suitable`` and ``folio_isolate_lru``
    of ``__collapse_huge_page_isolate``, consecutive operations on one
    folio, as one visible RMW (unless the caller *made_op* already, for
    every folio): a thread that takes a reference (a GUP pin) or the lock
    in between would make one of the three fail, as it does when it comes
    just before; after, it is too late either way."""
    if not made_op:
        folio.access(RMW, "folio_trylock, folio_ref_count, folio_isolate_lru")
    if folio.locked:
        return S.SCAN_PAGE_LOCK
    if not is_refcount_suitable(folio):
        return S.SCAN_PAGE_COUNT
    if folio.isolated or folio._refcount == 0:
        return S.SCAN_DEL_PAGE_LRU
    folio.locked = True
    folio.isolated = True
    folio._refcount += 1
    return S.SCAN_SUCCEED


@kfunc
def release_pte_folio(folio: Folio) -> None:
    """``release_pte_folio``: unlock and put back on the LRU."""
    folio_unlock(folio)
    folio_putback_lru(folio)


@kfunc
def __collapse_huge_page_isolate(vma: VmAreaStruct, address: int, table: PageTable,
                                 cc: CollapseControl, isolated: list[Folio]) -> ScanResult:
    """``__collapse_huge_page_isolate``: for each PTE of the detached
    table, lock and isolate its folio if nothing but the mapping holds it
    (a GUP pin taken since the scan fails the collapse: SCAN_PAGE_COUNT).
    The entries are read without visible operations: the PMD no longer
    points to the table and the TLBs were flushed, so the only thread that
    can still look at it is a GUP-fast walk that read the PMD before (and
    it never writes an entry); every writer needs the mmap, VMA or
    anon_vma lock held here for write. On failure the folios isolated so
    far are released (``release_pte_pages``).

    The folios' trylock, refcount check and isolation are one visible RMW
    of all of them (:func:`_isolate_batch`). The entries are checked first
    (nothing can change them), then the folios in address order, so the
    first failure in address order decides, as in the kernel's one loop."""
    st = khugepaged_settings()
    none_or_zero = shared = referenced = 0
    writable = False
    pte_result = S.SCAN_SUCCEED
    candidates: list[tuple[int, Folio]] = []
    for i in range(HPAGE_PMD_NR):
        pteval = table.entries.get(i, 0)
        if not pteval:
            none_or_zero += 1
            if userfaultfd_armed(vma) or (cc.is_khugepaged and none_or_zero > st.max_ptes_none):
                pte_result = S.SCAN_EXCEED_NONE_PTE
                break
            continue
        if not pte_present(pteval):
            pte_result = S.SCAN_PTE_NON_PRESENT
            break
        if pte_uffd_wp(pteval):
            pte_result = S.SCAN_PTE_UFFD_WP
            break
        folio = vm_normal_page(vma, address + (i << PAGE_SHIFT), pteval)
        if folio is None:
            pte_result = S.SCAN_PAGE_NULL
            break
        candidates.append((pteval, folio))
    batched = _batched() and bool(candidates)
    if batched:
        _isolate_batch([f for _, f in candidates])
    result = S.SCAN_SUCCEED
    for pteval, folio in candidates:
        if folio._mapcount > 1:
            shared += 1
            if cc.is_khugepaged and shared > st.max_ptes_shared:
                result = S.SCAN_EXCEED_SHARED_PTE
                break
        r = _isolate_one(folio, made_op=batched)
        if r != S.SCAN_SUCCEED:
            result = r
            break
        isolated.append(folio)
        if cc.is_khugepaged and (pte_young(pteval) or folio.referenced):
            referenced += 1
        if pte_write(pteval):
            writable = True
    if result == S.SCAN_SUCCEED:
        result = pte_result
    if result == S.SCAN_SUCCEED:
        if not writable:
            result = S.SCAN_PAGE_RO
        elif cc.is_khugepaged and not referenced:
            result = S.SCAN_LACK_REFERENCED_PAGE
    if result != S.SCAN_SUCCEED:
        for folio in isolated:
            release_pte_folio(folio)
        isolated.clear()
    return result


def _isolate_batch(folios: list[Folio]) -> None:
    """The visible part of isolating *folios* (``folio_trylock``,
    ``is_refcount_suitable``, ``folio_isolate_lru`` of each, in address
    order) as one RMW of them all; the caller then applies
    :func:`_isolate_one` to each in order, stopping at the first failure.

    Why no thread can tell: the PMD is cleared and flushed, and the mmap,
    VMA and anon_vma locks are held for write, so a thread can reach these
    folios only through a reference it already holds -- a GUP-fast walk
    that read the PMD before the flush (before 6.1's IPI) -- or from the
    LRU lists (reclaim, compaction: they isolate the folio, which makes
    the collapse fail, or find it isolated and skip it). Each such step
    acts on one folio, and what it does depends only on that folio's
    state; the collapse's step on each folio depends only on that folio.
    So a racing step on folio j commutes with the collapse's steps on
    every other folio and lands before or after the batch with the same
    effect as before or after the collapse's step on j. What the batch
    cannot show is one thread acting on a folio the collapse passed and
    then on one it has not reached: the collapse then fails on the second
    and releases every folio, the same end state as when both acts come
    first (only the SCAN_* code can differ: both map to EAGAIN for
    MADV_COLLAPSE)."""
    _folios_op(_distinct(folios), RMW, "folio_trylock, folio_ref_count, folio_isolate_lru")


@kfunc
def __collapse_huge_page_copy(table: PageTable, folio: Folio, vma: VmAreaStruct,
                              address: int) -> None:
    """``__collapse_huge_page_copy`` + ``__collapse_huge_page_copy_succeeded``:
    copy each page into the new folio (a visible read of each source: a
    stale GUP reference could still be writing it; the new folio is
    private, and empty entries leave its zeroed pages), then clear the
    entries (one visible RMW of them all: only a GUP-fast walk can still
    read this table) and release each old folio: unlocked, back on the LRU,
    its mapping and last references dropped, and freed.

    The reads of the sources are one operation (:func:`_contents_read_op`),
    and so is the release of every old folio (:func:`_release_batch`):
    each is one step on each of several objects, a step on one object
    depends on nothing the steps on the others change, and -- the table
    detached, the folios locked and off the LRU -- only a thread holding a
    reference taken before the flush can act on them meanwhile (see
    :func:`_isolate_batch`). Its step on one page (a DMA store, putting its
    reference) lands before or after the batch with the effect it has
    before or after the collapse's step on that page; a store to one page
    the copy has read and then to one it has not loses the first store in
    both models, with the batch the second too (the lost-store outcome is
    the same; only which pages is finer). ``per_folio_steps`` restores one
    operation per page and step."""
    mm = vma.vm_mm
    present = sorted(i for i, v in table.entries.items() if v)
    srcs: list[tuple[int, int, Folio]] = []
    for i in present:
        src = vm_normal_page(vma, address + (i << PAGE_SHIFT), table.entries[i])
        assert src is not None
        srcs.append((i, table.entries[i], src))
    batched = _batched() and bool(srcs)
    if batched:
        _contents_read_op(_distinct([src for _, _, src in srcs]), "copy_mc_user_highpage (read)")
    for i, pteval, src in srcs:
        if not batched:
            visible_contents(src, READ, "copy_mc_user_highpage (read)")
        folio.contents.words[i] = dict(src.contents.words[pte_pfn(pteval) - src.pfn])
    ptl = pte_lockptr(mm, table)
    ptl_lock(ptl)
    ptes_clear_locked(mm, table, present, "ptep_clear")
    ptl_unlock(ptl)
    mm.rss += HPAGE_PMD_NR - len(present)
    if batched:
        _release_batch([src for _, _, src in srcs])
        return
    for _, _, src in srcs:
        folio_unlock(src)
        src.access(RMW, "folio_putback_lru, folio_remove_rmap_pte, free_page_and_swap_cache")
        if _release_one(src):
            free_folio(src)


def _release_one(src: Folio) -> bool:
    """The effect of ``release_pte_folio`` (unlocked before: the caller),
    ``folio_remove_rmap_pte`` and ``free_page_and_swap_cache`` on one old
    folio, within the caller's visible RMW of it: back on the LRU, one
    mapping and two references (the mapping's, the isolation's) fewer.
    Returns whether that was the last reference."""
    src.isolated = False
    src._mapcount -= 1
    src._refcount -= 2
    return src._refcount == 0


def _release_batch(olds: list[Folio]) -> None:
    """``release_pte_folio``, ``folio_remove_rmap_pte`` and
    ``free_page_and_swap_cache`` of every old folio of an anonymous
    collapse in one visible operation: an RMW of each folio, and the
    write of each one's data that freeing it poisons -- declared for all,
    since whether a folio is freed depends on references a racing thread
    may drop before the operation runs."""
    olds = _distinct(olds)
    extra = tuple(a for f in olds for a in folio_free_footprint(f)[1:])
    _folios_op(olds, RMW, "folio_unlock, folio_putback_lru, folio_remove_rmap_pte, "
               "free_page_and_swap_cache", extra)
    for src in olds:
        folio_unlock_in_op(src)
        if _release_one(src):
            free_folio_in_op(src)


@kfunc
def collapse_huge_page(mm: MmStruct, address: int, referenced: int, unmapped: int,
                       cc: CollapseControl) -> ScanResult:
    """``collapse_huge_page``: called with the mmap read lock, returns
    without it. Allocate the THP (unlocked), retake the mmap lock for
    write, revalidate, write-lock the VMA and its anon_vma, clear the PMD
    under its lock with a flush (``pmdp_collapse_flush``) -- from 6.1 then
    IPI every CPU (``khugepaged-gup-fast-ipi``) so that GUP-fast walks of
    the old table are over -- isolate and copy the small folios, and map
    the THP with one huge PMD, depositing the old table. On failure the
    PMD is put back (``pmd_populate``)."""
    mmap_read_unlock(mm)
    new = folio_alloc(HPAGE_PMD_ORDER)
    mmap_read_lock(mm)
    result, vma = hugepage_vma_revalidate(mm, address, True, cc)
    if result == S.SCAN_SUCCEED:
        result, pmd, mi = find_pmd_or_thp_or_none(mm, address)
    mmap_read_unlock(mm)
    if result != S.SCAN_SUCCEED:
        folio_put(new)
        return result
    assert pmd is not None
    mmap_write_lock(mm)
    result, vma = hugepage_vma_revalidate(mm, address, True, cc)
    if result == S.SCAN_SUCCEED:
        result = check_pmd_still_valid(mm, address, pmd, mi)
    if result != S.SCAN_SUCCEED:
        mmap_write_unlock(mm)
        folio_put(new)
        return result
    assert vma is not None
    vma_start_write(vma)
    anon_vma = vma.anon_vma
    anon_vma_lock_write(anon_vma)
    pmd_ptl = pmd_lock(mm, pmd)
    _pmd = pmdp_collapse_flush(vma, address, pmd, mi)
    ptl_unlock(pmd_ptl)
    if kernel_config(mm).has("khugepaged-gup-fast-ipi"):
        tlb_remove_table_sync_one()
    table = table_of(_pmd)
    table.installed = False  # detached: reachable only by a GUP-fast walk already in it
    pte_ptl = pte_lockptr(mm, table)
    ptl_lock(pte_ptl)
    isolated: list[Folio] = []
    result = __collapse_huge_page_isolate(vma, address, table, cc, isolated)
    ptl_unlock(pte_ptl)
    if result != S.SCAN_SUCCEED:
        pmd_ptl = pmd_lock(mm, pmd)
        assert pmd_none(pmdp_get(pmd, mi))
        pmd_populate(mm, pmd, mi, table)
        ptl_unlock(pmd_ptl)
        anon_vma_unlock_write(anon_vma)
        mmap_write_unlock(mm)
        folio_put(new)
        return result
    anon_vma_unlock_write(anon_vma)
    __collapse_huge_page_copy(table, new, vma, address)
    new.uptodate = True  # __folio_mark_uptodate: the copy is visible before the PMD
    entry = mk_huge_pmd(new.pfn, vm_prot_to_pte(vma.vm_page_prot))
    entry = huge_memory.maybe_pmd_mkwrite(pte_mkdirty(entry), vma)
    pmd_ptl = pmd_lock(mm, pmd)
    assert pmd_none(pmdp_get(pmd, mi))
    folio_add_new_anon_rmap(new, vma, address, True)
    pgtable_trans_huge_deposit(mm, pmd, mi, table)
    set_pmd_at(mm, address, pmd, mi, entry)
    ptl_unlock(pmd_ptl)
    mmap_write_unlock(mm)
    return S.SCAN_SUCCEED


# --- PTE-mapped THPs: retracting a page table -----------------------------------------------


@kfunc
def set_huge_pmd(vma: VmAreaStruct, addr: int, pmd: PageTable, mi: int, folio: Folio) -> ScanResult:
    """``set_huge_pmd``: map the locked large *folio* at *addr* with one
    huge PMD (``do_set_pmd``), the mapping taking a reference."""
    mmap_assert_locked(vma.vm_mm)
    vmf = VmFault(vma, addr, 0)
    vmf.pmd, vmf.pmd_index = pmd, mi
    if do_set_pmd(vmf, folio):
        return S.SCAN_FAIL
    folio_get(folio)
    return S.SCAN_SUCCEED


@kfunc
def collapse_and_free_pmd(mm: MmStruct, vma: VmAreaStruct, addr: int, pmd: PageTable,
                          mi: int) -> None:
    """``collapse_and_free_pmd`` (5.19 to 6.5): clear the PMD entry that
    points to a PTE table (``pmdp_collapse_flush``) and free the table at
    once (``pte_free``), its entries as they are.

    Before "mm/khugepaged: take the right locks for page table retraction"
    (6.1) under the PMD lock and whatever the caller held -- the mmap write
    lock, and ``i_mmap_rwsem`` only when called from
    ``retract_page_tables``. With it, the PMD lock is not taken: the caller
    holds every lock a walk of the range can start under, for write, which
    is asserted here. From 6.1 an IPI to every CPU
    (``tlb_remove_table_sync_one``, ``khugepaged-gup-fast-ipi``) waits for
    GUP-fast walks that may still read the table before it is freed."""
    cfg = kernel_config(mm)
    if cfg.has("khugepaged-retract-locks"):
        mmap_assert_write_locked(mm)
        _assert_rmap_write_locked(vma)
        old = pmdp_collapse_flush(vma, addr, pmd, mi)
        table = table_of(old)
        check_retract_free(pmd, mi, table, False)
    else:
        ptl = pmd_lock(mm, pmd)
        old = pmdp_collapse_flush(vma, addr, pmd, mi)
        table = table_of(old)
        check_retract_free(pmd, mi, table, False)
        ptl_unlock(ptl)
    if cfg.has("khugepaged-gup-fast-ipi"):
        tlb_remove_table_sync_one()
    table.installed = False
    mm_dec_nr_ptes(mm)
    pte_free(mm, table)


def _assert_rmap_write_locked(vma: VmAreaStruct) -> None:
    """The ``lockdep_assert_held_write`` calls of the seed's
    ``collapse_and_free_pmd``: the file's ``i_mmap_rwsem`` and the anon_vma
    root's rwsem, if the VMA has them ("all anon_vmas attached to the VMA
    have the same root")."""
    file = vma.vm_file
    if file is not None:
        lockdep_assert_held_write(file.f_mapping.i_mmap_rwsem)
    av = vma.anon_vma
    if av is not None:
        lockdep_assert_held_write(av.rwsem)


@kfunc
def filemap_lock_folio(mapping: Any, index: int) -> Folio | None:
    """``filemap_lock_folio`` (``__filemap_get_folio`` with FGP_LOCK): find
    the folio at *index* under RCU, take a speculative reference
    (``folio_try_get``: fails on a folio being freed), check it is still
    there (``xas_reload``), lock it, and check it was not truncated
    meanwhile -- retrying the lookup if any of that failed. None if the
    index holds nothing."""
    while True:
        visible(mapping, READ, f"filemap_get_entry({index:#x})")
        found: Folio | None = mapping.i_pages.get(index)
        if found is None:
            return None
        folio: Folio = found
        if not folio_try_get(folio):
            continue
        visible(mapping, READ, f"xas_reload({index:#x})")
        reloaded: Folio | None = mapping.i_pages.get(index)
        if reloaded is not folio:
            folio_put(folio)
            continue
        folio_lock(folio)
        if folio.mapping is mapping:
            return folio
        folio_unlock(folio)
        folio_put(folio)


@kfunc
def collapse_pte_mapped_thp(mm: MmStruct, addr: int, install_pmd: bool) -> ScanResult:
    """``collapse_pte_mapped_thp``: the page cache holds a PMD-sized folio
    for the aligned 2 MiB at *addr*, which this mm maps by PTEs (or not at
    all): check that every PTE maps the right page of it, remove those
    mappings, retract the table, and (MADV_COLLAPSE) map the folio with a
    huge PMD. The folio lock keeps new PTEs of it from appearing.

    The eras (``mmrace.fixes.khugepaged``): before 6.6 called with the
    mmap lock held for write; the PTEs' mappings go (the entries stay, in
    a table freed at once by ``collapse_and_free_pmd``); before 6.1 under
    nothing more than the PMD lock -- an rmap walk holding
    ``i_mmap_rwsem`` (truncation, reclaim) could be in the table -- and
    from 6.1 under ``i_mmap_rwsem`` for write, refusing a VMA with an
    anon_vma. Since 6.6 with the mmap *read* lock: the PTEs are cleared
    under the PTE lock, the PMD under the PMD and PTE locks, and the table
    freed by RCU (``pte_free_defer``)."""
    haddr = addr & HPAGE_PMD_MASK
    cfg = kernel_config(mm)
    rcu_era = cfg.has("retract-pgtable-rcu")
    if rcu_era:
        mmap_assert_locked(mm)
    else:
        mmap_assert_write_locked(mm)
    vma = vma_lookup(mm, haddr)
    if (vma is None or vma.vm_file is None or not vma.vm_start <= haddr
            or haddr + HPAGE_PMD_SIZE > vma.vm_end):
        return S.SCAN_VMA_CHECK
    result, pmd, mi = find_pmd_or_thp_or_none(mm, haddr)
    if result == S.SCAN_PMD_MAPPED:
        return result
    if not hugepage_vma_check(vma, vma.vm_flags, False):
        return S.SCAN_VMA_CHECK
    if not rcu_era and cfg.has("khugepaged-retract-locks") and vma.anon_vma is not None:
        return S.SCAN_VMA_CHECK
    if cfg.has("khugepaged-uffd-wp-keep-pgtable") and userfaultfd_wp(vma):
        return S.SCAN_PTE_UFFD_WP
    mapping = vma.vm_file.f_mapping
    folio = filemap_lock_folio(mapping, linear_page_index(vma, haddr))
    if folio is None:
        return S.SCAN_PAGE_NULL
    try:
        if folio.order != HPAGE_PMD_ORDER:
            return S.SCAN_PAGE_COMPOUND
        result, pmd, mi = find_pmd_or_thp_or_none(mm, haddr)
        if result == S.SCAN_PMD_NONE:
            assert pmd is not None
            return set_huge_pmd(vma, haddr, pmd, mi, folio) if install_pmd else S.SCAN_SUCCEED
        if result != S.SCAN_SUCCEED:
            return result
        assert pmd is not None
        if rcu_era:
            result = _retract_pte_mapped_rcu(mm, vma, haddr, pmd, mi, folio)
        else:
            result = _retract_pte_mapped_locked(mm, vma, haddr, pmd, mi, folio)
        if result != S.SCAN_SUCCEED:
            return result
        return set_huge_pmd(vma, haddr, pmd, mi, folio) if install_pmd else S.SCAN_SUCCEED
    finally:
        folio_unlock(folio)
        folio_put(folio)


def _check_ptes_map(vma: VmAreaStruct, haddr: int, ptes: dict[int, int], base: int,
                    folio: Folio) -> ScanResult:
    """Step 1 of ``collapse_pte_mapped_thp``: each entry that is not none
    maps page *i* of *folio* (a swap entry or another page -- a private COW
    copy, a uprobe -- aborts)."""
    for idx, pte in ptes.items():
        i = idx - base
        if not pte_present(pte):
            return S.SCAN_PTE_NON_PRESENT
        page = vm_normal_page(vma, haddr + (i << PAGE_SHIFT), pte)
        if page is not folio or pte_pfn(pte) - folio.pfn != i:
            return S.SCAN_FAIL
    return S.SCAN_SUCCEED


def _remove_rmap(folio: Folio, vma: VmAreaStruct, pages: list[int]) -> None:
    """``page_remove_rmap`` / ``folio_remove_rmap_pte`` of each of *pages*
    of *folio*: consecutive RMWs of the one folio's mapcounts, done as one
    (``folio_remove_rmap_ptes`` batches a run of them the same way)."""
    if not pages:
        return
    folio.access(RMW, f"folio_remove_rmap_pte x{len(pages)}")
    folio._mapcount -= len(pages)
    for i in pages:
        folio.page_mapcount[i] -= 1
    if folio._mapcount < 0 or min(folio.page_mapcount[i] for i in pages) < 0:
        raise ViolationError("invariant", f"mapcount underflow of {folio.name}",
                             f"VM_BUG_ON_FOLIO: mapcount underflow on {folio.name} in "
                             "collapse_pte_mapped_thp")


def _retract_pte_mapped_locked(mm: MmStruct, vma: VmAreaStruct, haddr: int, pmd: PageTable,
                               mi: int, folio: Folio) -> ScanResult:
    """Steps 1-4 of ``collapse_pte_mapped_thp`` before 6.6 (mmap write
    lock held; from 6.1 ``i_mmap_rwsem`` too): check the PTEs, drop their
    rmap (``page_remove_rmap``) and references, then
    ``collapse_and_free_pmd``."""
    cfg = kernel_config(mm)
    mapping = vma.vm_file.f_mapping
    locks = cfg.has("khugepaged-retract-locks")
    # "mm/khugepaged: write-lock VMA while collapsing a huge page" (6.4; a
    # no-op before per-VMA locks), before i_mmap_rwsem in the lock order.
    vma_start_write(vma)
    if locks:
        i_mmap_lock_write(mapping)
    pm = pte_offset_map_lock(mm, pmd, mi, haddr)
    if pm is None:
        if locks:
            i_mmap_unlock_write(mapping)
        return S.SCAN_FAIL
    ptes = ptes_get_locked(pm.table, pm.index, HPAGE_PMD_NR,
                           "ptep_get (512)")
    result = _check_ptes_map(vma, haddr, ptes, pm.index, folio)
    if result != S.SCAN_SUCCEED:
        pte_unmap_unlock(pm)
        if locks:
            i_mmap_unlock_write(mapping)
        return result
    count = len(ptes)
    _remove_rmap(folio, vma, [idx - pm.index for idx in sorted(ptes)])
    pte_unmap_unlock(pm)
    if count:
        folio_put_refs(folio, count)
        mm.rss -= count
    collapse_and_free_pmd(mm, vma, haddr, pmd, mi)
    if locks:
        i_mmap_unlock_write(mapping)
    return S.SCAN_SUCCEED


def _retract_pte_mapped_rcu(mm: MmStruct, vma: VmAreaStruct, haddr: int, pmd: PageTable,
                            mi: int, folio: Folio) -> ScanResult:
    """Steps 1-4 of ``collapse_pte_mapped_thp`` since 6.6 (mmap read lock):
    check the PTEs under their lock, clear them (the PMD lock taken first
    for a private uffd-armed VMA, where UFFDIO_COPY may insert a PTE the
    folio lock does not stop), drop the references, then under the PMD
    lock and the PTE lock clear the PMD and free the table by RCU."""
    pm = pte_offset_map_lock(mm, pmd, mi, haddr)
    if pm is None:
        return S.SCAN_FAIL
    ptes = ptes_get_locked(pm.table, pm.index, HPAGE_PMD_NR,
                           "ptep_get (512)")
    result = _check_ptes_map(vma, haddr, ptes, pm.index, folio)
    pte_unmap_unlock(pm)
    if result != S.SCAN_SUCCEED:
        return result
    pml = None
    if userfaultfd_armed(vma) and not vma.vm_flags & VM_SHARED:
        pml = pmd_lock(mm, pmd)
    # The table cannot go meanwhile: another retraction of this range needs
    # the folio lock held here (hence no pmd_same recheck in the kernel).
    pm = pte_offset_map_nolock(mm, pmd, mi, haddr)
    if pm is None:
        if pml is not None:
            ptl_unlock(pml)
        return S.SCAN_FAIL
    table, ptl = pm.table, pm.ptl
    assert ptl is not None
    if pml is None:
        ptl_lock(ptl)
    elif ptl is not pml:
        ptl_lock(ptl, nested=True)
    # Step 2 rechecks under the lock: it was dropped since step 1, and a
    # write fault may have COWed a page, reclaim or migration unmapped one.
    ptes = ptes_get_locked(table, pm.index, HPAGE_PMD_NR, "ptep_get (512)")
    result = _check_ptes_map(vma, haddr, ptes, pm.index, folio)
    if result != S.SCAN_SUCCEED:
        pte_unmap(pm)
        if ptl is not pml:
            ptl_unlock(ptl)
        if pml is not None:
            ptl_unlock(pml)
        return result
    idxs = sorted(ptes)
    # "Must clear entry, or a racing truncate may re-remove it."
    ptes_clear_locked(mm, table, idxs, "ptep_clear")
    _remove_rmap(folio, vma, [i - pm.index for i in idxs])
    pte_unmap(pm)
    if pml is None:
        ptl_unlock(ptl)
    if idxs:
        folio_put_refs(folio, len(idxs))
        mm.rss -= len(idxs)
    if pml is None:
        pml = pmd_lock(mm, pmd)
        if ptl is not pml:
            ptl_lock(ptl, nested=True)
    old = pmdp_collapse_flush(vma, haddr, pmd, mi)
    freed = table_of(old)
    check_retract_free(pmd, mi, freed, True)
    if ptl is not pml:
        ptl_unlock(ptl)
    ptl_unlock(pml)
    freed.installed = False
    mm_dec_nr_ptes(mm)
    pte_free_defer(mm, freed)
    return S.SCAN_SUCCEED


# --- the queue of PTE-mapped THPs (before 6.6) ------------------------------------------------


@kfunc
def khugepaged_add_pte_mapped_thp(mm: MmStruct, addr: int) -> bool:
    """``khugepaged_add_pte_mapped_thp``: remember *addr* (PMD-aligned) for
    ``khugepaged_collapse_pte_mapped_thps`` on the next pass over *mm*
    (under ``khugepaged_mm_lock``: khugepaged's own, no other thread looks
    at the slot, so not a visible operation). False if the queue is full --
    or gone: since 6.6 (``retract-pgtable-rcu``) khugepaged collapses a
    PTE-mapped THP when its scan finds one instead."""
    if _retract_rcu(mm):
        return False
    slot = mm_slot(mm)
    if len(slot.pte_mapped_thp) >= MAX_PTE_MAPPED_THP:
        return False
    slot.pte_mapped_thp.append(addr & HPAGE_PMD_MASK)
    return True


@kfunc
def khugepaged_collapse_pte_mapped_thps(mm: MmStruct) -> None:
    """``khugepaged_collapse_pte_mapped_thps`` (before 6.6): with the mmap
    lock taken for write if it is free (``mmap_write_trylock``; if not, the
    queue waits for the next pass), run ``collapse_pte_mapped_thp`` on each
    queued address, then empty the queue."""
    slot = mm_slot(mm)
    if not slot.pte_mapped_thp:
        return
    if not mmap_write_trylock(mm):
        return
    if not hpage_collapse_test_exit(mm):
        for addr in list(slot.pte_mapped_thp):
            collapse_pte_mapped_thp(mm, addr, False)
    slot.pte_mapped_thp.clear()
    mmap_write_unlock(mm)


# --- retract_page_tables ----------------------------------------------------------------------


@kfunc
def retract_page_tables(mapping: Any, pgoff: int, cc: CollapseControl,
                        target_mm: MmStruct | None = None, target_addr: int = 0,
                        folio: Folio | None = None) -> ScanResult:
    """``retract_page_tables``: after ``collapse_file`` put a PMD-sized folio
    in the page cache at *pgoff*, free the (emptied) PTE table of every VMA
    mapping it at a PMD-aligned address -- except a VMA with an anon_vma
    (MAP_PRIVATE pages written to: not worth it) or, from 5.19, one
    registered for uffd-wp (its table may hold uffd-wp markers). Walks the
    file's VMAs through ``i_mmap``.

    Before 6.6 under ``i_mmap_rwsem`` for write, and in each mm only if its
    mmap lock can be taken for write at once (else the address is queued,
    ``khugepaged_add_pte_mapped_thp``); the table is freed at once
    (``collapse_and_free_pmd``). With MADV_COLLAPSE's *target* (6.1) it
    also maps the folio there. Since 6.6 under ``i_mmap_rwsem`` for read
    alone: each retraction takes the PMD lock and the PTE table's lock,
    rechecks the anon_vma and uffd-wp registration under them (no mmap lock
    keeps them from appearing), and frees the table by RCU. Returns the
    result for the target (SCAN_FAIL without one)."""
    rcu_era = bool(kernel_config_of_mapping(mapping, target_mm).has("retract-pgtable-rcu"))
    if rcu_era:
        i_mmap_lock_read(mapping)
    else:
        i_mmap_lock_write(mapping)
    target_result = S.SCAN_FAIL
    for _, vma in sorted(mapping.i_mmap.items()):
        vstart, vend, vpgoff = vma.vm_start, vma.vm_end, vma.vm_pgoff
        if not vpgoff <= pgoff < vpgoff + ((vend - vstart) >> PAGE_SHIFT):
            continue  # vma_interval_tree_foreach(vma, &mapping->i_mmap, pgoff, pgoff)
        mm: MmStruct = vma.vm_mm
        addr = vstart + ((pgoff - vpgoff) << PAGE_SHIFT)
        is_target = mm is target_mm and addr == target_addr
        if vma.anon_vma is not None:
            result = S.SCAN_PAGE_ANON
        elif addr & ~HPAGE_PMD_MASK or vend < addr + HPAGE_PMD_SIZE:
            result = S.SCAN_VMA_CHECK
        elif rcu_era:
            result = _retract_one_rcu(mm, vma, addr)
        else:
            result = _retract_one_locked(mm, vma, addr, cc, is_target, folio)
        if is_target:
            target_result = result
    if rcu_era:
        i_mmap_unlock_read(mapping)
    else:
        i_mmap_unlock_write(mapping)
    return target_result


def kernel_config_of_mapping(mapping: Any, mm: MmStruct | None) -> Any:
    """The kernel configuration a file-side path runs with: the one of the
    mm that asked (khugepaged's scan or MADV_COLLAPSE), else of any mm
    mapping the file (a System has one kernel)."""
    if mm is not None:
        return kernel_config(mm)
    for _, vma in sorted(mapping.i_mmap.items()):
        return kernel_config(vma.raw("vm_mm"))
    return KernelConfig()


def _retract_one_locked(mm: MmStruct, vma: VmAreaStruct, addr: int, cc: CollapseControl,
                        is_target: bool, folio: Folio | None) -> ScanResult:
    """One VMA of ``retract_page_tables`` before 6.6 (``i_mmap_rwsem`` held
    for write)."""
    result, pmd, mi = find_pmd_or_thp_or_none(mm, addr)
    if result != S.SCAN_SUCCEED:
        return result
    assert pmd is not None
    madv = kernel_config(mm).has("madv-collapse")
    cfg = kernel_config(mm)
    if (not madv or cc.is_khugepaged or is_target) and mmap_write_trylock(mm):
        if not vma_try_start_write(vma):
            result = S.SCAN_PTE_MAPPED_HUGEPAGE  # trylock, for the lock inversion
        elif cfg.has("khugepaged-retract-locks") and vma.anon_vma is not None:
            # Rechecked under the mmap lock: a fault under the read lock may
            # have given the VMA an anon_vma since the unlocked check, and
            # collapse_and_free_pmd would need it locked too.
            result = S.SCAN_PAGE_ANON
        elif hpage_collapse_test_exit(mm):
            result = S.SCAN_ANY_PROCESS
        elif cfg.has("khugepaged-uffd-wp-keep-pgtable") and userfaultfd_wp(vma):
            result = S.SCAN_PTE_UFFD_WP
        else:
            collapse_and_free_pmd(mm, vma, addr, pmd, mi)
            if madv and not cc.is_khugepaged and is_target and folio is not None:
                result = set_huge_pmd(vma, addr, pmd, mi, folio)
            else:
                result = S.SCAN_SUCCEED
        mmap_write_unlock(mm)
        return result
    if not is_target:
        khugepaged_add_pte_mapped_thp(mm, addr)
    return S.SCAN_PTE_MAPPED_HUGEPAGE


def _retract_one_rcu(mm: MmStruct, vma: VmAreaStruct, addr: int) -> ScanResult:
    """One VMA of ``retract_page_tables`` since 6.6 (``i_mmap_rwsem`` held
    for read)."""
    result, pmd, mi = find_pmd_or_thp_or_none(mm, addr)
    if result != S.SCAN_SUCCEED:
        return result
    assert pmd is not None
    if hpage_collapse_test_exit(mm):
        return S.SCAN_ANY_PROCESS
    cfg = kernel_config(mm)
    keep_uffd = cfg.has("khugepaged-uffd-wp-keep-pgtable")
    if keep_uffd and userfaultfd_wp(vma):
        return S.SCAN_PTE_UFFD_WP
    pml = pmd_lock(mm, pmd)
    # pte_lockptr(mm, pmd): the entry is stable under the PMD lock. (The
    # pmd_same recheck of 6.13's check_pmd_state guards against empty
    # tables reclaimed by MADV_DONTNEED, which the model does not do.)
    pmdval = pmdp_get(pmd, mi)
    if pmd_none(pmdval) or pmd_trans_huge(pmdval):
        ptl_unlock(pml)
        return S.SCAN_FAIL
    table = table_of(pmdval)
    ptl = pte_lockptr(mm, table)
    if ptl is not pml:
        ptl_lock(ptl, nested=True)
    # Rechecked under the locks: without the mmap lock a racing
    # userfaultfd_ioctl may have registered the VMA and installed markers,
    # or a fault given it an anon_vma, since the checks above.
    skipped = cfg.has("retract-ptl-recheck") and (
        vma.anon_vma is not None or (keep_uffd and userfaultfd_wp(vma)))
    if not skipped:
        pmdp_collapse_flush(vma, addr, pmd, mi)
        check_retract_free(pmd, mi, table, True)
    if ptl is not pml:
        ptl_unlock(ptl)
    ptl_unlock(pml)
    if skipped:
        return S.SCAN_PTE_UFFD_WP
    table.installed = False
    mm_dec_nr_ptes(mm)
    pte_free_defer(mm, table)
    return S.SCAN_SUCCEED


# --- collapse_file (shmem) ----------------------------------------------------------------------


def _xas_lookup_lock(mapping: Any, index: int, end: int) -> tuple[list[int], str,
                                                                  Folio | None]:
    """One xarray-locked stretch of ``collapse_file``'s scan, from *index*:
    the holes met (the kernel keeps ``xas_lock_irq`` across them) up to the
    next folio, which is trylocked and referenced (``folio_trylock`` +
    ``folio_get`` before ``xas_unlock_irq``) -- one visible RMW of the
    mapping and that folio. Returns the holes and ``("end", None)`` (no
    folio before *end*), ``("locked", folio)`` (trylock failed) or
    ``("ok", folio)``."""
    while True:
        present = [i for i in mapping.i_pages if index <= i < end]
        nxt = min(present) if present else end
        peek: Folio | None = mapping.i_pages.get(nxt) if present else None
        also = ((peek, RMW),) if peek is not None else ()
        ev = visible(mapping, RMW, f"xas_load({index:#x}..{nxt:#x})", also=also)
        now = [i for i in mapping.i_pages if index <= i < end]
        if (min(now) if now else end) != nxt or mapping.i_pages.get(nxt) is not peek:
            continue  # the cache changed since the peek: look again
        holes = list(range(index, nxt))
        if peek is None:
            return holes, "end", None
        if ev is not None:
            ev.detail = f"{len(holes)} holes, then {peek.name}"
        peek.check_alive("folio_trylock")
        if peek.locked:
            return holes, "locked", peek
        peek.locked = True
        peek._refcount += 1
        return holes, "ok", peek


@kfunc
def collapse_file(mm: MmStruct, addr: int, file: ShmemFile, start: int,
                  cc: CollapseControl) -> ScanResult:
    """``collapse_file`` for shmem: allocate a new locked PMD-sized folio;
    lock, isolate and unmap (``try_to_unmap``) the small folios of indices
    ``[start, start + 512)``, each of which must then be held by nobody but
    the page cache, its isolation and us (a GUP pin makes it
    SCAN_PAGE_COUNT); copy them (holes stay zero); then, under the xarray
    lock (and ``i_mmap_rwsem`` for read, if there were holes: a VMA with a
    userfaultfd MISSING registration must see its missing pages), check
    that no hole was filled meanwhile and store the new folio at all 512
    indices; retract the page tables; free the old folios. On failure,
    everything is put back."""
    mapping = file.f_mapping
    end = start + HPAGE_PMD_NR
    new = folio_alloc(HPAGE_PMD_ORDER, f"{mapping.name}[{start:#x}+512]")
    new.locked = True  # __folio_set_locked: private until stored
    new.swapbacked = True
    new.index = start
    new.mapping = mapping
    pagelist: list[Folio] = []
    holes: list[int] = []
    result = S.SCAN_SUCCEED
    if not any(start <= i < end for i in mapping.i_pages):
        visible(mapping, READ, f"xas_next_entry({start:#x})")
        result = S.SCAN_TRUNCATED
    index = start
    while result == S.SCAN_SUCCEED and index < end:
        skipped, what, folio = _xas_lookup_lock(mapping, index, end)
        holes.extend(skipped)
        if what == "end":
            break
        assert folio is not None
        if what == "locked":
            result = S.SCAN_PAGE_LOCK
            break
        result = _collapse_file_take(mapping, folio, start)
        if result != S.SCAN_SUCCEED:
            folio_unlock(folio)
            folio_put(folio)
            break
        pagelist.append(folio)
        index = folio.index + 1
    if result == S.SCAN_SUCCEED:
        # The copy reads each old folio, locked, unmapped and off the LRU:
        # one operation for all of them, as __collapse_huge_page_copy's.
        if _batched() and pagelist:
            _contents_read_op(pagelist, "copy_mc_highpage (read)")
        for old in pagelist:
            if not _batched():
                visible_contents(old, READ, "copy_mc_highpage (read)")
            new.contents.words[old.index - start] = dict(old.contents.words[0])
        if holes:
            i_mmap_lock_read(mapping)
        result = _collapse_file_store(mapping, new, start, pagelist, holes)
        if holes:
            i_mmap_unlock_read(mapping)
    if result != S.SCAN_SUCCEED:
        for old in pagelist:
            folio_unlock(old)
            folio_putback_lru(old)
            folio_put(old)
        new.mapping = None
        new.locked = False
        folio_put(new)
        return result
    retract_page_tables(mapping, start, cc, mm, addr, new)
    result = S.SCAN_SUCCEED if cc.is_khugepaged else S.SCAN_PTE_MAPPED_HUGEPAGE
    folio_unlock(new)
    if _batched() and pagelist:
        _collapse_file_release(pagelist)
        return result
    for old in pagelist:
        old.access(RMW, "folio->mapping = NULL, folio_clear_active")
        old.mapping = None
        old.active = False
        folio_unlock(old)
        folio_put_refs(old, 3)
    return result


def _collapse_file_release(pagelist: list[Folio]) -> None:
    """The end of a successful ``collapse_file``: each old folio's mapping
    cleared, PG_active cleared, unlocked, and its three references (the
    page cache's, the isolation's, ours) put -- freeing it unless someone
    else holds one -- all in one visible operation (an RMW of each folio,
    and the poisoning write of each one's data).

    Why no thread can tell: the old folios are out of the page cache (the
    new folio replaced them under the xarray lock), unmapped everywhere,
    off the LRU and locked. A thread can only hold one through a reference
    it took before the replacement: a page-cache lookup or a truncation
    waiting for its lock, which then finds it truncated (``mapping`` NULL)
    and lets it go. Each such thread waits on, and then acts on, one folio
    at a time, and what it does depends only on that folio: its step on
    folio j lands before or after the batch with the effect it has before
    or after the collapse's step on j. A thread that found one folio
    released and another not yet would, in the kernel, block on the
    second's lock until the collapse's step on it -- where the batch puts
    it at once."""
    extra = tuple(a for f in pagelist for a in folio_free_footprint(f)[1:])
    _folios_op(pagelist, RMW, "folio->mapping = NULL, folio_clear_active, folio_unlock, "
               "folio_put_refs(3)", extra)
    for old in pagelist:
        old.mapping = None
        old.active = False
        folio_unlock_in_op(old)
        folio_put_refs_in_op(old, 3)


def _collapse_file_take(mapping: Any, folio: Folio, start: int) -> ScanResult:
    """The per-folio part of ``collapse_file``'s scan (the folio locked and
    referenced): up to date, small (a PMD-sized folio at *start* means it
    is only mapped by PTEs: SCAN_PTE_MAPPED_HUGEPAGE), still in *mapping*,
    isolated from the LRU, unmapped everywhere, and then held by nobody
    but the cache, its isolation and us."""
    if not folio.uptodate:
        return S.SCAN_FAIL
    if folio.order:
        return (S.SCAN_PTE_MAPPED_HUGEPAGE
                if folio.order == HPAGE_PMD_ORDER and folio.index == start
                else S.SCAN_PAGE_COMPOUND)
    if folio.mapping is not mapping:
        return S.SCAN_TRUNCATED
    # Batched: the isolation is part of the lookup's operation, which
    # already made an RMW of this folio -- the checks between read fields
    # the folio lock keeps stable, and a thread acting on the folio in
    # between (isolating it, referencing it, waiting for its lock) does
    # not look at the lock or the reference just taken, so it has the
    # same effect before the lookup as after it.
    if not (folio_isolate_lru_in_op(folio) if _batched() else folio_isolate_lru(folio)):
        return S.SCAN_DEL_PAGE_LRU
    mapped = bool(folio._mapcount)  # folio_mapped: the lock keeps new mappings out
    if mapped:
        try_to_unmap(folio, TTU_IGNORE_MLOCK | TTU_BATCH_FLUSH)
    # Batched, an unmapped folio's refcount check under the xarray lock is
    # part of the lookup's operation too (it covers the mapping and the
    # folio): in between the collapse only reads fields the folio lock
    # keeps stable, and a reference or an xarray change made there by
    # another thread has the same effect made before the lookup. With an
    # rmap walk in between, the check stays an operation of its own.
    if mapped or not _batched():
        visible(mapping, RMW, "xas_lock, folio_ref_count", also=((folio, READ),))
    if folio._refcount != 3:
        folio_putback_lru(folio)
        return S.SCAN_PAGE_COUNT
    return S.SCAN_SUCCEED


def _collapse_file_store(mapping: Any, new: Folio, start: int, pagelist: list[Folio],
                         holes: list[int]) -> ScanResult:
    """The xarray-locked end of ``collapse_file``, one visible RMW of the
    mapping: the holes still empty (else SCAN_PAGE_FILLED), no VMA with a
    userfaultfd MISSING registration over them (SCAN_EXCEED_NONE_PTE), then
    the new folio -- up to date, dirty, its 512 page-cache references --
    stored at every index (``xas_store`` of the multi-index entry)."""
    ev = visible(mapping, RMW, "xas_lock: check the holes, xas_store(new folio)")
    for i in holes:
        if mapping.i_pages.get(i) is not None:
            return S.SCAN_PAGE_FILLED
    if holes:
        for _, vma in sorted(mapping.i_mmap.items()):
            if vma.vm_flags & VM_UFFD_MISSING:
                return S.SCAN_EXCEED_NONE_PTE
    for old in pagelist:
        if mapping.i_pages.get(old.index) is not old:
            return S.SCAN_FAIL
    new.uptodate = True
    new.dirty = True
    new._refcount += HPAGE_PMD_NR - 1
    for i in range(start, start + HPAGE_PMD_NR):
        mapping.i_pages[i] = new
    if ev is not None:
        ev.detail = f"{new.name} at {start:#x}..{start + HPAGE_PMD_NR - 1:#x}"
    return S.SCAN_SUCCEED


@kfunc
def hpage_collapse_scan_file(mm: MmStruct, addr: int, file: ShmemFile, start: int,
                             cc: CollapseControl) -> ScanResult:
    """``hpage_collapse_scan_file``: under RCU, look at the page cache of
    the 512 indices (one visible read of the mapping; one of each folio: on
    the LRU, held only by the cache and its mappings); a PMD-sized folio
    there already means a PTE-mapped THP (SCAN_PTE_MAPPED_HUGEPAGE, since
    the MADV_COLLAPSE series of 6.1; SCAN_PAGE_COMPOUND before). For
    khugepaged at least ``512 - max_ptes_none`` pages must be present.
    Then ``collapse_file``."""
    mapping = file.f_mapping
    visible(mapping, READ, f"xas_for_each({start:#x})")
    present = 0
    result = S.SCAN_SUCCEED
    entries: dict[int, Folio] = {}
    if _batched():
        # As hpage_collapse_scan_pmd's: a hint that changes nothing, taken
        # under RCU alone (collapse_file locks and checks each folio again),
        # so one read of the small folios up to the first large one stands
        # for the look at each in turn.
        # The entries are those the xarray walk read, before this look.
        small: list[Folio] = []
        for i in range(start, start + HPAGE_PMD_NR):
            f: Folio | None = mapping.i_pages.get(i)
            if f is not None:
                entries[i] = f
            if f is not None and f.order:
                break
            if f is not None:
                small.append(f)
        if small:
            _folios_op(_distinct(small), READ, "folio_test_lru, folio_ref_count",
                       speculative=True)
    seen: set[int] = set()
    for i in range(start, start + HPAGE_PMD_NR):
        folio: Folio | None = entries.get(i) if _batched() else mapping.i_pages.get(i)
        if folio is None or folio.serial in seen:
            continue
        seen.add(folio.serial)
        if folio.order:
            # Recognised since the MADV_COLLAPSE series (6.1); 6.6's
            # retraction builds on it, so it implies it.
            cfg = kernel_config(mm)
            pte_mapped = (folio.order == HPAGE_PMD_ORDER and folio.index == start
                          and (cfg.has("madv-collapse") or cfg.has("retract-pgtable-rcu")))
            result = S.SCAN_PTE_MAPPED_HUGEPAGE if pte_mapped else S.SCAN_PAGE_COMPOUND
            break
        if not _batched():
            visible(folio, READ, "folio_test_lru, folio_ref_count")
        # Under RCU alone: the folio may have been truncated and freed since
        # the xarray was read -- a freed folio is on no LRU list.
        if folio.isolated or folio.freed_at is not None:
            result = S.SCAN_PAGE_LRU
            break
        if folio._refcount != 1 + folio._mapcount:
            result = S.SCAN_PAGE_COUNT
            break
        present += 1
    if result == S.SCAN_SUCCEED:
        st = khugepaged_settings()
        if cc.is_khugepaged and present < HPAGE_PMD_NR - st.max_ptes_none:
            result = S.SCAN_EXCEED_NONE_PTE
        else:
            result = collapse_file(mm, addr, file, start, cc)
    return result


# --- khugepaged ---------------------------------------------------------------------------------

KHUGEPAGED = CollapseControl(True)
"""``khugepaged_collapse_control``."""


@kfunc
def khugepaged_scan_mm_slot(mm: MmStruct, address: int) -> ScanResult:
    """One pass of khugepaged (``khugepaged_scan_mm_slot``) over the
    PMD-aligned 2 MiB of *mm* at *address*: before 6.6 first the queued
    PTE-mapped THPs (``khugepaged_collapse_pte_mapped_thps``); then, with
    the mmap lock taken for read if it is free (``mmap_read_trylock``), a
    VMA khugepaged may collapse (sysfs and mount settings enforced) that
    covers the aligned range: a shmem file is scanned through its page
    cache (the mmap lock dropped: ``hpage_collapse_scan_file``) -- a
    PTE-mapped THP found there is collapsed under the mmap read lock since
    6.6 (``collapse_pte_mapped_thp``), queued before --, anonymous memory
    through its PTEs (``hpage_collapse_scan_pmd``). An address in no such
    VMA: nothing happens. Returns the result for the range."""
    haddr = address & HPAGE_PMD_MASK
    if not _retract_rcu(mm):
        khugepaged_collapse_pte_mapped_thps(mm)
    if not mmap_read_trylock(mm):
        return S.SCAN_FAIL
    if hpage_collapse_test_exit(mm):
        mmap_read_unlock(mm)
        return S.SCAN_ANY_PROCESS
    vma = find_vma(mm, haddr)
    if (vma is None or vma.vm_start > haddr or haddr + HPAGE_PMD_SIZE > vma.vm_end
            or not hugepage_vma_check(vma, vma.vm_flags, True)):
        mmap_read_unlock(mm)
        return S.SCAN_VMA_CHECK
    file = vma.vm_file
    if file is not None:
        pgoff = linear_page_index(vma, haddr)
        if pgoff % HPAGE_PMD_NR:
            mmap_read_unlock(mm)
            return S.SCAN_ADDRESS_RANGE
        mmap_read_unlock(mm)
        result = hpage_collapse_scan_file(mm, haddr, file, pgoff, KHUGEPAGED)
        if result == S.SCAN_PTE_MAPPED_HUGEPAGE:
            if _retract_rcu(mm):
                mmap_read_lock(mm)
                if not hpage_collapse_test_exit(mm):
                    result = collapse_pte_mapped_thp(mm, haddr, False)
                    if result == S.SCAN_PMD_MAPPED:
                        result = S.SCAN_SUCCEED
                mmap_read_unlock(mm)
            else:
                mmap_read_lock(mm)
                r, _, _ = find_pmd_or_thp_or_none(mm, haddr)
                mmap_read_unlock(mm)
                if r == S.SCAN_SUCCEED:
                    khugepaged_add_pte_mapped_thp(mm, haddr)
        return result
    result, locked = hpage_collapse_scan_pmd(mm, vma, haddr, KHUGEPAGED)
    if locked:
        mmap_read_unlock(mm)
    return result


# --- MADV_COLLAPSE --------------------------------------------------------------------------------


def madvise_collapse_errno(r: ScanResult) -> int:
    """``madvise_collapse_errno``: ENOMEM for an allocation failure, EBUSY
    for a charge failure or too many empty entries, EAGAIN for what a retry
    may get past (a page locked, pinned, off the LRU, a hole filled),
    EINVAL for the rest (the range cannot be collapsed)."""
    if r == S.SCAN_ALLOC_HUGE_PAGE_FAIL:
        return _errno.ENOMEM
    if r in (S.SCAN_CGROUP_CHARGE_FAIL, S.SCAN_EXCEED_NONE_PTE):
        return _errno.EBUSY
    if r in (S.SCAN_PAGE_COUNT, S.SCAN_PAGE_LOCK, S.SCAN_PAGE_LRU, S.SCAN_DEL_PAGE_LRU,
             S.SCAN_PAGE_FILLED):
        return _errno.EAGAIN
    return _errno.EINVAL


_CONTINUE = (S.SCAN_PMD_NULL, S.SCAN_PTE_NON_PRESENT, S.SCAN_PTE_UFFD_WP, S.SCAN_PAGE_RO,
             S.SCAN_LACK_REFERENCED_PAGE, S.SCAN_PAGE_NULL, S.SCAN_PAGE_COUNT,
             S.SCAN_PAGE_LOCK, S.SCAN_PAGE_COMPOUND, S.SCAN_PAGE_LRU, S.SCAN_DEL_PAGE_LRU)


@kfunc
def madvise_collapse(vma: VmAreaStruct, start: int, end: int) -> tuple[int, bool]:
    """``madvise_collapse``: MADV_COLLAPSE of ``[start, end)`` inside *vma*
    (the mmap read lock held on entry, and on return): collapse each
    PMD-aligned 2 MiB in it synchronously with khugepaged's paths but
    without its limits (``is_khugepaged`` false: any number of empty
    entries, no referenced page needed). A shmem collapse leaves a
    PTE-mapped THP, which ``collapse_pte_mapped_thp`` then maps with a huge
    PMD (mmap lock for write before 6.6). Returns (0 or an errno, whether
    the mmap lock was dropped: the caller must look the VMA up again)."""
    mm = vma.vm_mm
    if not hugepage_vma_check(vma, vma.vm_flags, False):
        return _errno.EINVAL, False
    cc = CollapseControl(False)
    hstart = (start + HPAGE_PMD_SIZE - 1) & HPAGE_PMD_MASK
    hend = end & HPAGE_PMD_MASK
    thps = 0
    last_fail = S.SCAN_FAIL
    mmap_locked = True
    dropped = False
    addr = hstart
    cur: VmAreaStruct | None = vma
    while addr < hend:
        if not mmap_locked:
            mmap_read_lock(mm)
            mmap_locked = True
            r, cur = hugepage_vma_revalidate(mm, addr, False, cc)
            if r != S.SCAN_SUCCEED:
                last_fail = r
                break
            assert cur is not None
            hend = min(hend, cur.vm_end & HPAGE_PMD_MASK)
        assert cur is not None
        file = cur.vm_file
        if file is not None:
            pgoff = linear_page_index(cur, addr)
            mmap_read_unlock(mm)
            mmap_locked = False
            dropped = True
            result = hpage_collapse_scan_file(mm, addr, file, pgoff, cc)
        else:
            result, mmap_locked = hpage_collapse_scan_pmd(mm, cur, addr, cc)
            dropped = dropped or not mmap_locked
        if result == S.SCAN_PTE_MAPPED_HUGEPAGE:
            if _retract_rcu(mm):
                mmap_read_lock(mm)
                result = collapse_pte_mapped_thp(mm, addr, True)
                mmap_read_unlock(mm)
            else:
                mmap_write_lock(mm)
                result = collapse_pte_mapped_thp(mm, addr, True)
                mmap_write_unlock(mm)
        if result in (S.SCAN_SUCCEED, S.SCAN_PMD_MAPPED):
            thps += 1
        elif result in _CONTINUE:
            last_fail = result
        else:
            last_fail = result
            break
        addr += HPAGE_PMD_SIZE
    if not mmap_locked:
        mmap_read_lock(mm)
    # (unsigned long arithmetic: a range holding no aligned 2 MiB makes
    # hend < hstart, a huge count, so EINVAL; hend == hstart returns 0)
    if thps == ((hend - hstart) & ((1 << 64) - 1)) >> 21:
        return 0, dropped
    return madvise_collapse_errno(last_fail), dropped


def madvise_collapse_range(mm: MmStruct, start: int, end: int) -> int:
    """``do_madvise(MADV_COLLAPSE)`` (``madvise_walk_vmas`` with
    ``madvise_vma_behavior``): with the mmap lock held for read, collapse
    the part of ``[start, end)`` in each VMA; raises the first error, or
    ENOMEM at the end if the range had a hole. EINVAL before 6.1 (the
    advice did not exist)."""
    if not kernel_config(mm).has("madv-collapse"):
        raise errno_error(_errno.EINVAL, "MADV_COLLAPSE")
    mmap_read_lock(mm)
    try:
        unmapped = False
        addr = start
        while addr < end:
            vma = find_vma(mm, addr)
            if vma is None or vma.vm_start >= end:
                unmapped = True
                break
            if vma.vm_start > addr:
                unmapped = True
                addr = vma.vm_start
            e = min(end, vma.vm_end)
            err, _ = madvise_collapse(vma, addr, e)
            if err:
                raise errno_error(err, "MADV_COLLAPSE")
            addr = e
        if unmapped:
            raise errno_error(_errno.ENOMEM, "MADV_COLLAPSE")
    finally:
        mmap_read_unlock(mm)
    return 0


__all__ = [
    "HPAGE_PMD_NR",
    "CollapseControl",
    "ScanResult",
    "collapse_file",
    "collapse_huge_page",
    "collapse_pte_mapped_thp",
    "hpage_collapse_scan_file",
    "hpage_collapse_scan_pmd",
    "khugepaged_add_pte_mapped_thp",
    "khugepaged_scan_mm_slot",
    "khugepaged_settings",
    "madvise_collapse",
    "madvise_collapse_range",
    "retract_page_tables",
]

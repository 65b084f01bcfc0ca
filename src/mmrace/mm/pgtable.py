"""Page tables: four levels with x86-64 index arithmetic, entries with x86
bit names, split page-table locks, allocation with the kernel's install
pattern, ``pte_offset_map_lock``'s retry protocol, and the page-table
locking rules (include/linux/pgtable.h, include/linux/mm.h,
mm/pgtable-generic.c, mm/memory.c's ``__pte_alloc``/``__pmd_alloc``/
``__pud_alloc``, arch/x86/include/asm/pgtable_types.h).

A page-table page is a :class:`PageTable`: a kernel object with a lifetime
holding 512 entries stored sparsely (index -> int, absent = ``pte_none``).
The *entry* is the unit of visible operation: each touched slot gets its
own small shared object, so operations on different entries are
independent for DPOR. Freeing a table writes every touched slot (and the
table), so each earlier access is ordered against the free and any later
one is a use-after-free.

Entry values are ints laid out as on x86-64: flag bits at the x86 bit
positions, the page frame number from bit 12. Upper-level entries point at
the next table by its pfn (``pmd_page``), leaves at a folio's page.

Locks: PGD/PUD entries are guarded by ``mm->page_table_lock``; each PMD
table and each PTE table has its own split lock (``ptlock``). The rules
(``RULES`` entries ``pte``, ``pmd``, ``pud``, ``pgtables`` of
``mm/rules.py``) are enforced on every entry read and write by
``check_entry_read`` / ``check_entry_write``, which hand them to
``mm/rules_check.py``: no rule is written down here.

Left out: P4D (folded, 4-level paging), 32-bit highmem mapping of PTE
tables (``pte_offset_map`` only takes the RCU read lock), PUD-sized
leaves, swap/migration entries and PTE markers, pkeys, NX, PAT/caching
bits, ``ptdesc`` accounting, ``pte_offset_map_ro_nolock``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.arch import FAULT_NOT_PRESENT, FAULT_PROT, TLB_FLUSH_ALL, TlbEntry, set_page_walker
from mmrace.arch import emit as emit
from mmrace.arch import flush_tlb_mm_range as flush_tlb_mm_range
from mmrace.arch import footprint as tlb_footprint
from mmrace.arch.hooks import has_hooks
from mmrace.engine import READ, RMW, WRITE, SharedObject, ViolationError, visible
from mmrace.mm.internal import held, kernel_config, kfunc
from mmrace.mm.locks import (
    KObject,
    Spinlock,
    call_rcu,
    kfree,
    rcu_read_lock,
    rcu_read_unlock,
    spin_lock,
    spin_unlock,
)
from mmrace.mm.mm_types import PAGE_SHIFT, VM_READ, VM_SHARED, VM_WRITE, MmStruct
from mmrace.mm.page_alloc import alloc_pfns, pfn_to_obj
from mmrace.mm.rules_check import (
    PtAccess,
    check_atomicity,
    check_free_pgtables,
    check_pgtable_read,
    check_pgtable_write,
    check_pte_table_free,
    entry_read_fast,
)
from mmrace.mm.swapops import swap_pte_str
from mmrace.sync import SINGLE_DEPTH_NESTING, spin_lock_nested

# --- x86-64 layout ----------------------------------------------------------------

PTRS_PER_PTE = PTRS_PER_PMD = PTRS_PER_PUD = PTRS_PER_PGD = 512
PMD_SHIFT = 21
PUD_SHIFT = 30
PGDIR_SHIFT = 39
PMD_SIZE = 1 << PMD_SHIFT
PMD_MASK = ~(PMD_SIZE - 1)
PUD_SIZE = 1 << PUD_SHIFT
PUD_MASK = ~(PUD_SIZE - 1)
PGDIR_SIZE = 1 << PGDIR_SHIFT
PGDIR_MASK = ~(PGDIR_SIZE - 1)

LEVEL_PTE, LEVEL_PMD, LEVEL_PUD, LEVEL_PGD = 1, 2, 3, 4
LEVEL_NAMES = {LEVEL_PTE: "pte", LEVEL_PMD: "pmd", LEVEL_PUD: "pud", LEVEL_PGD: "pgd"}
LEVEL_SHIFT = {LEVEL_PTE: PAGE_SHIFT, LEVEL_PMD: PMD_SHIFT, LEVEL_PUD: PUD_SHIFT,
               LEVEL_PGD: PGDIR_SHIFT}

_PAGE_BIT_PRESENT = 0
_PAGE_BIT_RW = 1
_PAGE_BIT_USER = 2
_PAGE_BIT_ACCESSED = 5
_PAGE_BIT_DIRTY = 6
_PAGE_BIT_PSE = 7
_PAGE_BIT_SOFTW1 = 9
_PAGE_BIT_SOFTW2 = 10
_PAGE_BIT_SOFTW3 = 11
_PAGE_BIT_SPECIAL = _PAGE_BIT_SOFTW1
_PAGE_BIT_UFFD_WP = _PAGE_BIT_SOFTW2
_PAGE_BIT_SOFT_DIRTY = _PAGE_BIT_SOFTW3

_PAGE_PRESENT = 1 << _PAGE_BIT_PRESENT
_PAGE_RW = 1 << _PAGE_BIT_RW
_PAGE_USER = 1 << _PAGE_BIT_USER
_PAGE_ACCESSED = 1 << _PAGE_BIT_ACCESSED
_PAGE_DIRTY = 1 << _PAGE_BIT_DIRTY
_PAGE_PSE = 1 << _PAGE_BIT_PSE
_PAGE_SPECIAL = 1 << _PAGE_BIT_SPECIAL
_PAGE_UFFD_WP = 1 << _PAGE_BIT_UFFD_WP
_PAGE_SOFT_DIRTY = 1 << _PAGE_BIT_SOFT_DIRTY
_PFN_MASK = ((1 << 52) - 1) & ~((1 << PAGE_SHIFT) - 1)
_PAGE_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY

_BIT_NAMES = [(_PAGE_PRESENT, "P"), (_PAGE_RW, "W"), (_PAGE_USER, "U"), (_PAGE_ACCESSED, "A"),
              (_PAGE_DIRTY, "D"), (_PAGE_PSE, "PSE"), (_PAGE_SPECIAL, "special"),
              (_PAGE_UFFD_WP, "uffd-wp"), (_PAGE_SOFT_DIRTY, "soft-dirty")]


def pte_str(pte: int) -> str:
    """``pfn 0x1000 P|W|U|A|D`` for traces (``swap 0:0x1`` for a swap or
    migration entry)."""
    if not pte:
        return "none"
    if not pte & (_PAGE_PRESENT | _PAGE_PSE):
        return swap_pte_str(pte)
    bits = "|".join(n for b, n in _BIT_NAMES if pte & b)
    return f"pfn {pte_pfn(pte):#x} {bits}"


class PteText:
    """An entry as an event's detail: rendered by :func:`pte_str` only when
    a trace is printed (the search never reads it)."""

    __slots__ = ("pte",)

    def __init__(self, pte: int) -> None:
        self.pte = pte

    def __str__(self) -> str:
        return pte_str(self.pte)

    __repr__ = __str__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PteText) and other.pte == self.pte

    def __hash__(self) -> int:
        return hash(self.pte)


def pgd_index(addr: int) -> int:
    return (addr >> PGDIR_SHIFT) & (PTRS_PER_PGD - 1)


def pud_index(addr: int) -> int:
    return (addr >> PUD_SHIFT) & (PTRS_PER_PUD - 1)


def pmd_index(addr: int) -> int:
    return (addr >> PMD_SHIFT) & (PTRS_PER_PMD - 1)


def pte_index(addr: int) -> int:
    return (addr >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)


def pfn_pte(pfn: int, prot: int) -> int:
    """``pfn_pte``: a present leaf entry for frame *pfn* with *prot* bits."""
    return (pfn << PAGE_SHIFT) | prot | _PAGE_PRESENT


def pte_pfn(pte: int) -> int:
    return (pte & _PFN_MASK) >> PAGE_SHIFT


def pte_none(pte: int) -> bool:
    return pte == 0


def pte_present(pte: int) -> bool:
    return bool(pte & _PAGE_PRESENT)


def pte_write(pte: int) -> bool:
    return bool(pte & _PAGE_RW)


def pte_dirty(pte: int) -> bool:
    return bool(pte & _PAGE_DIRTY)


def pte_young(pte: int) -> bool:
    return bool(pte & _PAGE_ACCESSED)


def pte_special(pte: int) -> bool:
    return bool(pte & _PAGE_SPECIAL)


def pte_soft_dirty(pte: int) -> bool:
    return bool(pte & _PAGE_SOFT_DIRTY)


def pte_uffd_wp(pte: int) -> bool:
    return bool(pte & _PAGE_UFFD_WP)


def pte_mkwrite(pte: int) -> int:
    return pte | _PAGE_RW


def pte_wrprotect(pte: int) -> int:
    return pte & ~_PAGE_RW


def pte_mkdirty(pte: int) -> int:
    return pte | _PAGE_DIRTY | _PAGE_SOFT_DIRTY


def pte_mkclean(pte: int) -> int:
    return pte & ~_PAGE_DIRTY


def pte_mkyoung(pte: int) -> int:
    return pte | _PAGE_ACCESSED


def pte_mkold(pte: int) -> int:
    return pte & ~_PAGE_ACCESSED


def pte_mkspecial(pte: int) -> int:
    return pte | _PAGE_SPECIAL


def pte_mksoft_dirty(pte: int) -> int:
    return pte | _PAGE_SOFT_DIRTY


def pte_clear_soft_dirty(pte: int) -> int:
    return pte & ~_PAGE_SOFT_DIRTY


def pte_mkuffd_wp(pte: int) -> int:
    return pte_wrprotect(pte) | _PAGE_UFFD_WP


def pte_clear_uffd_wp(pte: int) -> int:
    return pte & ~_PAGE_UFFD_WP


def pte_same(a: int, b: int) -> bool:
    return a == b


def pmd_none(pmd: int) -> bool:
    return pmd == 0


def pmd_present(pmd: int) -> bool:
    """x86 ``pmd_present``: ``_PAGE_PRESENT`` or ``_PAGE_PSE``, so a huge PMD
    made not-present by ``pmdp_invalidate`` (during a split or a change of
    protection) still counts as present and huge for software walkers; the
    MMU faults on it."""
    return bool(pmd & (_PAGE_PRESENT | _PAGE_PSE))


def pmd_trans_huge(pmd: int) -> bool:
    """A PMD leaf (``_PAGE_PSE``): maps a 2 MiB folio (also while
    invalidated, as on x86)."""
    return bool(pmd & _PAGE_PSE)


def pmd_leaf(pmd: int) -> bool:
    return pmd_trans_huge(pmd)


def pmd_mkhuge(pmd: int) -> int:
    return pmd | _PAGE_PSE


# Huge-PMD bits are the PTE bits at the same positions (x86); these name
# them as the kernel's huge_memory.c does.
pmd_pfn = pte_pfn
pmd_write = pte_write
pmd_dirty = pte_dirty
pmd_young = pte_young
pmd_soft_dirty = pte_soft_dirty
pmd_uffd_wp = pte_uffd_wp
pmd_mkwrite = pte_mkwrite
pmd_wrprotect = pte_wrprotect
pmd_mkdirty = pte_mkdirty
pmd_mkclean = pte_mkclean
pmd_mkyoung = pte_mkyoung
pmd_mkold = pte_mkold
pmd_mkuffd_wp = pte_mkuffd_wp
pmd_clear_uffd_wp = pte_clear_uffd_wp
pmd_clear_soft_dirty = pte_clear_soft_dirty
pmd_mksoft_dirty = pte_mksoft_dirty


def mk_huge_pmd(pfn: int, prot: int) -> int:
    """``mk_huge_pmd``: a present PMD leaf mapping the 2 MiB folio at *pfn*."""
    return pmd_mkhuge(pfn_pte(pfn, prot))


def pmd_mkinvalid(pmd: int) -> int:
    """``pmd_mkinvalid``: clear ``_PAGE_PRESENT`` (x86 also clears
    PROTNONE); ``_PAGE_PSE`` stays, so the entry is still ``pmd_trans_huge``."""
    return pmd & ~_PAGE_PRESENT


def pmd_hw_present(pmd: int) -> bool:
    """Whether the MMU would use the entry (``_PAGE_PRESENT`` set)."""
    return bool(pmd & _PAGE_PRESENT)


def pte_access_permitted(pte: int, write: bool) -> bool:
    """x86 ``pte_access_permitted`` / ``pmd_access_permitted``: present,
    user-accessible and, for a write, writable (so GUP-fast refuses
    PROT_NONE mappings, as the MMU does)."""
    return bool(pte & _PAGE_PRESENT) and bool(pte & _PAGE_USER) and (
        not write or bool(pte & _PAGE_RW))


def pmd_same(a: int, b: int) -> bool:
    return a == b


def pud_none(pud: int) -> bool:
    return pud == 0


def pgd_none(pgd: int) -> bool:
    return pgd == 0


def vm_prot_to_pte(vm_page_prot: int) -> int:
    """The model's ``vm_page_prot`` is the protection_map index (VM_READ|
    VM_WRITE|VM_EXEC|VM_SHARED); this is what ``mk_pte`` puts in the entry.
    Private writable mappings start write-protected (``__P`` entries of
    protection_map): COW makes them writable on a write fault."""
    prot = _PAGE_USER
    if vm_page_prot & VM_WRITE and vm_page_prot & VM_SHARED:
        prot |= _PAGE_RW
    if not vm_page_prot & (VM_READ | VM_WRITE):
        prot &= ~_PAGE_USER  # PROT_NONE (the model has no NUMA-hinting bits)
    return prot


# --- page-table pages ----------------------------------------------------------------------


class PteSlot(SharedObject):
    """The footprint of one entry of one page-table page."""

    __slots__ = ("table", "index")

    def __init__(self, table: PageTable, index: int) -> None:
        super().__init__(f"{table.name}[{index}]")
        self.table = table
        self.index = index


class PageTable(KObject):
    """One page-table page (``struct ptdesc`` plus its 512 entries).

    ``base`` is the first virtual address the table maps; ``ptl`` is its
    split lock for PMD and PTE tables (None above: those use
    ``mm->page_table_lock``); ``installed`` says whether an entry of the
    level above points to it (a table being built is private to its
    builder)."""

    def __init__(self, mm: MmStruct, level: int, base: int) -> None:
        name = f"{mm.name}.{LEVEL_NAMES[level]}@{base:#x}"
        super().__init__(name)
        self.mm = mm
        self.level = level
        self.base = base
        self.entries: dict[int, int] = {}
        self.slots: dict[int, PteSlot] = {}
        self.installed = False
        # PMD tables: the PTE table deposited for each huge PMD
        # (pgtable_trans_huge_deposit), touched only under this table's lock.
        self.deposited: dict[int, PageTable] = {}
        self.pfn = alloc_pfns(self, 1)
        key = "ptlock" if level == LEVEL_PTE else "pmd_ptlock"
        self.ptl: Spinlock | None = (
            Spinlock(f"{name}.ptl", key) if level in (LEVEL_PTE, LEVEL_PMD) else None
        )

    def slot(self, index: int) -> PteSlot:
        s = self.slots.get(index)
        if s is None:
            s = self.slots[index] = PteSlot(self, index)
        return s

    def addr_of(self, index: int) -> int:
        return self.base + (index << LEVEL_SHIFT[self.level])

    def __repr__(self) -> str:
        return self.name


def _entry(table: PageTable, index: int, kind: int, label: str) -> Any:
    """One visible operation on an entry; a use-after-free if the table is freed."""
    ev = visible(table.slot(index), kind, label)
    if table.freed_at is not None:
        raise table._uaf(f"{label} [{index}]")
    return ev


def table_of(entry: int) -> PageTable:
    """``pmd_page`` / ``pud_pgtable``: the table an upper entry points to."""
    obj = pfn_to_obj(pte_pfn(entry))
    assert isinstance(obj, PageTable)
    return obj


@kfunc
def pte_alloc_one(mm: MmStruct, level: int, base: int) -> PageTable:
    """``pte_alloc_one`` / ``pmd_alloc_one`` / ``pud_alloc_one``: a new, empty
    table (private to the caller until installed; not a visible operation)."""
    return PageTable(mm, level, base)


def _free_table_now(table: PageTable) -> None:
    # One visible write of every entry ever touched (so each earlier access
    # of an entry is ordered against the free), then the free itself.
    idxs = sorted(table.slots)
    if idxs:
        visible(table.slots[idxs[0]], WRITE, "free page table",
                also=tuple((table.slots[i], WRITE) for i in idxs[1:]))
    kfree(table)  # its frame stays in the memory map: a stale pfn is a use-after-free


@kfunc
def pte_free(mm: MmStruct, table: PageTable) -> None:
    """``pte_free``: free a table nobody can reach (a lost install race)."""
    _free_table_now(table)


@kfunc
def pte_free_defer(mm: MmStruct, table: PageTable) -> None:
    """``pte_free_defer`` / ``tlb_remove_table`` with RCU table freeing: the
    table is freed after a grace period, so lockless walkers under RCU may
    still read it (and must revalidate under its lock)."""
    call_rcu(table, _free_table_now)


def pgd_alloc(mm: MmStruct) -> PageTable:
    """``pgd_alloc``: the mm's top-level table."""
    pgd = PageTable(mm, LEVEL_PGD, 0)
    pgd.installed = True
    return pgd


def mm_pgd(mm: MmStruct) -> PageTable:
    """``mm->pgd``, allocated with the mm (lazily in the model)."""
    pgd: PageTable | None = getattr(mm, "pgd", None)
    if pgd is None:
        pgd = pgd_alloc(mm)
        mm.pgd = pgd
    return pgd


# --- locks ----------------------------------------------------------------------------------


def _took_spin(lock: Spinlock) -> None:
    h = held()
    h.spin[lock.serial] = lock


@kfunc
def ptl_lock(lock: Spinlock, nested: bool = False) -> None:
    """``spin_lock(ptl)`` (``spin_lock_nested`` for fork's second PTL),
    recorded for the rule checker."""
    if nested:
        spin_lock_nested(lock, SINGLE_DEPTH_NESTING)
    else:
        spin_lock(lock)
    _took_spin(lock)


@kfunc
def ptl_unlock(lock: Spinlock) -> None:
    """``spin_unlock(ptl)``."""
    held().spin.pop(lock.serial, None)
    spin_unlock(lock)


def pte_lockptr(mm: MmStruct, table: PageTable) -> Spinlock:
    """``pte_lockptr`` / ``pmd_lockptr`` / ``&mm->page_table_lock``."""
    return table.ptl if table.ptl is not None else mm.page_table_lock


@kfunc
def pmd_lock(mm: MmStruct, pmd_table: PageTable) -> Spinlock:
    """``pmd_lock``: take the split lock of the PMD table."""
    ptl = pte_lockptr(mm, pmd_table)
    ptl_lock(ptl)
    return ptl


def holds(lock: Spinlock | None) -> bool:
    return lock is not None and lock.serial in held().spin


# --- the page-table rules --------------------------------------------------------------


_KIND = {LEVEL_PTE: "pte", LEVEL_PMD: "pmd", LEVEL_PUD: "pud", LEVEL_PGD: "pud"}


def _access(table: PageTable, index: int, old: int, vma: Any = None) -> PtAccess:
    lo = table.addr_of(index)
    child = None
    if table.level != LEVEL_PTE and pte_present(old) and not (
            table.level == LEVEL_PMD and pmd_trans_huge(old)):
        child = table_of(old).ptl
    return PtAccess(_KIND[table.level], table.mm, lo, lo + (1 << LEVEL_SHIFT[table.level]),
                    table.ptl if table.level <= LEVEL_PMD else None, child, vma)


def _points_to_table(table: PageTable, entry: int) -> bool:
    return table.level != LEVEL_PTE and pte_present(entry) and not (
        table.level == LEVEL_PMD and pmd_trans_huge(entry))


def check_entry_write(table: PageTable, index: int, old: int, new: int, *,
                      plain: bool = False, vma: Any = None) -> None:
    """The ``pte`` / ``pmd`` / ``pud`` rules of ``mm/rules.py`` for one entry
    write (``mm/rules_check.py`` judges it by the mm's kernel): filling an
    empty entry (``fill``), changing a present leaf (``change``) or an entry
    that points to a page table (``table``). A table nobody can reach yet
    (being built) is written freely. *plain*: the write is a plain store
    (``set_pte_at``), which must not drop an accessed or dirty bit the entry
    has (the hardware sets them concurrently: only an atomic RMW may clear
    them). *vma*: the VMA whose tables free_pgtables is tearing down."""
    if not table.installed or old == new:
        return
    if old == 0:
        cond = "fill"
    elif _points_to_table(table, old):
        cond = "table"
    else:
        cond = "change"
    check_pgtable_write(_access(table, index, old, vma), cond, table, index)
    if plain and cond == "change" and pte_present(old):
        lost = old & (_PAGE_ACCESSED | _PAGE_DIRTY) & ~new
        if lost:
            check_atomicity(table.mm, f"{table.name}[{index}]", pte_str(old), pte_str(new))


def check_entry_read(table: PageTable, index: int) -> None:
    """The read column of the ``pte`` / ``pmd`` / ``pud`` rules: a lock that
    keeps the VMA stable, or RCU (since 6.5). Cached per table against the
    thread's lock record. Reads outside simulated threads (set-up, final
    checks) are not checked: nothing runs concurrently with them."""
    if not table.installed:
        return
    h = held()
    if h.setup or entry_read_fast(table, index, _KIND[table.level], h):
        return
    key = -((table.serial << 9) | index) - 1
    if h.cache.get(key) == h.version:
        return
    check_pgtable_read(_access(table, index, 0), key, table, index)


def check_retract_free(pmd: PageTable, index: int, table: PageTable, deferred: bool) -> None:
    """The ``pgtables`` rule's ``retract`` alternatives, for freeing a PTE
    table that was unlinked from PMD entry *index* of *pmd* outside
    free_pgtables (khugepaged retraction): before 6.6 with every high-level
    lock held; since 6.6 under the PMD and PTE locks, freed by RCU
    (*deferred*: ``pte_free_defer``). Call it before ``pte_free`` /
    ``pte_free_defer``, with the locks still held."""
    lo = pmd.addr_of(index)
    acc = PtAccess("pmd", pmd.mm, lo, lo + (1 << LEVEL_SHIFT[LEVEL_PMD]), pmd.ptl, table.ptl)
    check_pte_table_free(acc, deferred)


# --- entry accessors ---------------------------------------------------------------------


def ptep_get(table: PageTable, index: int) -> int:
    """``ptep_get`` / ``pmdp_get`` / ``READ_ONCE(*pudp)``: one visible read,
    checked against the rule's read column (``check_entry_read``)."""
    check_entry_read(table, index)
    ev = _entry(table, index, READ, f"{LEVEL_NAMES[table.level]}p_get")
    v = table.entries.get(index, 0)
    if ev is not None:
        ev.detail = PteText(v)
    return v


def ptep_get_stable_bits(table: PageTable, index: int) -> int:
    """A re-read of a PTE whose PTL this thread holds, for bits that only
    software changes (the uffd-wp, soft-dirty, present and pfn bits; not
    accessed/dirty): not a visible operation. Every software write of a PTE
    needs its PTL (the rule table; ``check_entry_write`` reports one that does not;
    with the checker off this is a plain ``ptep_get``), and the hardware
    walker's atomic updates touch only the accessed and dirty bits, so no
    other thread can change the bits the caller uses while it holds the
    lock: the read races with nothing and needs no scheduling point.
    Callers must not use the A/D bits of the result (those can change under
    the PTL: use ``ptep_get``)."""
    ptl = table.ptl
    h = held()
    assert ptl is not None and ptl.serial in h.spin, "PTL not held"
    if h.rules_off:
        return ptep_get(table, index)
    if table.freed_at is not None:
        raise table._uaf(f"pte re-read [{index}]")
    return table.entries.get(index, 0)


def ptes_get_locked(table: PageTable, start: int, nr: int, label: str) -> dict[int, int]:
    """Entries ``[start, start + nr)`` of a PTE table whose lock this thread
    holds (a scan of 512 PTEs: khugepaged, ``collapse_pte_mapped_thp``), as
    ``{index: value}`` for those not none, in **one** visible read whose
    footprint is every entry of the range ever written. Under the PTL no
    software writer can interleave with the scan (every PTE write needs
    this lock; the rule checker reports one that does not), and the MMU
    only sets the accessed and dirty bits of present entries -- so reading
    the entries one by one or at once differs only in which A/D bits are
    seen, and the scan's callers use those as a hint or not at all. An
    entry never written is none, and filling it needs the lock held here:
    it is not in the footprint. No entry written: no operation."""
    ptl = table.ptl
    assert ptl is not None and ptl.serial in held().spin, "PTL not held"
    idxs = [i for i in range(start, start + nr) if i in table.slots or i in table.entries]
    if idxs:
        check_entry_read(table, idxs[0])
        first = table.slot(idxs[0])
        ev = visible(first, READ, label, also=tuple((table.slot(i), READ) for i in idxs[1:]))
        if table.freed_at is not None:
            raise table._uaf(f"{label} [{idxs[0]}..]")
        if ev is not None:
            ev.detail = f"{len(idxs)} entries of {table.name}"
    return {i: v for i in idxs if (v := table.entries.get(i, 0))}


def ptes_clear_locked(mm: MmStruct, table: PageTable, idxs: list[int], label: str) -> None:
    """``ptep_clear`` of each of *idxs* (PTL held), in one visible RMW of
    all of them: as in :func:`ptes_get_locked`, nothing but the MMU's
    accessed/dirty updates can interleave under the lock, and a clear
    discards those bits anyway. Each write is checked against the rules."""
    if not idxs:
        return
    ptl = table.ptl
    assert ptl is not None and ptl.serial in held().spin, "PTL not held"
    first = table.slot(idxs[0])
    ev = visible(first, RMW, label, also=tuple((table.slot(i), RMW) for i in idxs[1:]))
    if table.freed_at is not None:
        raise table._uaf(f"{label} [{idxs[0]}..]")
    for i in idxs:
        check_entry_write(table, i, table.entries.get(i, 0), 0)
        _store(table, i, 0)
    if ev is not None:
        ev.detail = f"{len(idxs)} entries of {table.name} cleared"


ptep_get_lockless = ptep_get
pmdp_get = ptep_get
pmdp_get_lockless = ptep_get
pudp_get = ptep_get
pgdp_get = ptep_get


def _store(table: PageTable, index: int, value: int) -> None:
    if value:
        table.entries[index] = value
    else:
        table.entries.pop(index, None)


def set_pte_at(mm: MmStruct, addr: int, table: PageTable, index: int, pte: int) -> None:
    """``set_pte_at`` / ``set_ptes`` (one) / ``set_pmd_at``: one visible write."""
    ev = _entry(table, index, WRITE, f"set_{LEVEL_NAMES[table.level]}")
    old = table.entries.get(index, 0)
    check_entry_write(table, index, old, pte, plain=True)
    _store(table, index, pte)
    if ev is not None:
        ev.detail = PteText(pte)


set_pmd_at = set_pte_at


def set_pte_at_cleared(mm: MmStruct, addr: int, table: PageTable, index: int, pte: int,
                       cleared: int) -> None:
    """``set_pte_at`` of an entry that this thread cleared (``ptep_clear_flush``)
    under the PTL it still holds -- the rmap actors' replacement of a PTE by
    a swap or migration entry, or putting it back. Nobody could see the
    entry empty, so the rules judge it as a change of *cleared*, not as
    filling an empty entry (which would need the mmap or VMA lock)."""
    ev = _entry(table, index, WRITE, "set_pte")
    old = table.entries.get(index, 0)
    assert old == 0 and holds(table.ptl), "set_pte_at_cleared: the entry was not cleared here"
    check_entry_write(table, index, cleared, pte)
    _store(table, index, pte)
    if ev is not None:
        ev.detail = PteText(pte)


def pte_clear(mm: MmStruct, addr: int, table: PageTable, index: int) -> None:
    """``pte_clear`` / ``pmd_clear``: one visible write."""
    set_pte_at(mm, addr, table, index, 0)


def _update_entry(table: PageTable, index: int, kind: int, label: str,
                  update: Callable[[int], int], show_old: bool = False) -> int:
    """One visible update of an entry -- an atomic exchange or locked
    read-modify-write (*kind* RMW), or a store (WRITE) -- to *update*(old),
    checked by the page-table rules. Returns the old entry; the trace shows
    the new one, or the old one with *show_old*."""
    ev = _entry(table, index, kind, label)
    old = table.entries.get(index, 0)
    new = update(old)
    check_entry_write(table, index, old, new)
    _store(table, index, new)
    if ev is not None:
        ev.detail = PteText(old if show_old else new)
    return old


def _none(_old: int) -> int:
    return 0


def ptep_get_and_clear(mm: MmStruct, addr: int, table: PageTable, index: int) -> int:
    """``ptep_get_and_clear``: an atomic exchange (hardware may set A/D
    concurrently), one visible RMW."""
    return _update_entry(table, index, RMW, f"{LEVEL_NAMES[table.level]}p_get_and_clear",
                         _none, show_old=True)


pmdp_huge_get_and_clear = ptep_get_and_clear


def ptep_set_wrprotect(mm: MmStruct, addr: int, table: PageTable, index: int) -> None:
    """``ptep_set_wrprotect``: an atomic clear of ``_PAGE_RW``."""
    _update_entry(table, index, RMW, "ptep_set_wrprotect", pte_wrprotect)


def pte_modify(pte: int, newprot: int) -> int:
    """``pte_modify``: keep the frame and the bits of ``_PAGE_CHG_MASK``
    (accessed, dirty, soft-dirty, uffd-wp, special), take the protection
    bits (RW, USER) from *newprot* (a ``vm_prot_to_pte`` value)."""
    keep = pte & ~(_PAGE_RW | _PAGE_USER)
    return keep | (newprot & (_PAGE_RW | _PAGE_USER)) | _PAGE_PRESENT


def ptep_modify_prot_start(vma: Any, addr: int, table: PageTable, index: int) -> int:
    """``ptep_modify_prot_start`` (x86: ``ptep_get_and_clear``): atomically
    fetch and clear the entry, so a concurrent hardware A/D update cannot be
    lost between the read and ``ptep_modify_prot_commit``. One visible RMW;
    the entry is none until the commit (the PTL is held)."""
    return _update_entry(table, index, RMW, "ptep_modify_prot_start", _none, show_old=True)


def ptep_modify_prot_commit(vma: Any, addr: int, table: PageTable, index: int, old: int,
                            pte: int) -> None:
    """``ptep_modify_prot_commit``: install the modified entry (``set_pte_at``)."""
    _update_entry(table, index, WRITE, "ptep_modify_prot_commit", lambda _cur: pte)


def ptep_set_access_flags(vma: Any, addr: int, table: PageTable, index: int, entry: int,
                          dirty: bool) -> bool:
    """``ptep_set_access_flags`` as x86 has it: under the PTL, a read of the
    entry and, only if it differs from *entry* (same page, more permissive
    bits) and the fault is a write (*dirty*), a store (``set_pte``); returns
    whether it differs. Two visible operations when it stores, one read
    otherwise (a read commutes with the hardware walker's and other readers'
    reads). Without *dirty* x86 leaves the accessed bit to the walker: a
    store could overwrite a dirty bit the walker set in between."""
    ev = _entry(table, index, READ, "ptep_set_access_flags")
    old = table.entries.get(index, 0)
    changed = old != entry
    if ev is not None:
        ev.detail = PteText(old)
    if not (changed and dirty):
        return changed
    ev = _entry(table, index, WRITE, "ptep_set_access_flags: set_pte")
    old = table.entries.get(index, 0)
    check_entry_write(table, index, old, entry)
    _store(table, index, entry)
    if ev is not None:
        ev.detail = PteText(entry)
    return True


def ptep_test_and_clear_young(vma: Any, addr: int, table: PageTable, index: int) -> bool:
    """``ptep_test_and_clear_young``: an atomic clear of the accessed bit."""
    ev = _entry(table, index, RMW, "ptep_test_and_clear_young")
    old = table.entries.get(index, 0)
    if ev is not None:
        ev.detail = PteText(old)
    if not pte_young(old):
        return False
    new = pte_mkold(old)
    check_entry_write(table, index, old, new)
    _store(table, index, new)
    return True


# --- TLB flushes (arch/x86/include/asm/tlbflush.h) --------------------------------------


@kfunc
def flush_tlb_page(vma: Any, addr: int) -> None:
    """``flush_tlb_page``: ``flush_tlb_mm_range(vma->vm_mm, addr, addr +
    PAGE_SIZE, PAGE_SHIFT, false)`` -- the local CPU inline, one IPI (a
    visible operation) per other CPU in ``mm_cpumask``; returns after all."""
    a = addr & ~((1 << PAGE_SHIFT) - 1)
    flush_tlb_mm_range(vma.raw("vm_mm"), a, a + (1 << PAGE_SHIFT), PAGE_SHIFT, False)


@kfunc
def flush_tlb_range(vma: Any, start: int, end: int) -> None:
    """``flush_tlb_range``: ``flush_tlb_mm_range`` of ``[start, end)`` (a full
    flush beyond ``tlb_single_page_flush_ceiling`` pages)."""
    flush_tlb_mm_range(vma.raw("vm_mm"), start, end, PAGE_SHIFT, False)


@kfunc
def flush_tlb_mm(mm: MmStruct) -> None:
    """``flush_tlb_mm``: ``flush_tlb_mm_range(mm, 0, TLB_FLUSH_ALL, 0UL, true)``."""
    flush_tlb_mm_range(mm, 0, TLB_FLUSH_ALL, 0, True)


@kfunc
def flush_tlb_fix_spurious_fault(vma: Any, addr: int) -> None:
    """``flush_tlb_fix_spurious_fault``: a no-op on x86."""


@kfunc
def update_mmu_cache(vma: Any, addr: int, table: PageTable, index: int) -> None:
    """``update_mmu_cache``: a no-op on x86."""


@kfunc
def ptep_clear_flush(vma: Any, addr: int, table: PageTable, index: int) -> int:
    """``ptep_clear_flush``: clear the entry (``ptep_get_and_clear``) and, if
    it was present, flush *addr* from every CPU's TLB before returning.
    Callers that replace the page (``wp_page_copy``) rely on the flush: once
    it returns, no CPU can still write the old page through this address."""
    mm = vma.raw("vm_mm")
    pte = ptep_get_and_clear(mm, addr, table, index)
    if pte_present(pte):
        if has_hooks("pte-clear-flush"):
            emit("pte-clear-flush", mm, addr, pte, frame_of_pte(pte))
        flush_tlb_page(vma, addr)
    return pte


# --- huge PMDs (mm/pgtable-generic.c, include/linux/pgtable.h) ---------------------------

pmdp_huge_get_and_clear_full = ptep_get_and_clear
pmdp_set_wrprotect = ptep_set_wrprotect
pmdp_set_access_flags = ptep_set_access_flags
pmdp_test_and_clear_young = ptep_test_and_clear_young


@kfunc
def flush_pmd_tlb_range(vma: Any, start: int, end: int) -> None:
    """``flush_pmd_tlb_range`` (x86: ``flush_tlb_mm_range`` with the PMD
    stride; a 2 MiB range is beyond the single-page ceiling, so every CPU
    in ``mm_cpumask`` flushes the mm)."""
    flush_tlb_mm_range(vma.raw("vm_mm"), start, end, LEVEL_SHIFT[LEVEL_PMD], False)


@kfunc
def pmdp_invalidate(vma: Any, addr: int, table: PageTable, index: int) -> int:
    """``pmdp_invalidate``: atomically replace a huge PMD by its
    not-present version (``pmdp_establish`` with ``pmd_mkinvalid``: the
    entry stays ``pmd_trans_huge`` and never becomes none, so a lockless
    ``pmd_none`` check cannot skip it), then flush the range; returns the
    old entry, with the accessed and dirty bits the MMU set."""
    old = _update_entry(table, index, RMW, "pmdp_invalidate", pmd_mkinvalid)
    flush_pmd_tlb_range(vma, addr, addr + (1 << PMD_SHIFT))
    return old


@kfunc
def pmdp_invalidate_ad(vma: Any, addr: int, table: PageTable, index: int) -> int:
    """``pmdp_invalidate_ad`` (x86): ``pmdp_invalidate`` without the flush,
    for callers whose ``mmu_gather`` flushes later (``change_huge_pmd``):
    the returned entry has the accessed and dirty bits the MMU set."""
    return _update_entry(table, index, RMW, "pmdp_invalidate_ad", pmd_mkinvalid)


@kfunc
def pmdp_huge_clear_flush(vma: Any, addr: int, table: PageTable, index: int) -> int:
    """``pmdp_huge_clear_flush``: clear a huge PMD and flush its range."""
    old = ptep_get_and_clear(vma.raw("vm_mm"), addr, table, index)
    flush_pmd_tlb_range(vma, addr, addr + (1 << PMD_SHIFT))
    return old


@kfunc
def pmdp_collapse_flush(vma: Any, address: int, table: PageTable, index: int) -> int:
    """``pmdp_collapse_flush`` (mm/pgtable-generic.c): clear a PMD entry
    that points to a PTE table (``pmdp_huge_get_and_clear``: one visible
    RMW) and flush the PTEs of its 2 MiB from every CPU's TLB ("collapse
    entails shooting down ptes not pmd"); returns the old entry. The caller
    holds whatever the era's rule for a table pointer demands (checked by
    ``set``/``clear``: :func:`check_entry_write`)."""
    old = ptep_get_and_clear(vma.raw("vm_mm"), address, table, index)
    assert not pmd_trans_huge(old), "pmdp_collapse_flush of a huge PMD"
    flush_tlb_range(vma, address, address + PMD_SIZE)
    return old


def mm_inc_nr_ptes(mm: MmStruct) -> None:
    """``mm_inc_nr_ptes``: one more PTE table (``mm->pgtables_bytes``). Only
    the exit-time accounting check reads it, no thread of the model does:
    a plain update, not a scheduling point."""
    mm.pgtables_bytes += 1 << PAGE_SHIFT


def mm_dec_nr_ptes(mm: MmStruct) -> None:
    """``mm_dec_nr_ptes``: one PTE table fewer (see :func:`mm_inc_nr_ptes`)."""
    mm.pgtables_bytes -= 1 << PAGE_SHIFT


def mm_nr_ptes(mm: MmStruct) -> int:
    """``mm_pgtables_bytes(mm) >> PAGE_SHIFT`` for PTE tables (debugger view)."""
    return mm.pgtables_bytes >> PAGE_SHIFT


def pgtable_trans_huge_deposit(mm: MmStruct, pmd: PageTable, index: int,
                               pgtable: PageTable) -> None:
    """``pgtable_trans_huge_deposit``: keep a preallocated PTE table with a
    huge PMD, so that splitting it never allocates. Called under the PMD
    lock; the deposit list is touched only under that lock, so it is not a
    visible operation of its own."""
    assert (pmd.ptl is not None and holds(pmd.ptl)) or not pmd.installed, "PMD lock not held"
    pmd.deposited[index] = pgtable


def pgtable_trans_huge_withdraw(mm: MmStruct, pmd: PageTable, index: int) -> PageTable:
    """``pgtable_trans_huge_withdraw``: take the deposited PTE table back
    (PMD lock held; see :func:`pgtable_trans_huge_deposit`)."""
    return pmd.deposited.pop(index)


def pmd_populate(mm: MmStruct, pmd: PageTable, index: int, pgtable: PageTable) -> None:
    """``pmd_populate``: point a PMD entry at a PTE table that its builder
    filled while nobody could reach it (``smp_wmb`` before: the entries
    are visible first). One visible write of the PMD entry."""
    pgtable.installed = True
    set_pmd_at(mm, pmd.addr_of(index), pmd, index, pfn_pte(pgtable.pfn, _PAGE_TABLE))


def set_pte_private(table: PageTable, index: int, pte: int) -> None:
    """Fill an entry of a table nobody else can reach yet (a withdrawn
    deposit being prepared for ``pmd_populate``): no visible operation."""
    assert not table.installed, f"{table.name} is reachable"
    _store(table, index, pte)


# --- the hardware walker (arch/x86: the MMU's side of the page tables) ------------------


class FolioFrame:
    """A page of a folio, as the MMU sees it (``mmrace.arch.walker.Frame``)."""

    __slots__ = ("folio", "idx", "pfn")

    def __init__(self, folio: Any, idx: int) -> None:
        self.folio = folio
        self.idx = idx
        self.pfn = folio.pfn + idx

    @property
    def data(self) -> SharedObject:
        return self.folio.contents  # type: ignore[no-any-return]

    def word_footprint(self, word: int, kind: int) -> tuple[tuple[SharedObject, int], ...]:
        return self.folio.contents.word_footprint(self.idx, word, kind)  # type: ignore[no-any-return]

    def read(self, word: int) -> int:
        if self.folio.freed_at is not None:
            raise self.folio._uaf(f"user load word {word}")
        return self.folio.contents.get(self.idx, word)  # type: ignore[no-any-return]

    def write(self, word: int, value: int) -> None:
        if self.folio.freed_at is not None:
            raise self.folio._uaf(f"user store word {word}")
        if self.folio.is_zero:
            raise ViolationError("memory-corruption", "store to the shared zero page",
                                 "a user store reached the shared zero page")
        self.folio.contents.set(self.idx, word, value)

    def describe(self) -> str:
        name = self.folio.name
        return name if self.folio.nr_pages == 1 else f"{name}[{self.idx}]"


def frame_of_pte(pte: int, sub: int = 0) -> FolioFrame | None:
    """The frame a present leaf PTE maps (None if it is not a folio's); for
    a huge PMD, its page *sub*."""
    pfn = pte_pfn(pte) + sub
    obj = pfn_to_obj(pfn)
    if isinstance(obj, PageTable) or obj is None:
        return None
    return FolioFrame(obj, pfn - obj.pfn)


class X86PageWalker:
    """The hardware page walker (``mmrace.arch.walker.PageWalker``): reads
    PGD and PUD entries (one visible read each, inside an RCU read section
    -- see the walker contract), then the PMD entry; a huge PMD (a present
    ``_PAGE_PSE`` leaf) is the leaf, otherwise it accesses the PTE. The
    leaf access is one event that also fills the TLB entry, setting the
    accessed bit (and the dirty bit for a write) with an atomic RMW when
    they are not set yet. It does not touch the soft-dirty bit (software's,
    set by the fault handler). A huge leaf fills a 4 KiB entry for the page
    accessed (the model has no 2 MiB TLB entries; flushes of a huge
    mapping's range reach every such entry)."""

    def walk(self, cpu: Any, mm: Any, addr: int, write: bool, entry: TlbEntry) -> int:
        rcu_read_lock()
        while True:  # (no finally: an aborted thread unwinds)
            code = self._walk(cpu, cpu.flush_gen, mm, addr, write, entry)
            if code != _WALK_RESTART:
                break
        rcu_read_unlock()
        return code

    @staticmethod
    def _read(cpu: Any, gen: int, t: PageTable, i: int) -> int | None:
        """One visible read of an upper-level entry; None if a flush
        reached this CPU since the walk began (restart)."""
        ev = visible(t.slot(i), READ, f"hw walk: {LEVEL_NAMES[t.level]}")
        if t.freed_at is not None:
            if cpu.flush_gen != gen:
                return None
            raise t._uaf(f"hardware walk [{i}]")
        e = t.entries.get(i, 0)
        if ev is not None:
            ev.detail = PteText(e)
        return e

    def _walk(self, cpu: Any, gen: int, mm: Any, addr: int, write: bool,
              entry: TlbEntry) -> int:
        t = mm_pgd(mm)
        want = _PAGE_ACCESSED | (_PAGE_DIRTY if write else 0)
        for idxf in (pgd_index, pud_index):
            e = self._read(cpu, gen, t, idxf(addr))
            if e is None:
                return _WALK_RESTART
            if not pte_present(e):
                return FAULT_NOT_PRESENT
            t = table_of(e)
        i = pmd_index(addr)
        while True:
            peek = t.entries.get(i, 0)
            if pmd_trans_huge(peek):
                code = self._leaf(cpu, gen, t, i, pte_index(addr), want, write, entry)
                if code is not None:
                    return code
                continue  # it stopped being a huge leaf: read it again
            e = self._read(cpu, gen, t, i)
            if e is None:
                return _WALK_RESTART
            if pmd_trans_huge(e):
                continue  # it became a huge leaf since the peek: access it as one
            if not pte_present(e):
                return FAULT_NOT_PRESENT
            break
        t = table_of(e)
        while True:
            code = self._leaf(cpu, gen, t, pte_index(addr), 0, want, write, entry)
            if code is not None:
                return code

    @staticmethod
    def _leaf(cpu: Any, gen: int, t: PageTable, i: int, sub: int, want: int, write: bool,
              entry: TlbEntry) -> int | None:
        """Access leaf entry *i* of *t* (a PTE, or a huge PMD whose page
        *sub* is accessed) in one event; the fault code, 0 once *entry* is
        filled, ``_WALK_RESTART`` if a flush reached this CPU since the walk
        began, or None if a PMD entry turned out not to be a huge leaf."""
        slot = t.slot(i)
        huge = t.level == LEVEL_PMD
        while True:
            peek = t.entries.get(i, 0)
            needs_update = bool(peek & _PAGE_PRESENT) and (peek & want) != want
            kind = RMW if needs_update else READ
            # One event: the leaf access (an atomic A/D update when needed)
            # and the fill of this CPU's entry, which a shootdown must order
            # against (the IPI cannot split an instruction's walk and fill).
            ev = tlb_footprint(slot, kind, f"hw walk: {LEVEL_NAMES[t.level]}",
                               also=((entry, WRITE),))
            if cpu.flush_gen != gen:
                # A flush came between the upper levels and this access:
                # the walk it split did not happen; start over.
                return _WALK_RESTART
            if t.freed_at is not None:
                raise t._uaf(f"hardware walk [{i}]")
            pte = t.entries.get(i, 0)
            if ev is not None:
                ev.detail = PteText(pte)
            if huge and not pmd_trans_huge(pte):
                return None
            if not pte & _PAGE_PRESENT:
                return FAULT_NOT_PRESENT
            if not pte & _PAGE_USER or (write and not pte_write(pte)):
                return FAULT_PROT
            new = pte | want
            if new != pte:
                if kind != RMW:
                    continue  # the entry changed since the announcement: redo as an RMW
                t.entries[i] = new
                if ev is not None:
                    ev.detail = PteText(new)
            frame = frame_of_pte(new, sub)
            if frame is None:
                return FAULT_PROT
            entry.fill(frame, pte_write(new), True, pte_dirty(new), new, slot, ev)
            return 0


_WALK_RESTART = -1
"""What a walk split by a remote TLB flush returns: walk again."""


set_page_walker(X86PageWalker())


# --- walking and allocating ----------------------------------------------------------


def pgd_offset(mm: MmStruct, addr: int) -> tuple[PageTable, int]:
    """``pgd_offset``: the PGD entry for *addr* (as (table, index))."""
    return mm_pgd(mm), pgd_index(addr)


def _next_level(table: PageTable, index: int, entry: int) -> PageTable | None:
    if not pte_present(entry):
        return None
    return table_of(entry)


@kfunc
def __pxx_alloc(mm: MmStruct, table: PageTable, index: int, level: int) -> PageTable:
    """``__pud_alloc`` / ``__pmd_alloc``: the install pattern — allocate,
    take ``mm->page_table_lock`` (PUD tables are installed in the PGD under
    it; PMD tables in a PUD too), recheck, install ours or free it."""
    base = table.addr_of(index)
    new = pte_alloc_one(mm, level, base)
    ptl = mm.page_table_lock
    ptl_lock(ptl)
    cur = ptep_get(table, index)
    if pte_none(cur):
        new.installed = True
        # smp_wmb(): the new table's contents are visible before the entry.
        set_pte_at(mm, base, table, index, pfn_pte(new.pfn, _PAGE_TABLE))
        ptl_unlock(ptl)
        return new
    ptl_unlock(ptl)
    pte_free(mm, new)
    return table_of(cur)


@kfunc
def pud_alloc(mm: MmStruct, addr: int) -> tuple[PageTable, int]:
    """``p4d_alloc`` + ``pud_alloc``: the PUD entry for *addr*, allocating the
    PUD table if the PGD entry is empty (check unlocked first)."""
    pgd, gi = pgd_offset(mm, addr)
    e = ptep_get(pgd, gi)
    pud = table_of(e) if pte_present(e) else __pxx_alloc(mm, pgd, gi, LEVEL_PUD)
    return pud, pud_index(addr)


@kfunc
def pmd_alloc(mm: MmStruct, pud: PageTable, ui: int, addr: int) -> tuple[PageTable, int]:
    """``pmd_alloc``: the PMD entry for *addr*, allocating the PMD table."""
    e = ptep_get(pud, ui)
    pmd = table_of(e) if pte_present(e) else __pxx_alloc(mm, pud, ui, LEVEL_PMD)
    return pmd, pmd_index(addr)


@kfunc
def __pte_alloc(mm: MmStruct, pmd: PageTable, mi: int) -> int:
    """``__pte_alloc``: allocate a PTE table, then under the PMD lock install it
    if the PMD entry is still empty (``pmd_install``), else free ours.
    Returns 0."""
    base = pmd.addr_of(mi)
    new = pte_alloc_one(mm, LEVEL_PTE, base)
    ptl = pmd_lock(mm, pmd)
    if pmd_none(ptep_get(pmd, mi)):
        new.installed = True
        mm_inc_nr_ptes(mm)
        set_pmd_at(mm, base, pmd, mi, pfn_pte(new.pfn, _PAGE_TABLE))
        new = None  # type: ignore[assignment]
    ptl_unlock(ptl)
    if new is not None:
        pte_free(mm, new)
    return 0


def pte_alloc(mm: MmStruct, pmd: PageTable, mi: int) -> int:
    """``pte_alloc``: ``__pte_alloc`` if the PMD entry is empty (unlocked check)."""
    if pmd_none(ptep_get(pmd, mi)):
        return __pte_alloc(mm, pmd, mi)
    return 0


def walk_to_pmd(mm: MmStruct, addr: int) -> tuple[PageTable, int] | None:
    """Read-only walk to the PMD entry of *addr* (``pgd_offset`` ..
    ``pmd_offset`` without allocation); None where an upper entry is empty."""
    pgd, gi = pgd_offset(mm, addr)
    pud = _next_level(pgd, gi, ptep_get(pgd, gi))
    if pud is None:
        return None
    ui = pud_index(addr)
    pmd = _next_level(pud, ui, ptep_get(pud, ui))
    if pmd is None:
        return None
    return pmd, pmd_index(addr)


class PteMap:
    """What ``pte_offset_map_lock`` returns: the mapped PTE table, the index
    of *addr* in it, the lock taken, the PMD value it was found through,
    and whether the mapping holds the RCU read lock (the 6.5+ protocol)."""

    __slots__ = ("table", "index", "ptl", "pmdval", "rcu")

    def __init__(self, table: PageTable, index: int, ptl: Spinlock | None, pmdval: int,
                 rcu: bool = True) -> None:
        self.table = table
        self.index = index
        self.ptl = ptl
        self.pmdval = pmdval
        self.rcu = rcu


def pte_map_revalidates(mm: MmStruct) -> bool:
    """The page-table reader protocol of *mm*'s kernel: since "mm/pgtable:
    allow pte_offset_map[_lock]() to fail" (6.5, switch
    ``pte-map-revalidate``) a walker maps a PTE table under RCU and
    rechecks the PMD under the PTE lock; before it, a walker that read a PMD
    pointing to a table took the entry as stable (the higher-level lock it
    held was the protection) and held no RCU read lock."""
    return bool(kernel_config(mm).has("pte-map-revalidate"))


@kfunc
def __pte_offset_map(pmd: PageTable, mi: int, addr: int) -> PteMap | None:
    """``__pte_offset_map``: under ``rcu_read_lock``, read the PMD entry once;
    None (with RCU released) if it is empty, a leaf or bad. The table stays
    mapped (RCU held) until ``pte_unmap``.

    Before 6.5 (``pte_offset_map`` of x86-64: ``pte_offset_kernel`` of the
    PMD, no RCU): the PMD entry is read once and its table used as it is;
    the caller's own check (``pmd_none_or_trans_huge_or_clear_bad``) is the
    None case here."""
    if not pte_map_revalidates(pmd.mm):
        pmdval = pmdp_get_lockless(pmd, mi)
        if pmd_none(pmdval) or pmd_trans_huge(pmdval) or not pmd_present(pmdval):
            return None
        return PteMap(table_of(pmdval), pte_index(addr), None, pmdval, rcu=False)
    rcu_read_lock()
    held().rcu += 1
    pmdval = pmdp_get_lockless(pmd, mi)
    if pmd_none(pmdval) or pmd_trans_huge(pmdval) or not pmd_present(pmdval):
        held().rcu -= 1
        rcu_read_unlock()
        return None
    return PteMap(table_of(pmdval), pte_index(addr), None, pmdval)


def pte_offset_map(pmd: PageTable, mi: int, addr: int) -> PteMap | None:
    """``pte_offset_map``."""
    return __pte_offset_map(pmd, mi, addr)


@kfunc
def pte_unmap(pm: PteMap) -> None:
    """``pte_unmap``: leave the RCU read section of ``pte_offset_map`` (a
    no-op on x86-64 before 6.5)."""
    if pm.rcu:
        pm.rcu = False
        held().rcu -= 1
        rcu_read_unlock()


@kfunc
def pte_offset_map_nolock(mm: MmStruct, pmd: PageTable, mi: int, addr: int) -> PteMap | None:
    """``pte_offset_map_rw_nolock``: map without locking; ``pm.ptl`` is the
    lock the caller must take and ``pm.pmdval`` the PMD value to recheck
    (:func:`pmd_unchanged_under_ptl`)."""
    pm = __pte_offset_map(pmd, mi, addr)
    if pm is not None:
        pm.ptl = pte_lockptr(mm, pm.table)
    return pm


def ptl_lock_mapped(pm: PteMap, ptl: Spinlock) -> None:
    """Take *ptl*, the lock of the table *pm* maps. Before 6.5 (*pm* holds
    no RCU read lock) nothing keeps
    that table alive but the higher-level lock the walker holds, and
    ``pte_lockptr`` reads the lock's address from the table's own ``struct
    ptdesc``: a visible read of the table object (so it is ordered against
    the table's free), a use-after-free if it was freed meanwhile."""
    if not pm.rcu:
        pm.table.access(READ, "pte_lockptr (ptdesc)")
    ptl_lock(ptl)


def pmd_unchanged_under_ptl(pm: PteMap, pmd: PageTable, mi: int) -> bool:
    """The recheck a walker that mapped a table with ``pte_offset_map_nolock``
    does once it holds ``pm.ptl``: the PMD still points to the table
    (``pmd_same``). Before 6.5 walkers did no such recheck (they took the
    PMD as stable): True without reading it."""
    if not pm.rcu and not pte_map_revalidates(pmd.mm):
        return True
    return pmd_same(pm.pmdval, pmdp_get_lockless(pmd, mi))


@kfunc
def pte_offset_map_lock(mm: MmStruct, pmd: PageTable, mi: int, addr: int) -> PteMap | None:
    """``pte_offset_map_lock`` (``__pte_offset_map_lock``): read the PMD entry,
    map the PTE table (RCU), take its lock, re-read the PMD entry; if it
    changed (the table was retracted or replaced meanwhile), drop everything
    and retry. None if the PMD entry is (or became) empty or a leaf.

    Before 6.5 (``pte-map-revalidate`` off): read the PMD once, take the
    lock of the table it points to, and use it -- no RCU, no recheck."""
    while True:
        pm = __pte_offset_map(pmd, mi, addr)
        if pm is None:
            return None
        ptl = pte_lockptr(mm, pm.table)
        if not pm.rcu:
            ptl_lock_mapped(pm, ptl)
            pm.ptl = ptl
            return pm
        ptl_lock(ptl)
        if pmd_same(pm.pmdval, pmdp_get_lockless(pmd, mi)):
            pm.ptl = ptl
            return pm
        ptl_unlock(ptl)
        pte_unmap(pm)


@kfunc
def pte_unmap_unlock(pm: PteMap) -> None:
    """``pte_unmap_unlock``."""
    assert pm.ptl is not None
    ptl_unlock(pm.ptl)
    pte_unmap(pm)


def lookup_pte(mm: MmStruct, addr: int) -> tuple[PageTable, int] | None:
    """Debugger view: the PTE table and index of *addr*, or None (no visible
    operations, no locks)."""
    pgd = mm_pgd(mm)
    t: PageTable = pgd
    for level, idxf in ((LEVEL_PGD, pgd_index), (LEVEL_PUD, pud_index), (LEVEL_PMD, pmd_index)):
        e = t.entries.get(idxf(addr), 0)
        if not pte_present(e) or (level == LEVEL_PMD and pmd_trans_huge(e)):
            return None
        t = table_of(e)
    return t, pte_index(addr)


def peek_pte(mm: MmStruct, addr: int) -> int:
    """Debugger view: the PTE value mapping *addr* (0 if none); under a huge
    PMD, the PTE that would map that page (the PMD's bits, the page's pfn)."""
    pmdval = peek_pmd(mm, addr)
    if pmd_trans_huge(pmdval):
        return (pmdval & ~_PAGE_PSE) + (pte_index(addr) << PAGE_SHIFT)
    found = lookup_pte(mm, addr)
    if found is None:
        return 0
    return found[0].entries.get(found[1], 0)


def peek_pmd(mm: MmStruct, addr: int) -> int:
    """Debugger view: the PMD entry covering *addr* (0 if none)."""
    t: PageTable = mm_pgd(mm)
    for idxf in (pgd_index, pud_index):
        e = t.entries.get(idxf(addr), 0)
        if not pte_present(e):
            return 0
        t = table_of(e)
    return t.entries.get(pmd_index(addr), 0)


def all_tables(mm: MmStruct) -> list[PageTable]:
    """Debugger view: every live table of *mm*, top-down, in address order."""
    out: list[PageTable] = []
    pgd: PageTable | None = getattr(mm, "pgd", None)
    if pgd is None:
        return out

    def walk(t: PageTable) -> None:
        out.append(t)
        if t.level == LEVEL_PTE:
            return
        for i in sorted(t.entries):
            e = t.entries[i]
            if t.level == LEVEL_PMD and pmd_trans_huge(e):
                continue
            walk(table_of(e))

    walk(pgd)
    return out


__all__ = [
    "PMD_SIZE",
    "PageTable",
    "PteMap",
    "pte_offset_map_lock",
    "ptep_get",
    "set_pte_at",
]


# --- freeing page tables ---------------------------------------------------------------


def _rmap_reachable(vma: Any) -> str:
    if vma.raw("shared.rb"):
        return "the file rmap (i_mmap)"
    if vma.raw("anon_vma_chain"):
        return "an anon_vma"
    return ""


def _clear_unreachable(table: PageTable, index: int, vma: Any) -> None:
    """``pmd_clear``/``pud_clear`` in ``free_pgd_range``: no lock (nobody can
    reach the range any more: the ``unreachable`` alternative of the rule),
    but still a visible write of the entry."""
    ev = _entry(table, index, WRITE, f"{LEVEL_NAMES[table.level]}_clear (free_pgtables)")
    check_entry_write(table, index, table.entries.get(index, 0), 0, vma=vma)
    table.entries.pop(index, None)
    if ev is not None:
        ev.detail = "none"


@kfunc
def free_pgd_range(tlb: Any, vma: Any, addr: int, end: int, floor: int, ceiling: int) -> None:
    """``free_pgd_range``: free every page table that maps only addresses in
    ``[floor, ceiling)`` and part of ``[addr, end)``, clearing the entries
    above them. The rule (``pgtables``, checked by ``check_free_pgtables``):
    the VMA must no longer be reachable through any rmap tree (an
    rmap-locked zapper such as truncate could otherwise walk into the freed
    tables) and the mmap lock is held. A PTE table that is not empty means an
    entry was installed after the zap."""
    mm: MmStruct = vma.raw("vm_mm")
    check_free_pgtables(vma, mm)
    top = ceiling or (1 << 48)
    pgd: PageTable | None = mm.pgd
    if pgd is None:
        return

    def walk(t: PageTable) -> None:
        span = 1 << LEVEL_SHIFT[t.level]
        for i in sorted(t.entries):
            b = t.addr_of(i)
            if b + span <= addr or b >= end:
                continue
            e = t.entries.get(i, 0)
            if t.level == LEVEL_PMD and pmd_trans_huge(e):
                continue
            child = table_of(e)
            if child.level > LEVEL_PTE:
                walk(child)
            if not (floor <= b and b + span <= top):
                continue
            if child.level == LEVEL_PTE and child.entries:
                raise ViolationError(
                    "invariant", f"free_pgtables: {child.name} is not empty",
                    f"free_pgtables found {len(child.entries)} entries left in {child.name} "
                    "after the zap: an entry was installed after unmap_vmas "
                    "(under an rmap lock alone?); the pages leak")
            if child.entries:
                continue
            _clear_unreachable(t, i, vma)
            child.installed = False
            if child.level == LEVEL_PTE:
                mm_dec_nr_ptes(mm)
            if tlb is not None:
                pte_free_tlb(tlb, child, b)
            elif child.level == LEVEL_PTE:
                pte_free_defer(mm, child)
            else:
                pte_free(mm, child)

    walk(pgd)


# mmu_gather frees page tables with this module's helpers: imported once this
# module is complete (the seam of the cycle).
from mmrace.mm.mmu_gather import pte_free_tlb  # noqa: E402

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
table and each PTE table has its own split lock (``ptlock``). The rule
checker (``RULES`` entries ``pte``, ``pmd``, ``pud``, ``pgtables``) is
enforced on every entry write.

Left out: P4D (folded, 4-level paging), 32-bit highmem mapping of PTE
tables (``pte_offset_map`` only takes the RCU read lock), PUD-sized
leaves, swap/migration entries and PTE markers, pkeys, NX, PAT/caching
bits, ``ptdesc`` accounting, ``pte_offset_map_ro_nolock``.
"""

from __future__ import annotations

from typing import Any

from mmrace.arch import FAULT_NOT_PRESENT, FAULT_PROT, TLB_FLUSH_ALL, TlbEntry, set_page_walker
from mmrace.arch import emit as emit
from mmrace.arch import flush_tlb_mm_range as flush_tlb_mm_range
from mmrace.arch import footprint as tlb_footprint
from mmrace.arch.hooks import has_hooks
from mmrace.engine import READ, RMW, WRITE, SharedObject, ViolationError, visible
from mmrace.mm.internal import held, kfunc
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
from mmrace.mm.mm_types import PAGE_SHIFT, MmStruct
from mmrace.mm.page_alloc import alloc_pfns, pfn_to_obj
from mmrace.mm.rules import may_move_tables
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
    """``pfn 0x1000 P|W|U|A|D`` for traces."""
    if not pte:
        return "none"
    bits = "|".join(n for b, n in _BIT_NAMES if pte & b)
    return f"pfn {pte_pfn(pte):#x} {bits}"


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
    return bool(pmd & _PAGE_PRESENT)


def pmd_trans_huge(pmd: int) -> bool:
    """A PMD leaf (``_PAGE_PSE``): maps a 2 MiB folio."""
    return bool(pmd & _PAGE_PSE) and pmd_present(pmd)


def pmd_leaf(pmd: int) -> bool:
    return pmd_trans_huge(pmd)


def pmd_mkhuge(pmd: int) -> int:
    return pmd | _PAGE_PSE


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
    from mmrace.mm.mm_types import VM_READ, VM_SHARED, VM_WRITE

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
    for idx in sorted(table.slots):
        visible(table.slots[idx], WRITE, "free page table")
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


def _rules_off() -> bool:
    from mmrace.engine import current_execution

    return bool(current_execution().locals.get("mm.rules_off"))


def _has_fault_lock(mm: MmStruct, addr: int, size: int = 1 << PAGE_SHIFT) -> bool:
    """mmap lock (any mode) or a VMA read lock on a VMA overlapping
    ``[addr, addr + size)``."""
    h = held()
    if mm.serial in h.mmap:
        return True
    for vma in h.vma_read.values():
        if (vma.raw("vm_mm") is mm and vma.raw("vm_start") < addr + size
                and addr < vma.raw("vm_end")):
            return True
    return False


def _breach(what: str, table: PageTable, index: int, needs: str) -> None:
    if _rules_off():
        return
    addr = table.addr_of(index)
    raise ViolationError(
        "locking-rule",
        f"locking rule: {what} of {LEVEL_NAMES[table.level]} entry without the required locks",
        f"{what} of {table.name}[{index}] (address {addr:#x}) needs {needs}; "
        f"held: {held().describe()}",
    )


def _may_move(table: PageTable, index: int) -> bool:
    """The ``pgtables`` moving rule (``mm/rules.py``) for the range the
    entry maps."""
    start = table.addr_of(index)
    return may_move_tables(table.mm, start, start + (1 << LEVEL_SHIFT[table.level]))


def check_entry_write(table: PageTable, index: int, old: int, new: int) -> None:
    """The page-table rules of ``mm/rules.py`` for one entry write.

    R1: changing an entry needs that table's lock (unless nobody else can
    reach the table). R4: filling an empty entry with a leaf needs the mmap
    lock or the VMA lock as well. A PMD entry that points to a PTE table is
    changed only under the PMD lock *and* that PTE table's lock."""
    if not table.installed or old == new:
        return
    mm = table.mm
    if table.level >= LEVEL_PUD:
        if not holds(mm.page_table_lock):
            _breach("write", table, index, "page_table_lock")
        if pte_present(old) and not _may_move(table, index):
            # Not an install: a table above the PMD is moved (mremap).
            _breach("move of a page table above the PMD", table, index,
                    "page_table_lock + mmap W + VMA W + rmap W (rule pgtables)")
        return
    if not holds(table.ptl):
        _breach("write", table, index, f"{LEVEL_NAMES[table.level]} ptl")
    if table.level == LEVEL_PMD and pmd_present(old) and not pmd_trans_huge(old):
        child = table_of(old)
        if not holds(child.ptl) and not _may_move(table, index):
            _breach("change of a PMD pointing to a PTE table", table, index,
                    "pmd ptl + pte ptl, or, to move the table, "
                    "mmap W + VMA W + rmap W (rule pgtables)")
    if old == 0 and new:
        leaf = table.level == LEVEL_PTE or pmd_trans_huge(new)
        if leaf and not _has_fault_lock(mm, table.addr_of(index)):
            _breach("fill of an empty entry", table, index,
                    "ptl + (mmap R | VMA R): rmap locks alone are not enough")
        if not leaf and not _has_fault_lock(mm, table.addr_of(index),
                                            1 << LEVEL_SHIFT[table.level]):
            _breach("install of a page table", table, index, "pmd ptl + (mmap R | VMA R)")


# --- entry accessors ---------------------------------------------------------------------


def ptep_get(table: PageTable, index: int) -> int:
    """``ptep_get`` / ``pmdp_get`` / ``READ_ONCE(*pudp)``: one visible read."""
    ev = _entry(table, index, READ, f"{LEVEL_NAMES[table.level]}p_get")
    v = table.entries.get(index, 0)
    if ev is not None:
        ev.detail = pte_str(v)
    return v


def ptep_get_stable_bits(table: PageTable, index: int) -> int:
    """A re-read of a PTE whose PTL this thread holds, for bits that only
    software changes (the uffd-wp, soft-dirty, present and pfn bits; not
    accessed/dirty): not a visible operation. Every software write of a PTE
    needs its PTL (the rule table; ``_breach`` reports one that does not;
    with the checker off this is a plain ``ptep_get``), and the hardware
    walker's atomic updates touch only the accessed and dirty bits, so no
    other thread can change the bits the caller uses while it holds the
    lock: the read races with nothing and needs no scheduling point.
    Callers must not use the A/D bits of the result (those can change under
    the PTL: use ``ptep_get``)."""
    ptl = table.ptl
    assert ptl is not None and ptl.serial in held().spin, "PTL not held"
    if _rules_off():
        return ptep_get(table, index)
    if table.freed_at is not None:
        raise table._uaf(f"pte re-read [{index}]")
    return table.entries.get(index, 0)


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
    check_entry_write(table, index, old, pte)
    _store(table, index, pte)
    if ev is not None:
        ev.detail = pte_str(pte)


set_pmd_at = set_pte_at


def pte_clear(mm: MmStruct, addr: int, table: PageTable, index: int) -> None:
    """``pte_clear`` / ``pmd_clear``: one visible write."""
    set_pte_at(mm, addr, table, index, 0)


def ptep_get_and_clear(mm: MmStruct, addr: int, table: PageTable, index: int) -> int:
    """``ptep_get_and_clear``: an atomic exchange (hardware may set A/D
    concurrently), one visible RMW."""
    ev = _entry(table, index, RMW, f"{LEVEL_NAMES[table.level]}p_get_and_clear")
    old = table.entries.get(index, 0)
    check_entry_write(table, index, old, 0)
    _store(table, index, 0)
    if ev is not None:
        ev.detail = pte_str(old)
    return old


pmdp_huge_get_and_clear = ptep_get_and_clear


def ptep_set_wrprotect(mm: MmStruct, addr: int, table: PageTable, index: int) -> None:
    """``ptep_set_wrprotect``: an atomic clear of ``_PAGE_RW``."""
    ev = _entry(table, index, RMW, "ptep_set_wrprotect")
    old = table.entries.get(index, 0)
    new = pte_wrprotect(old)
    check_entry_write(table, index, old, new)
    _store(table, index, new)
    if ev is not None:
        ev.detail = pte_str(new)


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
    ev = _entry(table, index, RMW, "ptep_modify_prot_start")
    old = table.entries.get(index, 0)
    check_entry_write(table, index, old, 0)
    _store(table, index, 0)
    if ev is not None:
        ev.detail = pte_str(old)
    return old


def ptep_modify_prot_commit(vma: Any, addr: int, table: PageTable, index: int, old: int,
                            pte: int) -> None:
    """``ptep_modify_prot_commit``: install the modified entry (``set_pte_at``)."""
    ev = _entry(table, index, WRITE, "ptep_modify_prot_commit")
    cur = table.entries.get(index, 0)
    check_entry_write(table, index, cur, pte)
    _store(table, index, pte)
    if ev is not None:
        ev.detail = pte_str(pte)


def ptep_set_access_flags(vma: Any, addr: int, table: PageTable, index: int, entry: int,
                          dirty: bool) -> bool:
    """``ptep_set_access_flags``: under the PTL, install *entry* (same page,
    more permissive bits) if it differs; returns whether it changed."""
    ev = _entry(table, index, RMW, "ptep_set_access_flags")
    old = table.entries.get(index, 0)
    changed = old != entry
    if changed:
        check_entry_write(table, index, old, entry)
        _store(table, index, entry)
    if ev is not None:
        ev.detail = pte_str(entry) if changed else "unchanged"
    return changed


def ptep_test_and_clear_young(vma: Any, addr: int, table: PageTable, index: int) -> bool:
    """``ptep_test_and_clear_young``: an atomic clear of the accessed bit."""
    ev = _entry(table, index, RMW, "ptep_test_and_clear_young")
    old = table.entries.get(index, 0)
    if ev is not None:
        ev.detail = pte_str(old)
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
        return self.folio.contents.words[self.idx][word]  # type: ignore[no-any-return]

    def write(self, word: int, value: int) -> None:
        if self.folio.freed_at is not None:
            raise self.folio._uaf(f"user store word {word}")
        if self.folio.is_zero:
            raise ViolationError("memory-corruption", "store to the shared zero page",
                                 "a user store reached the shared zero page")
        self.folio.contents.words[self.idx][word] = value

    def describe(self) -> str:
        name = self.folio.name
        return name if self.folio.nr_pages == 1 else f"{name}[{self.idx}]"


def frame_of_pte(pte: int) -> FolioFrame | None:
    """The frame a present leaf PTE maps (None if it is not a folio's)."""
    obj = pfn_to_obj(pte_pfn(pte))
    if isinstance(obj, PageTable) or obj is None:
        return None
    return FolioFrame(obj, pte_pfn(pte) - obj.pfn)


class X86PageWalker:
    """The hardware page walker (``mmrace.arch.walker.PageWalker``): reads
    PGD, PUD and PMD entries (one visible read each, inside an RCU read
    section -- see the walker contract), then accesses the PTE in one event
    that also fills the TLB entry, setting the accessed bit (and the dirty
    bit for a write) with an atomic RMW when they are not set yet. It does
    not touch the soft-dirty bit (software's, set by the fault handler).
    Huge PMDs are not walked (the model has no huge TLB entries)."""

    def walk(self, cpu: Any, mm: Any, addr: int, write: bool, entry: TlbEntry) -> int:
        rcu_read_lock()
        code = self._walk(mm, addr, write, entry)  # (no finally: an aborted thread unwinds)
        rcu_read_unlock()
        return code

    def _walk(self, mm: Any, addr: int, write: bool, entry: TlbEntry) -> int:
        t = mm_pgd(mm)
        for idxf in (pgd_index, pud_index, pmd_index):
            i = idxf(addr)
            ev = _entry(t, i, READ, f"hw walk: {LEVEL_NAMES[t.level]}")
            e = t.entries.get(i, 0)
            if ev is not None:
                ev.detail = pte_str(e)
            if not pte_present(e) or (t.level == LEVEL_PMD and pmd_trans_huge(e)):
                return FAULT_NOT_PRESENT
            t = table_of(e)
        i = pte_index(addr)
        slot = t.slot(i)
        want = _PAGE_ACCESSED | (_PAGE_DIRTY if write else 0)
        while True:
            peek = t.entries.get(i, 0)
            needs_update = pte_present(peek) and (peek & want) != want
            kind = RMW if needs_update else READ
            # One event: the PTE access (an atomic A/D update when needed)
            # and the fill of this CPU's entry, which a shootdown must order
            # against (the IPI cannot split an instruction's walk and fill).
            ev = tlb_footprint(slot, kind, "hw walk: pte", also=((entry, WRITE),))
            if t.freed_at is not None:
                raise t._uaf(f"hardware walk [{i}]")
            pte = t.entries.get(i, 0)
            if ev is not None:
                ev.detail = pte_str(pte)
            if not pte_present(pte):
                return FAULT_NOT_PRESENT
            if not pte & _PAGE_USER or (write and not pte_write(pte)):
                return FAULT_PROT
            new = pte | want
            if new != pte:
                if kind != RMW:
                    continue  # the PTE changed since the announcement: redo as an RMW
                t.entries[i] = new
                if ev is not None:
                    ev.detail = pte_str(new)
            frame = frame_of_pte(new)
            if frame is None:
                return FAULT_PROT
            entry.fill(frame, pte_write(new), True, pte_dirty(new), new, slot, ev)
            return 0


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
    of *addr* in it, and the lock taken."""

    __slots__ = ("table", "index", "ptl", "pmdval")

    def __init__(self, table: PageTable, index: int, ptl: Spinlock | None, pmdval: int) -> None:
        self.table = table
        self.index = index
        self.ptl = ptl
        self.pmdval = pmdval


@kfunc
def __pte_offset_map(pmd: PageTable, mi: int, addr: int) -> PteMap | None:
    """``__pte_offset_map``: under ``rcu_read_lock``, read the PMD entry once;
    None (with RCU released) if it is empty, a leaf or bad. The table stays
    mapped (RCU held) until ``pte_unmap``."""
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
    """``pte_unmap``: leave the RCU read section of ``pte_offset_map``."""
    held().rcu -= 1
    rcu_read_unlock()


@kfunc
def pte_offset_map_nolock(mm: MmStruct, pmd: PageTable, mi: int, addr: int) -> PteMap | None:
    """``pte_offset_map_rw_nolock``: map without locking; ``pm.ptl`` is the
    lock the caller must take and ``pm.pmdval`` the PMD value to recheck."""
    pm = __pte_offset_map(pmd, mi, addr)
    if pm is not None:
        pm.ptl = pte_lockptr(mm, pm.table)
    return pm


@kfunc
def pte_offset_map_lock(mm: MmStruct, pmd: PageTable, mi: int, addr: int) -> PteMap | None:
    """``pte_offset_map_lock`` (``__pte_offset_map_lock``): read the PMD entry,
    map the PTE table (RCU), take its lock, re-read the PMD entry; if it
    changed (the table was retracted or replaced meanwhile), drop everything
    and retry. None if the PMD entry is (or became) empty or a leaf."""
    while True:
        pm = __pte_offset_map(pmd, mi, addr)
        if pm is None:
            return None
        ptl = pte_lockptr(mm, pm.table)
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
    """Debugger view: the PTE value mapping *addr* (0 if none)."""
    found = lookup_pte(mm, addr)
    if found is None:
        return 0
    return found[0].entries.get(found[1], 0)


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


def _clear_unreachable(table: PageTable, index: int) -> None:
    """``pmd_clear``/``pud_clear`` in ``free_pgd_range``: no lock (nobody can
    reach the range any more), but still a visible write of the entry."""
    ev = _entry(table, index, WRITE, f"{LEVEL_NAMES[table.level]}_clear (free_pgtables)")
    table.entries.pop(index, None)
    if ev is not None:
        ev.detail = "none"


@kfunc
def free_pgd_range(tlb: Any, vma: Any, addr: int, end: int, floor: int, ceiling: int) -> None:
    """``free_pgd_range``: free every page table that maps only addresses in
    ``[floor, ceiling)`` and part of ``[addr, end)``, clearing the entries
    above them. The rule (``pgtables``): the VMA must no longer be reachable
    through any rmap tree (an rmap-locked zapper such as truncate could
    otherwise walk into the freed tables) and the mmap lock is held. A PTE
    table that is not empty means an entry was installed after the zap."""
    mm: MmStruct = vma.raw("vm_mm")
    where = _rmap_reachable(vma)
    if where and not _rules_off():
        raise ViolationError(
            "locking-rule",
            "locking rule: free_pgtables on a VMA still reachable through the rmap",
            f"free_pgtables of {vma!r} while it is still reachable through {where}: "
            f"page tables may be freed only once no rmap walker can reach them "
            f"(or with mmap W + VMA W + rmap W held); held: {held().describe()}",
        )
    if mm.serial not in held().mmap and not _rules_off():
        raise ViolationError(
            "locking-rule", "locking rule: free_pgtables without the mmap lock",
            f"free_pgtables of {vma!r} needs the mmap lock; held: {held().describe()}")
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
            _clear_unreachable(t, i)
            child.installed = False
            if tlb is not None:
                from mmrace.mm.mmu_gather import pte_free_tlb

                pte_free_tlb(tlb, child, b)
            elif child.level == LEVEL_PTE:
                pte_free_defer(mm, child)
            else:
                pte_free(mm, child)

    walk(pgd)

"""Small programs that exercise the locking rules, one or a few rules each,
for the per-row and per-era tests and for the document-completeness test
(which runs them all and requires that every rule ``mmrace doc`` renders was
consulted by a checker).

A witness is a program (built for one kernel release) and the violation
kind it must end with (None: it must run clean). Each runs one execution:
the rules are checked on every access, so one schedule is enough to
consult them.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmrace.engine import Result, explore, spawn
from mmrace.fixes import parse_release
from mmrace.mm.mm_types import AnonVmaName
from mmrace.mm.mmap_lock import (
    lock_vma_under_rcu,
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_unlock,
    vma_end_read,
    vma_start_write,
)
from mmrace.mm.numa_balancing import task_numa_work
from mmrace.mm.pgtable import (
    _PAGE_ACCESSED,
    _PAGE_TABLE,
    check_retract_free,
    pfn_pte,
    pmd_lock,
    pmd_mkhuge,
    pmdp_huge_get_and_clear,
    pte_free,
    pte_free_defer,
    pte_offset_map_lock,
    pte_unmap_unlock,
    ptep_get,
    ptl_lock,
    ptl_unlock,
    set_pmd_at,
    set_pte_at,
    table_of,
    walk_to_pmd,
)
from mmrace.mm.rmap import (
    anon_vma_lock_read,
    anon_vma_lock_write,
    anon_vma_unlock_read,
    anon_vma_unlock_write,
    i_mmap_lock_write,
    i_mmap_unlock_write,
)
from mmrace.mm.swap_state import swap_update_readahead
from mmrace.mm.vma import vm_flags_set
from mmrace.sync import rcu_read_lock, rcu_read_unlock
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    UFFDIO_REGISTER_MODE_MISSING,
    System,
    vma_find,
)

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
P = PAGE_SIZE
PMD = 1 << 21

Program = Callable[[], None]


@dataclass(frozen=True)
class Witness:
    name: str
    release: str | None
    build: Callable[[str | None], Program]
    expect: str | None = None  # the violation kind, or None for clean

    def run(self) -> Result:
        return explore(self.build(self.release), max_executions=1, shrink=False)


def _anon(release: str | None, pages: int = 2) -> tuple[Any, int]:
    p = System(kernel=release).process()
    return p, p.mmap(0, pages * P, RW, ANON)


# --- ordinary kernel paths (clean) -------------------------------------------------------


def fault(release: str | None) -> Program:
    """Faults in a thread: under the VMA lock (6.4 on) or the mmap lock."""
    def program() -> None:
        p, a = _anon(release)
        spawn(p.poke, a, 1, name="fault")
        spawn(p.poke, a + P, 2, name="fault2")
    return program


def munmap(release: str | None) -> Program:
    """munmap in a thread: detach, downgrade, zap, free_pgtables."""
    def program() -> None:
        p, a = _anon(release)
        p.poke(a, 1)
        spawn(p.munmap, a, 2 * P, name="munmap")
    return program


def file_paths(release: str | None) -> Program:
    """A shared file mapping: mmap, fault, truncate (rmap lock alone), and a
    private file mapping written then split (i_mmap then anon_vma)."""
    def program() -> None:
        system = System(kernel=release)
        p = system.process()
        fd = system.open_file("f", 8 * P)

        def work() -> None:
            a = p.mmap(0, 2 * P, RW, MAP_SHARED, fd)
            p.poke(a, 1)
            b = p.mmap(0, 4 * P, RW, MAP_PRIVATE, fd)
            p.poke(b, 2)
            p.mprotect(b, P, PROT_READ)
            p.ftruncate(fd, 0)
            p.munmap(a, 2 * P)
        spawn(work, name="file")
    return program


def mprotect_and_fork(release: str | None) -> Program:
    def program() -> None:
        p, a = _anon(release, 4)
        p.poke(a, 1)
        spawn(p.mprotect, a, 2 * P, PROT_READ, name="mprotect")
        spawn(p.fork, name="fork")
    return program


def stack_growth(release: str | None) -> Program:
    """A fault below a stack VMA: grown under the read lock before 6.5, under
    the write lock since."""
    def program() -> None:
        p = System(kernel=release).process()
        top = 0x7FF000000000
        stack = p.mmap(top - 4 * P, 4 * P, RW, ANON | MAP_GROWSDOWN | MAP_FIXED)
        spawn(p.poke, stack - P, 1, name="grow")
    return program


def numa_scan(release: str | None) -> Program:
    def program() -> None:
        p, _a = _anon(release)
        spawn(task_numa_work, p.mm, name="numa1")
        spawn(task_numa_work, p.mm, name="numa2")
    return program


def swap_readahead(release: str | None) -> Program:
    def program() -> None:
        p, a = _anon(release)

        def under_mmap() -> None:
            mmap_read_lock(p.mm)
            vma = vma_find(p.mm, a)
            swap_update_readahead(vma, a, True)
            mmap_read_unlock(p.mm)

        def under_vma_lock() -> None:
            if release is not None and parse_release(release) < (6, 6):
                return  # swap-in under the VMA lock came in 6.6
            vma = lock_vma_under_rcu(p.mm, a)
            if vma is not None:
                swap_update_readahead(vma, a + P, True)
                vma_end_read(vma)
        spawn(under_mmap, name="ra-mmap")
        spawn(under_vma_lock, name="ra-vma")
    return program


def field_writes(release: str | None) -> Program:
    """Writes of the fields no ordinary path of the model changes, each with
    the locks its rule asks for."""
    def program() -> None:
        p, a = _anon(release)
        p.poke(a, 1)
        mm = p.mm

        def writer() -> None:
            mmap_write_lock(mm)
            vma = vma_find(mm, a)
            vma_start_write(vma)
            vma.anon_name = AnonVmaName("x")
            vma.vm_policy = "interleave"
            vma.vm_private_data = "driver"
            assert vma.vm_private_data == "driver" and not vma.shared_rb
            vma.vm_userfaultfd_ctx = None
            av = vma.anon_vma
            anon_vma_lock_write(av)
            vma.anon_vma = None  # non-NULL -> NULL
            vma.anon_vma = av  # NULL -> non-NULL (as merge copies it)
            anon_vma_unlock_write(av)
            mmap_write_unlock(mm)
        spawn(writer, name="writer")
    return program


def huge_pmd(release: str | None) -> Program:
    """A huge (leaf) PMD filled and changed under the PMD lock (the model has
    no THP path yet: the entry accessors themselves)."""
    def program() -> None:
        p = System(kernel=release).process()
        a = p.mmap(0, 4 * PMD, RW, ANON)
        base = (a + PMD - 1) & ~(PMD - 1)
        p.poke(base, 1)
        mm = p.mm

        def worker() -> None:
            mmap_read_lock(mm)
            found = walk_to_pmd(mm, base + PMD)
            assert found is not None
            pmd, mi = found
            ptl = pmd_lock(mm, pmd)
            leaf = pmd_mkhuge(pfn_pte(0x7000, _PAGE_TABLE))
            set_pmd_at(mm, base + PMD, pmd, mi, leaf)
            pmdp_huge_get_and_clear(mm, base + PMD, pmd, mi)
            ptl_unlock(ptl)
            mmap_read_unlock(mm)
        spawn(worker, name="thp")
    return program


def retract(release: str | None) -> Program:
    """A khugepaged-like retraction of an empty PTE table with the locks of
    the era: before 6.1 the mmap write lock and the PMD lock; 6.1 to 6.5
    every high-level lock for write; since 6.6 the mmap read lock with the
    PMD and PTE locks, the table freed by RCU."""
    def program() -> None:
        rel = parse_release(release) if release else (99,)
        p, a = _anon(release)
        p.poke(a, 1)
        p.madvise(a, 2 * P, 4)  # MADV_DONTNEED: the PTE table is empty now
        mm = p.mm

        def khugepaged() -> None:
            if rel >= (6, 6):
                mmap_read_lock(mm)
            else:
                mmap_write_lock(mm)
            vma = vma_find(mm, a)
            av = vma.anon_vma
            if (6, 1) <= rel < (6, 6):
                vma_start_write(vma)
                anon_vma_lock_write(av)
            found = walk_to_pmd(mm, a)
            assert found is not None
            pmd, mi = found
            table = table_of(ptep_get(pmd, mi))
            ptl = pmd_lock(mm, pmd)
            if rel >= (6, 6):
                ptl_lock(table.ptl)
            pmdp_huge_get_and_clear(mm, a, pmd, mi)
            check_retract_free(pmd, mi, table, deferred=rel >= (6, 6))
            if rel >= (6, 6):
                ptl_unlock(table.ptl)
            ptl_unlock(ptl)
            table.installed = False
            if rel >= (6, 6):
                pte_free_defer(mm, table)
                mmap_read_unlock(mm)
            else:
                pte_free(mm, table)
                if rel >= (6, 1):
                    anon_vma_unlock_write(av)
                mmap_write_unlock(mm)
        spawn(khugepaged, name="khugepaged")
    return program


def mremap_tables(release: str | None) -> Program:
    """mremap of a file mapping and of an anonymous one, each a whole PMD
    table (move_normal_pmd) and a PTE run (move_ptes), with the rmap locks
    of the era: before 5.14 a whole table moved without them."""
    def program() -> None:
        system = System(kernel=release)
        p = system.process()
        fd = system.open_file("f", 2 * PMD)

        def work() -> None:
            f = p.mmap(0, 2 * PMD, RW, MAP_SHARED, fd)
            base = (f + PMD - 1) & ~(PMD - 1)
            p.poke(base, 1)
            p.poke(base + PMD - P, 2)
            p.mremap(base, PMD, PMD, 3, 0x500000000000)  # MREMAP_MAYMOVE | MREMAP_FIXED
            a = p.mmap(0, 2 * P, RW, ANON)
            p.poke(a, 3)
            p.mremap(a, 2 * P, 2 * P, 3, 0x510000000000)
        spawn(work, name="mremap")
    return program


# --- rule breaches (each must be reported) ------------------------------------------------


def _thread(release: str | None, body: Callable[[Any, int], None], pages: int = 2,
            poke: bool = True) -> Program:
    def program() -> None:
        p, a = _anon(release, pages)
        if poke:
            p.poke(a, 1)
        spawn(body, p.mm, a, name="T")
    return program


def write_never(field: str) -> Callable[[str | None], Program]:
    def build(release: str | None) -> Program:
        def body(mm: Any, a: int) -> None:
            mmap_write_lock(mm)
            vma = vma_find(mm, a)
            vma_start_write(vma)
            setattr(vma, field, getattr(vma, field))
        return _thread(release, body)
    return build


def flags_without_vma_lock(release: str | None) -> Program:
    """vm_flags written under the mmap write lock without vma_start_write:
    allowed before 6.4 (no VMA lock), a breach since."""
    def body(mm: Any, a: int) -> None:
        mmap_write_lock(mm)
        vma = vma_find(mm, a)
        vma.vm_flags_ = vma.vm_flags | 0x8000  # bypasses vm_flags_set's assertion
        mmap_write_unlock(mm)
    return _thread(release, body)


def old_stack_write(release: str | None) -> Program:
    """vm_start, vm_pgoff and the VMA tree written the way expand_downwards did
    under the mmap read lock before 6.5."""
    def body(mm: Any, a: int) -> None:
        mmap_read_lock(mm)
        vma = vma_find(mm, a)
        av = vma.anon_vma
        anon_vma_lock_write(av)
        ptl_lock(mm.page_table_lock)
        vma.vm_pgoff = vma.vm_pgoff - 1
        vma.vm_start = vma.vm_start - P
        mm.mm_mt.mas_store_range(vma.raw("vm_start"), vma.raw("vm_end"), vma)
        ptl_unlock(mm.page_table_lock)
        anon_vma_unlock_write(av)
        mmap_read_unlock(mm)
    return _thread(release, body)


def vm_mm_under_rcu(release: str | None) -> Program:
    """vma->vm_mm read under RCU alone: allowed while VMAs were RCU-freed (6.4
    to 6.14), a breach since the VMA cache became SLAB_TYPESAFE_BY_RCU."""
    def program() -> None:
        p, a = _anon(release)
        vma = vma_find(p.mm, a)

        def body() -> None:
            rcu_read_lock()
            vma.vm_mm  # noqa: B018 - the checked read
            rcu_read_unlock()
        spawn(body, name="T")
    return program


def pte_under_rcu(release: str | None) -> Program:
    """A PTE read under RCU alone: a lockless walk, allowed since 6.5."""
    def program() -> None:
        p, a = _anon(release)
        p.poke(a, 1)
        found = walk_to_pmd(p.mm, a)
        assert found is not None
        pmd, mi = found
        table = table_of(pmd.entries[mi])

        def body() -> None:
            rcu_read_lock()
            ptep_get(table, (a >> 12) & 511)
            rcu_read_unlock()
        spawn(body, name="T")
    return program


def pmd_table_change(locks: str) -> Callable[[str | None], Program]:
    """Clear a PMD that points to a PTE table holding *locks*: ``old`` (mmap
    W + PMD lock, the pre-6.1 retraction) or ``new`` (mmap R + PMD and PTE
    locks, the 6.6 one)."""
    def build(release: str | None) -> Program:
        def body(mm: Any, a: int) -> None:
            (mmap_write_lock if locks == "old" else mmap_read_lock)(mm)
            found = walk_to_pmd(mm, a)
            assert found is not None
            pmd, mi = found
            table = table_of(ptep_get(pmd, mi))
            pmd_ptl = pmd_lock(mm, pmd)
            if locks == "new":
                ptl_lock(table.ptl)
            pmdp_huge_get_and_clear(mm, a, pmd, mi)
            if locks == "new":
                ptl_unlock(table.ptl)
            ptl_unlock(pmd_ptl)
            (mmap_write_unlock if locks == "old" else mmap_read_unlock)(mm)
        return _thread(release, body)
    return build


def retract_free_now(release: str | None) -> Program:
    """A retracted PTE table freed at once with every high-level lock held:
    the 6.1 way; since 6.6 it must be freed by RCU."""
    def body(mm: Any, a: int) -> None:
        mmap_write_lock(mm)
        vma = vma_find(mm, a)
        vma_start_write(vma)
        av = vma.anon_vma
        anon_vma_lock_write(av)
        found = walk_to_pmd(mm, a)
        assert found is not None
        pmd, mi = found
        table = table_of(ptep_get(pmd, mi))
        pmd_ptl = pmd_lock(mm, pmd)
        ptl_lock(table.ptl)
        check_retract_free(pmd, mi, table, deferred=False)
        ptl_unlock(table.ptl)
        ptl_unlock(pmd_ptl)
        anon_vma_unlock_write(av)
        mmap_write_unlock(mm)
    return _thread(release, body)


def fill_under_rmap_only(release: str | None) -> Program:
    """A PTE filled under the PTL with only an rmap lock held (R4)."""
    def body(mm: Any, a: int) -> None:
        mmap_read_lock(mm)
        vma = vma_find(mm, a)
        av = vma.anon_vma
        mmap_read_unlock(mm)
        anon_vma_lock_read(av)
        found = walk_to_pmd(mm, a)
        assert found is not None
        pm = pte_offset_map_lock(mm, found[0], found[1], a + P)
        assert pm is not None
        set_pte_at(mm, a + P, pm.table, pm.index, pfn_pte(0x7001, 0x4))
        pte_unmap_unlock(pm)
        anon_vma_unlock_read(av)
    return _thread(release, body)


def plain_store_drops_accessed(release: str | None) -> Program:
    def body(mm: Any, a: int) -> None:
        mmap_read_lock(mm)
        found = walk_to_pmd(mm, a)
        assert found is not None
        pm = pte_offset_map_lock(mm, found[0], found[1], a)
        assert pm is not None
        old = ptep_get(pm.table, pm.index)
        set_pte_at(mm, a, pm.table, pm.index, (old | _PAGE_ACCESSED) & ~_PAGE_ACCESSED)
    return _thread(release, body)


def map_count_under_read_lock(release: str | None) -> Program:
    def body(mm: Any, a: int) -> None:
        mmap_read_lock(mm)
        mm.map_count = mm.map_count + 1
    return _thread(release, body)


def numab_without_claim(release: str | None) -> Program:
    def body(mm: Any, a: int) -> None:
        mmap_read_lock(mm)
        vma_find(mm, a).numab_state = object()
    return _thread(release, body)


def swap_ra_plain_write(release: str | None) -> Program:
    def body(mm: Any, a: int) -> None:
        mmap_read_lock(mm)
        vma_find(mm, a).swap_readahead_info = 1
    return _thread(release, body)


def order_anon_vma_then_mmap(release: str | None) -> Program:
    """anon_vma->rwsem held, then mm->mmap_lock: against the documented order."""
    def body(mm: Any, a: int) -> None:
        mmap_read_lock(mm)
        av = vma_find(mm, a).anon_vma
        mmap_read_unlock(mm)
        anon_vma_lock_read(av)
        mmap_read_lock(mm)
    return _thread(release, body)


def order_ptl_then_vma_write(release: str | None) -> Program:
    """vma_start_write while holding a page-table lock."""
    def body(mm: Any, a: int) -> None:
        mmap_write_lock(mm)
        vma = vma_find(mm, a)
        ptl_lock(mm.page_table_lock)
        vma_start_write(vma)
    return _thread(release, body)


def vma_read_then_mmap(release: str | None) -> Program:
    def body(mm: Any, a: int) -> None:
        vma = lock_vma_under_rcu(mm, a)
        assert vma is not None
        mmap_read_lock(mm)
    return _thread(release, body)


def vma_read_then_rmap(release: str | None) -> Program:
    """A VMA read lock and then an rmap lock, no mmap lock: a state the
    lock-state table does not list."""
    def body(mm: Any, a: int) -> None:
        vma = lock_vma_under_rcu(mm, a)
        assert vma is not None
        anon_vma_lock_read(vma.anon_vma)
    return _thread(release, body)


def vma_read_then_anon_vma_write(release: str | None) -> Program:
    """The state UFFDIO_MOVE may be in (VMA read lock, anon_vma lock for
    write, no mmap lock), outside move_pages: the exception does not
    cover it."""
    def body(mm: Any, a: int) -> None:
        vma = lock_vma_under_rcu(mm, a)
        assert vma is not None
        anon_vma_lock_write(vma.anon_vma)
    return _thread(release, body)


def vm_flags_set_read_locked(release: str | None) -> Program:
    def body(mm: Any, a: int) -> None:
        mmap_read_lock(mm)
        vm_flags_set(vma_find(mm, a), 0x8000)
    return _thread(release, body)


def i_mmap_then_anon_vma_order(release: str | None) -> Program:
    """The vma_merge edge taken the documented way (clean)."""
    def program() -> None:
        system = System(kernel=release)
        p = system.process()
        fd = system.open_file("f", 4 * P)
        b = p.mmap(0, 2 * P, RW, MAP_PRIVATE, fd)
        p.poke(b, 1)
        mm = p.mm

        def body() -> None:
            mmap_write_lock(mm)
            vma = vma_find(mm, b)
            f = vma.vm_file
            i_mmap_lock_write(f.f_mapping)
            anon_vma_lock_write(vma.anon_vma)
            anon_vma_unlock_write(vma.anon_vma)
            i_mmap_unlock_write(f.f_mapping)
            mmap_write_unlock(mm)
        spawn(body, name="T")
    return program


def _rmap_read(release: str | None) -> Program:
    def body(mm: Any, a: int) -> None:
        mmap_read_lock(mm)
        av = vma_find(mm, a).anon_vma
        mmap_read_unlock(mm)
        anon_vma_lock_read(av)
        anon_vma_unlock_read(av)
    return _thread(release, body)


def uffd_move(release: str | None) -> Program:
    """UFFDIO_MOVE of one page in a thread (EINVAL before 6.8): from 6.9 it
    takes the source's anon_vma lock for write under two VMA read locks,
    the documented exception ``uffd_move_lock``."""
    def program() -> None:
        system = System(kernel=release)
        p = system.process()
        src = p.mmap(0, P, RW, ANON)
        dst = p.mmap(0, P, RW, ANON)
        p.poke(src, 1)
        uffd = p.userfaultfd()
        uffd.register(dst, P, UFFDIO_REGISTER_MODE_MISSING)

        def body() -> None:
            try:
                uffd.move(dst, src, P)
            except OSError as e:
                assert e.errno == errno.EINVAL, e  # no UFFDIO_MOVE before 6.8
        spawn(body, name="T")
    return program


CLEAN = ["fault", "munmap", "file_paths", "mprotect_and_fork", "stack_growth", "numa_scan",
         "swap_readahead", "field_writes", "huge_pmd", "retract", "i_mmap_then_anon_vma",
         "rmap_read", "mremap_tables", "uffd_move"]
BUILDERS: dict[str, Callable[[str | None], Program]] = {
    "fault": fault, "munmap": munmap, "file_paths": file_paths,
    "mprotect_and_fork": mprotect_and_fork, "stack_growth": stack_growth,
    "numa_scan": numa_scan, "swap_readahead": swap_readahead, "field_writes": field_writes,
    "huge_pmd": huge_pmd, "retract": retract, "i_mmap_then_anon_vma": i_mmap_then_anon_vma_order,
    "rmap_read": _rmap_read, "mremap_tables": mremap_tables, "uffd_move": uffd_move,
}
RELEASES: list[str | None] = [None, "6.10", "6.5", "6.4", "6.1", "6.0", "5.10"]

BREACHES: list[Witness] = [
    Witness("vm_mm never", None, write_never("vm_mm"), "locking-rule"),
    Witness("vm_file never", None, write_never("vm_file"), "locking-rule"),
    Witness("vm_ops never", None, write_never("vm_ops"), "locking-rule"),
    Witness("numab_state without the claim", None, numab_without_claim, "locking-rule"),
    Witness("swap_readahead_info plain write", None, swap_ra_plain_write, "locking-rule"),
    Witness("map_count under the read lock", None, map_count_under_read_lock, "locking-rule"),
    Witness("fill under rmap only", None, fill_under_rmap_only, "locking-rule"),
    Witness("plain store drops A", None, plain_store_drops_accessed, "locking-rule"),
    Witness("anon_vma then mmap_lock", None, order_anon_vma_then_mmap, "lock-order"),
    Witness("ptl then vma_start_write", None, order_ptl_then_vma_write, "lock-order"),
    Witness("VMA read lock then mmap_lock", None, vma_read_then_mmap, "lock-order"),
    Witness("VMA read lock then rmap lock", None, vma_read_then_rmap, "locking-rule"),
    Witness("VMA read lock then anon_vma write lock outside move_pages", None,
            vma_read_then_anon_vma_write, "locking-rule"),
    Witness("vm_flags_set under the read lock", None, vm_flags_set_read_locked,
            "locking-rule"),
]


def witnesses() -> list[Witness]:
    """Every clean program at every release in RELEASES, then the breaches."""
    out = [Witness(f"{name}@{rel or 'current'}", rel, BUILDERS[name])
           for name in CLEAN for rel in RELEASES]
    return out + BREACHES


__all__ = ["BREACHES", "BUILDERS", "CLEAN", "RELEASES", "Witness", "witnesses"]

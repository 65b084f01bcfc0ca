"""mremap moving entries past an rmap walk: truncation.

``ftruncate`` zaps a file's mappings under ``i_mmap_rwsem`` (read) alone
(``unmap_mapping_range``), then frees the page-cache pages. A concurrent
mremap of a mapping of that file moves its entries (and, when aligned, whole
page tables) with the mmap lock for write; the rmap walk must see every
entry at its old or at its new place, and no CPU may keep a TLB entry to a
page the truncation frees. Each entry is the smallest program that shows
one fix: the mover, the truncation, and a CPU of the process that still
uses the mapping through its TLB after ``ftruncate`` returned (it must
fault, not reach a freed page).

``mremap-migration-entry``: the walker is migration's
``remove_migration_ptes`` (``move_pages``), which before 3.1 peeked at each
PTE without its lock.
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import WAIT, Var, visible
from mmrace.mm.mm_types import PAGE_SIZE
from mmrace.mm.mman import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PROT_READ,
    PROT_WRITE,
)
from mmrace.mm.pgtable import PMD_SIZE, pmd_index, walk_to_pmd
from mmrace.oracles.memory import wrong_data
from mmrace.scenarios.api import Explore, Kernel, scenario
from mmrace.user import Thread

K3 = Explore(strategy="bounded", preemption_bound=3)
MOVE = MREMAP_MAYMOVE | MREMAP_FIXED
OLD = 0x7E0000000000  # PMD aligned
NEW = 0x7E0000400000  # PMD aligned, another PMD entry of the same PMD table
NEAR = OLD + 8 * PAGE_SIZE  # in the same PTE table as OLD
FAR = 0x7F0000000000  # another PMD table: a new VMA, its own PTE table


def _after(flag: Var[int], what: str) -> None:
    """Block until *flag* is set: the thread was told (by a pipe, a futex)
    that the other thread's syscall returned."""
    visible(flag, WAIT, f"wait for {what}", guard=lambda: flag.value == 1)


@scenario(
    name="mremap-flush-truncate",
    summary="mremap moves a clean PTE and defers the TLB flush past the page-table locks; "
    "ftruncate zaps the new place and frees the page while a CPU still reads it "
    "through its TLB entry for the old address (CVE-2018-18281)",
    references=(
        "eb66ae030829 mremap: properly flush TLB before releasing the page (4.19)",
        "CVE-2018-18281 (Jann Horn): mremap() TLB flush too late with concurrent "
        "ftruncate()",
    ),
    base=Kernel(release="4.18"),
    fixes=("mremap-flush-before-ptl-drop",),
    expect={
        "current": "clean",
        "base": "use-after-free",
        "base+mremap-flush-before-ptl-drop": "clean",
        "current-mremap-flush-before-ptl-drop": "use-after-free",
    },
    notes={
        "base": "the clean PTE's flush waits for the end of move_page_tables: the "
        "truncation takes the new PTE lock, zaps and frees first",
        "base+mremap-flush-before-ptl-drop": "the old address is flushed before the locks "
        "are dropped: the truncation zaps only after it",
    },
    # One preemption shows the race (mremap stopped after move_ptes). Within
    # K=3 the current variant takes about 3,000 executions (10 s on a loaded
    # machine): the default tests run the other three and explore the
    # current one within K=2 (tests/mm/test_mremap_race.py).
    explore=K3,
    ci=("base", "base+mremap-flush-before-ptl-drop", "current-mremap-flush-before-ptl-drop"),
)
def mremap_flush_truncate(kernel: Kernel) -> Any:
    """cpu1 read the shared file page earlier (its TLB caches the old
    address; the PTE is clean); cpu0 moves the page with mremap while cpu1
    truncates the file and then reads the old address again: the read must
    fault (the mapping moved away), not reach the page the truncation
    freed."""
    s = kernel.system(cpus=2)
    p = s.process()
    fd = s.open_file("/data", PAGE_SIZE)
    a = p.mmap(OLD, PAGE_SIZE, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0)
    p.touch(a, cpu=1)  # "[ PTE cached in TLB ]" by a read: clean

    def mover(t: Thread) -> None:
        t.mremap(a, PAGE_SIZE, PAGE_SIZE, MOVE, NEAR)

    def truncate_and_read(t: Thread) -> None:
        t.ftruncate(fd, 0)
        t.load(a)

    p.thread(mover, cpu=0, name="cpu0")
    p.thread(truncate_and_read, cpu=1, name="cpu1")
    return None


@scenario(
    name="mremap-pmd-move-truncate",
    summary="mremap moves a whole PTE table (move_normal_pmd) without the rmap lock while "
    "ftruncate zaps it under the PTE lock: the zap flushes only the old address and "
    "frees the page another CPU reached through the new one",
    references=(
        "97113eb39fa7 mm/mremap: hold the rmap lock in write mode when moving page table "
        "entries. (5.14)",
        "process_addrs.rst, page table moving: mmap lock, VMA lock and rmap locks",
    ),
    base=Kernel(release="5.13"),
    fixes=("mremap-pgtable-move-rmap-lock",),
    expect={
        "current": "clean",
        "base": "use-after-free",
        "base+mremap-pgtable-move-rmap-lock": "clean",
        "current-mremap-pgtable-move-rmap-lock": "locking-rule",
    },
    notes={
        "base": "the truncation holds the PTE lock of the table being moved; only the "
        "PMD locks are taken to move it",
        "current-mremap-pgtable-move-rmap-lock": "today's rule (pgtables: moving tables "
        "needs the rmap locks) is broken by the first move, in every interleaving",
    },
    # Three preemptions: mremap stopped before the move and again after it
    # (before munmap's mmu_gather raises tlb_flush_pending: a nested gather
    # makes the truncation's tlb_finish_mmu flush the whole mm), the
    # truncation stopped holding the PTE lock with the entry read. Within K=3
    # the clean variants take about 12,000 executions (40 s on a loaded
    # machine) and the base one about 7,000 to its violation: the default
    # tests run the locking-rule variant and explore the current one within
    # K=2 (tests/mm/test_mremap_race.py).
    explore=K3,
    ci=("current-mremap-pgtable-move-rmap-lock",),
)
def mremap_pmd_move_truncate(kernel: Kernel) -> Any:
    """A PMD-aligned 2 MiB shared file mapping with one page faulted in;
    cpu0 moves it to another PMD-aligned address (one PMD entry moves),
    cpu1 truncates the file, cpu2 writes to the new address while mremap
    runs and again once ftruncate returned (it must get SIGBUS: the file
    is empty, the page is gone)."""
    s = kernel.system(cpus=3)
    p = s.process()
    fd = s.open_file("/data", PMD_SIZE)
    a = p.mmap(OLD, PMD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0)
    p.poke(a, 1)
    truncated: Var[int] = Var(0, "ftruncate-returned")

    def mover(t: Thread) -> None:
        t.mremap(a, PMD_SIZE, PMD_SIZE, MOVE, NEW)

    def truncate(t: Thread) -> None:
        t.ftruncate(fd, 0)
        truncated.store(1)

    found = walk_to_pmd(p.mm, OLD)  # NEW's PMD entry is in the same table
    assert found is not None
    pmd_table, new_entry = found[0], pmd_index(NEW)

    def writer(t: Thread) -> None:
        # The program writes to the new address once it is mapped there (an
        # access before faults and waits for mremap to finish: no race).
        visible(pmd_table.slot(new_entry), WAIT, "wait for the new address to be mapped",
                guard=lambda: bool(pmd_table.entries.get(new_entry)))
        t.store(NEW, 10)  # "*new_addr = 10" of the commit's diagram
        _after(truncated, "ftruncate")
        t.store(NEW, 11)

    p.thread(mover, cpu=0, name="cpu0")
    p.thread(truncate, cpu=1, name="cpu1")
    p.thread(writer, cpu=2, name="cpu2")
    return None


@scenario(
    name="mremap-migration-entry",
    summary="mremap moves a migration entry past remove_migration_ptes, which peeks at each "
    "place without the page-table lock: it looks at the old place after the entry left "
    "and at the new one before it arrived, and leaves it behind for an unlocked page",
    references=(
        "486cf46f3f9b mm: fix race between mremap and removing migration entry (3.1)",
        "Pawel Sikora's report: kernel BUG at include/linux/swapops.h "
        "(migration_entry_to_page: the page of a migration entry is not locked)",
    ),
    base=Kernel(release="3.0"),
    fixes=("remove-migration-pte-ptl",),
    expect={
        "current": "clean",
        "base": "bug",
        "base+remove-migration-pte-ptl": "clean",
        "current-remove-migration-pte-ptl": "bug",
    },
    notes={
        "base": "move_ptes moves the entry holding both page-table locks but no anon_vma "
        "lock (the destination is a new VMA, visited after the source); the walker's "
        "lockless peeks miss it at both places",
        "base+remove-migration-pte-ptl": "the walker takes each page-table lock before it "
        "looks: it waits for move_ptes and finds the entry at its old or its new place",
        "current-remove-migration-pte-ptl": "today's move_ptes still takes no rmap lock "
        "for a new VMA: only the walker's page-table lock closes the race",
    },
    # mremap stopped inside move_ptes between ptep_get_and_clear and
    # set_pte_at while the migration's remove_migration_ptes runs. Every
    # variant is cheap at K=3 (under 500 executions): all run by default.
    explore=K3,
)
def mremap_migration_entry(kernel: Kernel) -> Any:
    """A private anonymous page; cpu1 migrates it (``move_pages``: its PTE
    becomes a migration entry, the data are copied, the entry is replaced
    by the new page), cpu0 moves it with mremap to a new VMA and, once
    move_pages returned, reads it at the new address: it must read what was
    written, not fault on a migration entry left behind."""
    s = kernel.system(cpus=2)
    p = s.process()
    a = p.mmap(OLD, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    p.poke(a, 1)
    migrated: Var[int] = Var(0, "move_pages-returned")

    def mover(t: Thread) -> None:
        t.mremap(a, PAGE_SIZE, PAGE_SIZE, MOVE, FAR)
        _after(migrated, "move_pages")
        got = t.load(FAR)
        if got != 1:
            raise wrong_data(f"the moved page holds {got}, not 1")

    def migrator(t: Thread) -> None:
        t.migrate(a)
        migrated.store(1)

    p.thread(mover, cpu=0, name="cpu0")
    p.thread(migrator, cpu=1, name="cpu1")
    return None


CATALOG = (
    mremap_flush_truncate,
    mremap_pmd_move_truncate,
    mremap_migration_entry,
)

__all__ = ["CATALOG"]

"""khugepaged's page-table retraction against the walkers of each era
(issue 16, seed 004: "mm/khugepaged: Take the right locks for page table
retraction" and its series).

``khugepaged-retract-truncate``: the seed's race. A tmpfs file's huge folio
is mapped by PTEs; khugepaged's ``collapse_pte_mapped_thp`` retracts the
PTE table while a hole punch (``unmap_mapping_range``, under
``i_mmap_rwsem`` alone) zaps through it. Before 6.1 the retraction held
only the mmap write lock and the PMD lock and freed the table at once:
the zap, which took the PMD it read as stable, locks and reads a freed
table. 6.1 takes ``i_mmap_rwsem`` for write; 6.6 frees by RCU while 6.5's
walkers revalidate the PMD under the PTE lock -- each half alone is not
enough.

``khugepaged-gup-fast-collapse``: an anonymous collapse against an
O_DIRECT read's GUP-fast on a machine whose TLB flushes send no IPI
(arm64). GUP-fast takes its reference through the old table after the
collapse checked the page's refcount; the DMA lands in the old page, the
process reads the copy. Closed by the PMD recheck (6.0) and by the IPI
after clearing the PMD (6.1).

``khugepaged-gup-fast-retract``: the same machine, a shmem collapse whose
``retract_page_tables`` frees the PTE table a GUP-fast walk is in (a
use-after-free), before "mm/khugepaged: fix GUP-fast interaction by
sending IPI" (6.1); since 6.6 the table is freed after a grace period,
which GUP-fast's interrupts-off section holds off -- provided the other
walkers revalidate (6.5): GUP's slow path walks the same table under the
mmap read lock, which 6.6's retraction no longer excludes.

``khugepaged-retract-uffd-wp``: retract_page_tables without the mmap lock
(6.6) against a monitor registering a shmem range for uffd-wp and
write-protecting an empty page (a uffd-wp marker): v1 of the series freed
the table with the marker in it; v2 rechecks under the PTE lock.

``khugepaged-uffd-wp-populate``: the same threads with two preemptions:
UFFDIO_WRITEPROTECT's change_pmd_range populates the table, the retraction
empties the PMD, change_pmd_range skips it -- a window the exploration
finds in the current code, closed by the proposal
``uffd-wp-populate-recheck``.
"""

from __future__ import annotations

from typing import Any

from mmrace.mm.huge_memory import HPAGE_PMD_SIZE
from mmrace.mm.mm_types import PAGE_SIZE
from mmrace.mm.mman import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
)
from mmrace.mm.shmem import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE
from mmrace.mm.userfaultfd import UFFD_FEATURE_PAGEFAULT_FLAG_WP, UFFDIO_REGISTER_MODE_WP
from mmrace.oracles.memory import wrong_data
from mmrace.scenarios.api import Explore, Kernel, scenario
from mmrace.scenarios.thp_reclaim import cite
from mmrace.user import Thread

RW = PROT_READ | PROT_WRITE
THP_BASE = 0x7E0000000000  # 2 MiB aligned, below the mmap base
K2 = Explore(strategy="bounded", preemption_bound=2)
K1 = Explore(strategy="bounded", preemption_bound=1)


@scenario(
    name="khugepaged-retract-truncate",
    summary="khugepaged retracts the PTE table of a PTE-mapped shmem THP while a hole "
    "punch zaps through it under i_mmap_rwsem alone: the zap uses a freed page table",
    references=(
        "8d3c106e19e8 mm/khugepaged: take the right locks for page table retraction (6.1)",
        "[PATCH v4 1/3] mm/khugepaged: Take the right locks for page table retraction "
        "(Jann Horn, linux-mm, 2022-11-28; seed 004)",
        "27e1f8273113 khugepaged: enable collapse pmd for pte-mapped THP (5.4): the bug",
        "0d940a9b270b mm/pgtable: allow pte_offset_map[_lock]() to fail (6.5)",
        "1d65b771bc08 mm/khugepaged: retract_page_tables() without mmap or vma lock (6.6)",
    ),
    base=Kernel(release="6.0"),
    fixes=("khugepaged-retract-locks", "pte-map-revalidate", "retract-pgtable-rcu"),
    expect={
        "current": "clean",
        "base": "use-after-free",
        "base+khugepaged-retract-locks": "clean",
        "base+pte-map-revalidate": "use-after-free",
        "base+retract-pgtable-rcu": "use-after-free",
        "base+fixes": "clean",
        "current-khugepaged-retract-locks": "clean",
        "current-pte-map-revalidate": "use-after-free",
        "current-retract-pgtable-rcu": "clean",
    },
    notes={
        "base": "the zap reads the PMD, khugepaged clears it and frees the table under "
        "mmap W + the PMD lock, the zap locks the freed table's PTL",
        "base+khugepaged-retract-locks": "collapse_pte_mapped_thp takes i_mmap_rwsem for "
        "write: the hole punch's zap cannot be inside the table",
        "base+pte-map-revalidate": "the zap maps the table under RCU and rechecks the PMD, "
        "but the table is still freed at once, not after a grace period",
        "base+retract-pgtable-rcu": "the table is freed after a grace period, but the "
        "zap holds no RCU read lock and does not recheck the PMD",
        "current-pte-map-revalidate": "6.6's retraction without 6.5's readers: the zap is "
        "outside any RCU section when the grace period ends",
        "current-retract-pgtable-rcu": "6.1's retraction (every lock for write) is still "
        "right with 6.5's readers",
        "current-khugepaged-retract-locks": "6.6 rewrote collapse_pte_mapped_thp; the 6.1 "
        "switch no longer matters",
    },
    explore=K2,
)
def khugepaged_retract_truncate(kernel: Kernel) -> Any:
    """Set-up: a tmpfs file (``huge=always``) whose first 2 MiB are one
    large folio in the page cache, and an aligned shared VMA whose PMD
    points to an empty PTE table (the recipe of docs/thp-reclaim.md, the
    page then dropped with MADV_DONTNEED) -- what ``collapse_file`` leaves
    when ``retract_page_tables`` could not take the mmap lock; before 6.6
    the address is then in khugepaged's queue of PTE-mapped THPs. khugepaged
    (a kernel thread, cpu1) makes one pass; cpu0 punches a hole over the
    2 MiB. (With the page still mapped the 6.0 race also shows as a mapcount
    underflow: the zap removes the rmap of a PTE that
    ``collapse_pte_mapped_thp`` already un-rmapped but did not clear.)"""
    s = kernel.system(cpus=2, fault_around_bytes=PAGE_SIZE)
    s.create_file("/dev/shm/f", 2 * HPAGE_PMD_SIZE, shmem=True, huge="always")
    p = s.process()
    fd = p.open("/dev/shm/f")
    a = p.mmap(THP_BASE, HPAGE_PMD_SIZE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    p.poke(a, 1)  # the large folio, mapped by a PMD
    p.mprotect(a + HPAGE_PMD_SIZE // 2, HPAGE_PMD_SIZE // 2, PROT_READ)  # PMD split
    p.peek(a)  # mapped again by one PTE: now the PMD points to a PTE table
    p.mprotect(a + HPAGE_PMD_SIZE // 2, HPAGE_PMD_SIZE // 2, RW)  # one VMA again
    p.madvise(a, PAGE_SIZE, MADV_DONTNEED)  # the table stays, empty (as collapse_file leaves it)
    p.khugepaged_add_pte_mapped_thp(a)  # False (and not needed) from 6.6

    def punch(t: Thread) -> None:
        t.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, HPAGE_PMD_SIZE)

    p.khugepaged(a, cpu=1)
    p.thread(punch, cpu=0, name="cpu0")
    return None


@scenario(
    name="khugepaged-gup-fast-collapse",
    summary="on a machine whose TLB flushes send no IPI, GUP-fast takes an O_DIRECT "
    "buffer's page through the PTE table khugepaged is collapsing, after the refcount "
    "check: the DMA lands in the old page, the process reads the copy",
    references=(
        "70cbc3cc78a9 mm: gup: fix the fast GUP race against THP collapse (6.0)",
        "2ba99c5e0881 mm/khugepaged: fix GUP-fast interaction by sending IPI (6.1, patch "
        "2/3 of the seed's series)",
    ),
    base=Kernel(release="5.19"),
    fixes=("gup-fast-pmd-recheck", "khugepaged-gup-fast-ipi"),
    expect={
        "current": "clean",
        "base": "wrong-data",
        "base+gup-fast-pmd-recheck": "clean",
        "base+khugepaged-gup-fast-ipi": "clean",
        "base+fixes": "clean",
        "current-gup-fast-pmd-recheck": "clean",
        "current-khugepaged-gup-fast-ipi": "clean",
    },
    notes={
        "base": "GUP-fast read the old PMD before pmdp_collapse_flush and takes its "
        "reference after __collapse_huge_page_isolate checked the refcount",
        "base+gup-fast-pmd-recheck": "GUP-fast sees the PMD changed, drops the page and "
        "falls back to the slow path, which waits for the mmap lock",
        "base+khugepaged-gup-fast-ipi": "the IPI after pmdp_collapse_flush waits for "
        "GUP-fast's interrupts-off section: its reference is in place before the check",
    },
    explore=K2,
)
def khugepaged_gup_fast_collapse(kernel: Kernel) -> Any:
    """An anonymous 2 MiB region with one page written (small pages, then
    MADV_HUGEPAGE); cpu0 reads a block into it with O_DIRECT (GUP-fast,
    DMA) and then reads it; khugepaged (cpu1) collapses the region. TLB
    flushes are broadcast by the hardware (``tlb_flush="broadcast"``)."""
    return gup_fast_collapse(kernel, "broadcast")


def gup_fast_collapse(kernel: Kernel, tlb_flush: str) -> Any:
    """The program of khugepaged-gup-fast-collapse on a machine whose TLB
    flushes are *tlb_flush* (``ipi``: x86's, which wait for GUP-fast)."""
    s = kernel.system(cpus=2, tlb_flush=tlb_flush)
    p = s.process()
    a = p.mmap(THP_BASE, HPAGE_PMD_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    p.poke(a, 1)  # one small page (not yet MADV_HUGEPAGE: no THP fault)
    p.madvise(a, HPAGE_PMD_SIZE, MADV_HUGEPAGE)

    def dio(t: Thread) -> None:
        t.direct_io_read(a, 42)
        seen = t.load(a)
        if seen != 42:
            raise wrong_data(
                f"the O_DIRECT read put 42 in the buffer, the process reads {seen}: "
                "khugepaged copied the page away from the read's reference\n"
                f"GUP-fast's reference: {cite('try_grab_folio_fast', 'folio_ref_try_add')}\n"
                "the collapse checked the refcount before it: "
                f"{cite('_isolate_one', 'folio_trylock')}\n"
                f"the DMA wrote the old page: {cite('blkdev_direct_io_read', 'store word')}")

    p.khugepaged(a, cpu=1)
    p.thread(dio, cpu=0, name="cpu0")
    return None


@scenario(
    name="khugepaged-gup-fast-retract",
    summary="on a machine whose TLB flushes send no IPI, retract_page_tables frees a "
    "shmem PTE table at once while GUP-fast, interrupts off, is reading it",
    references=(
        "2ba99c5e0881 mm/khugepaged: fix GUP-fast interaction by sending IPI (6.1, patch "
        "2/3 of the seed's series)",
        "1d65b771bc08 mm/khugepaged: retract_page_tables() without mmap or vma lock (6.6): "
        "pte_free_defer",
    ),
    base=Kernel(release="6.0"),
    fixes=("khugepaged-gup-fast-ipi", "retract-pgtable-rcu", "pte-map-revalidate"),
    expect={
        "current": "clean",
        "base": "use-after-free",
        "base+khugepaged-gup-fast-ipi": "clean",
        "base+retract-pgtable-rcu": "use-after-free",
        "base+pte-map-revalidate": "use-after-free",
        "base+fixes": "clean",
        "current-khugepaged-gup-fast-ipi": "clean",
        "current-retract-pgtable-rcu": "clean",
        "current-pte-map-revalidate": "use-after-free",
    },
    notes={
        "base": "GUP-fast read the PMD, khugepaged cleared it and freed the table with "
        "no IPI to wait for GUP-fast's interrupts-off section",
        "base+retract-pgtable-rcu": "pte_free_defer protects GUP-fast, but the retraction "
        "no longer excludes the slow path's walk (follow_page_pte under the mmap read "
        "lock), which on 6.0 neither holds RCU nor rechecks the PMD",
        "base+pte-map-revalidate": "revalidating readers do not help GUP-fast: the table "
        "is still freed at once",
        "current-khugepaged-gup-fast-ipi": "RCU freeing alone protects GUP-fast",
        "current-pte-map-revalidate": "as base+retract-pgtable-rcu: 6.6's retraction needs "
        "6.5's readers",
    },
    explore=K2,
)
def khugepaged_gup_fast_retract(kernel: Kernel) -> Any:
    """A tmpfs file (``huge=advise``) with one small page cached and mapped
    by a PTE in an aligned, then MADV_HUGEPAGE, shared VMA; khugepaged
    (cpu1) collapses the file's first 2 MiB and retracts the table; cpu0
    pins the page with GUP-fast. TLB flushes are broadcast by the hardware."""
    s = kernel.system(cpus=2, tlb_flush="broadcast", fault_around_bytes=PAGE_SIZE)
    s.create_file("/dev/shm/f", HPAGE_PMD_SIZE, shmem=True, huge="advise")
    p = s.process()
    fd = p.open("/dev/shm/f")
    a = p.mmap(THP_BASE, HPAGE_PMD_SIZE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    p.poke(a, 1)
    p.madvise(a, HPAGE_PMD_SIZE, MADV_HUGEPAGE)

    def pin(t: Thread) -> None:
        pages = t.gup_fast(a)
        t.unpin(pages)

    p.khugepaged(a, cpu=1)
    p.thread(pin, cpu=0, name="cpu0")
    return None


@scenario(
    name="khugepaged-retract-uffd-wp",
    summary="retract_page_tables, holding no mmap lock, frees a shmem PTE table in which "
    "a monitor just installed a uffd-wp marker: the protected page is then written "
    "without a userfault",
    references=(
        "1d65b771bc08 mm/khugepaged: retract_page_tables() without mmap or vma lock (6.6); "
        "v2: \"repeat checks under ptl because UFFD, per PeterX and JannH\"",
        "mm/khugepaged: don't recycle vma pgtable if uffd-wp registered (5.19)",
    ),
    base=Kernel(release="6.5", with_=("retract-pgtable-rcu",)),
    fixes=("retract-ptl-recheck", "khugepaged-uffd-wp-keep-pgtable"),
    # K=1: the race of the review. With two preemptions the current kernel
    # shows another window (khugepaged-uffd-wp-populate).
    expect={
        "current": "clean",
        "base": "wrong-data",
        "base+retract-ptl-recheck": "clean",
        "base+khugepaged-uffd-wp-keep-pgtable": "wrong-data",
        "base+fixes": "clean",
        "current-retract-ptl-recheck": "wrong-data",
        "current-khugepaged-uffd-wp-keep-pgtable": "wrong-data",
    },
    notes={
        "base": "the series as first posted on 6.5 (v1): the uffd-wp check before the "
        "locks saw an unregistered VMA; registration and the marker came before the "
        "PMD was cleared",
        "base+retract-ptl-recheck": "v2 checks the registration again under the PMD and "
        "PTE locks, which the marker's installation took",
        "base+khugepaged-uffd-wp-keep-pgtable": "the 5.19 check alone: too early",
        "current-khugepaged-uffd-wp-keep-pgtable": "no uffd-wp check at all: a "
        "registered VMA's table is freed with its markers",
        "current": "clean within one preemption; see khugepaged-uffd-wp-populate for two",
    },
    explore=K1,
)
def khugepaged_retract_uffd_wp(kernel: Kernel) -> Any:
    """A tmpfs file (``huge=advise``) with one small page cached and mapped
    in an aligned shared VMA (MADV_HUGEPAGE). khugepaged (a kernel thread,
    cpu1) collapses the file's first 2 MiB; cpu0 registers the range for
    uffd-wp, write-protects the second page (still empty: a uffd-wp marker)
    and writes it, which must raise a userfault; cpu2, the monitor, reads
    it and un-protects the page."""
    s = kernel.system(cpus=3, fault_around_bytes=PAGE_SIZE)
    s.create_file("/dev/shm/f", HPAGE_PMD_SIZE, shmem=True, huge="advise")
    p = s.process()
    fd = p.open("/dev/shm/f")
    a = p.mmap(THP_BASE, HPAGE_PMD_SIZE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
    p.poke(a, 1)
    p.madvise(a, HPAGE_PMD_SIZE, MADV_HUGEPAGE)
    uffd = p.userfaultfd(UFFD_FEATURE_PAGEFAULT_FLAG_WP)
    page = a + PAGE_SIZE
    faults: list[Any] = []

    def writer(t: Thread) -> None:
        uffd.register(a, HPAGE_PMD_SIZE, UFFDIO_REGISTER_MODE_WP)
        uffd.writeprotect(page, PAGE_SIZE, protect=True)
        t.store(page, 7)
        if not faults:
            raise wrong_data(
                "a store to a page the monitor had write-protected completed without a "
                "userfault: the uffd-wp marker went with the PTE table khugepaged freed\n"
                f"the marker: {cite('change_pte_range', 'set_pte')}\n"
                f"the table cleared: {cite('pmdp_collapse_flush', 'pmdp_get_and_clear')}\n"
                "UFFDIO_WRITEPROTECT found the PMD empty: "
                f"{cite('change_protection_range', 'pmdp_get')}")

    def monitor(t: Thread) -> None:
        msg = uffd.read()
        faults.append(msg)
        uffd.writeprotect(page, PAGE_SIZE, protect=False)

    p.khugepaged(a, cpu=1)
    p.thread(writer, cpu=0, name="cpu0")
    p.thread(monitor, cpu=2, name="monitor")
    return None


@scenario(
    name="khugepaged-uffd-wp-populate",
    summary="UFFDIO_WRITEPROTECT populates a shmem PTE table for its markers, then "
    "skips the PMD that retract_page_tables emptied in between: the page is "
    "protected by nothing (a window in the 6.6+ code, found by exploring)",
    references=(
        "1d65b771bc08 mm/khugepaged: retract_page_tables() without mmap or vma lock (6.6): "
        "retraction no longer excludes UFFDIO_REGISTER / UFFDIO_WRITEPROTECT",
        "mm/mprotect.c change_pmd_range: change_pmd_prepare, then \"if (pmd_none(*pmd)) "
        "goto next\"",
    ),
    base=Kernel(release="6.6"),
    fixes=("retract-pgtable-rcu",),
    proposals=("uffd-wp-populate-recheck",),
    expect={
        "current": "wrong-data",
        "base": "wrong-data",
        "base+retract-pgtable-rcu": "wrong-data",
        "current-retract-pgtable-rcu": "clean",
        "base+uffd-wp-populate-recheck": "clean",
    },
    notes={
        "current": "retract_page_tables rechecks the VMA (not yet registered) under its "
        "locks; the monitor registers, UFFDIO_WRITEPROTECT's change_pmd_prepare sees the "
        "table, khugepaged clears the PMD, change_pmd_range sees it empty and skips it",
        "current-retract-pgtable-rcu": "6.1's retraction holds the mmap lock for write: "
        "registration and protection wait for it",
        "base+uffd-wp-populate-recheck": "an empty PMD after change_pmd_prepare goes back "
        "to it: the table is populated again and gets its marker",
    },
    explore=K2,
    ci=("current", "base", "base+retract-pgtable-rcu"),
)
def khugepaged_uffd_wp_populate(kernel: Kernel) -> Any:
    """The set-up and threads of khugepaged-retract-uffd-wp, explored with
    two preemptions."""
    return khugepaged_retract_uffd_wp.fn(kernel)


CATALOG = (khugepaged_retract_truncate, khugepaged_gup_fast_collapse,
           khugepaged_gup_fast_retract, khugepaged_retract_uffd_wp, khugepaged_uffd_wp_populate)

__all__ = ["CATALOG", "khugepaged_gup_fast_collapse", "khugepaged_gup_fast_retract",
           "khugepaged_retract_truncate", "khugepaged_retract_uffd_wp",
           "khugepaged_uffd_wp_populate"]

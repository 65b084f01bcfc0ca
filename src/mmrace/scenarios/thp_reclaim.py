"""Races of lazy freeing (MADV_FREE) against reclaim, GUP-fast and
MADV_DONTNEED (issue 15's catalog entries).

``madv-free-reclaim-dio``: the race of "mm: fix race between MADV_FREE
reclaim and blkdev direct IO read" (5.18). A buffer was MADV_FREE'd; an
``O_DIRECT`` read from a block device takes its page with GUP-fast
(``bio_iov_iter_get_pages``), and before the device has written it,
reclaim finds the page clean and lazy-free: ``try_to_unmap_one`` discards
the mapping; ``shrink_folio_list`` then keeps the page anyway (the GUP
reference makes ``folio_ref_freeze`` fail), the DMA lands in it, and the
process, reading its buffer, faults in the zero page.

``thp-madv-free-dontneed``: the race of "thp: fix MADV_DONTNEED vs.
MADV_FREE race" (4.11). Both advices run under the mmap read lock.
MADV_FREE of a whole THP cleared its PMD (``pmdp_huge_get_and_clear_full``)
and set it again old and clean; MADV_DONTNEED's ``zap_pmd_range`` reads
the PMD without the lock, sees it none in between and skips it, so
MADV_DONTNEED returns with the THP still mapped and the next read returns
the old data instead of zeroes.
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import current_execution
from mmrace.mm.huge_memory import HPAGE_PMD_SIZE
from mmrace.mm.mm_types import PAGE_SIZE
from mmrace.mm.mman import (
    MADV_DONTNEED,
    MADV_FREE,
    MADV_HUGEPAGE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
)
from mmrace.oracles.memory import wrong_data
from mmrace.scenarios.api import Explore, Kernel, scenario
from mmrace.user import Thread


def cite(where: str, label: str) -> str:
    """``event N (...)`` of the last operation *label* (a prefix) done in
    kernel function *where*, for a violation message (the trace then shows
    it); empty if there is none."""
    events = current_execution().events
    for i in range(len(events) - 1, -1, -1):
        ev = events[i]
        if ev.where == where and (ev.label or "").startswith(label):
            detail = f" = {ev.detail}" if ev.detail is not None else ""
            return f"event {i} ({ev.label} in {where}{detail})"
    return "(not in this execution)"


RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
K3 = Explore(strategy="bounded", preemption_bound=3)
THP_BASE = 0x7E0000000000  # 2 MiB aligned, below the mmap base


@scenario(
    name="madv-free-reclaim-dio",
    summary="reclaim discards a clean MADV_FREE page that an O_DIRECT read took with "
    "GUP-fast before the device wrote it; the process then reads zeroes",
    references=(
        "6c8e2a256915 mm: fix race between MADV_FREE reclaim and blkdev direct IO read (5.18)",
        "[PATCH v2] mm: fix race between MADV_FREE reclaim and blkdev direct IO read "
        "(Mauricio Faria de Oliveira, linux-mm, 2022-01-05)",
        "802a3a92ad7a mm: reclaim MADV_FREE pages (4.12)",
    ),
    base=Kernel(release="5.17"),
    fixes=("madv-free-reclaim-gup-refcount",),
    expect={
        "current": "clean",
        "base": "wrong-data",
        "base+madv-free-reclaim-gup-refcount": "clean",
        "current-madv-free-reclaim-gup-refcount": "wrong-data",
    },
    notes={
        "base": "reclaim runs after bio_iov_iter_get_pages and before the DMA: the "
        "clean page is discarded, kept only by the GUP reference",
        "current": "try_to_unmap_one sees ref_count != 1 + map_count and puts the PTE back",
    },
    explore=K3,
)
def madv_free_reclaim_dio(kernel: Kernel) -> Any:
    """cpu0 reads a block into its MADV_FREE'd buffer with O_DIRECT, then
    reads the buffer; cpu1 reclaims the buffer's page (kswapd's path, the
    page's references checked)."""
    s = kernel.system(cpus=2)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.poke(a, 1)  # the buffer held data once
    p.madvise(a, PAGE_SIZE, MADV_FREE)
    folio = p.folio_at(a)

    def dio(t: Thread) -> None:
        t.direct_io_read(a, 42)
        seen = t.load(a)
        if seen != 42:
            raise wrong_data(
                f"the O_DIRECT read put 42 in the buffer, the process reads {seen}: reclaim "
                "discarded the page while the read was in flight\n"
                f"GUP reference: {cite('try_grab_folio_fast', 'folio_ref_try_add')}\n"
                f"reclaim cleared the PTE: {cite('ptep_clear_flush', 'ptep_get_and_clear')}\n"
                f"and found the page clean: {cite('_lazyfree_discardable', 'folio_test_dirty')}\n"
                f"the DMA wrote the old page: {cite('blkdev_direct_io_read', 'store word')}")

    def reclaim(t: Thread) -> None:
        t.reclaim(folio)

    p.thread(dio, cpu=0, name="cpu0")
    p.thread(reclaim, cpu=1, name="cpu1")
    return None


@scenario(
    name="thp-madv-free-dontneed",
    summary="MADV_FREE of a THP clears and resets its PMD; a concurrent MADV_DONTNEED "
    "sees it none, skips it, and the page stays mapped with its old data",
    references=(
        "58ceeb6bec86 thp: fix MADV_DONTNEED vs. MADV_FREE race (4.11)",
        "ced108037c2a thp: fix MADV_DONTNEED vs. numa balancing race (4.11): the same "
        "race through change_huge_pmd",
    ),
    base=Kernel(release="4.10"),
    fixes=("thp-madv-free-pmdp-invalidate",),
    expect={
        "current": "clean",
        "base": "wrong-data",
        "base+thp-madv-free-pmdp-invalidate": "clean",
        "current-thp-madv-free-pmdp-invalidate": "wrong-data",
    },
    notes={
        "base": "zap_pmd_range reads the PMD between pmdp_huge_get_and_clear_full and "
        "set_pmd_at",
        "current": "pmdp_invalidate keeps the PMD huge: zap_huge_pmd waits for its lock",
    },
    explore=K3,
)
def thp_madv_free_dontneed(kernel: Kernel) -> Any:
    """A dirty anonymous THP; cpu0 MADV_FREEs it while cpu1 MADV_DONTNEEDs
    it and then reads it (it must read zero)."""
    s = kernel.system(cpus=2)
    p = s.process()
    a = p.mmap(THP_BASE, HPAGE_PMD_SIZE, RW, ANON | MAP_FIXED)
    p.madvise(a, HPAGE_PMD_SIZE, MADV_HUGEPAGE)
    p.poke(a, 1)  # a THP fault: one huge PMD, young and dirty

    def free(t: Thread) -> None:
        t.madvise(a, HPAGE_PMD_SIZE, MADV_FREE)

    def dontneed(t: Thread) -> None:
        t.madvise(a, HPAGE_PMD_SIZE, MADV_DONTNEED)
        seen = t.load(a)
        if seen != 0:
            raise wrong_data(
                f"read {seen} after MADV_DONTNEED returned: the THP was still mapped\n"
                "MADV_FREE cleared the PMD: "
                f"{cite('madvise_free_huge_pmd', 'pmdp_get_and_clear')}\n"
                f"MADV_DONTNEED read it without the lock: {cite('unmap_page_range', 'pmdp_get')}\n"
                f"MADV_FREE set it again: {cite('madvise_free_huge_pmd', 'set_pmd')}")

    p.thread(free, cpu=0, name="cpu0")
    p.thread(dontneed, cpu=1, name="cpu1")
    return None


CATALOG = (madv_free_reclaim_dio, thp_madv_free_dontneed)

__all__ = ["CATALOG", "madv_free_reclaim_dio", "thp_madv_free_dontneed"]

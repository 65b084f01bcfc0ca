"""Benchmark of issue 16's paths: the visible operations of each kind of
collapse (anonymous, shmem, a PTE-mapped THP's retraction) with 1, 33 and
512 small pages, and the executions and time to the verdict of every
variant of the khugepaged catalog entries.

Each operation figure is the number of visible operations (scheduling
points) the collapse costs when run in one simulated thread (set-up code
is free), with the per-folio steps batched (the model) and, in brackets,
one operation per folio and step (``per_folio_steps``, what the batching
is checked against). The 512 PTEs cost one operation per scan and one per
clear; batched, the steps on every small folio (the scans' look, the
anonymous isolation, the copy, the release and free) are one operation
each. What still grows with the pages is shmem's per-folio loop: the
locked lookup (with the isolation and, for a page no process maps, the
refcount check), and for a mapped page its ``try_to_unmap`` (the rmap
walk, ~20 operations) and a refcount check after it -- compare the
"shmem unmapped" column, whose pages are only in the page cache.

Figures on the reference machine (provisional, loaded):

=====  ============  ==============  ===============  ==============
pages  anonymous     shmem           shmem unmapped   PTE-mapped THP
=====  ============  ==============  ===============  ==============
1      68 (71)       56 (61)         35 (41)          46
33     68 (295)      760 (1,021)     67 (361)         46
512    68 (3,648)    11,294 (15,387) 542 (5,147)      46
=====  ============  ==============  ===============  ==============

Run: ``.venv/bin/python bench/khugepaged.py`` (``--ops`` or ``--catalog``
for one half).
"""

from __future__ import annotations

import platform
import sys
import time

from benchkit import ops
from mmrace.mm.khugepaged import collapse_pte_mapped_thp, per_folio_steps
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.scenarios import get
from mmrace.scenarios.khugepaged import CATALOG
from mmrace.scenarios.run import run_variant
from mmrace.user import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    Process,
    System,
)

RW = PROT_READ | PROT_WRITE
HUGE = 1 << 21
PAGE = 1 << 12
THP_BASE = 0x7E0000000000


def anon(npages: int) -> tuple[Process, int]:
    p = System(thp="madvise").process()
    a = p.mmap(THP_BASE, HUGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    for i in range(npages):
        p.poke(a + i * PAGE, i + 1)
    p.madvise(a, HUGE, MADV_HUGEPAGE)
    return p, a


def shmem(npages: int) -> tuple[Process, int]:
    s = System(fault_around_bytes=PAGE)
    s.create_file("/dev/shm/f", HUGE, shmem=True, huge="advise")
    p = s.process()
    a = p.mmap(THP_BASE, HUGE, RW, MAP_SHARED | MAP_FIXED, p.open("/dev/shm/f"), 0)
    for i in range(npages):
        p.poke(a + i * PAGE, i + 1)
    p.madvise(a, HUGE, MADV_HUGEPAGE)
    return p, a


def shmem_unmapped(npages: int) -> tuple[Process, int]:
    """As :func:`shmem`, the pages then unmapped (``MADV_DONTNEED`` keeps
    a tmpfs file's page cache): the collapse has no rmap walk to make."""
    p, a = shmem(npages)
    p.madvise(a, HUGE, MADV_DONTNEED)
    return p, a


def pte_mapped(npages: int) -> tuple[Process, int]:
    """A shmem large folio, *npages* of its pages mapped by PTEs."""
    s = System(fault_around_bytes=PAGE)
    s.create_file("/dev/shm/f", HUGE, shmem=True, huge="always")
    p = s.process()
    a = p.mmap(THP_BASE, HUGE, RW, MAP_SHARED | MAP_FIXED, p.open("/dev/shm/f"), 0)
    p.poke(a, 1)
    p.mprotect(a + HUGE // 2, HUGE // 2, PROT_READ)
    for i in range(npages):
        p.peek(a + i * PAGE)
    p.mprotect(a + HUGE // 2, HUGE // 2, RW)
    return p, a


def retract(state: tuple[Process, int]) -> None:
    p, a = state
    mmap_read_lock(p.mm)
    collapse_pte_mapped_thp(p.mm, a, True)
    mmap_read_unlock(p.mm)


def scan(state: tuple[Process, int]) -> None:
    state[0].khugepaged_scan(state[1])


def print_ops() -> None:
    print("visible operations of one collapse (one thread; set-up free), "
          "batched (per folio):")
    print(f"  {'pages':>5}  {'anonymous':>15}  {'shmem':>15}  {'shmem unmapped':>15}  "
          f"{'PTE-mapped THP':>14}")
    for n in (1, 33, 512):
        cols = []
        for setup in (anon, shmem, shmem_unmapped):
            batched = ops(lambda n=n, setup=setup: setup(n), scan)
            with per_folio_steps():
                fine = ops(lambda n=n, setup=setup: setup(n), scan)
            cols.append(f"{batched} ({fine})")
        t = ops(lambda n=n: pte_mapped(n), retract)
        print(f"  {n:>5}  {cols[0]:>15}  {cols[1]:>15}  {cols[2]:>15}  {t:>14}")
    print("  (anonymous and shmem: a khugepaged pass; PTE-mapped THP: "
          "collapse_pte_mapped_thp, the huge PMD installed)")


def print_catalog() -> None:
    print("khugepaged catalog entries (bounded DPOR, each entry's K):")
    print(f"  {'entry / variant':<58} {'outcome':<15} {'execs':>6} {'seconds':>8}")
    for sc in CATALOG:
        entry = get(sc.name)
        for v in entry.variants():
            t0 = time.perf_counter()
            r = run_variant(entry, v)
            dt = time.perf_counter() - t0
            mark = "" if r.ok else f"  (expected {v.expected})"
            print(f"  {sc.name + ' / ' + v.name:<58} {r.outcome:<15} "
                  f"{r.result.executions:>6} {dt:>8.2f}{mark}")


def main() -> None:
    print(f"# {platform.system()} {platform.release()} {platform.machine()}, "
          f"Python {sys.version.split()[0]}")
    which = sys.argv[1:] or ["--ops", "--catalog"]
    if "--ops" in which:
        print_ops()
    if "--catalog" in which:
        print_catalog()


if __name__ == "__main__":
    main()

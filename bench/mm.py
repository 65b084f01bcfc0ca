"""Benchmark of the address-space model (issue 4).

Reports, at 100, 1,000 and 10,000 VMAs in the tree:
* ``mmap`` + ``munmap`` pairs per second (anonymous, kernel-chosen address);
* VMA lookups (``vma_lookup`` under the mmap read lock) per second.

And for mremap (issue 13):
* moves per second of a 512-page populated mapping, back and forth with
  ``MREMAP_FIXED``: PMD-aligned (one ``move_normal_pmd`` moves the whole PTE
  table) and misaligned by one page (``move_ptes`` moves the 512 PTEs);
* the visible operations one ``move_ptes`` of one present PTE costs, from a
  simulated thread (one CPU: no shootdown IPI; each other CPU in
  ``mm_cpumask`` adds one), and one ``move_huge_pmd`` of a PMD-mapped THP.

Everything else runs as set-up code of one execution (no scheduling), so the
figures are the model's own cost per operation. Run:
``.venv/bin/python bench/mm.py [--sizes 100,1000,10000] [--mremap-pages 512]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from mmrace.engine import current_execution, explore, spawn
from mmrace.mm import mremap as mremap_mod
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.mm.pgtable import PMD_SIZE
from mmrace.mm.vma import vma_lookup
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    System,
)

ANON = MAP_PRIVATE | MAP_ANONYMOUS


def measure(nvmas: int, pairs: int, lookups: int) -> dict[str, Any]:
    out: dict[str, Any] = {"vmas": nvmas}

    def program() -> None:
        proc = System().process()
        mm = proc.mm
        addrs = []
        t0 = time.perf_counter()
        for i in range(nvmas):
            # alternate protections so that neighbours never merge
            prot = PROT_READ if i % 2 else PROT_READ | PROT_WRITE
            addrs.append(proc.mmap(0, PAGE_SIZE, prot, ANON))
        out["build_s"] = time.perf_counter() - t0
        assert mm.map_count == nvmas
        t0 = time.perf_counter()
        for _ in range(pairs):
            a = proc.mmap(0, PAGE_SIZE, PROT_READ, ANON)
            proc.munmap(a, PAGE_SIZE)
        dt = time.perf_counter() - t0
        out["mmap_munmap_pairs_per_s"] = pairs / dt
        mmap_read_lock(mm)
        n = len(addrs)
        t0 = time.perf_counter()
        for i in range(lookups):
            vma = vma_lookup(mm, addrs[(i * 7919) % n] + 8)
            assert vma is not None
        dt = time.perf_counter() - t0
        mmap_read_unlock(mm)
        out["lookups_per_s"] = lookups / dt

    r = explore(program, max_executions=1, shrink=False, max_steps=10**9)
    if r.violation is not None:
        raise SystemExit(r.violation.message)
    return out


def mremap_moves_per_s(pages: int, moves: int, misalign: int) -> float:
    """mremap of a *pages*-page populated anonymous mapping back and forth
    between two places *moves* times: both PMD-aligned (*misalign* 0), or
    misaligned by different amounts (1 and 2 pages), so that
    ``try_realign_addr`` cannot make whole tables movable."""
    out: dict[str, float] = {}
    here = 0x7E0000000000 + misalign * PAGE_SIZE
    there = 0x7E0000000000 + 64 * PMD_SIZE + 2 * misalign * PAGE_SIZE

    def program() -> None:
        p = System().process()
        a = p.mmap(here, pages * PAGE_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
        for i in range(pages):
            p.poke(a + i * PAGE_SIZE, i)
        places = (there, here)
        t0 = time.perf_counter()
        for i in range(moves):
            a = p.mremap(a, pages * PAGE_SIZE, pages * PAGE_SIZE,
                         MREMAP_MAYMOVE | MREMAP_FIXED, places[i % 2])
        out["t"] = time.perf_counter() - t0
        assert p.peek(a + (pages - 1) * PAGE_SIZE) == pages - 1

    r = explore(program, max_executions=1, shrink=False, max_steps=10**8)
    if r.violation is not None:
        raise SystemExit(r.violation.message)
    return moves / out["t"]


def move_ptes_operations(cpus: int = 1) -> int:
    """Visible operations inside one ``move_ptes`` that moves one present PTE
    (the mover thread is the only one running, so every event in between
    is its own)."""
    counted = {"n": 0}
    real = mremap_mod.move_ptes

    def counting(*args: Any) -> int:
        before = len(current_execution().events)
        ret = real(*args)
        counted["n"] += len(current_execution().events) - before
        return ret

    def program() -> None:
        s = System(cpus=cpus)
        p = s.process()
        a = p.mmap(0x7E0000000000 + PAGE_SIZE, PAGE_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
        p.poke(a, 1)
        for cpu in range(1, cpus):
            p.touch(a, cpu)
        spawn(p.mremap, a, PAGE_SIZE, PAGE_SIZE, MREMAP_MAYMOVE | MREMAP_FIXED,
              0x7E0000400000 + 2 * PAGE_SIZE, name="mover")

    mremap_mod.move_ptes = counting  # type: ignore[assignment]
    try:
        r = explore(program, max_executions=1, shrink=False)
    finally:
        mremap_mod.move_ptes = real
    if r.violation is not None:
        raise SystemExit(r.violation.message)
    return counted["n"]


def move_huge_pmd_operations() -> int:
    """Visible operations inside one ``move_huge_pmd`` of a PMD-mapped THP
    (one CPU, the mover the only thread)."""
    counted = {"n": 0}
    real = mremap_mod.move_huge_pmd

    def counting(*args: Any) -> bool:
        before = len(current_execution().events)
        ret = real(*args)
        counted["n"] += len(current_execution().events) - before
        return ret

    def program() -> None:
        p = System(cpus=1, thp="always").process()
        a = p.mmap(0x7E0000000000, PMD_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
        p.poke(a, 1)
        spawn(p.mremap, a, PMD_SIZE, PMD_SIZE, MREMAP_MAYMOVE | MREMAP_FIXED,
              0x7E0000000000 + 64 * PMD_SIZE, name="mover")

    mremap_mod.move_huge_pmd = counting  # type: ignore[assignment]
    try:
        r = explore(program, max_executions=1, shrink=False)
    finally:
        mremap_mod.move_huge_pmd = real
    if r.violation is not None:
        raise SystemExit(r.violation.message)
    return counted["n"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--lookups", type=int, default=50000)
    ap.add_argument("--mremap-pages", type=int, default=512)
    ap.add_argument("--moves", type=int, default=20)
    args = ap.parse_args()
    print(f"{'VMAs':>7} {'build s':>8} {'mmap+munmap/s':>14} {'lookups/s':>10}")
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(size, args.pairs, args.lookups)
        print(f"{r['vmas']:>7} {r['build_s']:>8.2f} {r['mmap_munmap_pairs_per_s']:>14,.0f} "
              f"{r['lookups_per_s']:>10,.0f}")
    n = args.mremap_pages
    aligned = mremap_moves_per_s(n, args.moves * 10, 0)
    misaligned = mremap_moves_per_s(n, args.moves, 1)
    print(f"mremap of a {n}-page populated mapping: {aligned:,.0f} moves/s PMD-aligned "
          f"(one move_normal_pmd), {misaligned:,.1f} moves/s misaligned ({n} PTEs moved "
          "by move_ptes)")
    print(f"move_ptes of one present PTE: {move_ptes_operations(1)} visible operations "
          f"(one CPU; {move_ptes_operations(2)} with a second CPU in mm_cpumask)")
    print(f"move_huge_pmd of a PMD-mapped THP: {move_huge_pmd_operations()} visible "
          "operations (one CPU)")


if __name__ == "__main__":
    main()

"""Benchmark of the address-space model (issue 4).

Reports, at 100, 1,000 and 10,000 VMAs in the tree:
* ``mmap`` + ``munmap`` pairs per second (anonymous, kernel-chosen address);
* VMA lookups (``vma_lookup`` under the mmap read lock) per second.

Everything runs as set-up code of one execution (no scheduling), so the
figures are the model's own cost per operation. Run:
``.venv/bin/python bench/mm.py [--sizes 100,1000,10000]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from mmrace.engine import explore
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.mm.vma import vma_lookup
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_PRIVATE,
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

    r = explore(program, max_executions=1)
    if r.violation is not None:
        raise SystemExit(r.violation.message)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--lookups", type=int, default=50000)
    args = ap.parse_args()
    print(f"{'VMAs':>7} {'build s':>8} {'mmap+munmap/s':>14} {'lookups/s':>10}")
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(size, args.pairs, args.lookups)
        print(f"{r['vmas']:>7} {r['build_s']:>8.2f} {r['mmap_munmap_pairs_per_s']:>14,.0f} "
              f"{r['lookups_per_s']:>10,.0f}")


if __name__ == "__main__":
    main()

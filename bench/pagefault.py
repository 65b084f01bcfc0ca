"""Benchmark of the page-table and fault model (issue 5).

Reports:
* anonymous write faults per second over 1,000 pages, single-threaded, both
  as set-up code (the model's own cost) and inside one simulated thread
  (with the scheduler's per-operation cost);
* the time to fork a process with 1,000 populated pages;
* the number of visible operations per write fault (it drives the cost of
  exploring scenarios that fault).

Run: ``.venv/bin/python bench/pagefault.py [--pages 1000]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from mmrace.engine import explore, spawn
from mmrace.mm.memory import do_user_addr_fault
from mmrace.user import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, System

ANON = MAP_PRIVATE | MAP_ANONYMOUS
RW = PROT_READ | PROT_WRITE


def faults_setup(pages: int) -> float:
    out: dict[str, float] = {}

    def program() -> None:
        p = System().process()
        a = p.mmap(0, pages * PAGE_SIZE, RW, ANON)
        t0 = time.perf_counter()
        for i in range(pages):
            do_user_addr_fault(p.mm, a + i * PAGE_SIZE, True)
        out["t"] = time.perf_counter() - t0

    r = explore(program, max_executions=1, shrink=False, max_steps=10**8)
    assert r.violation is None, r.violation.message
    return pages / out["t"]


def faults_thread(pages: int) -> tuple[float, float, int]:
    """(faults/s, visible operations per fault, total steps)."""
    def one(n: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        r = explore(program_n(n), max_executions=1, shrink=False, max_steps=10**8)
        assert r.violation is None, r.violation and r.violation.message
        return time.perf_counter() - t0, r.steps

    def program_n(n: int) -> Any:
        def prog() -> None:
            p = System().process()
            a = p.mmap(0, n * PAGE_SIZE, RW, ANON)

            def faulter() -> None:
                for i in range(n):
                    do_user_addr_fault(p.mm, a + i * PAGE_SIZE, True)

            spawn(faulter, name="faulter")

        return prog

    t_base, s_base = one(1)
    t, steps = one(pages + 1)
    per_fault = (steps - s_base) / pages
    return pages / max(t - t_base, 1e-9), per_fault, steps


def fork_time(pages: int) -> float:
    out: dict[str, float] = {}

    def program() -> None:
        p = System().process()
        a = p.mmap(0, pages * PAGE_SIZE, RW, ANON)
        for i in range(pages):
            do_user_addr_fault(p.mm, a + i * PAGE_SIZE, True)
        t0 = time.perf_counter()
        p.fork()
        out["t"] = time.perf_counter() - t0

    r = explore(program, max_executions=1, shrink=False, max_steps=10**8)
    assert r.violation is None, r.violation.message
    return out["t"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=1000)
    args = ap.parse_args()
    n = args.pages
    print(f"anon write faults, set-up code:   {faults_setup(n):10,.0f} faults/s ({n} pages)")
    rate, per_fault, _ = faults_thread(n)
    print(f"anon write faults, in a thread:   {rate:10,.0f} faults/s ({n} pages)")
    print(f"visible operations per fault:     {per_fault:10.1f}")
    print(f"fork of a {n}-page process:      {fork_time(n) * 1000:10.1f} ms")


if __name__ == "__main__":
    main()

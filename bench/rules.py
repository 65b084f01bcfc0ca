"""Benchmark of the locking-rule checker (issue 18, with issue 11's cheap step).

Reports:
(a) the cost of one checked VMA-field read (under the mmap read lock, in a
    simulated thread) against a raw read of the same field;
(b) model steps per second on a catalog variant (CPU time, best of N runs);
(c) the visible operations each kernel path the rules' eras touch costs:
    one anonymous write fault (current kernel, 6.1), a stack-growth fault
    (current, 6.1), task_numa_work over two VMAs, swap_update_readahead;
(d) how many rule alternatives, lock states and lock-order levels the
    document of each release renders, and how many of them the checkers
    consulted while the benchmark's programs ran.

Run: ``.venv/bin/python bench/rules.py [--json] [--repeat N]``. (a) and
(b) also run on an older tree (``PYTHONPATH=old/src``), for a before/after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import mmrace.oracles  # noqa: F401 - subscribes the memory oracles
from mmrace.engine import current_execution, explore, spawn
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.scenarios import get
from mmrace.scenarios.run import run_variant
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    System,
    vma_find,
)

ANON = MAP_PRIVATE | MAP_ANONYMOUS
RW = PROT_READ | PROT_WRITE
P = PAGE_SIZE


def machine() -> dict[str, Any]:
    import greenlet

    return {"platform": platform.platform(), "python": platform.python_version(),
            "greenlet": greenlet.__version__, "cpu_count": os.cpu_count(),
            "load": os.getloadavg()[0]}


def checked_read_ns(n: int) -> dict[str, float]:
    """ns per checked read of vma.vm_flags and per raw read, in a thread."""
    out: dict[str, float] = {}

    def program() -> None:
        p = System().process()
        a = p.mmap(0, P, RW, ANON)
        mm = p.mm

        def reader() -> None:
            mmap_read_lock(mm)
            vma = vma_find(mm, a)
            vma.vm_flags  # noqa: B018 - warm the caches
            t0 = time.process_time()
            for _ in range(n):
                vma.vm_flags  # noqa: B018
            t1 = time.process_time()
            for _ in range(n):
                vma.raw("vm_flags")
            t2 = time.process_time()
            out["checked_ns"] = (t1 - t0) / n * 1e9
            out["raw_ns"] = (t2 - t1) / n * 1e9
            mmap_read_unlock(mm)

        spawn(reader, name="reader")

    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation.message if r.violation else ""
    return {k: round(v, 1) for k, v in out.items()}


def steps_per_second(name: str, variant: str, repeat: int) -> dict[str, Any]:
    sc = get(name)
    v = sc.variant(variant)
    best = float("inf")
    steps = executions = 0
    for _ in range(repeat):
        t0 = time.process_time()
        run = run_variant(sc, v)
        dt = time.process_time() - t0
        best = min(best, dt)
        steps, executions = run.result.steps, run.result.executions
    return {"scenario": name, "variant": variant, "executions": executions, "steps": steps,
            "cpu_seconds": round(best, 2), "steps_per_s": round(steps / best)}


def ops_of(build: Callable[[], Callable[[], None]]) -> int:
    """Visible operations of the threads of one execution of *build*()."""
    count: dict[str, int] = {}

    def program() -> Callable[[], None]:
        build()()
        return lambda: count.setdefault("n", len(current_execution().events))

    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation.message if r.violation else ""
    return count["n"]


def path_costs() -> dict[str, int]:
    def fault(kernel: str | None) -> Callable[[], Callable[[], None]]:
        def build() -> Callable[[], None]:
            def prog() -> None:
                p = System(kernel=kernel).process()
                a = p.mmap(0, P, RW, ANON)
                spawn(p.poke, a, 1, name="fault")
            return prog
        return build

    def grow(kernel: str | None) -> Callable[[], Callable[[], None]]:
        def build() -> Callable[[], None]:
            def prog() -> None:
                p = System(kernel=kernel).process()
                top = 0x7FF000000000
                s = p.mmap(top - 4 * P, 4 * P, RW, ANON | MAP_GROWSDOWN | MAP_FIXED)
                spawn(p.poke, s - P, 1, name="grow")
            return prog
        return build

    def numa() -> Callable[[], None]:
        from mmrace.mm.numa_balancing import task_numa_work

        def prog() -> None:
            p = System().process()
            p.mmap(0, P, RW, ANON)
            p.mmap(0, P, PROT_READ, ANON)
            spawn(task_numa_work, p.mm, name="numa")
        return prog

    def swap_ra() -> Callable[[], None]:
        from mmrace.mm.swap_state import swap_update_readahead

        def prog() -> None:
            p = System().process()
            a = p.mmap(0, P, RW, ANON)

            def body() -> None:
                mmap_read_lock(p.mm)
                swap_update_readahead(vma_find(p.mm, a), a, True)
                mmap_read_unlock(p.mm)
            spawn(body, name="ra")
        return prog

    def empty() -> Callable[[], None]:
        def prog() -> None:
            p = System().process()
            a = p.mmap(0, P, RW, ANON)

            def body() -> None:
                mmap_read_lock(p.mm)
                vma_find(p.mm, a)
                mmap_read_unlock(p.mm)
            spawn(body, name="lock")
        return prog

    lock_pair = ops_of(empty)
    return {
        "write fault, current kernel": ops_of(fault(None)),
        "write fault, 6.1 (mmap read lock)": ops_of(fault("6.1")),
        "stack-growth fault, current (write lock)": ops_of(grow(None)),
        "stack-growth fault, 6.1 (read lock)": ops_of(grow("6.1")),
        "task_numa_work over 2 VMAs": ops_of(numa),
        "swap_update_readahead (+ mmap read lock/unlock)": ops_of(swap_ra),
        "mmap read lock/unlock alone": lock_pair,
    }


def coverage() -> list[dict[str, Any]]:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "mm"))
    from rules_witness import RELEASES, witnesses

    from mmrace.mm.rules_check import consulted, reset_consulted
    from mmrace.mm.rules_doc import CONTRADICTS, NOT_MODELLED, build

    reset_consulted()
    for w in witnesses():
        w.run()
    seen = consulted()
    rows = []
    for rel in RELEASES:
        index = build(rel).index
        checked = [i for i, _r, e in index if e not in (NOT_MODELLED, CONTRADICTS)]
        rows.append({"release": rel or "current", "rendered": len(index),
                     "checked": len(checked),
                     "consulted": sum(1 for i in checked if i in seen)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reads", type=int, default=200_000)
    args = ap.parse_args(argv)
    out: dict[str, Any] = {"machine": machine()}
    out["read"] = checked_read_ns(args.reads)
    out["steps"] = [steps_per_second("uffd-wp-unprotect-cow", "current", args.repeat),
                    steps_per_second("softdirty-clear-refs-cow", "current-soft-dirty-tlb-flush",
                                     max(1, args.repeat - 1))]
    out["paths"] = path_costs()
    out["coverage"] = coverage()
    if args.json:
        print(json.dumps(out))
        return 0
    m = out["machine"]
    print(f"machine: {m['platform']}, Python {m['python']}, greenlet {m['greenlet']}, "
          f"{m['cpu_count']} CPUs, load average {m['load']:.1f}")
    r = out["read"]
    print(f"\n(a) checked VMA-field read {r['checked_ns']:.0f} ns, raw read {r['raw_ns']:.0f} ns")
    print("\n(b) model steps per second (CPU time, best run)")
    for s in out["steps"]:
        print(f"    {s['scenario']} / {s['variant']}: {s['steps_per_s']:,} steps/s "
              f"({s['executions']:,} executions, {s['steps']:,} steps, {s['cpu_seconds']} s)")
    print("\n(c) visible operations per path (one execution, set-up excluded)")
    for k, v in out["paths"].items():
        print(f"    {k:<50} {v:>4}")
    print("\n(d) rules rendered by mmrace doc, checked by a checker, consulted by the programs")
    for c in out["coverage"]:
        print(f"    {c['release']:<8} rendered {c['rendered']:>4}  checked {c['checked']:>4}  "
              f"consulted {c['consulted']:>4}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

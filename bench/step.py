"""The model step: visible operations per second on the catalog's scenarios
against bare engine operations (issue 11, deliverable 2).

    python bench/step.py [--json] [--executions N] [--no-snapshot]

For each catalog variant listed below, the first N executions (default
600) of its default exploration (bounded DPOR, K=3), best of two runs:
visible operations per second and milliseconds per execution (of this
process's CPU time, which a machine shared with other jobs disturbs less
than wall time), and whether
set-up ran once (the saved state after set-up, ``setup_snapshot``) -- with
``--no-snapshot`` set-up runs in every execution, for comparison. Then the
bare engine: two threads doing loads and stores of plain variables, one
long execution under ``dpor``.

Target: >= 60,000 visible operations/s on catalog scenarios. Figures from a
loaded machine are provisional.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import mmrace.oracles  # noqa: F401  (as mmrace itself runs)
from mmrace.engine import Var, explore, spawn
from mmrace.scenarios import get

VARIANTS = [
    ("uffd-wp-unprotect-cow", "current"),
    ("uffd-wp-unprotect-cow", "base+uffd-wp-flush-pending"),
    ("uffd-wp-protect-unprotect", "current"),
    ("uffd-wp-protect-unprotect", "base"),
    ("softdirty-clear-refs-cow", "current"),
    ("softdirty-clear-refs-cow", "base+fixes"),
]


def catalog_row(name: str, variant: str, executions: int, snapshot: bool) -> dict[str, Any]:
    sc = get(name)
    v = sc.variant(variant)
    st = sc.explore
    best: tuple[float, Any] | None = None
    for _ in range(2):
        t = time.process_time()
        r = explore(
            sc.program(v.kernel), strategy=st.strategy, preemption_bound=st.preemption_bound,
            max_executions=executions, shrink=False,
            **({} if snapshot else {"setup_snapshot": None}),
        )
        dt = time.process_time() - t
        if best is None or dt < best[0]:
            best = (dt, r)
    assert best is not None
    dt, r = best
    runs = r.executions + r.blocked
    return {
        "scenario": name, "variant": variant, "executions": runs, "steps": r.steps,
        "seconds": round(dt, 3), "ops_per_s": round(r.steps / dt),
        "ms_per_execution": round(1e3 * dt / runs, 3),
        "ops_per_execution": round(r.steps / runs, 1),
        "setup_snapshot": r.extra.get("setup_snapshot", "off"),
    }


def bare_engine(iterations: int = 50_000) -> dict[str, Any]:
    def program() -> None:
        own = [Var(0, name="a"), Var(0, name="b")]

        def worker(i: int) -> None:
            v = own[i]
            for _ in range(iterations):
                v.store(v.load() + 1)

        spawn(worker, 0, name="A")
        spawn(worker, 1, name="B")

    best = 0.0
    steps = 0
    for _ in range(2):
        t = time.process_time()
        r = explore(program, strategy="dpor", max_executions=1, max_steps=10**9)
        dt = time.process_time() - t
        steps = r.steps
        best = max(best, r.steps / dt)
    return {"steps": steps, "ops_per_s": round(best)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--executions", type=int, default=600, help="executions per variant")
    ap.add_argument("--no-snapshot", action="store_true",
                    help="run set-up in every execution (no saved state)")
    args = ap.parse_args(argv)
    import greenlet

    out: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_implementation() + " " + platform.python_version(),
            "greenlet": greenlet.__version__, "cpu_count": os.cpu_count(),
            "loadavg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "catalog": [catalog_row(n, v, args.executions, not args.no_snapshot)
                    for n, v in VARIANTS],
        "bare": bare_engine(),
    }
    rates = [r["ops_per_s"] for r in out["catalog"]]
    out["catalog_min_ops_per_s"] = min(rates)
    out["targets"] = {"catalog >= 60000 ops/s": min(rates) >= 60_000}
    if args.json:
        print(json.dumps(out))
        return 0
    m = out["machine"]
    print(f"machine: {m['platform']}, {m['python']}, greenlet {m['greenlet']}, "
          f"{m['cpu_count']} CPUs, load {m['loadavg']}")
    print()
    print(f"{'scenario':<27} {'variant':<28} {'ops/s':>7} {'ms/exec':>8} {'ops/exec':>9}"
          "  set-up")
    for r in out["catalog"]:
        print(f"{r['scenario']:<27} {r['variant']:<28} {r['ops_per_s']:>7,} "
              f"{r['ms_per_execution']:>8.2f} {r['ops_per_execution']:>9}  {r['setup_snapshot']}")
    print()
    print(f"bare engine (2 threads, loads and stores, dpor): {out['bare']['ops_per_s']:,} ops/s")
    met = out["targets"]["catalog >= 60000 ops/s"]
    print(f"target >= 60,000 ops/s on every catalog variant: {'met' if met else 'NOT met'} "
          f"(lowest {min(rates):,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

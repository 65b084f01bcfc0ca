"""TLB benchmark (issue 6): executions/s of the minimal deferred-flush + COW
scenario under DPOR, and executions to find its lost write per strategy.

Run: .venv/bin/python bench/tlb.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "mm"))

from tlbkit import deferred_flush_cow

from mmrace.engine import explore

BUDGET = 20000


def main() -> None:
    t = time.perf_counter()
    r = explore(deferred_flush_cow(True), max_executions=2000)
    dt = time.perf_counter() - t
    print(f"dpor (fixed, no bug): {r.executions} executions in {dt:.2f}s "
          f"= {r.executions / dt:.0f} executions/s, {r.steps / dt:.0f} ops/s")
    t = time.perf_counter()
    r = explore(deferred_flush_cow(True), strategy="bounded", preemption_bound=3)
    dt = time.perf_counter() - t
    print(f"bounded K=3 (fixed): {r.outcome}, complete={r.complete}, "
          f"{r.executions} executions in {dt:.1f}s")
    # The lost write needs three preemptions, so K=2 cannot find it.
    runs = [("dpor", {}), ("bounded", {"preemption_bound": 3}),
            ("bounded", {"preemption_bound": 2}),
            ("pct", {"seed": 1, "depth": 4}), ("random", {"seed": 1})]
    for strategy, kw in runs:
        t = time.perf_counter()
        r = explore(deferred_flush_cow(False), strategy=strategy, max_executions=BUDGET,
                    shrink=False, **kw)  # type: ignore[arg-type]
        dt = time.perf_counter() - t
        found = (r.violation.kind if r.violation
                 else "not found, exploration complete" if r.complete
                 else f"not found in {BUDGET}")
        name = strategy + (f" K={kw['preemption_bound']}" if "preemption_bound" in kw else "")
        print(f"{name:11s}: {found} after {r.executions} executions ({dt:.1f}s)")


if __name__ == "__main__":
    main()

"""Benchmark of the two Binder allocator designs of seed 003 (issue 17, 4c).

* eager -- Rust Binder today: a message arrival installs the page
  (``mmget_not_zero``, ``lock_vma_under_rcu``, ``vm_insert_page``), the
  shrinker zaps an unused page (``mmget_not_zero``, trylocks, ``vma_lookup``,
  ``zap_page_range_single``);
* lazy -- the reviewer's (``binder-lazy-fault``): the arrival only fills
  Binder's page array, the receiver's read faults the page in
  (``vmf_insert_mixed`` from ``vm_ops->fault``), the shrinker zaps with
  ``unmap_mapping_range``.

Prints, per design, the visible operations of each path in one execution
where the sender delivers, the shrinker reclaims page 1, then the receiver
reads the message and exits (the same work for both designs), and the
exploration of the catalog entry ``binder-page-install-vs-exit`` (bounded
DPOR, K=2 as in the catalog and K=3): executions, completeness, seconds.

Run: ``.venv/bin/python bench/binder.py [--json] [--k3]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from typing import Any

from mmrace.engine import Var, current_execution, explore, require
from mmrace.scenarios import Explore, Kernel, get
from mmrace.scenarios.binder import MESSAGE, open_binder
from mmrace.scenarios.run import run_variant
from mmrace.user import Thread

DESIGNS = {"eager": Kernel(), "lazy": Kernel(with_=("binder-lazy-fault",))}
VARIANTS = {"eager": "current", "lazy": "base+binder-lazy-fault"}


def path_costs(kernel: Kernel) -> dict[str, int]:
    """Visible operations per thread (and the set-up's none) in the
    execution that runs sender, shrinker and receiver one after the other."""
    out: dict[str, int] = {}

    def program() -> Any:
        s = kernel.system(cpus=3)
        receiver = s.process()
        sender = s.process()
        binder, addr = open_binder(kernel, s, receiver, 2)
        binder.use_range(1, 2)
        binder.stop_using_range(1, 2)
        delivered = Var(0, "delivered")

        def send(t: Thread) -> None:
            binder.use_range(0, 1)
            binder.write(0, MESSAGE)
            delivered.store(1)

        def shrink(t: Thread) -> None:
            require(binder.shrink_free_page(1), "the shrinker did not reclaim page 1")

        def receive(t: Thread) -> None:
            require(delivered.load() == 1, "not delivered yet")
            require(t.load(addr) == MESSAGE, "wrong message")
            receiver.exit()

        sender.thread(send, cpu=0, name="sender")
        sender.thread(shrink, cpu=2, name="shrinker")
        receiver.thread(receive, cpu=1, name="receiver")

        def count() -> None:
            ex = current_execution()
            names = {th.tid: th.name for th in ex.threads}
            out.update(Counter(names[e.tid] for e in ex.events))

        return count

    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation and r.violation.message
    out["total"] = sum(out.values())
    return out


def exploration(design: str, k: int) -> dict[str, Any]:
    sc = get("binder-page-install-vs-exit")
    t0 = time.perf_counter()
    run = run_variant(sc, sc.variant(VARIANTS[design]),
                      settings=Explore(strategy="bounded", preemption_bound=k))
    return {"k": k, "outcome": run.outcome, "executions": run.result.executions,
            "complete": run.result.complete, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--k3", action="store_true", help="also explore with K=3 (slower)")
    args = ap.parse_args()
    ks = (2, 3) if args.k3 else (2,)
    report: dict[str, Any] = {
        "machine": f"{platform.system()} {platform.release()} {platform.machine()}, "
                   f"Python {platform.python_version()}",
        "designs": {d: {"ops": path_costs(k), "explore": [exploration(d, kk) for kk in ks]}
                    for d, k in DESIGNS.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(report["machine"])
    for design, r in report["designs"].items():
        ops = r["ops"]
        print(f"{design:6} visible operations: sender {ops['sender']}, shrinker "
              f"{ops['shrinker']}, receiver (read + exit) {ops['receiver']}, total {ops['total']}")
        for e in r["explore"]:
            print(f"{'':6} K={e['k']}: {e['outcome']}, {e['executions']:,} executions"
                  f"{'' if e['complete'] else ' (incomplete)'}, {e['seconds']} s")


if __name__ == "__main__":
    main()

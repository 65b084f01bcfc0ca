"""Exploration at scale, side by side in one run (issue 11).

    python bench/scale.py [--json] [--workers N] [--speedup SCENARIO:VARIANT...]
                          [--trace-limit N] [--unbounded] [--skip-catalog] [--quick]

(a) every catalog variant under ``mmrace check``'s settings over one pool of
    N workers (default: the machine's cores): outcome, executions, seconds,
    and the wall time of the whole catalog;
(b) executions per Mazurkiewicz trace on every variant whose search runs at
    most --trace-limit executions (default 5,000), traces counted with
    interleaving-independent names (``tests/engine/enginekit.StableCensus``),
    stopping at the first violation as check does; with --unbounded also
    under unbounded ``dpor`` (its sleep-set-blocked runs are what optimal
    DPOR would save);
(c) the speed-up of variants (default: the clean 4-CPU
    ``uffd-wp-protect-unprotect/current``, then its longer
    ``base+uffd-wp-mmap-write-lock``, where a split's fixed costs weigh less)
    with 1, 2 and 4 workers; the executions must be the same for every
    worker count;
(e) one variant (default: ``uffd-wp-protect-unprotect/current``, --unbounded-variant)
    under unbounded ``dpor``, to completion: executions, seconds, outcome;
(d) the peer ``frontrun`` (PyPI; bench-only, used when importable, else
    "frontrun not installed") against mmrace on the same small programs:
    executions and executions per second of each.

Targets (the quiet 2-core machine): the catalog under 3 minutes with default
workers; one variant >= 1.8x with 2 workers; the 4-CPU
``uffd-wp-protect-unprotect/current`` complete under unbounded ``dpor``.
Figures measured while other work runs on the machine are not comparable:
say so when you quote them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "engine"))

from enginekit import dfs_census

from mmrace.engine import Var, explore, spawn
from mmrace.engine.pools import machine_cores, pool_for
from mmrace.engine.strategy import DfsStrategy
from mmrace.scenarios import all_scenarios, get
from mmrace.scenarios.api import Explore
from mmrace.scenarios.run import _patches, run_all, run_variant

CATALOG_TARGET = 180.0
SPEEDUP_TARGET = 1.8


def machine() -> dict[str, Any]:
    import greenlet

    return {
        "platform": platform.platform(),
        "python": platform.python_implementation() + " " + platform.python_version(),
        "greenlet": greenlet.__version__,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
    }


# --- (a) the catalog -------------------------------------------------------------


def catalog(workers: int, quick: bool) -> dict[str, Any]:
    jobs = [(sc, v) for sc in all_scenarios() for v in sc.variants()]
    if quick:
        jobs = [(sc, v) for sc, v in jobs if sc.name == "wp-pinned-page-cow"]
    pool = pool_for(workers)
    start = time.perf_counter()
    try:
        runs = run_all(jobs, pool=pool)
    finally:
        pool.close()
    wall = time.perf_counter() - start
    rows = [{
        "scenario": r.scenario,
        "variant": r.variant,
        "expected": r.expected,
        "outcome": r.outcome,
        "executions": r.result.executions,
        # the bounded search's first pass (``docs/scale.md``): its share
        "quick_pass_executions": (r.result.extra.get("quick_pass") or {}).get("executions"),
        "found_by_quick_pass": bool((r.result.extra.get("quick_pass") or {}).get("found")),
        "seconds": round(r.result.seconds, 1),
    } for r in runs]
    return {"workers": workers, "wall_seconds": round(wall, 1), "variants": rows,
            "as_expected": sum(1 for r in runs if r.ok), "total": len(runs),
            "target_seconds": CATALOG_TARGET, "within_target": wall <= CATALOG_TARGET}


# --- (b) executions per trace ----------------------------------------------------


def per_trace(limit: int, unbounded: bool, quick: bool) -> list[dict[str, Any]]:
    rows = []
    for sc in all_scenarios():
        if quick and sc.name != "wp-pinned-page-cow":
            continue
        for v in sc.variants():
            st = sc.explore
            if st.strategy not in ("bounded", "dpor"):
                continue
            bound = st.preemption_bound if st.strategy == "bounded" or \
                st.preemption_bound is not None else None
            if bound is None and st.strategy == "bounded":
                bound = 2
            with _patches(sc):
                probe = DfsStrategy(bound=bound)
                census, executions, blocked = _census(sc, v, probe, limit)
                if census is None:
                    continue
                row: dict[str, Any] = {
                    "scenario": sc.name, "variant": v.name, "bound": bound,
                    "executions": executions, "blocked": blocked, "traces": census,
                    "executions_per_trace": round(executions / census, 2),
                }
                if unbounded:
                    c_u, e_u, b_u = _census(sc, v, DfsStrategy(), limit)
                    if c_u is not None:
                        row["unbounded_executions"] = e_u
                        row["unbounded_blocked"] = b_u
                        row["unbounded_traces"] = c_u
            rows.append(row)
            print(f"  per trace: {sc.name} {v.name}: {row}", file=sys.stderr, flush=True)
    return rows


def _census(sc: Any, v: Any, strat: DfsStrategy, limit: int
            ) -> tuple[int | None, int, int]:
    """(traces, executions, blocked) of a search, None if it is over *limit*."""
    count = [0]
    orig_end = strat.end

    def end(ex: Any) -> None:
        orig_end(ex)
        count[0] += 1
        if count[0] >= limit:
            strat.finished = True

    strat.end = end  # type: ignore[method-assign]
    census, executions, blocked = dfs_census(sc.program(v.kernel), strat)
    if count[0] >= limit:
        return None, executions, blocked
    return census.traces, executions, blocked


# --- (e) one variant under unbounded dpor ---------------------------------------


def unbounded(spec: str) -> dict[str, Any]:
    name, _, vname = spec.partition(":")
    sc = get(name)
    v = sc.variant(vname)
    r = run_variant(sc, v, settings=Explore(strategy="dpor", preemption_bound=None),
                    shrink=False)
    return {"variant": spec, "outcome": r.outcome, "complete": r.result.complete,
            "executions": r.result.executions, "blocked": r.result.blocked,
            "seconds": round(r.result.seconds, 1)}


# --- (c) speed-up of one variant ------------------------------------------------


def speedup(spec: str, counts: list[int]) -> dict[str, Any]:
    name, _, vname = spec.partition(":")
    sc = get(name)
    v = sc.variant(vname)
    rows = []
    for n in counts:
        pool = pool_for(n)
        start = time.perf_counter()
        try:
            r = run_all([(sc, v)], pool=pool)[0]
        finally:
            pool.close()
        wall = time.perf_counter() - start
        rows.append({"workers": n, "outcome": r.outcome, "executions": r.result.executions,
                     "seconds": round(wall, 2)})
        print(f"  speed-up: {n} workers: {rows[-1]}", file=sys.stderr, flush=True)
    base = rows[0]["seconds"]
    for row in rows:
        row["speedup"] = round(base / row["seconds"], 2) if row["seconds"] else None
    same = len({row["executions"] for row in rows}) == 1
    two = next((row["speedup"] for row in rows if row["workers"] == 2), None)
    return {"variant": spec, "runs": rows, "same_executions": same,
            "target_speedup_2_workers": SPEEDUP_TARGET,
            "within_target": two is not None and two >= SPEEDUP_TARGET}


# --- (d) the peer frontrun ----------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.x = 0


class _Mailbox:
    def __init__(self) -> None:
        self.data = 0
        self.flag = 0
        self.seen = -1


def _inc(s: _Counter) -> None:
    v = s.x
    s.x = v + 1


def _writer(s: _Mailbox) -> None:
    s.data = 42
    s.flag = 1


def _reader(s: _Mailbox) -> None:
    if s.flag == 1:
        s.seen = s.data


def _mm_lost_update(n: int) -> Any:
    def program() -> None:
        x = Var(0, name="x")

        def inc() -> None:
            x.store(x.load() + 1)

        for i in range(n):
            spawn(inc, name=f"inc{i}")

    return program


def _mm_message_passing() -> Any:
    def program() -> None:
        data = Var(0, name="data")
        flag = Var(0, name="flag")

        def writer() -> None:
            data.store(42)
            flag.store(1)

        def reader() -> None:
            if flag.load() == 1:
                data.load()

        spawn(writer, name="writer")
        spawn(reader, name="reader")

    return program


PEER_PROGRAMS: list[tuple[str, Any, Any, Any, int | None]] = [
    # name, mmrace program, frontrun setup, frontrun workers, frontrun count
    ("lost update, 2 threads", _mm_lost_update(2), _Counter, _inc, 2),
    ("lost update, 3 threads", _mm_lost_update(3), _Counter, _inc, 3),
    ("lost update, 4 threads", _mm_lost_update(4), _Counter, _inc, 4),
    ("message passing", _mm_message_passing(), _Mailbox, [_writer, _reader], None),
]


def peer() -> dict[str, Any]:
    try:
        import frontrun
        from frontrun._cooperative import patch_locks, unpatch_locks
    except ImportError:
        return {"frontrun": "frontrun not installed", "programs": []}
    # frontrun's cooperative mode (its CLI sets this up otherwise): it
    # replaces threading's locks and queues until undone
    patch_locks()
    try:
        rows = _peer_rows(frontrun)
    finally:
        unpatch_locks()
    return {"frontrun": getattr(frontrun, "__version__", "installed"), "programs": rows}


def _peer_rows(frontrun: Any) -> list[dict[str, Any]]:
    rows = []
    for name, program, setup, workers, count in PEER_PROGRAMS:
        t = time.perf_counter()
        r = explore(program, strategy="dpor")
        mm_s = time.perf_counter() - t
        kw: dict[str, Any] = {"count": count} if count else {}
        t = time.perf_counter()
        fr = frontrun.explore(setup, workers, lambda s: True, preemption_bound=None,
                              stop_on_first=False, detect_io=False, **kw)
        fr_s = time.perf_counter() - t
        rows.append({
            "program": name,
            "mmrace_executions": r.executions,
            "mmrace_executions_per_second": round(r.executions / mm_s, 1) if mm_s else None,
            "frontrun_executions": fr.num_explored,
            "frontrun_executions_per_second": round(fr.num_explored / fr_s, 1)
            if fr_s else None,
        })
    return rows


# --- output --------------------------------------------------------------------------


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) if cells else len(c)
              for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--workers", type=int, default=machine_cores())
    ap.add_argument("--speedup", nargs="+", metavar="SCENARIO:VARIANT",
                    default=["uffd-wp-protect-unprotect:current",
                             "uffd-wp-protect-unprotect:base+uffd-wp-mmap-write-lock"])
    ap.add_argument("--trace-limit", type=int, default=5000)
    ap.add_argument("--unbounded", action="store_true",
                    help="also count executions and traces under unbounded dpor")
    ap.add_argument("--unbounded-variant", default="uffd-wp-protect-unprotect:current",
                    metavar="SCENARIO:VARIANT",
                    help="the variant run to completion under unbounded dpor ('' to skip)")
    ap.add_argument("--skip-catalog", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small figures only (smoke test)")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {"machine": machine()}
    if not args.skip_catalog:
        out["catalog"] = catalog(args.workers, args.quick)
    out["per_trace"] = per_trace(200 if args.quick else args.trace_limit, args.unbounded,
                                 args.quick)
    specs = ["wp-pinned-page-cow:current"] if args.quick else args.speedup
    runs = [speedup(spec, [1, 2] if args.quick else [1, 2, 4]) for spec in specs]
    out["speedup"] = runs[0]
    out["speedup_more"] = runs[1:]
    if args.unbounded_variant and not args.quick:
        out["unbounded"] = unbounded(args.unbounded_variant)
    out["peer"] = peer()
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    m = out["machine"]
    print(f"machine: {m['platform']}, {m['python']}, greenlet {m['greenlet']}, "
          f"{m['cpu_count']} CPUs, load {m['load_average'][0]:.1f}")
    if "catalog" in out:
        c = out["catalog"]
        print(f"\ncatalog, {c['workers']} workers: {c['as_expected']} of {c['total']} as "
              f"expected in {c['wall_seconds']} s (target {CATALOG_TARGET:.0f} s)")
        print(_table(c["variants"], ["scenario", "variant", "expected", "outcome",
                                     "executions", "seconds"]))
    print("\nexecutions per trace")
    print(_table(out["per_trace"], ["scenario", "variant", "executions", "traces",
                                    "executions_per_trace", "unbounded_executions",
                                    "unbounded_blocked", "unbounded_traces"]))
    for s in [out["speedup"], *out["speedup_more"]]:
        print(f"\nspeed-up of {s['variant']} (same executions: {s['same_executions']})")
        print(_table(s["runs"], ["workers", "outcome", "executions", "seconds", "speedup"]))
    if "unbounded" in out:
        u = out["unbounded"]
        print(f"\nunbounded dpor: {u['variant']}: {u['outcome']}, "
              f"{'complete' if u['complete'] else 'not complete'}, {u['executions']} executions "
              f"({u['blocked']} sleep-set-blocked), {u['seconds']} s")
    p = out["peer"]
    print(f"\nfrontrun: {p['frontrun']}")
    if p["programs"]:
        print(_table(p["programs"], ["program", "mmrace_executions",
                                     "mmrace_executions_per_second", "frontrun_executions",
                                     "frontrun_executions_per_second"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

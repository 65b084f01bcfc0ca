"""Catalog benchmark (issue 7): time every variant of every catalog scenario
with its default exploration settings.

Run: .venv/bin/python bench/catalog.py [--json] [--jobs N] [NAME...]

Targets on the 2-core machine: every buggy variant found in under 10 s;
every clean variant's bounded exhaustive exploration under 60 s.
"""

from __future__ import annotations

import argparse
import json
import sys

from mmrace.scenarios import all_scenarios, get
from mmrace.scenarios.run import VariantRun, run_all

FOUND_TARGET = 10.0
CLEAN_TARGET = 60.0


def row(r: VariantRun) -> dict[str, object]:
    d = r.as_dict()
    target = CLEAN_TARGET if r.expected == "clean" else FOUND_TARGET
    d["target_seconds"] = target
    d["within_target"] = r.ok and r.result.seconds <= target
    d["steps"] = r.result.steps
    d["executions_per_second"] = round(r.result.executions / r.result.seconds, 1) \
        if r.result.seconds else None
    d.pop("token", None)
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--jobs", type=int, default=1)
    args = ap.parse_args(argv)
    scenarios = [get(n) for n in args.names] if args.names else all_scenarios()
    jobs = [(sc, v) for sc in scenarios for v in sc.variants()]

    def progress(r: VariantRun) -> None:
        if not args.json:
            print(f"{r.scenario:28s} {r.variant:38s} {r.expected:11s} {r.outcome:16s} "
                  f"{r.result.executions:7d} {r.result.seconds:7.1f}s", flush=True)

    rows = [row(r) for r in run_all(jobs, workers=args.jobs, on_done=progress)]
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0 if all(r["within_target"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

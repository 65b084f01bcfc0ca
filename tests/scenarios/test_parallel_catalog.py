"""A catalog variant split over workers gives the serial exploration,
exactly: the same outcome, violation and token, the same executions,
sleep-set-blocked runs and visible operations.

The split side is the one ``mmrace check`` runs: a variant rebuilt by its
worker from a :class:`ScenarioSource` (name, variant, patches), every
worker saving its own set-up snapshot (after two executions here, so that
it is used at once). The serial side runs set-up in every execution: the
comparison checks the split and the workers' snapshots together. The
split is done in this process (``InlinePool`` with several slots, a few
executions per slice: many splits), so it is deterministic; forked workers
are compared by ``test_forked_workers_give_the_serial_result``.

By default: a representative variant of each family of the catalog (GUP
and COW, binder, driver VMAs, THP and reclaim, shmem and khugepaged, the
seed-002 uffd-wp/soft-dirty entries), each explored to its end; ``-m slow``
does every variant of every scenario."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mmrace.engine import Result, explore
from mmrace.engine.explore import prepare_run, result_of, run_unit
from mmrace.engine.parallel import drive
from mmrace.engine.pools import InlinePool
from mmrace.scenarios import Scenario, Variant, all_scenarios, get
from mmrace.scenarios.run import ScenarioSource, _patches, _settings_for, token_context

# (scenario, variant): each decided (complete, or a violation found) within
# a few hundred executions; together they cover every family of the catalog.
REPRESENTATIVE = [
    ("wp-pinned-page-cow", "current"),  # GUP + COW (57 executions, complete)
    ("vmsplice-child-leak", "current"),  # GUP + COW through the eras (97)
    ("fork-write-pinned-page", "current"),  # GUP + fork (19)
    ("binder-page-install-vs-exit", "base"),  # driver side of mm, mm lifetime (violation)
    ("driver-vma-flags-vs-fault", "current"),  # the typed VMA API (63)
    ("thp-madv-free-dontneed", "base"),  # THP, PMD split, reclaim (violation)
    ("khugepaged-retract-truncate", "base+khugepaged-retract-locks"),  # shmem (122)
    ("khugepaged-gup-fast-collapse", "base"),  # khugepaged vs GUP-fast (violation)
    ("softdirty-clear-refs-cow", "base"),  # seed-002: stale TLB, lost write
]


def _serial(sc: Scenario, v: Variant, quick: bool = True) -> Result:
    st = sc.explore
    with _patches(sc):
        return explore(sc.program(v.kernel), strategy=st.strategy,
                       preemption_bound=st.preemption_bound,
                       max_executions=st.max_executions, max_seconds=st.max_seconds,
                       token_context=token_context(sc, v), setup_snapshot=None,
                       quick_pass=quick)


def _split(sc: Scenario, v: Variant, slots: int = 3, per_slice: int = 7,
           quick: bool = True) -> Result:
    dfs = _settings_for(sc.explore)
    assert dfs is not None
    name, sets = dfs
    sets = replace(sets, setup_snapshot=2, quick_pass=quick)
    src = ScenarioSource(sc, v)
    ctx = token_context(sc, v)
    run = prepare_run(src, name, sets, ctx, max_executions=sc.explore.max_executions)
    drive([run], InlinePool(slots), run_unit, slice_executions=per_slice)
    assert run.outcome is not None
    return result_of(run.outcome, src, name, max_steps=sets.max_steps, shrink=True,
                     token_context=ctx, workers=slots)


def _figures(r: Result) -> tuple[Any, ...]:
    v = r.violation
    return (r.outcome, v and (v.kind, v.title), r.token, r.executions, r.blocked, r.steps,
            r.complete)


def _compare(sc: Scenario, v: Variant, quick: bool = True) -> Result:
    serial = _serial(sc, v, quick)
    par = _split(sc, v, quick=quick)
    assert _figures(par) == _figures(serial), (sc.name, v.name)
    return par


@pytest.mark.parametrize("quick", [True, False], ids=["quick-pass", "complete-only"])
@pytest.mark.parametrize(("name", "variant"), REPRESENTATIVE)
def test_split_variant_is_the_serial_exploration(name: str, variant: str, quick: bool
                                                 ) -> None:
    sc = get(name)
    par = _compare(sc, sc.variant(variant), quick)
    assert par.violation is not None or par.complete, "pick a variant that is decided"
    if par.executions > 3:
        # the workers started executions from their set-up snapshot
        assert par.extra["setup_snapshot"] == "used", par.extra["setup_snapshot"]
    qp = par.extra.get("quick_pass") or {}
    if par.executions - (qp.get("executions", 0) if qp.get("found") else 0) > 7:
        # (a quick pass that finds the violation may end within a slice)
        assert par.extra["splits"] > 0


def test_forked_workers_give_the_serial_result() -> None:
    """Two forked local workers: the serial verdict and figures."""
    sc = get("khugepaged-retract-truncate")
    v = sc.variant("base+khugepaged-retract-locks")
    serial = _serial(sc, v)
    st = sc.explore
    with _patches(sc):
        par = explore(sc.program(v.kernel), strategy=st.strategy,
                      preemption_bound=st.preemption_bound, workers=2,
                      token_context=token_context(sc, v))
    assert _figures(par) == _figures(serial)
    assert par.complete and par.extra["workers"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("name, variant",
                         [(sc.name, v.name) for sc in all_scenarios() for v in sc.variants()])
def test_split_everywhere(name: str, variant: str) -> None:
    sc = get(name)
    _compare(sc, sc.variant(variant))


def test_same_token_in_any_process_hash_seed_and_worker_count() -> None:
    """``mmrace check`` in fresh processes, under different hash seeds and
    worker counts: the same verdict, executions and token."""
    root = Path(__file__).resolve().parents[2]
    rows = []
    for seed, workers in (("0", "1"), ("1", "2"), ("4242", "3")):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(root / "src"))
        proc = subprocess.run(
            [sys.executable, "-m", "mmrace", "check", "softdirty-clear-refs-cow", "--variant",
             "base", "--json", "--quiet", "--workers", workers],
            capture_output=True, text=True, env=env, cwd=root, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr
        (row,) = json.loads(proc.stdout)
        rows.append({k: row[k] for k in ("outcome", "violation", "executions", "token")})
    assert rows[0]["outcome"] == "lost-write" and rows[0]["token"]
    assert rows[0] == rows[1] == rows[2]

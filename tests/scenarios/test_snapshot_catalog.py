"""The set-up snapshot is sound for every catalog scenario: exploring a
variant with executions started from the saved state after set-up gives
the same executions as running set-up every time -- the same outcome and
token, the same number of executions and of visible operations -- and the
snapshot is actually used (a scenario whose set-up could not be saved
would only show up as a slower exploration).

By default each scenario's current kernel runs for a bounded prefix of
its exploration (the snapshot is taken after two executions), plus a few
variants explored to completion; ``-m slow`` explores every variant of
every scenario to the end, both ways.

The userfaultfd entries get more by default: their set-up opens
descriptors, registers ranges and spawns monitor threads that start only
when set-up is over, and it differs by era (no ``mmap_changing``, the
bool, the counter, ``map_changing_lock``), so every variant runs a
bounded prefix, and one variant of each entry runs to the end (the
violating ones up to the violation)."""

from __future__ import annotations

from typing import Any

import pytest

from mmrace.engine import Result, explore
from mmrace.scenarios import Scenario, Variant, all_scenarios, get
from mmrace.scenarios.run import _patches

CATALOG = all_scenarios()

# Variants whose whole exploration is short enough for the default suite.
COMPLETE = [
    ("fork-write-pinned-page", "current"),
    ("wp-pinned-page-cow", "cow-reuse=anon_exclusive"),
    ("uffd-fork-copy", "current"),
    ("uffd-remove-copy", "base"),
    ("uffd-remove-remove-copy", "base"),
    ("uffd-move-pin", "current"),
    ("uffd-wp-unprotect-cow", "base"),
]

# Every variant of the userfaultfd entries (and of the khugepaged entries
# with uffd-wp markers) but ``current`` (which the per-scenario test
# covers), for a bounded prefix.
UFFD_VARIANTS = [(sc.name, v.name) for sc in CATALOG if "uffd" in sc.name
                 for v in sc.variants() if v.name != "current"]


def _run(sc: Scenario, v: Variant, snapshot: int | None, max_executions: int | None) -> Result:
    st = sc.explore
    with _patches(sc):
        return explore(sc.program(v.kernel), strategy=st.strategy,
                       preemption_bound=st.preemption_bound, seed=st.seed,
                       max_executions=max_executions, shrink=False, setup_snapshot=snapshot)


def _key(r: Result) -> tuple[Any, ...]:
    v = r.violation
    return (v and (v.kind, v.title), r.token, r.executions, r.complete, r.steps, r.blocked)


def _compare(sc: Scenario, v: Variant, max_executions: int | None) -> Result:
    plain = _run(sc, v, None, max_executions)
    snap = _run(sc, v, 2, max_executions)
    assert _key(snap) == _key(plain), (sc.name, v.name)
    if snap.executions > 3:
        assert snap.extra["setup_snapshot"] == "used", (sc.name, v.name,
                                                       snap.extra["setup_snapshot"])
    return snap


@pytest.mark.parametrize("sc", CATALOG, ids=lambda s: s.name)
def test_snapshot_gives_the_same_executions(sc: Scenario) -> None:
    r = _compare(sc, sc.variant("current"), 60)
    assert r.extra["setup_snapshot"] == "used"


@pytest.mark.parametrize("name, variant", COMPLETE)
def test_snapshot_gives_the_same_complete_exploration(name: str, variant: str) -> None:
    sc = get(name)
    v = sc.variant(variant)
    r = _compare(sc, v, None)
    # To the end: every execution, or up to the violation the variant expects.
    assert (r.violation.kind if r.violation else "clean") == v.expected
    assert r.complete or r.violation is not None


@pytest.mark.parametrize("name, variant", UFFD_VARIANTS)
def test_snapshot_gives_the_same_uffd_executions(name: str, variant: str) -> None:
    sc = get(name)
    _compare(sc, sc.variant(variant), 60)


@pytest.mark.slow
@pytest.mark.parametrize("name, variant",
                         [(sc.name, v.name) for sc in CATALOG for v in sc.variants()])
def test_snapshot_gives_the_same_exploration_everywhere(name: str, variant: str) -> None:
    sc = get(name)
    _compare(sc, sc.variant(variant), sc.explore.max_executions)

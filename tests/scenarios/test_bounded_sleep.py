"""Sleep sets under the preemption bound on catalog scenarios: the same
Mazurkiewicz traces as bounded DPOR without them, in fewer executions.

Traces are counted with interleaving-independent names (a COW copy or a
per-CPU RCU reader gets a different serial depending on which thread made
its object first; ``enginekit.StableCensus``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from enginekit import dfs_census

from mmrace.engine.strategy import DfsStrategy
from mmrace.scenarios import get
from mmrace.scenarios.run import _patches


@pytest.mark.parametrize(
    ("name", "variant"),
    [("wp-pinned-page-cow", "current"), ("wp-pinned-page-cow", "cow-reuse=mapcount")],
)
def test_sleep_sets_keep_every_trace_within_the_bound(name: str, variant: str) -> None:
    sc = get(name)
    v = sc.variant(variant)
    bound = sc.explore.preemption_bound
    with _patches(sc):
        with_sleep, n_sleep, _ = dfs_census(sc.program(v.kernel), DfsStrategy(bound=bound))
        without, n_plain, blocked = dfs_census(
            sc.program(v.kernel), DfsStrategy(bound=bound, bounded_sleep=False)
        )
    assert blocked == 0
    assert with_sleep.forms == without.forms
    assert n_sleep < n_plain

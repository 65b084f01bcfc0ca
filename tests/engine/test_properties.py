"""Property tests: DPOR and bounded DPOR against naive enumeration on random
small programs."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

import pytest
from enginekit import Census, Spec, lnf_traces, sleep_set_traces, spec_program
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmrace.engine import current_execution, explore, replay
from mmrace.engine.strategy import DfsStrategy
from mmrace.engine.token import encode

KINDS = ("load", "store", "rmw", "cond", "pair")
COST = {
    "load": 1, "store": 1, "rmw": 1, "cond": 2, "cs": 3, "pair": 1,
    "mcs": 3, "try": 3, "peek": 1,
}
LOCKING = ("cs", "mcs", "try")


@st.composite
def specs(
    draw: st.DrawFn, max_events: int = 8, max_threads: int = 4, kinds: tuple[str, ...] = KINDS
) -> Spec:
    nvars = draw(st.integers(1, 3))
    nthreads = draw(st.integers(2, max_threads))
    op = st.tuples(st.sampled_from(kinds), st.integers(0, nvars - 1), st.integers(1, 3))
    threads: list[tuple[tuple[str, int, int], ...]] = []
    budget = max_events
    for i in range(nthreads):
        left = nthreads - i - 1  # keep at least one event for each later thread
        ops: list[tuple[str, int, int]] = []
        n = draw(st.integers(1, 5))
        for _ in range(n):
            o = draw(op)
            cost = COST[o[0]]
            if budget - cost < left:
                break
            ops.append(o)
            budget -= cost
        if not ops:
            ops.append(("load", 0, 1))
            budget -= 1
        threads.append(tuple(ops))
    return nvars, tuple(threads)


def _run(spec: Spec, strategy: str, bound: int | None = None) -> tuple[set[Any], set[Any]]:
    """The final states, and the canonical forms of the traces, of the
    executions *strategy* runs on *spec* (one exploration for both)."""
    states: list[tuple[Any, ...]] = []
    census = Census()
    prog = spec_program(spec, states)

    def hooked() -> Any:
        final = prog()

        def f() -> None:
            final()
            census(current_execution())

        return f

    res = explore(hooked, strategy=strategy, preemption_bound=bound)
    assert res.violation is None, res.violation
    assert res.complete
    return set(states), census.forms


def check_spec(spec: Spec, bounds: tuple[int, ...] = (0, 1, 2)) -> None:
    # naive: every interleaving; count its traces by canonical form
    census = Census()
    states_n: list[tuple[Any, ...]] = []
    prog_n = spec_program(spec, states_n)

    def hooked() -> Any:
        final = prog_n()

        def f() -> None:
            final()
            census(current_execution())

        return f

    naive = explore(hooked, strategy="naive")
    assert naive.complete and naive.violation is None
    traces = census.traces

    # the lexicographic-normal-form counter agrees with canonicalisation
    # (it cannot handle WAIT, so not with locks)
    if not any(op[0] in LOCKING for ops in spec[1] for op in ops):
        assert lnf_traces(spec_program(spec))[0] == traces
    # and so does the sleep-set-only counter
    assert sleep_set_traces(spec_program(spec))[0] == traces

    # dpor: (a) same final states, (b) no more executions, (c) one per trace
    states_d: list[tuple[Any, ...]] = []
    recorded: list[Any] = []
    dpor = explore(spec_program(spec, states_d, recorded), strategy="dpor")
    assert dpor.complete and dpor.violation is None
    assert set(states_d) == set(states_n), "dpor misses or invents final states"
    assert dpor.executions <= naive.executions
    assert dpor.executions == traces, (dpor.executions, dpor.blocked, traces)

    # (d) bounded reaches exactly what naive with the same bound reaches, and
    # runs every Mazurkiewicz trace that has a schedule within the bound
    for k in bounds:
        sb, fb = _run(spec, "bounded", k)
        sn, fn = _run(spec, "naive", k)
        assert sb == sn, f"bounded with K={k} differs from naive with K={k}"
        assert fn <= fb, f"bounded with K={k} misses {len(fn - fb)} traces within the bound"

    # (e) each execution's decisions, as a token, replay the same trace
    for trace, decisions in recorded:
        token = encode(decisions)
        again: list[Any] = []
        res = replay(spec_program(spec, None, again), token)
        assert res.token == token
        assert again == [(trace, decisions)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_dpor_matches_naive(spec: Spec) -> None:
    check_spec(spec)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(max_events=10, max_threads=3, kinds=(*KINDS, "cs")))
def test_dpor_matches_naive_with_locks(spec: Spec) -> None:
    check_spec(spec)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(max_events=10, max_threads=3, kinds=(*KINDS, "mcs", "try", "peek")))
def test_dpor_matches_naive_with_acquire_locks(spec: Spec) -> None:
    check_spec(spec)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(max_events=12, max_threads=4, kinds=(*KINDS, "cs", "mcs", "try", "peek")))
def test_dpor_matches_naive_with_both_locks_larger(spec: Spec) -> None:
    check_spec(spec, bounds=(0, 1, 2, 3))


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(max_events=10))
def test_dpor_matches_naive_larger(spec: Spec) -> None:
    check_spec(spec, bounds=(0, 1, 2, 3))


def _bounded_covers_naive(spec: Spec, bounds: tuple[int, ...]) -> None:
    for k in bounds:
        sb, fb = _run(spec, "bounded", k)
        sn, fn = _run(spec, "naive", k)
        assert fn <= fb, f"bounded with K={k} misses {len(fn - fb)} traces within the bound"
        assert sb == sn, f"bounded with K={k} differs from naive with K={k}"


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(max_events=14, max_threads=4, kinds=(*KINDS, "cs", "mcs", "try", "peek")))
def test_bounded_covers_naive_on_longer_programs(spec: Spec) -> None:
    """The bounded search only (no full DPOR or naive runs), on longer
    programs: the run of this kind that found the program of
    ``test_bounded_reverses_an_earlier_acquisition``."""
    _bounded_covers_naive(spec, (1, 2, 3))


def test_bounded_reverses_an_earlier_acquisition() -> None:
    """T0 loads x twice, then adds to it twice under a lock; T1 loads x and
    adds to it under the lock. At K=1 one schedule preempts T0 after its
    first load and runs T1 to the end: T0's second load sees T1's add. The
    only race the search can reverse towards it (T0's second acquisition
    against T1's) needs two preemptions; reversing T1's acquisition with
    T0's first one instead fits the bound. Found by a larger run of the
    property test above; the search without that rule misses the trace."""
    spec: Spec = (1, ((("load", 0, 1), ("load", 0, 1), ("mcs", 0, 1), ("mcs", 0, 1)),
                      (("load", 0, 1), ("mcs", 0, 1))))
    check_spec(spec, bounds=(0, 1, 2, 3))


def _executions_in_order(spec: Spec, strategy: str, bound: int | None) -> list[Any]:
    """Every execution *strategy* runs on *spec*, in order: each as its
    events (thread, object serial, kind, clock)."""
    seen: list[Any] = []
    prog = spec_program(spec, None)

    def hooked() -> Any:
        final = prog()

        def f() -> None:
            final()
            seen.append(tuple((e.tid, e.obj.serial, e.kind, tuple(e.vc or ()))
                              for e in current_execution().events))

        return f

    res = explore(hooked, strategy=strategy, preemption_bound=bound)
    assert res.complete
    return seen


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(max_events=10, max_threads=3, kinds=(*KINDS, "cs", "mcs", "try", "peek")))
def test_replayed_prefix_reuses_clocks_without_changing_the_search(spec: Spec) -> None:
    """The search reuses the previous execution's clocks along the prefix it
    replays; computing every clock afresh runs the same executions, in the
    same order, with the same clocks (waits, lock hand-offs and all)."""
    afresh_begin = DfsStrategy.begin

    def begin(self: DfsStrategy, ex: Any) -> None:
        self.log = []
        afresh_begin(self, ex)

    for strategy, bound in (("dpor", None), ("bounded", 1), ("bounded", 2)):
        reused = _executions_in_order(spec, strategy, bound)
        with patch.object(DfsStrategy, "begin", begin):
            afresh = _executions_in_order(spec, strategy, bound)
        assert reused == afresh, f"{strategy} K={bound}: clock reuse changed the search"

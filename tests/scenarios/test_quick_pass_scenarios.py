"""The bounded search's quick pass on catalog scenarios: what it finds
sooner, and why the complete search still runs after it."""

from __future__ import annotations

from mmrace.scenarios import get
from mmrace.scenarios.run import run_variant


def test_the_quick_pass_finds_the_lost_write_within_a_thousand_executions() -> None:
    # Three preemptions, one in each of three CPUs' TLB-flush loops: the
    # complete bounded search reaches it after 15,020 executions.
    sc = get("uffd-wp-protect-unprotect")
    run = run_variant(sc, sc.variant("base"), shrink=False)
    assert run.outcome == "lost-write"
    assert run.result.extra["quick_pass"]["found"]
    assert run.result.executions < 1_000


def test_the_quick_pass_alone_misses_what_the_bound_allows() -> None:
    # GUP-fast pinning the page after the collapse's refcount check is
    # within K=3, and the complete bounded search finds it; the quick pass,
    # which leaves out what bounded DPOR adds to make up for the bound
    # (Coons, Musuvathi, McKinley, OOPSLA 2013), ends without it.
    sc = get("khugepaged-gup-fast-collapse")
    run = run_variant(sc, sc.variant("base"), shrink=False)
    assert run.outcome == "wrong-data"
    quick = run.result.extra["quick_pass"]
    assert quick["complete"] and not quick["found"]

"""The scenario catalog: metadata, switch coverage, expected outcomes per
variant (the cheap ones by default, every one with -m slow), and replay of
every reported token."""

from __future__ import annotations

import pytest

from mmrace.fixes import FIXES, POLICIES
from mmrace.scenarios import (
    NOT_COVERED,
    OUTCOMES,
    Kernel,
    Scenario,
    ScenarioError,
    all_scenarios,
    get,
    scenario,
)
from mmrace.scenarios.run import outcome_of, replay_token, run_variant, violation_kind

CATALOG = all_scenarios()
REQUIRED = ("uffd-wp-unprotect-cow", "uffd-wp-protect-unprotect", "softdirty-clear-refs-cow",
            "wp-pinned-page-cow")


def _all_variants() -> list[tuple[str, str]]:
    return [(sc.name, v.name) for sc in CATALOG for v in sc.variants()]


def _ci_variants() -> list[tuple[str, str]]:
    return [(sc.name, v.name) for sc in CATALOG for v in sc.ci_variants()]


def test_required_entries_exist() -> None:
    known = {sc.name for sc in CATALOG}
    assert [n for n in REQUIRED if n not in known] == []


@pytest.mark.parametrize("sc", CATALOG, ids=lambda s: s.name)
def test_metadata(sc: Scenario) -> None:
    sc.validate()
    assert sc.references, f"{sc.name} has no references"
    assert sc.summary and len(sc.summary.splitlines()) == 1
    vs = sc.variants()
    assert [v.name for v in vs][:2] == ["current", "base"]
    assert all(v.expected in OUTCOMES for v in vs)
    assert {v.name for v in vs} == {n for n, _ in sc.expect}
    # the current kernel is clean, the buggy base is not -- except for a race
    # still open in the current kernel, which a proposal must then close
    if sc.variant("current").expected != "clean":
        assert any(v.role == "proposal" and v.expected == "clean" for v in vs), (
            f"{sc.name}: the current kernel is not clean and no proposal closes it")
    assert sc.variant("base").expected != "clean"
    for v in vs:
        if v.role == "proposal":
            assert v.expected in OUTCOMES  # classified: closes it (clean) or not


def test_every_switch_is_exercised_or_documented() -> None:
    used = {s for sc in CATALOG for s in sc.switches}
    for slug in [*FIXES, *POLICIES]:
        assert slug in used or slug in NOT_COVERED, f"switch {slug!r} is not exercised"
    assert not set(NOT_COVERED) & used, "NOT_COVERED lists a switch a scenario exercises"
    assert set(NOT_COVERED) <= {*FIXES, *POLICIES}


@pytest.mark.parametrize("name, variant", _ci_variants())
def test_variant_outcome(name: str, variant: str) -> None:
    sc = get(name)
    v = sc.variant(variant)
    run = run_variant(sc, v)
    assert run.outcome == v.expected, (
        f"{name}/{variant}: expected {v.expected}, got {run.outcome}"
        + (f"\n{run.result.violation.message}" if run.result.violation else "")
    )
    if run.result.violation is not None:
        _replays(run.result.token, run.result.violation.kind, run.result.violation.title)


@pytest.mark.slow
@pytest.mark.parametrize("name, variant", sorted(set(_all_variants()) - set(_ci_variants())))
def test_variant_outcome_slow(name: str, variant: str) -> None:
    test_variant_outcome(name, variant)


def _replays(token: str | None, kind: str, title: str) -> None:
    assert token is not None
    sc, v, r = replay_token(token, get)
    assert r.violation is not None, f"replaying {sc.name}/{v.name} shows no violation"
    assert (r.violation.kind, r.violation.title) == (kind, title)
    assert r.token == token


def test_outcome_never_claims_clean_when_incomplete() -> None:
    sc = get("uffd-wp-unprotect-cow")
    from mmrace.scenarios import Explore

    run = run_variant(sc, sc.variant("current"), settings=Explore(max_executions=5))
    assert not run.result.complete
    assert outcome_of(run.result) == "budget-exhausted"
    assert not run.ok


def test_violation_kinds_map_to_documented_names() -> None:
    assert violation_kind("lost-write") == "lost-write"
    assert violation_kind("lockdep") == "lock-order"


def test_bad_scenarios_are_rejected() -> None:
    def fn(kernel: Kernel) -> None:
        return None

    with pytest.raises(ScenarioError, match="unknown switch"):
        scenario(name="x", summary="x", fixes=("no-such-fix",),
                 expect={"current": "clean", "base": "clean"})(fn)
    with pytest.raises(ScenarioError, match="no expected outcome"):
        scenario(name="x", summary="x", expect={"current": "clean"})(fn)
    with pytest.raises(ScenarioError, match="never merged"):
        scenario(name="x", summary="x", fixes=("wp-fault-flush-pending",),
                 expect={"current": "clean", "base": "clean",
                         "base+wp-fault-flush-pending": "clean",
                         "current-wp-fault-flush-pending": "clean"})(fn)
    with pytest.raises(ScenarioError, match="expects"):
        scenario(name="x", summary="x", expect={"current": "fine", "base": "clean"})(fn)
    with pytest.raises(ScenarioError, match="one argument"):
        scenario(name="x", summary="x", expect={})(lambda: None)  # type: ignore[arg-type]
    with pytest.raises(ScenarioError, match="unknown scenario"):
        get("nope")


@pytest.mark.parametrize("workers", [1, 2])
def test_running_variants_report_progress(workers: int) -> None:
    from mmrace.scenarios.run import run_all

    sc = get("uffd-wp-unprotect-cow")
    jobs = [(sc, sc.variant("current")), (sc, sc.variant("base"))][:workers]
    heard: list[tuple[str, str, int, float]] = []
    done: list[str] = []
    runs = run_all(jobs, workers=workers, on_progress=lambda *a: heard.append(a),
                   on_done=lambda r: done.append(r.variant))
    assert [r.outcome for r in runs] == ["clean", "lost-write"][:workers]
    assert sorted(done) == sorted(v.name for _, v in jobs)
    # current takes seconds: it reports while it runs, counting up
    counts = [n for name, variant, n, _ in heard if variant == "current"]
    assert counts and counts == sorted(counts) and counts[-1] > 0
    assert all(name == sc.name for name, *_ in heard)

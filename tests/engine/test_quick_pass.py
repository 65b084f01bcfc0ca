"""The bounded search's quick pass: source-DPOR with sleep sets whose
branches beyond the bound are cut, run before the complete bounded search.
It finds violations sooner and proves nothing, so the complete search still
runs whenever it finds none (``explore(quick_pass=...)``)."""

from __future__ import annotations

from typing import Any

from enginekit import lost_update

from mmrace.engine import explore, frontier
from mmrace.engine.explore import prepare_run, run_unit
from mmrace.engine.parallel import drive
from mmrace.engine.pools import InlinePool
from mmrace.engine.units import CallableSource, Settings


def figures(r: Any) -> tuple[Any, ...]:
    return (r.outcome, r.executions, r.blocked, r.steps, r.token, r.extra.get("quick_pass"))


def test_a_clean_bounded_search_is_its_quick_pass_then_the_complete_search() -> None:
    program = lost_update(threads=4, check=False)
    for bound in (1, 2):
        both = explore(program, strategy="bounded", preemption_bound=bound)
        alone = explore(program, strategy="bounded", preemption_bound=bound, quick_pass=False)
        quick = both.extra["quick_pass"]
        assert both.complete and alone.complete
        assert quick["complete"] and not quick["found"]
        assert 0 < quick["executions"] < alone.executions  # the sleep sets' saving
        assert both.executions == quick["executions"] + alone.executions
        assert "quick_pass" not in alone.extra
        # split over workers: the same two passes, the same figures
        assert figures(explore(program, strategy="bounded", preemption_bound=bound,
                               workers=2)) == figures(both)


def test_unbounded_and_naive_searches_have_no_quick_pass() -> None:
    program = lost_update(threads=3, check=False)
    for strategy in ("dpor", "naive"):
        assert "quick_pass" not in explore(program, strategy=strategy).extra


def _stopped(program: Any, polls: int) -> dict[str, Any]:
    """A checkpoint of a bounded search stopped after *polls* one-execution
    slices."""
    sets = Settings(True, 2, 20_000, quick_pass=True)
    src = CallableSource(program)
    run = prepare_run(src, "bounded", sets, "")
    count = [0]

    def stop() -> bool:
        count[0] += 1
        return count[0] > polls

    saved: dict[str, Any] = {}

    def save(runs: Any, now: float) -> None:
        saved["data"] = frontier.dump(runs[0].exploration, program=src.describe(),
                                      context="", strategy="bounded", seconds=0.0)

    drive([run], InlinePool(1), run_unit, should_stop=stop, checkpoint=save,
          slice_executions=1)
    return saved["data"]


def test_a_checkpoint_in_either_pass_resumes_to_the_same_result() -> None:
    program = lost_update(threads=4, check=False)
    whole = explore(program, strategy="bounded")
    quick = whole.extra["quick_pass"]["executions"]
    for polls, phase in ((quick // 2, "quick"), (quick + 100, "full")):
        data = _stopped(program, polls)
        assert data["frontier"]["phase"] == phase
        again = explore(program, strategy="bounded", resume=data)
        assert figures(again) == figures(whole), phase

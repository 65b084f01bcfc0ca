"""The pytest plugin (issue 12): a user's test module declares scenarios and
pytest runs each variant as a test item."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = '''
import mmrace
from mmrace.engine import Var, require, spawn
from mmrace.scenarios.deferred_flush import wp_pinned_page_cow


def _increments():
    c = Var(0, name="counter")

    def inc():
        v = c.load()
        c.store(v + 1)

    spawn(inc, name="A")
    spawn(inc, name="B")
    return lambda: require(c.value == 2, f"counter is {c.value}, expected 2")


@mmrace.scenario(name="lost-update", summary="two unlocked increments",
                 expect={"current": "assertion", "base": "assertion"})
def test_lost_update(kernel):
    return _increments()


# a catalog entry, collected under a test name: current, base and 3 policy values
test_pinned = wp_pinned_page_cow

not_collected = wp_pinned_page_cow  # not a test name
'''

WRONG_EXPECTATION = '''
import mmrace
from mmrace.engine import Var, require, spawn


@mmrace.scenario(name="claimed-clean", summary="racy, but expected clean",
                 expect={"current": "clean", "base": "clean"})
def test_claimed_clean(kernel):
    c = Var(0, name="counter")

    def inc():
        v = c.load()
        c.store(v + 1)

    spawn(inc, name="A")
    spawn(inc, name="B")
    return lambda: require(c.value == 2, f"counter is {c.value}, expected 2")
'''


def test_each_variant_is_an_item_with_its_expected_outcome(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines([
        "*test_user.py::test_lost_update?current? PASSED*",
        "*test_lost_update?base? PASSED*",
        "*test_pinned?cow-reuse=page_count? PASSED*",
    ])
    assert "not_collected" not in result.stdout.str()


def test_a_failure_prints_the_trace_and_token(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_wrong=WRONG_EXPECTATION)
    result = pytester.runpytest()
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    result.stdout.fnmatch_lines([
        "*claimed-clean / current (current kernel): expected clean, got assertion*",
        "*ASSERTION: counter is 1, expected 2*",
        "*replay token: mmr1-*",
    ])
    assert "   A " in out and " B" in out  # the per-thread columns
    assert "Traceback" not in out and "def runtest" not in out


def test_budget_is_applied(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    # One execution cannot prove the clean variants: they fail, saying why;
    # the violating ones are found in it.
    result = pytester.runpytest("--mmrace-budget", "1", "-k", "pinned")
    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines(["*expected clean, got budget-exhausted*",
                                 "*1 executions, ran out of budget*"])
    result = pytester.runpytest("--mmrace-budget", "30s", "-k", "pinned")
    result.assert_outcomes(passed=5)


def test_jobs_give_the_same_verdicts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS, test_wrong=WRONG_EXPECTATION)
    result = pytester.runpytest("--mmrace-jobs", "2")
    result.assert_outcomes(passed=7, failed=2)
    result.stdout.fnmatch_lines(["*ASSERTION: counter is 1, expected 2*"])


@pytest.mark.parametrize("args", [["--mmrace-budget", "0"], ["--mmrace-budget", "xs"],
                                  ["--mmrace-budget", "infs"], ["--mmrace-jobs", "0"],
                                  ["--mmrace-jobs", "many"]])
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, args: list[str]) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mmrace-*expected*"])


def test_the_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fixture='''
from mmrace.engine import Var, spawn
from mmrace.scenarios.deferred_flush import wp_pinned_page_cow


def test_check_one_variant(mmrace):
    runs = mmrace.check(wp_pinned_page_cow, "cow-reuse=page_count")
    assert [r.outcome for r in runs] == ["wrong-data"]


def test_explore_under_budget(mmrace):
    def program():
        v = Var(0, name="v")
        for name in "AB":
            spawn(lambda: v.store(1), name=name)

    r = mmrace.explore(program)
    assert r.executions == 1 and not r.complete
''')
    result = pytester.runpytest("--mmrace-budget", "1")
    result.assert_outcomes(passed=2)

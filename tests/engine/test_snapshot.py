"""Set-up once per exploration: executions start from a saved copy of the
state after set-up, exactly as if set-up had run, and only when that is
sound."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from enginekit import Lock, spec_program
from hypothesis import HealthCheck, given, settings
from test_properties import specs

from mmrace.engine import Result, Var, choose, explore, require, spawn


def _both(program: Callable[[], Any], **kw: Any) -> tuple[Result, Result]:
    plain = explore(program, setup_snapshot=None, **kw)
    snap = explore(program, setup_snapshot=1, **kw)
    return plain, snap


def _program(sink: list[Any]) -> Callable[[], Any]:
    """Set-up builds shared objects, a closure over a plain dict the threads
    update without visible operations, and a final check that reports to
    the test's *sink* (an object set-up did not make)."""

    def program() -> Any:
        x = Var(0, "x")
        lock = Lock("L")
        tally = {"n": 0}

        def worker(k: int) -> None:
            lock.acquire()
            x.store(x.load() + k)
            tally["n"] += 1
            lock.release()

        spawn(worker, 1, name="A")
        spawn(worker, 2, name="B")

        def final() -> None:
            require(x.value == 3 and tally["n"] == 2, f"x={x.value} tally={tally}")
            sink.append(x.serial)

        return final

    return program


def test_executions_from_the_copy_are_the_same() -> None:
    sink_plain: list[Any] = []
    sink_snap: list[Any] = []
    plain = explore(_program(sink_plain), setup_snapshot=None, strategy="naive")
    snap = explore(_program(sink_snap), setup_snapshot=1, strategy="naive")
    assert snap.extra["setup_snapshot"] == "used"
    assert plain.outcome == snap.outcome == "clean"
    assert plain.executions == snap.executions > 3
    # every execution's final check ran, against its own copy, and reported
    # to the test's own list (shared, not copied)
    assert sink_plain == sink_snap == [1] * plain.executions


def test_a_violation_and_its_token_are_the_same() -> None:
    def program() -> Any:
        x = Var(0, "x")

        def inc() -> None:
            x.store(x.load() + 1)

        for i in range(3):
            spawn(inc, name=f"T{i}")
        return lambda: require(x.value == 3, f"x == {x.value}")

    plain, snap = _both(program, strategy="naive", shrink=False)
    assert snap.extra["setup_snapshot"] == "used"
    assert plain.violation is not None and snap.violation is not None
    assert (plain.executions, plain.token) == (snap.executions, snap.token)


def test_copied_closures_keep_defaults_attributes_and_refer_to_themselves() -> None:
    """Functions are copied with their cells, defaults, keyword defaults,
    attributes and qualified name; a closure that calls itself through its
    own cell, and a cell still empty at the copy, work in the copy."""

    def program() -> Any:
        x = Var(0, "x")

        def add(n: int, step: int = 1, *, times: int = 1) -> None:
            if n > 0:
                x.store(x.load() + step * times)
                add(n - 1, step, times=times)  # through add's own cell

        add.calls = 2  # type: ignore[attr-defined]

        last: int  # a cell set-up leaves empty; a thread fills it

        def worker(k: int) -> None:
            nonlocal last
            last = k
            add(add.calls, times=2)  # type: ignore[attr-defined]

        spawn(worker, 1, name="A")
        spawn(worker, 2, name="B")

        def final() -> None:
            assert add.__qualname__.endswith("program.<locals>.add")
            assert add.__defaults__ == (1,) and add.__kwdefaults__ == {"times": 1}
            require(last in (1, 2), f"last == {last}")
            require(x.value <= 8 and x.value % 2 == 0, f"x == {x.value}")

        return final

    plain, snap = _both(program, strategy="naive")
    assert snap.extra["setup_snapshot"] == "used"
    assert plain.outcome == snap.outcome == "clean"
    assert plain.executions == snap.executions > 10


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(max_events=8, max_threads=3))
def test_dpor_with_the_copy_matches_without(spec: Any) -> None:
    states_a: list[Any] = []
    states_b: list[Any] = []
    a = explore(spec_program(spec, states_a), "dpor", setup_snapshot=None)
    b = explore(spec_program(spec, states_b), "dpor", setup_snapshot=1)
    assert (a.executions, a.blocked, a.complete) == (b.executions, b.blocked, b.complete)
    assert states_a == states_b


def _not_used(program: Callable[[], Any], why: str) -> None:
    r = explore(program, setup_snapshot=1, strategy="naive")
    assert r.violation is None, r.violation.message if r.violation else ""
    assert r.extra["setup_snapshot"] == f"not used: {why}", r.extra


def test_not_used_when_set_up_chooses() -> None:
    def program() -> None:
        x = Var(choose(2), "x")
        spawn(lambda: x.load(), name="A")
        spawn(lambda: x.store(1), name="B")

    _not_used(program, "set-up made a nondeterministic choice")


def test_not_used_when_set_up_changes_what_it_did_not_make() -> None:
    """Set-up clears the test's list: a copy would not clear it again, and
    the final check would see the entries of earlier executions."""
    order: list[str] = []

    def program() -> Any:
        order.clear()
        x = Var(0, "x")

        def t(name: str) -> None:
            x.store(x.load() + 1)
            order.append(name)

        spawn(t, "A", name="A")
        spawn(t, "B", name="B")
        return lambda: require(len(order) == 2, f"order = {order}")

    _not_used(program, "set-up changed an object it did not make")


def test_not_used_when_set_up_is_not_repeatable() -> None:
    runs = [0]

    def program() -> None:
        x = Var(runs[0], "x")

        def t() -> None:
            x.store(x.load() + 1)
            runs[0] += 1

        spawn(t, name="A")
        spawn(t, name="B")

    _not_used(program, "two set-ups left different states")


def test_not_used_when_the_state_cannot_be_copied() -> None:
    def program() -> None:
        gen = (i for i in range(3))
        x = Var(0, "x")
        spawn(lambda: x.store(next(gen)), name="A")
        spawn(lambda: x.load(), name="B")

    r = explore(program, setup_snapshot=1, strategy="naive")
    assert r.extra["setup_snapshot"].startswith("not used: the state cannot be copied")


@pytest.mark.parametrize("after", [1, 3])
def test_short_explorations_do_not_take_one(after: int) -> None:
    def program() -> None:
        spawn(lambda: None, name="A")

    r = explore(program, setup_snapshot=after)
    assert r.executions == 1 and r.extra["setup_snapshot"] == "not taken (short exploration)"

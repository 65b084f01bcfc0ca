"""Set-up and final-check code is bounded like a thread: a loop of visible
operations that makes no progress is ``step-limit``, naming where it loops,
never a hang."""

from __future__ import annotations

from typing import Any

from mmrace.engine import Var, explore, spawn


def _spin(x: Var[int]) -> None:
    while x.load() == 0:
        pass


def test_set_up_loop_is_a_step_limit() -> None:
    def program() -> None:
        _spin(Var(0, "x"))

    r = explore(program, max_steps=500)
    v = r.violation
    assert v is not None and v.kind == "step-limit" and r.outcome == "step-limit"
    assert v.title == "set-up exceeded 500 steps in _spin"
    assert "load x, in _spin (test_setup_bound.py" in v.message


def test_final_check_loop_is_a_step_limit() -> None:
    def program() -> Any:
        x = Var(0, "x")
        spawn(lambda: x.store(0), name="T1")
        return lambda: _spin(x)

    r = explore(program, max_steps=500)
    assert r.violation is not None and r.violation.kind == "step-limit"
    assert "in _spin" in r.violation.title


def test_set_up_within_the_bound_is_fine() -> None:
    def program() -> None:
        x = Var(0, "x")
        for i in range(400):
            x.store(i)

    assert explore(program, max_steps=500).outcome == "clean"

"""An execution that stops (sleep-set blocked, a violation elsewhere) unwinds
its threads: their finally blocks run as those threads, and nothing they
raise while unwinding becomes the execution's verdict."""

from __future__ import annotations

from typing import Any

from mmrace.engine import READ, Var, current_thread, require, spawn, visible
from mmrace.engine.explore import run_once
from mmrace.engine.strategy import Strategy


class _StopAfter(Strategy):
    """Runs the first enabled thread, and declares the execution sleep-set
    blocked at the given scheduling point."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.n = 0

    def schedule(self, ex: Any, enabled: list[int]) -> int | None:
        self.n += 1
        return None if self.n == self.at else enabled[0]


def test_unwinding_threads_run_as_themselves_and_report_nothing() -> None:
    seen: list[Any] = []

    def program() -> None:
        x = Var(0, "x")

        def t() -> None:
            me = current_thread()
            try:
                visible(x, READ, "first")
                visible(x, READ, "second")  # the execution stops before this
            finally:
                seen.append(current_thread() is me)
                # a lock wrapper's check that would fail in set-up context
                require(current_thread() is me, "unwound as set-up code")

        spawn(t, name="T")

    ex = run_once(program, _StopAfter(2), 100, {})
    assert ex.sleep_blocked and ex.violation is None
    assert seen == [True]

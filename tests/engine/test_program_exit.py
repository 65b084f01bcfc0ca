"""A program or thread calling sys.exit() is a crash of that execution, not
an exit of the explorer (issue 12: "a thread calling sys.exit(3) makes mmrace
exit 3 silently")."""

from __future__ import annotations

import sys

import pytest

from mmrace.engine import Var, explore, spawn


@pytest.mark.parametrize("where", ["thread", "setup", "final"])
def test_sys_exit_is_a_crash(where: str) -> None:
    def program() -> object:
        v = Var(0, name="v")
        if where == "setup":
            sys.exit(3)

        def body() -> None:
            v.store(1)
            if where == "thread":
                sys.exit(3)

        spawn(body, name="T")
        return (lambda: sys.exit(3)) if where == "final" else None

    r = explore(program, max_executions=5)
    assert r.violation is not None
    assert r.violation.kind == "crash"
    assert r.violation.title == "SystemExit: 3"
    assert r.violation.thread == ("T" if where == "thread" else None)


def test_keyboard_interrupt_still_stops_the_exploration() -> None:
    def program() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        explore(program, max_executions=1)

"""folio_lock: mutual exclusion, sound exploration, and its trace count.

``folio_lock`` is one ACQUIRE, blocked while PG_locked is set, so taking a
free folio lock and sleeping until its unlock are one trace; dpor must
reach every order of the critical sections that naive enumeration reaches.
Naive enumeration of three tasks takes minutes: those cases are slow."""

from __future__ import annotations

from typing import Any

import pytest

from mmrace.engine import Var, explore, require, spawn
from mmrace.mm.page_alloc import folio_alloc, folio_lock, folio_trylock, folio_unlock


def _program(orders: set[tuple[Any, ...]], n: int, trylock: bool) -> Any:
    def program() -> Any:
        folio = folio_alloc()
        inside = Var(0, "inside")
        ticket = Var(0, "ticket")
        last = Var("", "last")
        # What each task observed through visible operations (a plain list
        # in append order would record invisible, unexplored orderings).
        seen: dict[str, tuple[int, str]] = {}

        def task(name: str) -> None:
            if trylock and name == "T0":
                if not folio_trylock(folio):
                    return
            else:
                folio_lock(folio)
            require(inside.rmw(lambda v: v + 1) == 0, "two tasks hold the folio lock")
            turn = ticket.rmw(lambda v: v + 1)
            inside.rmw(lambda v: v - 1)
            folio_unlock(folio)
            seen[name] = (turn, last.load())
            last.store(name)

        for i in range(n):
            spawn(task, f"T{i}", name=f"T{i}")
        return lambda: orders.add((*sorted(seen.items()), last.value))  # type: ignore[arg-type]

    return program


@pytest.mark.parametrize("n,trylock", [
    (2, False),
    pytest.param(3, False, marks=pytest.mark.slow),
    pytest.param(3, True, marks=pytest.mark.slow),
])
def test_dpor_reaches_every_critical_section_order(n: int, trylock: bool) -> None:
    by: dict[str, set[tuple[Any, ...]]] = {}
    for strategy in ("dpor", "naive"):
        orders: set[tuple[Any, ...]] = set()
        r = explore(_program(orders, n, trylock), strategy=strategy)
        assert r.violation is None and r.complete
        by[strategy] = orders
    assert by["dpor"] == by["naive"]
    assert len(by["dpor"]) > (2 if n == 2 else 6)


@pytest.mark.parametrize("n,expected", [(2, 2), (3, 6)])
def test_tasks_locking_one_folio_are_the_orders_they_get_it_in(n: int, expected: int) -> None:
    """N tasks each lock and unlock one folio: N! traces (the orders they
    get it in; taking it free or after sleeping is the same trace)."""

    def program() -> None:
        folio = folio_alloc()

        def task() -> None:
            folio_lock(folio)
            folio_unlock(folio)

        for i in range(n):
            spawn(task, name=f"T{i}")

    r = explore(program, strategy="dpor")
    assert r.violation is None and r.complete and r.blocked == 0
    assert r.executions == expected

"""What one GUP costs an exploration, in visible operations (the exact
figures are printed by bench/gup.py; these are bounds that catch a lookup
growing scheduling points it does not need)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.engine import current_execution, explore
from mmrace.user import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, System

ANON = MAP_PRIVATE | MAP_ANONYMOUS


def _ops(setup: Callable[[Any, int], None], call: Callable[[Any, int], Any]) -> int:
    counted: list[int] = []

    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, PROT_READ | PROT_WRITE, ANON)
        setup(p, a)

        def body(t: Any) -> None:
            events = current_execution().events
            n0 = len(events)
            call(t, a)
            counted.append(len(events) - n0)

        p.thread(body, cpu=0)

    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation and r.violation.message
    return counted[0]


def _written(p: Any, a: int) -> None:
    p.poke(a, 1)


def _shared(p: Any, a: int) -> None:
    p.poke(a, 1)
    p.child = p.fork()


def test_lookup_of_a_present_page_is_cheap() -> None:
    get = _ops(_written, lambda t, a: t.get_user_pages(a))
    pin = _ops(_written, lambda t, a: t.pin_user_pages(a))
    assert get <= 18
    # a pin is the same walk plus MMF_HAS_PINNED (read, then set once)
    assert pin == get + 2


def test_the_unsharing_pin_is_a_lookup_a_copy_and_a_lookup() -> None:
    get = _ops(_written, lambda t, a: t.get_user_pages(a))
    unsharing = _ops(_shared, lambda t, a: t.pin_user_pages(a))
    assert get < unsharing <= 2 * get + 40

"""The model outside an exploration: at top level (a REPL, a notebook, a
single-threaded check) the model runs in a standalone context, like set-up
code, and nothing of it leaks into a later exploration."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mmrace.engine import Var, explore, reset_standalone, spawn
from mmrace.mm.page_alloc import mem_state
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    System,
)

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    reset_standalone()
    yield
    reset_standalone()


def test_syscalls_at_top_level() -> None:
    p = System(cpus=2).process()
    a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
    p.poke(a, 7)
    assert p.peek(a) == 7 and p.peek(a + PAGE_SIZE) == 0
    c = p.fork()
    c.poke(a, 9)  # COW: the parent keeps its page
    assert (p.peek(a), c.peek(a)) == (7, 9)
    p.munmap(a, PAGE_SIZE)
    assert [(e.start, e.end) for e in p.maps()] == [(a + PAGE_SIZE, a + 2 * PAGE_SIZE)]
    with pytest.raises(OSError):
        p.peek(a)


def test_threads_need_an_exploration() -> None:
    p = System().process()
    with pytest.raises(RuntimeError, match="threads run only in an exploration"):
        p.thread(lambda t: None, cpu=0)


def test_nothing_leaks_into_a_later_exploration() -> None:
    p = System().process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.poke(a, 1)
    assert len(mem_state().live) == 1
    seen: list[tuple[int, int]] = []

    def program() -> None:
        v = Var(0, "v")
        seen.append((v.serial, len(mem_state().live)))

    r = explore(program, max_executions=1)
    assert r.outcome == "clean"
    # the exploration's serials start afresh and its memory has no folio
    assert seen == [(1, 0)]
    assert len(mem_state().live) == 1  # the top-level state is still there


def test_top_level_objects_cannot_be_used_inside_an_exploration() -> None:
    x = Var(0, "x")

    def in_setup() -> None:
        x.store(1)

    def in_thread() -> None:
        spawn(lambda: x.load(), name="T1")

    for program in (in_setup, in_thread):
        r = explore(program, max_executions=1)
        assert r.violation is not None and r.violation.kind == "crash"
        assert "x was made outside any exploration" in r.violation.title
    assert x.value == 0


def test_system_settings_apply_at_top_level() -> None:
    """``System(thp=...)`` sets transparent_hugepage/enabled at top level
    too: a fault in an aligned 2 MiB region of a ``thp="always"`` system
    maps a huge page there, not a 4 KiB one."""
    huge = 1 << 21
    for thp, nr in (("always", 512), ("never", 1)):
        p = System(thp=thp).process()
        a = p.mmap(0x7E0000000000, huge, RW, ANON | MAP_FIXED)
        p.poke(a, 1)
        assert p.folio_at(a).nr_pages == nr, thp

"""Oracles are on wherever a System runs, whatever the user imported, and a
user switches one off by name (issue 12: "a race can be missed silently")."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest

from mmrace.engine import replay
from mmrace.mm.mm_types import PAGE_SIZE
from mmrace.oracles import ORACLES
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    UFFDIO_REGISTER_MODE_WP,
    System,
)

# What docs/catalog.md shows a user doing: the engine on a scenario, no
# oracle import. Run in a fresh interpreter, so nothing imported by other
# tests can have subscribed the oracles.
USER_SCRIPT = textwrap.dedent("""
    from mmrace.engine import explore
    from mmrace.user import (MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE,
                             UFFDIO_REGISTER_MODE_WP, System)

    PAGE = 4096

    def program():
        # uffd-wp-unprotect-cow as of 5.10, written by a user
        s = System(cpus=3, kernel="5.10")
        p = s.process()
        a = p.mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        p.poke(a, 1)
        p.pin(a)
        uffd = p.userfaultfd()
        uffd.register(a, PAGE, UFFDIO_REGISTER_MODE_WP)

        def writer(t):
            t.store(a, 2)
            t.store(a, 3)

        p.thread(writer, cpu=2, name="cpu2")
        p.thread(lambda t: uffd.writeprotect(a, PAGE, False), cpu=0, name="cpu0")
        p.thread(lambda t: t.store(a + 512, 9), cpu=1, name="cpu1")

    r = explore(program, strategy="bounded", preemption_bound=3, max_executions=1000)
    print(r.violation.kind if r.violation else r.outcome)
""")


def test_engine_explore_finds_the_historical_race_without_an_oracle_import() -> None:
    proc = subprocess.run([sys.executable, "-c", USER_SCRIPT], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["lost-write"], proc.stdout


def _unprotect_cow(off: tuple[str, ...]) -> Any:
    """uffd-wp-unprotect-cow on 5.10 with a System built here, oracles_off=off."""

    def program() -> None:
        s = System(cpus=3, kernel="5.10", oracles_off=off)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        p.poke(a, 1)
        p.pin(a)
        uffd = p.userfaultfd()
        uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_WP)

        def writer(t: Any) -> None:
            t.store(a, 2)
            t.store(a, 3)

        p.thread(writer, cpu=2, name="cpu2")
        p.thread(lambda t: uffd.writeprotect(a, PAGE_SIZE, False), cpu=0, name="cpu0")
        p.thread(lambda t: t.store(a + 8, 9), cpu=1, name="cpu1")

    return program


def test_an_oracle_is_switched_off_by_name() -> None:
    from mmrace.engine import explore

    found = explore(_unprotect_cow(()), strategy="bounded", preemption_bound=3)
    assert found.violation is not None and found.violation.kind == "lost-write"
    assert found.token is not None
    # The same search with the lost-write oracle off runs the same executions
    # (depth-first, deterministic), the last one included, and reports none.
    quiet = explore(_unprotect_cow(("lost-write",)), strategy="bounded", preemption_bound=3,
                    max_executions=found.executions)
    assert quiet.violation is None and quiet.executions == found.executions
    # Another oracle switched off leaves the lost write reported.
    again = replay(_unprotect_cow(("use-after-free",)), found.token)
    assert again.violation is not None and again.violation.kind == "lost-write"


def test_unknown_oracle_name_is_a_value_error() -> None:
    from mmrace.engine import explore

    def program() -> None:
        System(oracles_off=("lost-writes",))

    r = explore(program, max_executions=1)
    assert r.violation is not None and r.violation.kind == "crash"
    assert "unknown oracle 'lost-writes'" in r.violation.title
    with pytest.raises(ValueError, match="known: lost-write, use-after-free, uffd-view, rmap"):
        from mmrace.oracles import oracle_names

        oracle_names(["nope"])
    assert set(ORACLES) == {"lost-write", "use-after-free", "uffd-view", "rmap"}

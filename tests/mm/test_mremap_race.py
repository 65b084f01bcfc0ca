"""mremap under concurrency: a store through a TLB entry cached for the old
address while the mapping moves, and the rmap walks of truncation racing
the move (the catalog entries of ``scenarios/mremap.py``, run here on the
current kernel), explored exhaustively within their preemption bound."""

from __future__ import annotations

from typing import Any

import pytest

from mmrace.engine import explore
from mmrace.oracles.memory import wrong_data
from mmrace.scenarios import get
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    System,
    Thread,
)

P = PAGE_SIZE
OLD = 0x7E0000000000
NEW = 0x7E0000000000 + 8 * P


def stale_store_program(kernel: str | None) -> Any:
    """cpu1 has the page's writable translation cached (it wrote the page
    before) and stores again while cpu0 moves the mapping: the store lands
    in the page before the move, or through the stale entry before the
    flush (the same page: it moved with its data), or faults on the old
    address once it is gone (SIGSEGV). It is never lost."""

    def program() -> Any:
        s = System(cpus=2, kernel=kernel)
        p = s.process()
        a = p.mmap(OLD, P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
        p.poke(a, 1)
        p.touch(a, cpu=1, write=True)
        threads: dict[str, Thread] = {}

        def mover(t: Thread) -> None:
            t.mremap(a, P, P, MREMAP_MAYMOVE | MREMAP_FIXED, NEW)

        def writer(t: Thread) -> None:
            threads["w"] = t
            t.store(a, 2)

        p.thread(mover, cpu=0, name="cpu0")
        p.thread(writer, cpu=1, name="cpu1")

        def check() -> None:
            stored = threads["w"].segfault is None
            got = p.peek(NEW)
            if got != (2 if stored else 1):
                raise wrong_data(f"after the move the page holds {got}; the store "
                                 f"{'completed' if stored else 'faulted'}")

        return check

    return program


def test_store_through_stale_entry_while_moving_is_not_lost() -> None:
    """Every interleaving (DPOR without a bound: about 3,000 executions)."""
    r = explore(stale_store_program(None), strategy="dpor", max_seconds=300)
    assert r.violation is None, r.violation and r.violation.message
    assert r.complete and r.executions > 1


@pytest.mark.slow
def test_store_through_stale_entry_while_moving_is_not_lost_4_18() -> None:
    """Also before "mremap: properly flush TLB before releasing the page":
    a late flush loses nothing while nobody frees the page."""
    r = explore(stale_store_program("4.18"), strategy="dpor", max_seconds=600)
    assert r.violation is None, r.violation and r.violation.message
    assert r.complete


def _explore(name: str, variant: str, bound: int) -> Any:
    sc = get(name)
    return explore(sc.program(sc.variant(variant).kernel), strategy="bounded",
                   preemption_bound=bound, max_seconds=600)


@pytest.mark.parametrize("name", ["mremap-flush-truncate", "mremap-pmd-move-truncate"])
def test_truncation_racing_mremap_is_clean_within_two_preemptions(name: str) -> None:
    """The bounded subset the default run affords (about 400 and 1,000
    executions, a few seconds); the slow tests below and the catalog's prove
    every variant within K=3."""
    r = _explore(name, "current", 2)
    assert r.violation is None, r.violation and r.violation.message
    assert r.complete and r.executions > 200


def test_late_flush_is_found_within_one_preemption() -> None:
    r = _explore("mremap-flush-truncate", "base", 1)
    assert r.violation is not None and r.violation.kind == "use-after-free"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mremap-flush-truncate", "mremap-pmd-move-truncate"])
def test_truncation_racing_mremap_is_clean_within_three_preemptions(name: str) -> None:
    r = _explore(name, "current", 3)
    assert r.violation is None, r.violation and r.violation.message
    assert r.complete

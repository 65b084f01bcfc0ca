"""Helpers for the page-table / fault tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.engine import WAIT, Result, explore, visible
from mmrace.mm.page_alloc import Folio, mem_state, pfn_to_obj
from mmrace.mm.pgtable import all_tables, peek_pte, pte_pfn, pte_present, pte_special
from mmrace.sync.atomic import Atomic
from mmrace.user import (
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    Process,
    System,
    Thread,
)

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def run1(program: Callable[[], None]) -> Result:
    """One execution (set-up only); fails the test on any violation."""
    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation.message if r.violation else ""
    return r


def folio_at(proc: Process, addr: int) -> Folio | None:
    pte = peek_pte(proc.mm, addr)
    if not pte_present(pte) or pte_special(pte):
        return None
    obj = pfn_to_obj(pte_pfn(pte))
    assert isinstance(obj, Folio)
    return obj


def check_accounting(procs: list[Process]) -> None:
    """Every live folio's refcount and mapcount equal the mappings (plus the
    page cache's reference) that hold it."""
    maps: dict[int, int] = {}
    for p in procs:
        for t in all_tables(p.mm):
            if t.level != 1:
                continue
            for e in t.entries.values():
                if pte_present(e) and not pte_special(e):
                    f = pfn_to_obj(pte_pfn(e))
                    maps[f.serial] = maps.get(f.serial, 0) + 1
    for serial, f in mem_state().live.items():
        n = maps.get(serial, 0)
        cache = 1 if (not f.anon and f.mapping is not None
                      and f.mapping.i_pages.get(f.index) is f) else 0
        assert f._mapcount == n, f"{f.name}: mapcount {f._mapcount} != {n} mappings"
        assert f._refcount == n + cache, f"{f.name}: refcount {f._refcount} != {n}+{cache}"
    for serial in maps:
        assert serial in mem_state().live, "a PTE maps a freed folio"


def two_page_race(op: str, store: bool) -> Callable[[], None]:
    """A 2-page anonymous mapping, both pages faulted in by set-up; one
    thread unmaps it (*op* ``munmap``), zaps it (``dontneed``: MADV_DONTNEED)
    or write-protects it (``mprotect``); another (if *store*) stores to its
    first page. The footprint tests and ``bench/footprints.py`` use it."""

    def program() -> None:
        p = System(cpus=2).process()
        a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        p.poke(a + PAGE_SIZE, 2)

        def storer(t: Thread) -> None:
            t.store(a, 5)

        def changer(t: Thread) -> None:
            if op == "munmap":
                t.munmap(a, 2 * PAGE_SIZE)
            elif op == "dontneed":
                t.madvise(a, 2 * PAGE_SIZE, MADV_DONTNEED)
            else:
                t.mprotect(a, 2 * PAGE_SIZE, PROT_READ)

        if store:
            p.thread(storer, cpu=0, name="store")
        p.thread(changer, cpu=1, name=op)

    return program


__all__ = ["ANON", "RW", "Any", "check_accounting", "folio_at", "run1", "two_page_race"]


def mmap_changing_settled(ctx: Any) -> None:
    """Wait until every event read has been acknowledged by the thread that
    raised it (``mmap_changing`` back to 0): one visible WAIT, or, for the
    atomic of 5.15 on (per-CPU shares), one per CPU's share, each ordered
    after the last change of that share. Test-side synchronization; the
    guard stays true because no event is raised after the ones read."""
    v = ctx.mmap_changing
    if isinstance(v, Atomic):
        for share in v.adds.every():  # every CPU's share, as atomic_read's
            visible(share, WAIT, "mmap_changing == 0", guard=lambda: v.value() == 0)
    else:
        visible(v, WAIT, "mmap_changing == 0", guard=lambda: v.value == 0)

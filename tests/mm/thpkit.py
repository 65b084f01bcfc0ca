"""Helpers for the THP, shmem, GUP-fast, reclaim and migration tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.engine import Result, explore, spawn
from mmrace.mm.page_alloc import Folio, mem_state, pfn_to_obj
from mmrace.mm.pgtable import (
    LEVEL_PMD,
    LEVEL_PTE,
    all_tables,
    pmd_trans_huge,
    pte_pfn,
    pte_present,
    pte_special,
)
from mmrace.user import MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_READ, PROT_WRITE, Process

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
HUGE = 1 << 21
THP_BASE = 0x7E0000000000  # 2 MiB aligned, below the mmap base


def run1(program: Callable[[], Any]) -> Result:
    """One execution; fails the test on any violation."""
    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation.message if r.violation else ""
    return r


def thp_anon(p: Process, size: int = HUGE, addr: int = THP_BASE) -> int:
    """An anonymous mapping at a 2 MiB-aligned address."""
    return p.mmap(addr, size, RW, ANON | MAP_FIXED)


def steps_of(setup: Callable[[], Any], body: Callable[[Any], None]) -> int:
    """Visible operations of ``body(state)`` run in one simulated thread
    after ``state = setup()`` (set-up code costs nothing)."""
    out: dict[str, int] = {}

    def program() -> None:
        state = setup()

        def thread() -> None:
            body(state)

        spawn(thread, name="t")

    def base_program() -> None:
        setup()

        def thread() -> None:
            pass

        spawn(thread, name="t")

    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation.message if r.violation else ""
    out["n"] = r.steps
    r0 = explore(base_program, max_executions=1, shrink=False)
    return out["n"] - r0.steps


def check_accounting(procs: list[Process]) -> None:
    """Every live folio's mapcounts and refcount equal what maps and holds
    it: PTEs (one per page), huge PMDs (one each), the page cache (one per
    page), the swap cache (one per page); pins are not expected."""
    pte_maps: dict[int, int] = {}
    page_maps: dict[tuple[int, int], int] = {}
    pmd_maps: dict[int, int] = {}
    for p in procs:
        for t in all_tables(p.mm):
            if t.level not in (LEVEL_PTE, LEVEL_PMD):
                continue
            for e in t.entries.values():
                if t.level == LEVEL_PMD:
                    if pmd_trans_huge(e):
                        f = pfn_to_obj(pte_pfn(e))
                        pmd_maps[f.serial] = pmd_maps.get(f.serial, 0) + 1
                    continue
                if pte_present(e) and not pte_special(e):
                    f = pfn_to_obj(pte_pfn(e))
                    pte_maps[f.serial] = pte_maps.get(f.serial, 0) + 1
                    key = (f.serial, pte_pfn(e) - f.pfn)
                    page_maps[key] = page_maps.get(key, 0) + 1
    for serial, f in mem_state().live.items():
        assert isinstance(f, Folio)
        n_pte = pte_maps.get(serial, 0)
        n_pmd = pmd_maps.get(serial, 0)
        cache = 0
        if not f.anon and f.mapping is not None and f.mapping.i_pages.get(f.index) is f:
            cache = f.nr_pages
        if f.swapcache:
            cache = f.nr_pages
        assert f._mapcount == n_pte + n_pmd, (
            f"{f.name}: mapcount {f._mapcount} != {n_pte} PTE + {n_pmd} PMD mappings")
        assert f._entire_mapcount == n_pmd, f"{f.name}: entire mapcount {f._entire_mapcount}"
        if f.order:
            for i, c in enumerate(f.page_mapcount):
                assert c == page_maps.get((serial, i), 0), f"{f.name}[{i}]: mapcount {c}"
        assert f._refcount == n_pte + n_pmd + cache, (
            f"{f.name}: refcount {f._refcount} != {n_pte} + {n_pmd} + {cache}")
    for serial in (*pte_maps, *pmd_maps):
        assert serial in mem_state().live, "a page table maps a freed folio"


__all__ = ["ANON", "HUGE", "RW", "THP_BASE", "check_accounting", "run1", "steps_of", "thp_anon"]

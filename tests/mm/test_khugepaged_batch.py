"""The batched steps of a collapse (one visible operation for a step of
every small folio: ``mm/khugepaged.py``'s ``_folios_op`` callers) against
the per-folio model (``per_folio_steps``): small programs racing a collapse
of a few pages must reach the same set of outcomes -- the final state each
complete DPOR exploration ends in -- with fewer executions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mmrace.engine import explore, spawn
from mmrace.mm.khugepaged import per_folio_steps
from mmrace.mm.page_alloc import mem_state
from mmrace.mm.shmem import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE
from mmrace.user import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    Process,
    System,
    Thread,
)

RW = PROT_READ | PROT_WRITE
HUGE = 1 << 21
PAGE = 1 << 12
BASE = 0x7E0000000000

Outcome = tuple[Any, ...]


def _final_state(p: Process, a: int, npages: int, extra: Callable[[], Any]) -> Outcome:
    """What an execution ends with: the data of each page, whether the
    range is now one large folio, the thread's observation, and every live
    folio's counts and flags."""
    data = tuple(p.peek(a + i * PAGE) for i in range(npages))
    folio = p.folio_at(a)
    live = tuple(sorted((f.order, f._refcount, f._mapcount, f.locked, f.isolated)
                        for f in mem_state().live.values()))
    return (data, folio is not None and folio.order > 0, extra(), live)


Program = Callable[[set[Outcome]], Callable[[], Any]]


def _outcomes(program: Program, bound: int | None) -> tuple[set[Outcome], int]:
    """Every outcome of a complete exploration (DPOR, or bounded DPOR with
    *bound* preemptions) and its number of executions (of the complete
    search alone: the figures compare the two models' trees)."""
    seen: set[Outcome] = set()
    r = explore(lambda: program(seen), strategy="dpor" if bound is None else "bounded",
                preemption_bound=bound, setup_snapshot=None, shrink=False, quick_pass=False)
    assert r.violation is None, r.violation.message
    assert r.complete
    return seen, r.executions


def _both(program: Program, bound: int | None = None) -> tuple[set[Outcome], int, int]:
    """The outcomes, which must be the same with batched and per-folio
    steps, and the executions of each: (outcomes, fine, batched)."""
    coarse, n_coarse = _outcomes(program, bound)
    with per_folio_steps():
        fine, n_fine = _outcomes(program, bound)
    assert coarse == fine
    return coarse, n_fine, n_coarse


def anon_vs_gup_fast(kernel: str | None, npages: int, target: int) -> Program:
    """khugepaged collapses *npages* written anonymous pages while an
    O_DIRECT read's GUP-fast (TLB flushes that send no IPI) writes 42 into
    page *target* and reads it back."""

    def program(seen: set[Outcome]) -> Callable[[], Any]:
        s = System(cpus=2, kernel=kernel, tlb_flush="broadcast")
        p = s.process()
        a = p.mmap(BASE, HUGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
        for i in range(npages):
            p.poke(a + i * PAGE, i + 1)
        p.madvise(a, HUGE, MADV_HUGEPAGE)
        got: list[int] = []

        def dio(t: Thread) -> None:
            t.direct_io_read(a + target * PAGE, 42)
            got.append(t.load(a + target * PAGE))

        k = p.khugepaged(a, cpu=1)
        p.thread(dio, cpu=0, name="cpu0")
        return lambda: seen.add(_final_state(p, a, npages, lambda: (tuple(got), tuple(k.result))))

    return program


def shmem_vs_punch(npages: int, target: int, unmapped: bool = False) -> Program:
    """khugepaged collapses a tmpfs file's *npages* written (and mapped,
    unless *unmapped*: then only in the page cache) pages while a hole
    punch removes page *target*."""

    def program(seen: set[Outcome]) -> Callable[[], Any]:
        s = System(cpus=2, fault_around_bytes=PAGE)
        s.create_file("/dev/shm/f", HUGE, shmem=True, huge="advise")
        p = s.process()
        fd = p.open("/dev/shm/f")
        a = p.mmap(BASE, HUGE, RW, MAP_SHARED | MAP_FIXED, fd, 0)
        for i in range(npages):
            p.poke(a + i * PAGE, i + 1)
        p.madvise(a, HUGE, MADV_HUGEPAGE)
        if unmapped:
            p.madvise(a, HUGE, MADV_DONTNEED)  # a tmpfs file keeps its page cache

        def punch(t: Thread) -> None:
            t.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, target * PAGE, PAGE)

        k = p.khugepaged(a, cpu=1)
        p.thread(punch, cpu=0, name="cpu0")
        return lambda: seen.add(_final_state(p, a, npages, lambda: tuple(k.result)))

    return program


def test_anonymous_collapse_vs_gup_fast_before_the_fixes() -> None:
    """5.19 on a machine without flush IPIs: the DMA can land in the page
    the collapse copied away (khugepaged-gup-fast-collapse) -- an outcome
    both models reach, with the others (the collapse fails on the pin, or
    the pin comes after and sees the huge page)."""
    outcomes, fine, batched = _both(anon_vs_gup_fast("5.19", 3, 1))
    assert any(o[2][0] != (42,) for o in outcomes), "the lost DMA store"
    assert any(o[1] for o in outcomes) and any(not o[1] for o in outcomes)
    assert (fine, batched) == (159, 99)


def test_anonymous_collapse_vs_gup_fast_current() -> None:
    outcomes, fine, batched = _both(anon_vs_gup_fast(None, 3, 1))
    assert all(o[2][0] == (42,) for o in outcomes)
    assert (fine, batched) == (118, 118)


def test_shmem_collapse_vs_hole_punch_bounded() -> None:
    """collapse_file of two pages against a hole punch of the first, with
    two preemptions: the collapse fails (the page locked, or referenced by
    the truncation), or succeeds before or after the punch."""
    outcomes, fine, batched = _both(shmem_vs_punch(2, 0), bound=2)
    assert len(outcomes) == 5 and any(o[1] for o in outcomes)
    assert (fine, batched) == (328, 302)


def test_shmem_collapse_of_unmapped_pages_vs_hole_punch() -> None:
    """The pages only in the page cache: no rmap walk between a folio's
    lookup and its refcount check, which are then one operation."""
    outcomes, fine, batched = _both(shmem_vs_punch(2, 1, unmapped=True))
    assert len(outcomes) == 5 and any(o[1] for o in outcomes)
    assert (fine, batched) == (599, 308)


@pytest.mark.slow
@pytest.mark.parametrize("target", [0, 1])
def test_shmem_collapse_vs_hole_punch(target: int) -> None:
    """The same, explored completely (about 14 s for both models)."""
    outcomes, fine, batched = _both(shmem_vs_punch(2, target))
    assert len(outcomes) == 5
    assert (fine, batched) == {0: (1941, 996), 1: (2293, 1364)}[target]


def _ops(setup: Callable[[], tuple[Process, int]]) -> int:
    """Visible operations of one khugepaged pass over what *setup* made
    (as ``bench/khugepaged.py`` counts them)."""

    def program(run: bool) -> Callable[[], None]:
        def prog() -> None:
            p, a = setup()

            def scan() -> None:
                if run:
                    p.khugepaged_scan(a)

            spawn(scan, name="t")

        return prog

    with_scan = explore(program(True), max_executions=1, shrink=False)
    assert with_scan.violation is None
    return with_scan.steps - explore(program(False), max_executions=1, shrink=False).steps


def _anon512() -> tuple[Process, int]:
    p = System(thp="madvise").process()
    a = p.mmap(BASE, HUGE, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    for i in range(512):
        p.poke(a + i * PAGE, i + 1)
    p.madvise(a, HUGE, MADV_HUGEPAGE)
    return p, a


def _shmem512() -> tuple[Process, int]:
    s = System(fault_around_bytes=PAGE)
    s.create_file("/dev/shm/f", HUGE, shmem=True, huge="advise")
    p = s.process()
    a = p.mmap(BASE, HUGE, RW, MAP_SHARED | MAP_FIXED, p.open("/dev/shm/f"), 0)
    for i in range(512):
        p.poke(a + i * PAGE, i + 1)
    p.madvise(a, HUGE, MADV_HUGEPAGE)
    return p, a


def test_collapse_of_512_pages_costs() -> None:
    """The figures of bench/khugepaged.py: an anonymous collapse of 512
    pages in a few dozen operations; shmem's per-folio loop (lookup, rmap
    walk, refcount check) remains."""
    assert _ops(_anon512) == 68
    assert _ops(_shmem512) == 11294
    with per_folio_steps():
        assert _ops(_anon512) == 3648
        assert _ops(_shmem512) == 15387

"""mremap under concurrency: a store through a TLB entry cached for the old
address while the mapping moves, and the rmap walks of truncation racing
the move (the catalog entries of ``scenarios/mremap.py``, run here on the
current kernel), explored exhaustively within their preemption bound."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from mmrace.engine import ViolationError, explore
from mmrace.mm import shmem as shmem_mod
from mmrace.mm.pgtable import PMD_SIZE, peek_pmd, pmd_trans_huge
from mmrace.mm.shmem import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE
from mmrace.oracles.memory import wrong_data
from mmrace.scenarios import get
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
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
    """Every interleaving (DPOR without a bound: 37 executions)."""
    r = explore(stale_store_program(None), strategy="dpor", max_seconds=300)
    assert r.violation is None, r.violation and r.violation.message
    assert r.complete and r.executions > 1


def test_store_through_stale_entry_while_moving_is_not_lost_4_18() -> None:
    """Also before "mremap: properly flush TLB before releasing the page":
    a late flush loses nothing while nobody frees the page (10 executions)."""
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


# --- a THP split racing the move of its PMD ---------------------------------------------------

X = 0x7E0000000000  # PMD aligned
Y = 0x7E0040000000  # PMD aligned, another PMD table
HUGE = PMD_SIZE


def thp_split_program(without: tuple[str, ...]) -> Any:
    """A tmpfs THP mapped by one PMD at Y (file offset 2 MiB) moves next to
    the mapping of the file's first 2 MiB at X: copy_vma merges it into
    that earlier VMA, so ``need_rmap_locks`` holds. Meanwhile a hole punch
    inside the THP splits it (``split_folio``: ``try_to_unmap`` with
    ``TTU_SPLIT_HUGE_PMD`` under ``i_mmap_rwsem``, then the refcount
    freeze), which returns -EAGAIN when the walk missed the PMD (it visited
    the merged VMA before the move and the source after it): the PMD
    mapping's references make the freeze fail. Today's split fails safely
    there; 3.14's anonymous split BUG'd (docs/mremap.md)."""

    def program() -> None:
        s = System(cpus=2, without=without)
        s.create_file("/dev/shm/f", 2 * HUGE, shmem=True, huge="always")
        p = s.process()
        fd = p.open("/dev/shm/f")
        p.mmap(X, HUGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0)
        b = p.mmap(Y, HUGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, HUGE)
        p.poke(b, 1)
        assert pmd_trans_huge(peek_pmd(p.mm, b))

        def mover(t: Thread) -> None:
            t.mremap(b, HUGE, HUGE, MREMAP_MAYMOVE | MREMAP_FIXED, X + HUGE)

        def puncher(t: Thread) -> None:
            t.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, HUGE + 5 * P, P)

        p.thread(mover, cpu=0, name="cpu0")
        p.thread(puncher, cpu=1, name="cpu1")

    return program


def _explore_split(without: tuple[str, ...],
                   monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[int]]:
    splits: list[int] = []
    real = shmem_mod.split_folio

    def recording(folio: Any) -> int:
        ret = real(folio)
        splits.append(ret)
        if ret == -errno.EAGAIN:
            raise ViolationError("assertion", "split_folio missed a PMD mapping",
                                 "the THP's split returned -EAGAIN: its rmap walk found the "
                                 "PMD at neither place while mremap moved it")
        return ret

    monkeypatch.setattr(shmem_mod, "split_folio", recording)
    r = explore(thp_split_program(without), strategy="bounded", preemption_bound=2,
                max_seconds=300)
    return r, splits


def test_thp_split_finds_the_moving_pmd_with_the_rmap_lock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With "mm, thp: close race between mremap() and split_huge_page()" the
    move of the huge PMD holds the rmap locks when need_rmap_locks: the
    split's walk finds the PMD at one place in every interleaving (K=2)."""
    r, splits = _explore_split((), monkeypatch)
    assert r.violation is None, r.violation and r.violation.message
    assert r.complete and 0 in splits


def test_thp_split_misses_the_moving_pmd_without_the_rmap_lock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without it the explorer finds the walk that misses the PMD: today's
    split then fails with -EAGAIN (safe; the entry of the 3.14 BUG is not
    in the catalog, see docs/mremap.md)."""
    r, _splits = _explore_split(("mremap-thp-rmap-lock",), monkeypatch)
    assert r.violation is not None and r.violation.kind == "assertion", r.violation

"""khugepaged and MADV_COLLAPSE (mm/khugepaged.py): what a collapse does
with one thread, the VMAs it must skip, MADV_COLLAPSE's errnos, the eras
of retraction and of the page-table reader protocol, and what a collapse
costs in visible operations."""

from __future__ import annotations

import errno

import pytest
from thpkit import HUGE, RW, THP_BASE, check_accounting, run1, steps_of, thp_anon

from mmrace.engine import explore, spawn
from mmrace.mm.khugepaged import ScanResult, collapse_pte_mapped_thp, mm_slot
from mmrace.mm.mman import (
    MADV_COLLAPSE,
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
)
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.mm.pgtable import (
    lookup_pte,
    mm_nr_ptes,
    peek_pmd,
    pmd_none,
    pmd_trans_huge,
    pte_offset_map_lock,
    pte_unmap_unlock,
    walk_to_pmd,
)
from mmrace.user import PAGE_SIZE, System

SHARED = MAP_SHARED | MAP_FIXED
S = ScanResult


def _tmpfs(kernel: str | None = None, huge: str = "never", **kw: object) -> tuple[object, int]:
    s = System(kernel=kernel, **kw)  # type: ignore[arg-type]
    s.create_file("/dev/shm/f", 2 * HUGE, shmem=True, huge=huge)
    p = s.process()
    return p, p.open("/dev/shm/f")


def _pte_mapped_thp(kernel: str | None = None) -> tuple[object, int, int]:
    """docs/thp-reclaim.md's recipe: a shmem large folio mapped by PTEs in
    an aligned VMA (fault-around maps 16 of its pages)."""
    p, fd = _tmpfs(kernel, huge="always")
    a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
    p.poke(a + 3 * PAGE_SIZE, 7)
    p.mprotect(a + HUGE // 2, HUGE // 2, PROT_READ)
    assert p.peek(a + 3 * PAGE_SIZE) == 7
    p.mprotect(a + HUGE // 2, HUGE // 2, RW)
    return p, fd, a


# --- single-threaded collapse semantics -------------------------------------------------------


def test_madv_collapse_anon_512_small_pages_become_one_huge_pmd() -> None:
    def program() -> None:
        p = System().process()
        a = thp_anon(p)
        for i in range(512):
            p.poke(a + i * PAGE_SIZE, i + 1)
        assert not pmd_trans_huge(peek_pmd(p.mm, a))
        small = {p.folio_at(a + i * PAGE_SIZE).serial for i in range(512)}
        assert len(small) == 512 and mm_nr_ptes(p.mm) == 1
        p.madvise(a, HUGE, MADV_COLLAPSE)
        assert pmd_trans_huge(peek_pmd(p.mm, a))
        thp = p.folio_at(a)
        assert thp.order == 9 and thp.anon and thp._entire_mapcount == 1
        for i in range(512):
            assert p.peek(a + i * PAGE_SIZE) == i + 1
        assert mm_nr_ptes(p.mm) == 1  # the old table is deposited with the huge PMD
        assert p.mm.rss == 512
        check_accounting([p])

    run1(program)


def test_khugepaged_collapses_anon_only_when_sysfs_allows_it() -> None:
    def program() -> None:
        p = System(thp="madvise").process()
        a = thp_anon(p)
        p.poke(a, 5)
        p.poke(a + 100 * PAGE_SIZE, 6)
        assert p.khugepaged_scan(a) == S.SCAN_VMA_CHECK  # not MADV_HUGEPAGE
        assert not pmd_trans_huge(peek_pmd(p.mm, a))
        p.madvise(a, HUGE, MADV_HUGEPAGE)
        assert p.khugepaged_scan(a) == S.SCAN_SUCCEED
        assert pmd_trans_huge(peek_pmd(p.mm, a))
        assert (p.peek(a), p.peek(a + 100 * PAGE_SIZE), p.peek(a + PAGE_SIZE)) == (5, 6, 0)
        check_accounting([p])

    run1(program)


def test_khugepaged_respects_max_ptes_none_and_madv_collapse_does_not() -> None:
    from mmrace.mm.khugepaged import khugepaged_settings

    def program() -> None:
        khugepaged_settings().max_ptes_none = 100
        p = System(thp="always").process()
        a = thp_anon(p)
        p.madvise(a, HUGE, MADV_NOHUGEPAGE)  # small pages at fault time
        p.poke(a, 1)
        p.madvise(a, HUGE, MADV_HUGEPAGE)
        assert p.khugepaged_scan(a) == S.SCAN_EXCEED_NONE_PTE
        p.madvise(a, HUGE, MADV_COLLAPSE)
        assert pmd_trans_huge(peek_pmd(p.mm, a))

    run1(program)


@pytest.mark.parametrize("kernel", [None, "6.1"])
def test_madv_collapse_shmem_replaces_the_cache_and_maps_a_huge_pmd(kernel: str | None) -> None:
    def program() -> None:
        p, fd = _tmpfs(kernel)
        a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
        for i in range(0, 512, 64):
            p.poke(a + i * PAGE_SIZE, i + 3)
        olds = [p.folio_at(a + i * PAGE_SIZE) for i in range(0, 512, 64)]
        mapping = olds[0].mapping
        assert mm_nr_ptes(p.mm) == 1
        p.madvise(a, HUGE, MADV_COLLAPSE)
        assert pmd_trans_huge(peek_pmd(p.mm, a))
        new = p.folio_at(a)
        assert new.order == 9 and all(mapping.i_pages[i] is new for i in range(512))
        assert all(f.freed for f in olds)
        for i in range(0, 512, 64):
            assert p.peek(a + i * PAGE_SIZE) == i + 3
        assert mm_nr_ptes(p.mm) == 0  # the table was retracted
        check_accounting([p])

    run1(program)


@pytest.mark.parametrize("kernel", [None, "6.5", "6.1", "6.0"])
def test_khugepaged_collapses_shmem_and_retracts_the_table(kernel: str | None) -> None:
    """huge=advise + MADV_HUGEPAGE: khugepaged's collapse_file leaves the
    PMD empty (the table retracted, in every era); the next fault maps the
    huge folio by PMD."""

    def program() -> None:
        p, fd = _tmpfs(kernel, huge="advise")
        a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
        p.poke(a + 9 * PAGE_SIZE, 9)
        p.madvise(a, HUGE, MADV_HUGEPAGE)
        assert p.khugepaged_scan(a) == S.SCAN_SUCCEED
        assert pmd_none(peek_pmd(p.mm, a)) and mm_nr_ptes(p.mm) == 0
        assert p.peek(a + 9 * PAGE_SIZE) == 9
        assert pmd_trans_huge(peek_pmd(p.mm, a))
        check_accounting([p])

    run1(program)


@pytest.mark.parametrize("kernel, first, second", [
    (None, S.SCAN_SUCCEED, S.SCAN_SUCCEED),  # found by the scan, collapsed at once
    ("6.1", S.SCAN_PTE_MAPPED_HUGEPAGE, S.SCAN_PTE_MAPPED_HUGEPAGE),  # queued
    ("6.0", S.SCAN_PAGE_COMPOUND, S.SCAN_PAGE_COMPOUND),  # not recognised by the scan
])
def test_pte_mapped_thp_is_collapsed_by_each_era(kernel: str | None, first: int,
                                                 second: int) -> None:
    """A PTE-mapped THP: since 6.6 khugepaged's scan collapses it under the
    mmap read lock; 6.1 queues it on the first pass and retracts on the
    next (khugepaged_collapse_pte_mapped_thps, mmap write lock); 6.0 only
    retracts what a deferred retraction queued."""

    def program() -> None:
        p, _fd, a = _pte_mapped_thp(kernel)
        if kernel == "6.0":
            assert p.khugepaged_add_pte_mapped_thp(a)
        elif kernel is None:
            assert not p.khugepaged_add_pte_mapped_thp(a)  # no queue since 6.6
        assert p.khugepaged_scan(a) == first
        if kernel == "6.1":
            assert mm_slot(p.mm).pte_mapped_thp == [a]
            assert not pmd_none(peek_pmd(p.mm, a))
        assert p.khugepaged_scan(a) == second
        assert pmd_none(peek_pmd(p.mm, a)), "retracted"
        assert p.peek(a + 3 * PAGE_SIZE) == 7
        assert pmd_trans_huge(peek_pmd(p.mm, a))
        check_accounting([p])

    run1(program)


def test_retraction_skips_a_vma_with_an_anon_vma() -> None:
    """A MAP_PRIVATE mapping of the file that was written (it has an
    anon_vma) keeps its PTE table; a shared one loses it."""

    def program() -> None:
        p, fd = _tmpfs(huge="advise")
        a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
        b = p.mmap(THP_BASE + 2 * HUGE, HUGE, RW, MAP_PRIVATE | MAP_FIXED, fd, 0)
        p.poke(a, 1)
        assert p.peek(b) == 1
        p.poke(b + PAGE_SIZE, 2)  # a private COW copy: the VMA gets an anon_vma
        p.madvise(a, HUGE, MADV_HUGEPAGE)
        assert p.khugepaged_scan(a) == S.SCAN_SUCCEED
        assert pmd_none(peek_pmd(p.mm, a))
        assert lookup_pte(p.mm, b) is not None, "the private VMA's table stays"
        assert p.peek(b + PAGE_SIZE) == 2 and p.peek(b) == 1
        check_accounting([p])

    run1(program)


@pytest.mark.parametrize("kernel", [None, "6.1"])
def test_retraction_skips_a_uffd_wp_vma_and_keeps_its_markers(kernel: str | None) -> None:
    """A shmem VMA registered for uffd-wp keeps its PTE table through a
    collapse: the write-protected empty entry's marker survives, and a
    write to that page then raises a userfault (the fault on the marker
    maps the page write-protected)."""
    from mmrace.mm.pgtable import peek_pte
    from mmrace.mm.swapops import pte_marker_uffd_wp
    from mmrace.mm.userfaultfd import UFFDIO_REGISTER_MODE_WP

    def program() -> None:
        p, fd = _tmpfs(kernel, huge="advise", fault_around_bytes=PAGE_SIZE)
        a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
        p.poke(a, 1)
        p.madvise(a, HUGE, MADV_HUGEPAGE)
        uffd = p.userfaultfd()
        uffd.register(a, HUGE, UFFDIO_REGISTER_MODE_WP)
        uffd.writeprotect(a + PAGE_SIZE, PAGE_SIZE, protect=True)
        assert pte_marker_uffd_wp(peek_pte(p.mm, a + PAGE_SIZE))
        assert p.khugepaged_scan(a) == S.SCAN_SUCCEED  # the page cache collapsed
        assert not pmd_none(peek_pmd(p.mm, a)), "the registered VMA keeps its table"
        assert pte_marker_uffd_wp(peek_pte(p.mm, a + PAGE_SIZE))
        seen: list[object] = []

        def writer(t: object) -> None:
            t.store(a + PAGE_SIZE, 3)  # type: ignore[attr-defined]
            assert seen, "the store did not raise a userfault"

        def monitor(t: object) -> None:
            seen.append(uffd.read())
            uffd.writeprotect(a + PAGE_SIZE, PAGE_SIZE, protect=False)

        p.thread(writer, cpu=0)
        p.thread(monitor, cpu=1)

    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation.message if r.violation else ""


def test_khugepaged_scan_of_an_unmapped_address_does_nothing() -> None:
    def program() -> None:
        p = System(thp="always").process()
        a = thp_anon(p)
        p.poke(a, 1)
        before = peek_pmd(p.mm, a)
        assert p.khugepaged_scan(a + 8 * HUGE) == S.SCAN_VMA_CHECK
        assert p.khugepaged_scan(0) == S.SCAN_VMA_CHECK
        assert peek_pmd(p.mm, a) == before

    run1(program)


# --- MADV_COLLAPSE errnos ---------------------------------------------------------------


def _errno_of(fn: object) -> int:
    try:
        fn()  # type: ignore[operator]
    except OSError as e:
        return e.errno
    return 0


def test_madv_collapse_errnos() -> None:
    def program() -> None:
        p = System().process()
        a = thp_anon(p)
        p.poke(a, 1)
        # a pinned page: EAGAIN (trying again may succeed)
        pages = p.pin(a)
        assert _errno_of(lambda: p.madvise(a, HUGE, MADV_COLLAPSE)) == errno.EAGAIN
        p.unpin(pages)
        # no aligned 2 MiB in the range (but one starting at an aligned
        # address is an empty range of them: 0), or THP disabled: EINVAL
        assert _errno_of(lambda: p.madvise(a + PAGE_SIZE, PAGE_SIZE, MADV_COLLAPSE)) \
            == errno.EINVAL
        assert _errno_of(lambda: p.madvise(a, PAGE_SIZE, MADV_COLLAPSE)) == 0
        p.madvise(a, HUGE, MADV_NOHUGEPAGE)
        assert _errno_of(lambda: p.madvise(a, HUGE, MADV_COLLAPSE)) == errno.EINVAL
        # a hole in the range: ENOMEM, as madvise(2) always says
        b = thp_anon(p, addr=THP_BASE + 4 * HUGE)
        p.poke(b, 1)
        assert _errno_of(lambda: p.madvise(b - HUGE, 2 * HUGE, MADV_COLLAPSE)) == errno.ENOMEM
        assert pmd_trans_huge(peek_pmd(p.mm, b)), "the mapped part was collapsed"
        # nothing at all there: ENOMEM
        assert _errno_of(lambda: p.madvise(THP_BASE + 8 * HUGE, HUGE, MADV_COLLAPSE)) \
            == errno.ENOMEM

    run1(program)


def test_madv_collapse_does_not_exist_before_6_1() -> None:
    def program() -> None:
        p = System(kernel="6.0").process()
        a = thp_anon(p)
        p.poke(a, 1)
        assert _errno_of(lambda: p.madvise(a, HUGE, MADV_COLLAPSE)) == errno.EINVAL
        assert not pmd_trans_huge(peek_pmd(p.mm, a))

    run1(program)


def test_madv_collapse_of_an_anon_vma_never_written_is_einval() -> None:
    """hugepage_vma_check: an anonymous VMA without an anon_vma (never
    faulted) may not be collapsed."""

    def program() -> None:
        p = System().process()
        a = thp_anon(p)
        assert _errno_of(lambda: p.madvise(a, HUGE, MADV_COLLAPSE)) == errno.EINVAL

    run1(program)


# --- the page-table reader protocol per era ---------------------------------------------------


@pytest.mark.parametrize("kernel, rcu", [(None, True), ("6.5", True), ("6.1", False),
                                         ("6.0", False)])
def test_pte_offset_map_lock_holds_rcu_only_from_6_5(kernel: str | None, rcu: bool) -> None:
    seen: dict[str, object] = {}

    def program() -> None:
        p = System(kernel=kernel).process()
        a = thp_anon(p)
        p.poke(a, 1)

        def t() -> None:
            mm = p.mm
            mmap_read_lock(mm)
            pmd, mi = walk_to_pmd(mm, a)
            pm = pte_offset_map_lock(mm, pmd, mi, a)
            from mmrace.sync.rcu import rcu_read_lock_held

            seen["rcu"] = rcu_read_lock_held()
            seen["pm"] = pm.rcu
            pte_unmap_unlock(pm)
            mmap_read_unlock(mm)

        spawn(t, name="t")

    run1(program)
    assert seen == {"rcu": rcu, "pm": rcu}


def _walker_vs_retraction(kernel: str | None, without: tuple[str, ...] = ()) -> str:
    """A zap of a shmem range (under i_mmap_rwsem alone, the hole punch's
    unmap_mapping_range) against collapse_pte_mapped_thp's retraction of
    its PTE table; the outcome of the exhaustive exploration."""

    def program() -> None:
        s = System(kernel=kernel, without=without, fault_around_bytes=PAGE_SIZE)
        s.create_file("/dev/shm/f", 2 * HUGE, shmem=True, huge="always")
        p = s.process()
        fd = p.open("/dev/shm/f")
        a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
        p.poke(a, 1)
        p.mprotect(a + HUGE // 2, HUGE // 2, PROT_READ)
        p.peek(a)
        p.mprotect(a + HUGE // 2, HUGE // 2, RW)
        p.madvise(a, PAGE_SIZE, MADV_DONTNEED)
        rcu_era = p.mm.kernel.has("retract-pgtable-rcu")

        def khugepaged() -> None:
            from mmrace.mm.mmap_lock import mmap_write_lock, mmap_write_unlock

            lock, unlock = ((mmap_read_lock, mmap_read_unlock) if rcu_era
                            else (mmap_write_lock, mmap_write_unlock))
            lock(p.mm)
            collapse_pte_mapped_thp(p.mm, a, False)
            unlock(p.mm)

        def zap(t: object) -> None:
            from mmrace.mm.truncate import unmap_mapping_range

            unmap_mapping_range(s.files["/dev/shm/f"].f_mapping, 0, HUGE, False)

        spawn(khugepaged, name="khugepaged")
        p.thread(zap, cpu=0, name="cpu0")

    r = explore(program, preemption_bound=2, strategy="bounded", shrink=False)
    return r.violation.kind if r.violation else ("clean" if r.complete else "incomplete")


def test_a_walker_that_takes_the_pmd_as_stable_is_right_under_the_6_1_locks() -> None:
    """6.1: the zap reads the PMD once, takes the table's lock and never
    rechecks -- correct, because retraction holds i_mmap_rwsem for write."""
    assert _walker_vs_retraction("6.1") == "clean"
    # The same walker against 6.0's retraction (mmap W + PMD lock): broken.
    assert _walker_vs_retraction("6.0") == "use-after-free"


def test_under_the_current_rules_the_walker_must_revalidate() -> None:
    """Current: retraction holds only the PMD and PTE locks and frees by
    RCU; the zap revalidates and is right. Without revalidation (the 6.5
    reader protocol removed) the same retraction breaks it."""
    assert _walker_vs_retraction(None) == "clean"
    assert _walker_vs_retraction(None, ("pte-map-revalidate",)) == "use-after-free"


# --- GUP-fast, TLB flushes, the hardware walker -----------------------------------------------


def test_the_ipi_of_an_x86_tlb_flush_alone_closes_the_gup_fast_collapse_race() -> None:
    """khugepaged-gup-fast-collapse's base (5.19) with x86's IPI flushes:
    pmdp_collapse_flush's IPI waits for GUP-fast's interrupts-off section,
    so the reference is in place before the refcount check. With broadcast
    flushes (the catalog entry) the same kernel loses the DMA."""
    from mmrace.scenarios import Kernel
    from mmrace.scenarios.khugepaged import gup_fast_collapse

    def outcome(tlb_flush: str) -> str:
        r = explore(lambda: gup_fast_collapse(Kernel(release="5.19"), tlb_flush),
                    preemption_bound=2, strategy="bounded", shrink=False)
        return r.violation.kind if r.violation else ("clean" if r.complete else "incomplete")

    assert outcome("ipi") == "clean"
    assert outcome("broadcast") == "wrong-data"


def test_a_hardware_walk_split_by_a_flush_starts_over() -> None:
    """A flush that reaches a CPU between the walk's PMD read and its leaf
    access: the walk starts over (it saw the old table, which the flusher
    then freed at once -- 6.1's collapse_and_free_pmd). No use-after-free,
    and the load finds the retracted range through a new fault."""

    def program() -> None:
        s = System(kernel="6.1", cpus=2, fault_around_bytes=PAGE_SIZE)
        s.create_file("/dev/shm/f", 2 * HUGE, shmem=True, huge="always")
        p = s.process()
        fd = p.open("/dev/shm/f")
        a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
        p.poke(a, 1)
        p.mprotect(a + HUGE // 2, HUGE // 2, PROT_READ)
        p.peek(a)
        p.mprotect(a + HUGE // 2, HUGE // 2, RW)
        p.khugepaged_add_pte_mapped_thp(a)

        def user(t: object) -> None:
            assert t.load(a) == 1  # type: ignore[attr-defined]

        p.khugepaged(a, cpu=1)
        p.thread(user, cpu=0)

    r = explore(program, preemption_bound=2, strategy="bounded", shrink=False)
    assert r.violation is None and r.complete, r.violation and r.violation.message


# --- cost ---------------------------------------------------------------

# Visible operations of one collapse (bench/khugepaged.py prints them all).
OPS_PTE_MAPPED_THP = 80
OPS_ANON_ONE_PAGE = 80
OPS_ANON_PER_PAGE = 8


def test_collapse_pte_mapped_thp_of_512_ptes_costs_a_few_dozen_operations() -> None:
    """All 512 PTEs map pages of one large folio: the scan, the clear and
    the rmap update are one operation each, whatever the number of PTEs."""
    from mmrace.mm.pgtable import lookup_pte as lp

    def setup() -> object:
        p, fd = _tmpfs(huge="always")
        a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
        p.poke(a, 1)
        from mmrace.mm.filemap import set_fault_around_bytes

        set_fault_around_bytes(2 << 20)
        p.mprotect(a + HUGE // 2, HUGE // 2, PROT_READ)
        p.peek(a)
        p.mprotect(a + HUGE // 2, HUGE // 2, RW)
        table, _ = lp(p.mm, a)
        assert len(table.entries) == 256  # fault-around stops at the VMA
        p.peek(a + HUGE // 2)
        assert len(table.entries) == 512
        return p, a

    def body(state: object) -> None:
        p, a = state  # type: ignore[misc]
        mmap_read_lock(p.mm)
        assert collapse_pte_mapped_thp(p.mm, a, True) == S.SCAN_SUCCEED
        mmap_read_unlock(p.mm)
        assert pmd_trans_huge(peek_pmd(p.mm, a))

    n = steps_of(setup, body)
    assert n <= OPS_PTE_MAPPED_THP, n


def test_anon_collapse_costs_a_constant_plus_a_few_operations_per_page() -> None:
    def cost(npages: int) -> int:
        def setup() -> object:
            p = System(thp="madvise").process()
            a = thp_anon(p)
            for i in range(npages):
                p.poke(a + i * PAGE_SIZE, i + 1)
            p.madvise(a, HUGE, MADV_HUGEPAGE)
            return p, a

        def body(state: object) -> None:
            p, a = state  # type: ignore[misc]
            assert p.khugepaged_scan(a) == S.SCAN_SUCCEED

        return steps_of(setup, body)

    one, many = cost(1), cost(33)
    assert one <= OPS_ANON_ONE_PAGE, one
    assert (many - one) / 32 <= OPS_ANON_PER_PAGE, (one, many)

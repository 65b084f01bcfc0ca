"""Anonymous PMD-mapped THPs: the fault, walkers and zap, split on a partial
munmap/mprotect, COW after fork, change_protection, the sysfs/madvise
controls, and the cost of a THP fault."""

from __future__ import annotations

import errno

import pytest
from thpkit import HUGE, RW, THP_BASE, check_accounting, run1, steps_of, thp_anon

from mmrace.mm.memory import do_user_addr_fault
from mmrace.mm.page_alloc import mem_state
from mmrace.mm.pgtable import (
    peek_pmd,
    peek_pte,
    pmd_trans_huge,
    pmd_write,
    pte_pfn,
    pte_present,
    pte_write,
)
from mmrace.user import (
    MADV_DONTNEED,
    MADV_HUGEPAGE,
    MADV_NOHUGEPAGE,
    PAGE_SIZE,
    PROT_READ,
    System,
)


def test_thp_fault_maps_512_pages_with_one_pmd() -> None:
    def program() -> None:
        p = System(thp="always").process()
        a = thp_anon(p)
        p.poke(a + 5 * PAGE_SIZE, 7)
        pmd = peek_pmd(p.mm, a)
        assert pmd_trans_huge(pmd) and pmd_write(pmd)
        f = p.folio_at(a)
        assert f.order == 9 and f._mapcount == 1 and f._entire_mapcount == 1
        assert f.anon and all(f.anon_exclusive)
        # every page of the 2 MiB is there, none faulted separately
        assert p.peek(a + 5 * PAGE_SIZE) == 7 and p.peek(a + 511 * PAGE_SIZE) == 0
        assert pte_pfn(peek_pte(p.mm, a + 5 * PAGE_SIZE)) == f.pfn + 5
        assert p.mm.rss == 512
        check_accounting([p])
        p.munmap(a, HUGE)
        assert not mem_state().live  # zap_huge_pmd freed the THP

    run1(program)


def test_thp_policy_madvise_never_and_nohugepage() -> None:
    def program() -> None:
        s = System()  # thp=madvise: only MADV_HUGEPAGE regions
        p = s.process()
        a = thp_anon(p)
        p.poke(a, 1)
        assert not pmd_trans_huge(peek_pmd(p.mm, a))
        b = thp_anon(p, addr=THP_BASE + 4 * HUGE)
        p.madvise(b, HUGE, MADV_HUGEPAGE)
        p.poke(b, 1)
        assert pmd_trans_huge(peek_pmd(p.mm, b))
        c = thp_anon(p, addr=THP_BASE + 8 * HUGE)
        p.madvise(c, HUGE, MADV_HUGEPAGE)
        p.madvise(c, HUGE, MADV_NOHUGEPAGE)
        p.poke(c, 1)
        assert not pmd_trans_huge(peek_pmd(p.mm, c))

    run1(program)

    def never() -> None:
        p = System(thp="never").process()
        a = thp_anon(p)
        p.madvise(a, HUGE, MADV_HUGEPAGE)
        p.poke(a, 1)
        assert not pmd_trans_huge(peek_pmd(p.mm, a))

    run1(never)


def test_madv_hugepage_unaligned_range() -> None:
    def program() -> None:
        p = System().process()
        a = thp_anon(p, 2 * HUGE)
        with pytest.raises(OSError) as e:
            p.madvise(a + 1, HUGE, MADV_HUGEPAGE)
        assert e.value.errno == errno.EINVAL
        # page-aligned but not PMD-aligned: accepted, and the block that does
        # not fit in the VMA falls back to small pages
        p.madvise(a + PAGE_SIZE, HUGE, MADV_HUGEPAGE)
        p.poke(a + 2 * PAGE_SIZE, 1)
        assert not pmd_trans_huge(peek_pmd(p.mm, a))
        assert pte_present(peek_pte(p.mm, a + 2 * PAGE_SIZE))

    run1(program)


def test_partial_munmap_splits_the_pmd_and_keeps_data() -> None:
    def program() -> None:
        p = System(thp="always").process()
        a = thp_anon(p)
        p.poke(a, 1)
        p.poke(a + 3 * PAGE_SIZE, 3)
        f = p.folio_at(a)
        p.munmap(a + 100 * PAGE_SIZE, PAGE_SIZE)
        assert not pmd_trans_huge(peek_pmd(p.mm, a))
        assert f.order == 9 and f._entire_mapcount == 0 and f._mapcount == 511
        assert f.page_mapcount[100] == 0 and f.page_mapcount[3] == 1
        assert p.peek(a) == 1 and p.peek(a + 3 * PAGE_SIZE) == 3
        assert not pte_present(peek_pte(p.mm, a + 100 * PAGE_SIZE))
        check_accounting([p])
        p.exit()
        assert not mem_state().live

    run1(program)


def test_mprotect_whole_thp_in_place_and_part_splits() -> None:
    def program() -> None:
        p = System(thp="always").process()
        a = thp_anon(p, 2 * HUGE)
        p.poke(a, 1)
        p.poke(a + HUGE, 2)
        p.mprotect(a, HUGE, PROT_READ)  # change_huge_pmd: stays huge, read-only
        pmd = peek_pmd(p.mm, a)
        assert pmd_trans_huge(pmd) and not pmd_write(pmd)
        p.mprotect(a + HUGE, PAGE_SIZE, PROT_READ)  # part: split
        assert not pmd_trans_huge(peek_pmd(p.mm, a + HUGE))
        assert not pte_write(peek_pte(p.mm, a + HUGE))
        assert pte_write(peek_pte(p.mm, a + HUGE + PAGE_SIZE))
        with pytest.raises(OSError):
            do_user_addr_fault(p.mm, a, True)  # SIGSEGV: read-only now
        p.mprotect(a, HUGE, RW)
        p.poke(a + PAGE_SIZE, 5)  # write fault on the exclusive THP: reused in place
        assert pmd_trans_huge(peek_pmd(p.mm, a)) and p.peek(a) == 1
        check_accounting([p])

    run1(program)


def test_cow_of_a_thp_after_fork_splits_and_copies_one_page() -> None:
    def program() -> None:
        p = System(thp="always").process()
        a = thp_anon(p)
        p.poke(a, 1)
        p.poke(a + PAGE_SIZE, 2)
        f = p.folio_at(a)
        c = p.fork()
        # fork shares the THP with one write-protected PMD in each
        assert pmd_trans_huge(peek_pmd(c.mm, a)) and not pmd_write(peek_pmd(p.mm, a))
        assert f._entire_mapcount == 2 and not any(f.anon_exclusive)
        c.poke(a, 10)  # COW: the child's PMD is split and one page copied
        assert not pmd_trans_huge(peek_pmd(c.mm, a))
        assert pte_pfn(peek_pte(c.mm, a)) not in range(f.pfn, f.pfn + 512)
        assert c.peek(a + PAGE_SIZE) == 2 and c.peek(a) == 10
        assert p.peek(a) == 1 and pmd_trans_huge(peek_pmd(p.mm, a))
        p.poke(a, 11)  # the parent still shares the rest: its PMD splits too
        assert p.peek(a) == 11 and c.peek(a) == 10
        check_accounting([p, c])
        c.exit()
        p.exit()
        assert not mem_state().live

    run1(program)


def test_madv_dontneed_zaps_a_whole_thp_and_splits_a_partial_one() -> None:
    def program() -> None:
        p = System(thp="always").process()
        a = thp_anon(p, 2 * HUGE)
        p.poke(a, 1)
        p.poke(a + HUGE, 2)
        p.madvise(a, HUGE, MADV_DONTNEED)
        assert peek_pmd(p.mm, a) == 0 and p.peek(a) == 0
        p.madvise(a + HUGE, PAGE_SIZE, MADV_DONTNEED)
        assert p.peek(a + HUGE) == 0 and not pmd_trans_huge(peek_pmd(p.mm, a + HUGE))
        check_accounting([p])

    run1(program)


def test_slow_gup_pins_a_thp_page() -> None:
    def program() -> None:
        p = System(thp="always").process()
        a = thp_anon(p)
        p.poke(a + 2 * PAGE_SIZE, 9)
        pins = p.pin(a + 2 * PAGE_SIZE, write=True)
        f = p.folio_at(a)
        assert pins == [f] and f._pincount == 1 and f._refcount == 2
        p.unpin(pins)
        assert f._pincount == 0 and f._refcount == 1

    run1(program)


def test_a_thp_fault_costs_about_one_small_fault() -> None:
    """The PMD mapping is one entry: a THP write fault costs about what a
    small one does, not 512 times as much."""

    def setup(thp: str) -> object:
        p = System(thp=thp).process()
        return p, thp_anon(p)

    def fault(state: object) -> None:
        p, a = state  # type: ignore[misc]
        do_user_addr_fault(p.mm, a, True)

    thp_ops = steps_of(lambda: setup("always"), fault)
    small_ops = steps_of(lambda: setup("never"), fault)
    assert thp_ops <= small_ops + 5, (thp_ops, small_ops)


def test_clear_refs_and_pagemap_walk_a_huge_pmd() -> None:
    from mmrace.user import CLEAR_REFS_SOFT_DIRTY

    def program() -> None:
        p = System(thp="always").process()
        a = thp_anon(p)
        p.poke(a, 1)
        f = p.folio_at(a)
        e = p.pagemap(a + 7 * PAGE_SIZE)
        assert e.present and e.soft_dirty and e.pfn == f.pfn + 7
        p.clear_refs(CLEAR_REFS_SOFT_DIRTY)
        pmd = peek_pmd(p.mm, a)
        assert pmd_trans_huge(pmd) and not pmd_write(pmd)
        assert not p.pagemap(a).soft_dirty
        p.touch(a + PAGE_SIZE, 0, write=True)  # write fault: the THP is reused
        assert pmd_trans_huge(peek_pmd(p.mm, a)) and p.pagemap(a).soft_dirty
        check_accounting([p])

    run1(program)

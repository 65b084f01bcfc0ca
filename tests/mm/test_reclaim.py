"""Reclaim: swap-out and swap-in of anonymous pages through real swap
entries, reference checking, write-back of dirty file pages through
folio_mkclean, MADV_FREE lazy freeing, and a reclaim racing a write fault."""

from __future__ import annotations

import errno

import pytest
from thpkit import ANON, HUGE, RW, check_accounting, run1, thp_anon

from mmrace.engine import explore, require
from mmrace.mm.page_alloc import mem_state
from mmrace.mm.pgtable import peek_pte, pte_dirty, pte_present, pte_write
from mmrace.mm.swapfile import swap_info
from mmrace.mm.swapops import is_swap_pte, pte_to_swp_entry
from mmrace.user import MADV_FREE, MADV_PAGEOUT, MAP_SHARED, PAGE_SIZE, System, Thread


def test_swap_out_and_in_keeps_the_data() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        p.poke(a, 11)
        p.poke(a + 8 * 64, 12)  # another word of the same page
        assert p.reclaim(a) == 1  # MADV_PAGEOUT of the page
        pte = peek_pte(p.mm, a)
        assert is_swap_pte(pte) and not mem_state().live
        assert swap_info().slots[pte_to_swp_entry(pte).offset].count == 1
        assert p.peek(a) == 11 and p.peek(a + 8 * 64) == 12  # swapped in
        assert pte_present(peek_pte(p.mm, a))
        p.poke(a, 13)  # exclusive: written in place, no copy
        assert p.peek(a) == 13
        check_accounting([p])
        p.exit()
        assert swap_info().inuse_pages == 0 and not mem_state().live

    run1(program)


def test_swap_entries_are_shared_at_fork_and_freed_by_zap() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 5)
        p.reclaim(a)
        c = p.fork()
        slot = swap_info().slots[pte_to_swp_entry(peek_pte(p.mm, a)).offset]
        assert slot.count == 2
        assert c.peek(a) == 5 and p.peek(a) == 5  # one swap-in, shared through the cache
        c.poke(a, 6)  # COW of the shared swapped-in page
        assert p.peek(a) == 5 and c.peek(a) == 6
        c.exit()
        p.exit()
        assert swap_info().inuse_pages == 0 and not mem_state().live

    run1(program)


def test_kswapd_reclaim_checks_references() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        f = p.folio_at(a)
        assert p.reclaim(f) == 0  # young PTE: referenced, kept
        assert f.referenced and pte_present(peek_pte(p.mm, a))
        assert p.reclaim(f) == 1  # not accessed since: swapped out
        assert p.peek(a) == 1

    run1(program)


def test_a_pinned_page_is_not_swapped_out() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        pins = p.pin(a, write=True)
        assert p.reclaim(a) == 0  # folio_try_share_anon_rmap_pte: -EBUSY
        assert pte_present(peek_pte(p.mm, a)) and p.peek(a) == 1
        p.unpin(pins)

    run1(program)


def test_dirty_shared_file_page_is_written_back_and_read_again() -> None:
    def program() -> None:
        s = System()
        s.create_file("/data", 4 * PAGE_SIZE)
        p = s.process()
        fd = p.open("/data")
        a = p.mmap(0, PAGE_SIZE, RW, MAP_SHARED, fd, 0)
        p.poke(a, 9)
        f = p.folio_at(a)
        assert pte_dirty(peek_pte(p.mm, a))
        assert p.reclaim(f) == 0  # referenced: kept
        # PG_referenced: only a clean folio may go (FOLIOREF_RECLAIM_CLEAN);
        # this one is unmapped, its dirty PTE making it dirty, and kept
        assert p.reclaim(f) == 0
        assert not pte_present(peek_pte(p.mm, a)) and f.dirty
        assert p.reclaim(f) == 1  # written back (folio_clear_dirty_for_io), freed
        assert p.peek(a) == 9  # read back from the file's blocks
        q = s.process()
        b = q.mmap(0, PAGE_SIZE, RW, MAP_SHARED, q.open("/data"), 0)
        assert q.peek(b) == 9
        check_accounting([p, q])

    run1(program)


def test_folio_mkclean_write_protects_shared_mappings() -> None:
    def program() -> None:
        from mmrace.mm.page_alloc import folio_lock, folio_unlock
        from mmrace.mm.vmscan import folio_clear_dirty_for_io

        s = System()
        s.create_file("/data", PAGE_SIZE)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, RW, MAP_SHARED, p.open("/data"), 0)
        p.poke(a, 1)
        f = p.folio_at(a)
        folio_lock(f)
        assert folio_clear_dirty_for_io(f)  # the PTE's dirty bit counted
        folio_unlock(f)
        pte = peek_pte(p.mm, a)
        assert pte_present(pte) and not pte_write(pte) and not pte_dirty(pte)
        p.poke(a, 2)  # a write fault makes it writable and dirty again
        assert pte_write(peek_pte(p.mm, a)) and pte_dirty(peek_pte(p.mm, a))

    run1(program)


def test_madv_free_then_reclaim_discards_clean_pages_only() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        p.poke(a + PAGE_SIZE, 2)
        p.madvise(a, 2 * PAGE_SIZE, MADV_FREE)
        f0, f1 = p.folio_at(a), p.folio_at(a + PAGE_SIZE)
        assert not f0.swapbacked and not pte_dirty(peek_pte(p.mm, a))
        # Redirtied (a store through the MMU sets the PTE's dirty bit):
        # MADV_FREE is cancelled for it.
        p.touch(a + PAGE_SIZE, 0, write=True)
        p.poke(a + PAGE_SIZE, 3)
        assert p.reclaim(f0) == 1
        assert p.reclaim(f1) == 0 and p.reclaim(f1) == 0  # referenced; then redirtied
        assert p.peek(a) == 0  # discarded: a new zero page
        assert p.peek(a + PAGE_SIZE) == 3 and f1.swapbacked
        assert swap_info().inuse_pages == 0  # nothing was swapped

    run1(program)


def test_reclaim_bad_addresses() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        assert p.reclaim(a) == 0  # mapped, but nothing faulted in
        with pytest.raises(OSError) as e:
            p.reclaim(a + 16 * PAGE_SIZE)
        assert e.value.errno == errno.ENOMEM
        p.madvise(a, PAGE_SIZE, MADV_PAGEOUT)

    run1(program)


def test_a_thp_is_not_reclaimed() -> None:
    def program() -> None:
        p = System(thp="always").process()
        a = thp_anon(p, HUGE)
        p.poke(a, 1)
        f = p.folio_at(a)
        assert p.reclaim(f) == 0 and p.reclaim(f) == 0  # large folios: left out
        assert p.peek(a) == 1

    run1(program)


def _reclaim_vs_write_fault() -> object:
    s = System(cpus=2)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.poke(a, 1)
    folio = p.folio_at(a)
    p.reclaim(folio)  # referenced: kept, its young bit cleared

    def writer(t: Thread) -> None:
        t.store(a, 2)

    def reclaimer(t: Thread) -> None:
        t.reclaim(folio)

    p.thread(writer, cpu=0)
    p.thread(reclaimer, cpu=1)

    def check() -> None:
        require(p.peek(a) == 2, "the write was lost")

    return check


def test_reclaim_racing_a_write_fault_is_clean() -> None:
    """A store (through a TLB miss, maybe a fault on the swap entry) against
    the page being swapped out: the store is never lost (K=3)."""
    r = explore(_reclaim_vs_write_fault, strategy="bounded", preemption_bound=3, shrink=False)
    assert r.violation is None and r.complete, r.violation and r.violation.message

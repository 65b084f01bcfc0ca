"""Migration of one page (move_pages): data and mapping kept, migration
entries, faults waiting for them, and what refuses to move."""

from __future__ import annotations

import errno

from thpkit import ANON, HUGE, RW, check_accounting, run1, thp_anon

from mmrace.engine import explore, require
from mmrace.mm.page_alloc import mem_state
from mmrace.mm.pgtable import peek_pte, pte_pfn, pte_present, pte_write
from mmrace.user import MAP_SHARED, PAGE_SIZE, System, Thread


def test_migration_keeps_data_and_mapping() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 4)
        old = p.folio_at(a)
        assert p.migrate(a) == 0
        new = p.folio_at(a)
        assert new is not old and old.freed_at is not None
        pte = peek_pte(p.mm, a)
        assert pte_present(pte) and pte_write(pte) and pte_pfn(pte) == new.pfn
        assert new.anon and new.anon_exclusive[0] and p.peek(a) == 4
        p.poke(a, 5)
        check_accounting([p])

    run1(program)


def test_migration_of_a_file_page_moves_the_cache_entry() -> None:
    def program() -> None:
        s = System()
        s.create_file("/f", PAGE_SIZE)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, RW, MAP_SHARED, p.open("/f"), 0)
        p.poke(a, 8)
        old = p.folio_at(a)
        mapping = old.mapping
        assert p.migrate(a) == 0
        new = p.folio_at(a)
        assert mapping.i_pages[0] is new and new._refcount == 2 and p.peek(a) == 8
        check_accounting([p])

    run1(program)


def test_what_move_pages_refuses() -> None:
    def program() -> None:
        p = System(thp="always").process()
        a = p.mmap(0, 3 * PAGE_SIZE, RW, ANON)
        assert p.migrate(a) == -errno.ENOENT  # nothing mapped
        assert p.migrate(0x1000) == -errno.EFAULT  # no VMA
        p.peek(a)
        assert p.migrate(a) == -errno.EFAULT  # the zero page
        p.poke(a + PAGE_SIZE, 1)
        pins = p.pin(a + PAGE_SIZE)
        assert p.migrate(a + PAGE_SIZE) == -errno.EAGAIN  # pinned: mapped back
        assert p.peek(a + PAGE_SIZE) == 1 and pte_present(peek_pte(p.mm, a + PAGE_SIZE))
        p.unpin(pins)
        p.poke(a + 2 * PAGE_SIZE, 2)
        c = p.fork()
        assert p.migrate(a + 2 * PAGE_SIZE) == -errno.EACCES  # mapped by others
        t = thp_anon(p, HUGE)
        p.poke(t, 3)
        assert p.migrate(t) == -errno.EBUSY  # THP migration: left out
        check_accounting([p, c])

    run1(program)


def _migrate_vs_store() -> object:
    s = System(cpus=2)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.poke(a, 1)
    p.touch(a, 0, write=True)  # cpu0's TLB caches the writable translation

    def writer(t: Thread) -> None:
        t.store(a, 2)
        t.store(a + 512, 3)

    def migrator(t: Thread) -> None:
        t.migrate(a)

    p.thread(writer, cpu=0)
    p.thread(migrator, cpu=1)

    def check() -> None:
        require(p.peek(a) == 2 and p.peek(a + 512) == 3, "a store was lost by migration")
        require(len(mem_state().live) == 1, "a folio leaked")

    return check


def test_migration_racing_stores_is_clean() -> None:
    """Stores through a cached TLB entry and through faults that find the
    migration entry (and wait for it) against the migration: every store
    lands in the page that stays mapped (K=3)."""
    r = explore(_migrate_vs_store, strategy="bounded", preemption_bound=3, shrink=False)
    assert r.violation is None and r.complete, r.violation and r.violation.message

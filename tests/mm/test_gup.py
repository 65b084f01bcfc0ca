"""GUP slow path: FOLL_GET/FOLL_PIN counts, breaking COW for FOLL_WRITE,
FOLL_FORCE, unsharing for R/O pins, and mlock populating through GUP."""

from __future__ import annotations

from mmkit import ANON, RW, check_accounting, folio_at, run1

from mmrace.engine import explore, spawn
from mmrace.mm.gup import (
    FOLL_FORCE,
    FOLL_WRITE,
    get_user_pages_unlocked,
    put_user_page,
)
from mmrace.mm.page_alloc import GUP_PIN_COUNTING_BIAS, folio_maybe_dma_pinned
from mmrace.user import PAGE_SIZE, PROT_READ, System


def test_pin_counts_and_unpin() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        pins = p.pin(a, 2, write=True)  # faults both pages in
        assert len(pins) == 2
        assert all(f._refcount == 1 + GUP_PIN_COUNTING_BIAS for f in pins)
        assert folio_maybe_dma_pinned(pins[0]) and p.mm.has_pinned.value
        p.unpin(pins)
        check_accounting([p])

    run1(program)


def test_foll_write_breaks_cow_and_get_counts() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 4)
        c = p.fork()
        shared = folio_at(p, a)
        got = get_user_pages_unlocked(c.mm, a, 1, FOLL_WRITE)
        assert got[0] is not shared and got[0]._refcount == 2
        assert c.peek(a) == 4
        put_user_page(got[0])
        check_accounting([p, c])

    run1(program)


def test_foll_force_writes_read_only_private_mapping() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, PROT_READ, ANON)
        got = get_user_pages_unlocked(p.mm, a, 1, FOLL_WRITE | FOLL_FORCE)
        assert got[0].anon and got[0].anon_exclusive[0]
        put_user_page(got[0])
        try:
            get_user_pages_unlocked(p.mm, a, 1, FOLL_WRITE)
        except OSError:
            pass
        else:
            raise AssertionError("FOLL_WRITE without FOLL_FORCE on a read-only VMA")

    run1(program)


def test_read_only_pin_unshares_a_shared_anon_page() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 8)
        c = p.fork()
        pins = c.pin(a, 1, write=False)
        assert pins[0].anon_exclusive[0] and pins[0] is not folio_at(p, a)
        assert folio_at(c, a) is pins[0]
        c.unpin(pins)

    run1(program)


def test_mlock_populates_through_gup() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, 3 * PAGE_SIZE, RW, ANON)
        p.mlock(a, 3 * PAGE_SIZE)
        assert all(folio_at(p, a + i * PAGE_SIZE) is not None for i in range(3))
        check_accounting([p])

    run1(program)


def test_pin_races_fork() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        spawn(lambda: p.unpin(p.pin(a, 1, write=True)), name="pin")
        spawn(p.fork, name="fork")

    r = explore(program, max_executions=300)
    assert r.violation is None, r.violation and r.violation.message

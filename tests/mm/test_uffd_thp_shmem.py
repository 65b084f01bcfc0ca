"""userfaultfd meets the model of issue 15: minor faults on tmpfs files
(``ShmemFile``, large folios, fault-around), huge PMDs under the fill and
move ioctls, swap entries at fork, MADV_FREE's REMOVE event, and
UFFDIO_MOVE waiting for a migration."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from mmkit import run1
from thpkit import HUGE, thp_anon
from thpkit import check_accounting as thp_check_accounting

from mmrace.engine import explore, require
from mmrace.mm.page_alloc import folio_put
from mmrace.mm.pgtable import (
    peek_pmd,
    peek_pte,
    pmd_trans_huge,
    pte_pfn,
    pte_present,
    pte_uffd_wp,
    pte_write,
)
from mmrace.mm.shmem import ShmemFile, shmem_get_folio
from mmrace.mm.swapops import pte_marker_uffd_wp, pte_swp_uffd_wp
from mmrace.mm.userfaultfd_k import mmap_changing_value
from mmrace.user import (
    MADV_FREE,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    UFFD_EVENT_PAGEFAULT,
    UFFD_EVENT_REMOVE,
    UFFD_FEATURE_EVENT_REMOVE,
    UFFD_PAGEFAULT_FLAG_MINOR,
    UFFDIO_CONTINUE_MODE_WP,
    UFFDIO_REGISTER_MODE_MINOR,
    UFFDIO_REGISTER_MODE_MISSING,
    UFFDIO_REGISTER_MODE_WP,
    System,
    Thread,
)

RW = PROT_READ | PROT_WRITE


# --- minor faults on tmpfs ---------------------------------------------------------------------


def test_a_minor_fault_goes_to_the_monitor_and_fault_around_stays_out() -> None:
    """A read of a cached page in a MINOR-registered VMA is a fault message
    with ``UFFD_PAGEFAULT_FLAG_MINOR``; UFFDIO_CONTINUE maps that page and
    wakes the reader. Fault-around, which would map the cached neighbours
    without telling the monitor, is off for the VMA
    (``uffd_disable_fault_around``)."""
    def program() -> Any:
        s = System(cpus=2)
        p = s.process()
        fd = s.memfd_create("guest", 4 * PAGE_SIZE)
        a = p.mmap(0, 4 * PAGE_SIZE, RW, MAP_SHARED, fd)
        alias = p.mmap(0, 4 * PAGE_SIZE, RW, MAP_SHARED, fd)
        for i in range(4):
            p.poke(alias + i * PAGE_SIZE, 10 + i)  # every page in the cache
        uffd = p.userfaultfd()
        uffd.register(a, 4 * PAGE_SIZE, UFFDIO_REGISTER_MODE_MINOR)
        values: list[int] = []
        msgs: list[Any] = []

        def reader(t: Thread) -> None:
            values.append(t.load(a + 2 * PAGE_SIZE))

        def monitor(t: Thread) -> None:
            msg = uffd.read()
            msgs.append(msg)
            uffd.continue_(msg.address, PAGE_SIZE)

        p.thread(reader, cpu=0, name="reader")
        s.process().thread(monitor, cpu=1, name="monitor")

        def check() -> None:
            value, msg = values[0], msgs[0]
            require(msg.event == UFFD_EVENT_PAGEFAULT and msg.flags & UFFD_PAGEFAULT_FLAG_MINOR
                    and msg.address == a + 2 * PAGE_SIZE, f"read {msg}")
            require(value == 12, f"the reader read {value}")
            for i in (0, 1, 3):  # no fault-around into the registered VMA
                require(not pte_present(peek_pte(p.mm, a + i * PAGE_SIZE)),
                        f"page {i} mapped without a minor fault")

        return check

    r = explore(program, max_seconds=60)
    assert r.violation is None and r.complete, r.violation and r.violation.message


def test_continue_maps_one_page_of_a_large_folio() -> None:
    """A tmpfs file with ``huge=always`` caches a PMD-sized folio; CONTINUE
    maps the page at the faulting offset by a PTE (``folio_file_page``)."""
    def program() -> None:
        s = System()
        p = s.process()
        fd = s.memfd_create("big", HUGE, huge="always")
        f = s.files["memfd:big"]
        assert isinstance(f, ShmemFile)
        folio = shmem_get_folio(f, 5)  # the cache gets an order-9 folio
        assert folio.order == 9
        folio.contents.set(5, 0, 55)
        folio_put(folio)  # the cache keeps it
        a = p.mmap(0, 8 * PAGE_SIZE, RW, MAP_SHARED, fd)
        uffd = p.userfaultfd()
        uffd.register(a, 8 * PAGE_SIZE, UFFDIO_REGISTER_MODE_MINOR)
        assert uffd.continue_(a + 5 * PAGE_SIZE, PAGE_SIZE) == PAGE_SIZE
        pte = peek_pte(p.mm, a + 5 * PAGE_SIZE)
        assert pte_pfn(pte) == folio.pfn + 5 and pte_write(pte)
        assert p.peek(a + 5 * PAGE_SIZE) == 55
        assert folio.page_mapcount[5] == 1  # one PTE maps that page
        thp_check_accounting([p])

    run1(program)


def test_continue_overwrites_a_uffd_wp_marker() -> None:
    """A tmpfs range registered for MINOR and WP, write-protected while the
    page was not mapped there (a uffd-wp marker): CONTINUE with MODE_WP
    maps the cached page over the marker (``pte_none_mostly``), uffd-wp."""
    def program() -> None:
        s = System()
        p = s.process()
        fd = s.memfd_create("guest", 2 * PAGE_SIZE)
        a = p.mmap(0, 2 * PAGE_SIZE, RW, MAP_SHARED, fd)
        alias = p.mmap(0, 2 * PAGE_SIZE, RW, MAP_SHARED, fd)
        p.poke(alias, 42)
        uffd = p.userfaultfd()
        uffd.register(a, 2 * PAGE_SIZE, UFFDIO_REGISTER_MODE_MINOR | UFFDIO_REGISTER_MODE_WP)
        uffd.writeprotect(a, PAGE_SIZE, True)
        assert pte_marker_uffd_wp(peek_pte(p.mm, a))
        assert uffd.continue_(a, PAGE_SIZE, UFFDIO_CONTINUE_MODE_WP) == PAGE_SIZE
        pte = peek_pte(p.mm, a)
        assert pte_present(pte) and pte_uffd_wp(pte) and not pte_write(pte)
        assert p.peek(a) == 42
        thp_check_accounting([p])

    run1(program)


def test_continue_beyond_eof_is_einval() -> None:
    def program() -> None:
        s = System()
        p = s.process()
        fd = s.memfd_create("short", PAGE_SIZE)
        a = p.mmap(0, 2 * PAGE_SIZE, RW, MAP_SHARED, fd)
        uffd = p.userfaultfd()
        uffd.register(a, 2 * PAGE_SIZE, UFFDIO_REGISTER_MODE_MINOR)
        with pytest.raises(OSError) as info:
            uffd.continue_(a + PAGE_SIZE, PAGE_SIZE)
        assert info.value.errno == errno.EINVAL

    run1(program)


# --- huge PMDs under the fill and move ioctls -------------------------------------------------


def test_copy_into_a_huge_pmd_is_eexist() -> None:
    def program() -> None:
        p = System(thp="always").process()
        a = thp_anon(p)
        p.poke(a, 1)  # a THP, before the range is registered
        assert pmd_trans_huge(peek_pmd(p.mm, a))
        uffd = p.userfaultfd()
        uffd.register(a, HUGE, UFFDIO_REGISTER_MODE_MISSING)
        with pytest.raises(OSError) as info:
            uffd.copy(a + PAGE_SIZE, 7, PAGE_SIZE)
        assert info.value.errno == errno.EEXIST

    run1(program)


def test_moving_a_thp_is_not_modelled() -> None:
    """A huge source PMD: the kernel moves it whole or splits it; the model
    says it does neither (one line, never a wrong result)."""
    def program() -> None:
        p = System(thp="always").process()
        src = thp_anon(p)
        p.poke(src, 1)
        dst = p.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
        uffd = p.userfaultfd()
        uffd.register(dst, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        with pytest.raises(NotImplementedError, match="transparent huge page"):
            uffd.move(dst, src, PAGE_SIZE)

    run1(program)


# --- swap, MADV_FREE, migration ----------------------------------------------------------------


def test_fork_without_event_fork_drops_uffd_wp_from_a_swap_entry() -> None:
    """``copy_nonpresent_pte``: the child's swap entry keeps the uffd-wp bit
    only if the child's VMA is still registered (it is not, without
    EVENT_FORK)."""
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
        p.poke(a, 1)
        uffd = p.userfaultfd()
        uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_WP)
        uffd.writeprotect(a, PAGE_SIZE, True)
        assert p.reclaim(a) == 1  # MADV_PAGEOUT: a swap entry with the uffd-wp bit
        pte = peek_pte(p.mm, a)
        assert not pte_present(pte) and pte_swp_uffd_wp(pte)
        child = p.fork()
        cpte = peek_pte(child.mm, a)
        assert not pte_present(cpte) and not pte_swp_uffd_wp(cpte)
        assert pte_swp_uffd_wp(peek_pte(p.mm, a))
        assert child.peek(a) == 1

    run1(program)


def test_madv_free_sends_the_remove_event() -> None:
    """``madvise_dontneed_free`` raises the REMOVE event for MADV_FREE too,
    and returns only once the monitor read it."""
    def program() -> Any:
        s = System(cpus=2)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
        uffd = p.userfaultfd(UFFD_FEATURE_EVENT_REMOVE)
        uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        uffd.copy(a, 7, PAGE_SIZE)
        got: list[Any] = []

        p.thread(lambda t: t.madvise(a, PAGE_SIZE, MADV_FREE), cpu=0, name="process")
        s.process().thread(lambda t: got.append(uffd.read()), cpu=1, name="monitor")

        def check() -> None:
            msg = got[0]
            require(msg.event == UFFD_EVENT_REMOVE and (msg.start, msg.end)
                    == (a, a + PAGE_SIZE), f"read {msg}")
            require(mmap_changing_value(uffd.ctx) == 0, "mmap_changing left raised")

        return check

    r = explore(program, max_seconds=60)
    assert r.violation is None and r.complete, r.violation and r.violation.message


def test_move_waits_for_a_migration_of_the_source() -> None:
    """A source PTE that is a migration entry: ``move_pages_pte`` waits for
    the migration and tries the page again (never a spurious error)."""
    def program() -> Any:
        s = System(cpus=2)
        p = s.process()
        src = p.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
        dst = p.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE | MAP_ANONYMOUS)
        p.poke(src, 11)
        uffd = p.userfaultfd()
        uffd.register(dst, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        moved: list[int] = []

        def mover(t: Thread) -> None:
            try:
                moved.append(uffd.move(dst, src, PAGE_SIZE))
            except OSError as e:
                moved.append(-(e.errno or 0))

        p.thread(mover, cpu=0, name="mover")
        p.thread(lambda t: t.migrate(src), cpu=1, name="migrate")

        def check() -> None:
            require(moved[0] in (PAGE_SIZE, -errno.EBUSY), f"move returned {moved[0]}")
            where = dst if moved[0] == PAGE_SIZE else src
            require(p.peek(where) == 11, "the data did not follow the page")

        return check

    r = explore(program, strategy="bounded", preemption_bound=2, max_seconds=100)
    assert r.violation is None and r.complete, r.violation and r.violation.message

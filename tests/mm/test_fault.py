"""Anonymous and file faults: zero page, new page, COW from the zero page,
spurious faults, and concurrent faults on one page."""

from __future__ import annotations

from mmkit import ANON, RW, check_accounting, folio_at, run1

from mmrace.engine import explore, spawn
from mmrace.mm.memory import do_user_addr_fault
from mmrace.mm.page_alloc import get_zero_folio, mem_state
from mmrace.mm.pgtable import peek_pte, pte_pfn, pte_special, pte_write
from mmrace.user import MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, PROT_READ, System


def test_read_maps_zero_page_write_maps_new_page_and_cow_from_zero() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        assert p.peek(a) == 0
        pte = peek_pte(p.mm, a)
        assert pte_special(pte) and pte_pfn(pte) == get_zero_folio().pfn
        assert not pte_write(pte)
        p.poke(a, 42)  # write after read: COW from the zero page
        f = folio_at(p, a)
        assert f is not None and f.anon and f.anon_exclusive[0]
        assert p.peek(a) == 42 and p.peek(a + 8 * 64) == 0
        p.poke(a + PAGE_SIZE, 1)  # write to an untouched page: new page at once
        assert folio_at(p, a + PAGE_SIZE) is not None
        check_accounting([p])

    run1(program)


def test_spurious_fault_changes_nothing() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 3)
        before = peek_pte(p.mm, a)
        allocated = mem_state().allocated
        do_user_addr_fault(p.mm, a, True)  # the PTE is already writable
        assert peek_pte(p.mm, a) == before and mem_state().allocated == allocated

    run1(program)


def test_file_read_shared_and_private_write() -> None:
    def program() -> None:
        s = System()
        p = s.process()
        fd = s.open_file("data", 4 * PAGE_SIZE)
        shared = p.mmap(0, PAGE_SIZE, RW, MAP_SHARED, fd)
        private = p.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE, fd)
        p.poke(shared, 7)
        assert p.peek(private) == 7  # the same page-cache page
        p.poke(private, 8)  # do_cow_fault... already mapped read-only: do_wp_page copies
        assert p.peek(shared) == 7 and p.peek(private) == 8
        check_accounting([p])

    run1(program)


def test_read_only_private_file_write_is_sigsegv() -> None:
    def program() -> None:
        s = System()
        p = s.process()
        fd = s.open_file("ro", PAGE_SIZE)
        a = p.mmap(0, PAGE_SIZE, PROT_READ, MAP_PRIVATE, fd)
        try:
            p.poke(a, 1)
        except OSError as e:
            assert "SIGSEGV" in str(e)
        else:
            raise AssertionError("write to a read-only mapping succeeded")

    run1(program)


def test_concurrent_write_faults_on_one_page() -> None:
    """Two threads write-fault the same fresh page (the first also prepares
    the anon_vma, the second may retry under the mmap lock): exactly one
    folio ends up mapped, and nothing leaks."""

    def program() -> None:
        p = System().process()
        a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        p.poke(a + PAGE_SIZE, 1)  # anon_vma and PTE table exist already

        def writer() -> None:
            do_user_addr_fault(p.mm, a, True)

        spawn(writer, name="A")
        spawn(writer, name="B")

    r = explore(program, max_executions=300)
    assert r.violation is None, r.violation and r.violation.message
    assert r.executions > 1

"""fork: data isolation, VM_DONTCOPY/VM_WIPEONFORK, pinned pages, and a
fork racing a fault."""

from __future__ import annotations

from mmkit import ANON, RW, check_accounting, folio_at, run1

from mmrace.engine import explore, spawn
from mmrace.mm.memory import do_user_addr_fault
from mmrace.mm.pgtable import peek_pte, pte_write
from mmrace.user import MADV_DONTFORK, MADV_WIPEONFORK, PAGE_SIZE, System


def test_child_write_keeps_parent_data() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        p.poke(a, 11)
        p.poke(a + PAGE_SIZE, 12)
        c = p.fork()
        assert not pte_write(peek_pte(p.mm, a)) and not pte_write(peek_pte(c.mm, a))
        assert folio_at(p, a) is folio_at(c, a)
        check_accounting([p, c])
        c.poke(a, 99)
        assert p.peek(a) == 11 and c.peek(a) == 99
        assert c.peek(a + PAGE_SIZE) == 12
        check_accounting([p, c])
        c.exit()
        p.poke(a + PAGE_SIZE, 13)  # sole owner again: reused in place
        check_accounting([p])

    run1(program)


def test_dontcopy_and_wipeonfork() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        b = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        p.poke(b, 2)
        p.madvise(a, PAGE_SIZE, MADV_DONTFORK)
        p.madvise(b, PAGE_SIZE, MADV_WIPEONFORK)
        c = p.fork()
        assert all(e.start != a for e in c.maps())
        assert c.peek(b) == 0 and p.peek(b) == 2
        check_accounting([p, c])

    run1(program)


def _pinned_fork(kernel: str | None, without: tuple[str, ...]) -> tuple[bool, int]:
    out: list[tuple[bool, int]] = []

    def program() -> None:
        p = System(kernel=kernel, without=without).process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 5)
        pinned = p.pin(a, 1, write=True)
        c = p.fork()
        p.poke(a, 6)  # the parent writes through its mapping...
        # ...is the write visible to the device through the pinned page?
        out.append((folio_at(p, a) is pinned[0], c.peek(a)))
        p.unpin(pinned)

    run1(program)
    return out[0]


def test_fork_copies_pinned_pages() -> None:
    assert _pinned_fork(None, ()) == (True, 5)


def test_without_the_fix_the_parent_loses_its_pinned_page() -> None:
    same, _child = _pinned_fork("5.8", ())
    assert not same  # COW moved the parent away from the DMA page


def test_fork_races_write_fault() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        kids: list[object] = []
        spawn(lambda: kids.append(p.fork()), name="fork")
        spawn(lambda: do_user_addr_fault(p.mm, a, True), name="fault")

    r = explore(program, max_executions=200)
    assert r.violation is None, r.violation and r.violation.message

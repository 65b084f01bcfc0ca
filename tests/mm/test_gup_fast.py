"""GUP-fast: the same pages as the slow path, its refusals and fallback, the
interrupts-off section that TLB-flush IPIs wait for, and races with munmap
and fork."""

from __future__ import annotations

import errno

import pytest
from thpkit import ANON, HUGE, RW, check_accounting, run1, thp_anon

from mmrace.arch import local_irq_restore, local_irq_save
from mmrace.engine import Var, current_execution, explore, require
from mmrace.mm.gup import FOLL_FAST_ONLY, FOLL_PIN, FOLL_WRITE, gup_fast_fallback
from mmrace.mm.page_alloc import GUP_PIN_COUNTING_BIAS, folio_read_word
from mmrace.mm.pgtable import flush_tlb_mm
from mmrace.user import PAGE_SIZE, PROT_NONE, PROT_READ, System, Thread


def test_gup_fast_pins_what_the_slow_path_would() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        p.poke(a + PAGE_SIZE, 2)
        slow = p.pin(a, 2)
        fast = p.gup_fast(a, 2, write=True)
        assert fast == slow
        assert all(f._refcount == 1 + 2 * GUP_PIN_COUNTING_BIAS for f in fast)
        p.unpin(fast)
        p.unpin(slow)
        got = p.gup_fast(a, 1, pin=False)
        assert got[0]._refcount == 2
        p.put_pages(got)
        check_accounting([p])

    run1(program)


def test_gup_fast_falls_back_and_refuses_what_it_must() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, 4 * PAGE_SIZE, RW, ANON)
        # nothing mapped: GUP-fast alone gets nothing, the fallback faults it in
        assert gup_fast_fallback(p.mm, a, 1, FOLL_PIN | FOLL_FAST_ONLY) == []
        pages = p.gup_fast(a, 1, write=True)
        assert pages and p.folio_at(a) is pages[0]
        p.unpin(pages)
        # the zero page (a read fault mapped it) is special: GUP-fast refuses it
        p.peek(a + PAGE_SIZE)
        assert gup_fast_fallback(p.mm, a + PAGE_SIZE, 1, FOLL_PIN | FOLL_FAST_ONLY) == []
        # a shared anonymous page must be unshared for a read-only pin: the
        # slow path copies it; a write needs the slow path's COW too
        p.poke(a + 2 * PAGE_SIZE, 7)
        c = p.fork()
        assert gup_fast_fallback(p.mm, a + 2 * PAGE_SIZE, 1, FOLL_PIN | FOLL_FAST_ONLY) == []
        assert gup_fast_fallback(p.mm, a + 2 * PAGE_SIZE, 1,
                                 FOLL_PIN | FOLL_WRITE | FOLL_FAST_ONLY) == []
        pinned = p.gup_fast(a + 2 * PAGE_SIZE)
        assert pinned[0] is not c.folio_at(a + 2 * PAGE_SIZE)
        p.unpin(pinned)
        # PROT_NONE: GUP-fast refuses, and so does the slow path (EFAULT)
        p.mprotect(a + 3 * PAGE_SIZE, PAGE_SIZE, PROT_READ)
        p.peek(a + 3 * PAGE_SIZE)
        p.mprotect(a + 3 * PAGE_SIZE, PAGE_SIZE, PROT_NONE)
        with pytest.raises(OSError) as e:
            p.gup_fast(a + 3 * PAGE_SIZE)
        assert e.value.errno == errno.EFAULT
        # beyond the address space
        with pytest.raises(OSError):
            p.gup_fast(1 << 47)

    run1(program)


def test_gup_fast_of_a_thp_counts_pins_exactly() -> None:
    def program() -> None:
        p = System(thp="always").process()
        a = thp_anon(p, HUGE)
        p.poke(a, 1)
        pages = p.gup_fast(a + PAGE_SIZE, 3)
        f = p.folio_at(a)
        assert pages == [f] * 3 and f._pincount == 3 and f._refcount == 4
        p.unpin(pages)
        assert f._pincount == 0 and f._refcount == 1

    run1(program)


def test_a_flush_ipi_waits_for_a_cpu_with_interrupts_off() -> None:
    """The flush returns only after the CPU with interrupts off took the IPI
    -- never while that CPU is still inside its section; and the explorer
    does reach the case where the IPI had to wait."""
    delayed: list[bool] = []

    def program() -> None:
        s = System(cpus=2)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        v = Var(0, name="v")
        in_section = [False]

        def gup_like(t: Thread) -> None:
            flags = local_irq_save()
            in_section[0] = True
            v.load()
            in_section[0] = False
            local_irq_restore(flags)

        def flusher(t: Thread) -> None:
            flush_tlb_mm(p.mm)
            # (runs in the same event as the flush's last operation)
            require(not in_section[0], "the flush returned while cpu0 had interrupts off")
            delayed.append(current_execution().events[-1].label.startswith("flush IPI: wait"))

        p.thread(gup_like, cpu=0)
        p.thread(flusher, cpu=1)

    r = explore(program, strategy="dpor", shrink=False)
    assert r.violation is None and r.complete, r.violation and r.violation.message
    assert any(delayed) and not all(delayed)


def _gup_fast_vs_munmap() -> None:
    s = System(cpus=2)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.poke(a, 3)

    def pinner(t: Thread) -> None:
        try:
            pages = t.gup_fast(a, write=True)
        except OSError:
            return  # unmapped first: EFAULT
        require(folio_read_word(pages[0], 0, 0) == 3, "pinned page lost its data")
        t.unpin(pages)

    def unmapper(t: Thread) -> None:
        t.munmap(a, PAGE_SIZE)

    p.thread(pinner, cpu=0)
    p.thread(unmapper, cpu=1)


@pytest.mark.parametrize("k", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_gup_fast_racing_munmap_is_clean(k: int) -> None:
    """GUP-fast against munmap of the page it walks to (the zap flushes, and
    the table is freed after RCU): no use-after-free, and a page it pinned
    stays valid until unpinned (clean within K=3, a slow test; K=2 in the
    default run)."""
    r = explore(_gup_fast_vs_munmap, strategy="bounded", preemption_bound=k, shrink=False)
    assert r.violation is None and r.complete, r.violation and r.violation.message


def test_gup_fast_pin_racing_fork_never_shares_a_pinned_page() -> None:
    """A pin taken with GUP-fast while fork copies the page tables: either the
    page was pinned before fork looked (fork copies it for the child) or
    GUP-fast backs off (PTE changed, or write_protect_seq moved) and the slow
    path unshares. Never a pinned page shared with the child."""

    def program() -> object:
        s = System(cpus=2)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 3)
        out: dict[str, object] = {}

        def pinner(t: Thread) -> None:
            out["pins"] = t.gup_fast(a)

        def forker(t: Thread) -> None:
            out["child"] = t.fork()

        p.thread(pinner, cpu=0)
        p.thread(forker, cpu=1)

        def check() -> None:
            pins = out["pins"]
            child = out["child"]
            assert isinstance(pins, list)
            require(p.folio_at(a) is pins[0], "the parent does not map its pinned page")
            require(child.folio_at(a) is not pins[0],  # type: ignore[attr-defined]
                    "the child shares the parent's pinned page")

        return check

    r = explore(program, strategy="bounded", preemption_bound=2, shrink=False)
    assert r.violation is None and r.complete, r.violation and r.violation.message


def test_tlb_remove_table_sync_one_waits_for_interrupts_off_sections() -> None:
    """khugepaged's sync before freeing a retracted table: it returns only
    once no other CPU is inside an interrupts-off (GUP-fast) section that
    started before it."""
    from mmrace.mm.mmu_gather import tlb_remove_table_sync_one

    waited: list[bool] = []

    def program() -> None:
        s = System(cpus=2)
        p = s.process()
        v = Var(0, name="v")
        in_section = [False]

        def gup_like(t: Thread) -> None:
            flags = local_irq_save()
            in_section[0] = True
            v.load()
            in_section[0] = False
            local_irq_restore(flags)

        def syncer(t: Thread) -> None:
            tlb_remove_table_sync_one()
            require(not in_section[0], "sync returned while cpu0 had interrupts off")
            waited.append("wait" in (current_execution().events[-1].label or ""))

        p.thread(gup_like, cpu=0)
        p.thread(syncer, cpu=1)

    r = explore(program, strategy="dpor", shrink=False)
    assert r.violation is None and r.complete, r.violation and r.violation.message
    assert any(waited) and not all(waited)

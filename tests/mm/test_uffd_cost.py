"""What one userfaultfd ioctl costs an exploration, in visible operations
(bench/userfaultfd.py prints the exact figures; these bounds catch a path
growing scheduling points it does not need, and pin the differences
between the eras that the figures explain)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.engine import current_execution, explore
from mmrace.user import (
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    UFFDIO_REGISTER_MODE_MISSING,
    System,
    UserBuffer,
)

ANON = MAP_PRIVATE | MAP_ANONYMOUS
RW = PROT_READ | PROT_WRITE


def _ops(call: Callable[[Any, Any, int, int, Any], Any], release: str | None = None,
         view: bool = False, unmapped_buffer: bool = False) -> int:
    counted: list[int] = []

    def program() -> None:
        s = System(kernel=release)
        p = s.process()
        dst = p.mmap(0, PAGE_SIZE, RW, ANON)
        src = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(src, 5)
        uffd = p.userfaultfd()
        uffd.register(dst, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        uffd.copy(dst, 1, PAGE_SIZE)  # the VMA gets its anon_vma
        p.madvise(dst, PAGE_SIZE, MADV_DONTNEED)
        if view:
            uffd.expect_consistent_view()
        m = s.process()
        buf = m.mmap(0, PAGE_SIZE, RW, ANON)
        if not unmapped_buffer:
            m.poke(buf, 3)

        def body(t: Any) -> None:
            events = current_execution().events
            n0 = len(events)
            call(t, uffd, dst, src, UserBuffer(m, buf))
            counted.append(len(events) - n0)

        p.thread(body, cpu=0)

    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation and r.violation.message
    return counted[0]


def _copy(t: Any, u: Any, d: int, s: int, b: Any) -> Any:
    return u.copy(d, 7, PAGE_SIZE)


def test_one_page_ioctls_cost_about_a_fault() -> None:
    copy, copy68 = _ops(_copy), _ops(_copy, "6.8")
    # a fault costs 30 (bench/pagefault.py): a copy is the same lock, walk and PTE
    assert copy68 <= 30 and copy <= 36
    # 6.9 adds the per-VMA lock's RCU lookup and map_changing_lock's down/up_read
    assert copy > copy68
    assert _ops(lambda t, u, d, s, b: u.zeropage(d, PAGE_SIZE)) < copy
    from_user = _ops(lambda t, u, d, s, b: u.copy(d, b, PAGE_SIZE))
    retry = _ops(lambda t, u, d, s, b: u.copy(d, b, PAGE_SIZE), unmapped_buffer=True)
    assert copy < from_user < retry and retry > 2 * copy  # the retry locks and checks again
    move = _ops(lambda t, u, d, s, b: u.move(d, s, PAGE_SIZE))
    assert 2 * copy <= move <= 90


def test_the_view_oracle_costs_one_marker_per_fact() -> None:
    assert _ops(_copy, view=True) == _ops(_copy) + 2  # the check and the effect

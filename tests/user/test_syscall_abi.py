"""Syscall arguments as the kernel sees them (issue 12): addresses are
unsigned longs, and mprotect's PROT_GROWSDOWN/PROT_GROWSUP checks."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from mmrace.engine import explore
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_GROWSDOWN,
    PROT_GROWSUP,
    PROT_READ,
    PROT_WRITE,
    System,
    vma_find,
)

ANON = MAP_PRIVATE | MAP_ANONYMOUS


def run(fn: Any) -> None:
    r = explore(fn, max_executions=1)
    assert r.violation is None, r.violation.message if r.violation else ""


def err(fn: Any, *args: Any) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)
    return int(info.value.errno or 0)


def test_mmap_at_minus_4096() -> None:
    def program() -> None:
        p = System().process()
        # MAP_FIXED at 0xfffffffffffff000: above TASK_SIZE - len (not EPERM:
        # the mmap_min_addr check comes after it in __get_unmapped_area).
        assert err(p.mmap, -4096, PAGE_SIZE, PROT_READ, ANON | MAP_FIXED) == errno.ENOMEM
        # As a hint it is out of range, so the kernel picks another address.
        a = p.mmap(-4096, PAGE_SIZE, PROT_READ, ANON)
        assert 0 < a < p.mm.task_size
        assert err(p.mmap, 0, -1, PROT_READ, ANON) == errno.ENOMEM
        assert err(p.munmap, -4096, PAGE_SIZE) == errno.EINVAL

    run(program)


def test_mprotect_grows_flags() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, 2 * PAGE_SIZE, PROT_READ, ANON)
        both = PROT_READ | PROT_GROWSDOWN | PROT_GROWSUP
        assert err(p.mprotect, a, PAGE_SIZE, both) == errno.EINVAL
        # checked before the alignment of start, as in the kernel
        assert err(p.mprotect, a + 1, PAGE_SIZE, both) == errno.EINVAL
        assert err(p.mprotect, a, PAGE_SIZE, PROT_READ | PROT_GROWSUP) == errno.EINVAL
        assert err(p.mprotect, a, PAGE_SIZE, PROT_READ | PROT_GROWSDOWN) == errno.EINVAL
        # On a grows-down VMA the range extends down to its start.
        s = p.mmap(0, 4 * PAGE_SIZE, PROT_READ, ANON | MAP_GROWSDOWN)
        p.mprotect(s + 2 * PAGE_SIZE, PAGE_SIZE, PROT_READ | PROT_WRITE | PROT_GROWSDOWN)
        vma = vma_find(p.mm, s)
        assert vma is not None and vma.raw("vm_start") == s
        assert vma.raw("vm_end") == s + 3 * PAGE_SIZE
        assert vma.raw("vm_flags") & PROT_WRITE

    run(program)


def test_the_grows_checks_cost_no_visible_operation() -> None:
    # They read vm_flags under the mmap write lock taken anyway: an mprotect
    # of the first page of a grows-down VMA runs as many operations with
    # PROT_GROWSDOWN as without it.
    def steps(prot: int) -> int:
        def program() -> None:
            p = System(cpus=1).process()
            a = p.mmap(0, 4 * PAGE_SIZE, PROT_READ, ANON | MAP_GROWSDOWN)
            p.thread(lambda t: t.mprotect(a, PAGE_SIZE, prot), cpu=0)

        r = explore(program, max_executions=1)
        assert r.violation is None
        return r.steps

    assert steps(PROT_READ | PROT_WRITE | PROT_GROWSDOWN) == steps(PROT_READ | PROT_WRITE) > 0

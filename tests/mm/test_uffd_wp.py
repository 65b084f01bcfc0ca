"""userfaultfd write-protect: PTE bits of protect/unprotect under each
switch, and a write fault that blocks in handle_userfault until a monitor
thread reads the message and resolves it."""

from __future__ import annotations

from typing import Any

import pytest
from mmkit import run1

from mmrace.engine import explore, require, spawn
from mmrace.mm.pgtable import peek_pte, pte_uffd_wp, pte_write
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    UFFDIO_REGISTER_MODE_WP,
    System,
)

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def bits(proc: Any, addr: int) -> tuple[bool, bool]:
    pte = peek_pte(proc.mm, addr)
    return pte_write(pte), pte_uffd_wp(pte)


@pytest.mark.parametrize(
    "kw, after_resolve_of_rw",
    [
        ({}, True),  # current kernel: RW kept (exclusive anon page, TRY_CHANGE_WRITABLE)
        ({"kernel": "5.10"}, False),  # 5.10: resolve clears an RW bit already set
        ({"kernel": "5.10", "with_": ["uffd-wp-resolve-preserve-write"]}, True),
        ({"kernel": "5.10", "with_": ["uffd-wp-resolve-skip"]}, True),
    ],
)
def test_protect_unprotect_bits(kw: dict[str, Any], after_resolve_of_rw: bool) -> None:
    out: dict[str, Any] = {}

    def program() -> None:
        proc = System(**kw).process()
        a = proc.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        proc.poke(a, 1)
        proc.poke(a + PAGE_SIZE, 2)
        out["rw"] = bits(proc, a)
        uffd = proc.userfaultfd()
        uffd.register(a, 2 * PAGE_SIZE, UFFDIO_REGISTER_MODE_WP)
        uffd.writeprotect(a, PAGE_SIZE, True)
        out["wp"] = bits(proc, a)
        out["other"] = bits(proc, a + PAGE_SIZE)
        assert proc.pagemap(a).uffd_wp and not proc.pagemap(a + PAGE_SIZE).uffd_wp
        uffd.writeprotect(a, PAGE_SIZE, False)
        out["resolved"] = bits(proc, a)
        # un-protect a page that was never protected (and is writable)
        uffd.writeprotect(a + PAGE_SIZE, PAGE_SIZE, False)
        out["resolved_rw"] = bits(proc, a + PAGE_SIZE)

    run1(program)
    assert out["rw"] == (True, False)
    assert out["wp"] == (False, True)
    assert out["other"] == (True, False)
    assert out["resolved"][1] is False
    assert out["resolved_rw"] == (after_resolve_of_rw, False)


def test_writeprotect_unregistered_is_enoent() -> None:
    def program() -> None:
        proc = System().process()
        a = proc.mmap(0, PAGE_SIZE, RW, ANON)
        uffd = proc.userfaultfd()
        with pytest.raises(OSError):
            uffd.writeprotect(a, PAGE_SIZE, True)

    run1(program)


def wp_fault_program() -> Any:
    proc = System().process()
    a = proc.mmap(0, PAGE_SIZE, RW, ANON)
    proc.poke(a, 1)
    uffd = proc.userfaultfd()
    uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_WP)
    uffd.writeprotect(a, PAGE_SIZE, True)
    seen: list[int] = []

    def monitor() -> None:
        msg = uffd.read()
        seen.append(msg.address)
        uffd.writeprotect(msg.address, PAGE_SIZE, False)

    spawn(proc.poke, a, 42, name="writer")
    spawn(monitor, name="monitor")

    def check() -> None:
        require(seen == [a], f"monitor saw {seen}")
        require(proc.peek(a) == 42, "the write did not land")
        require(not proc.pagemap(a).uffd_wp, "still uffd-wp")

    return check


def test_wp_fault_blocks_until_resolved() -> None:
    r = explore(wp_fault_program, max_seconds=50)
    assert r.violation is None, r.violation and r.violation.message
    assert r.complete
    assert r.executions > 1

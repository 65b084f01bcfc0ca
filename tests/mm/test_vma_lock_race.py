"""A fault-like reader under lock_vma_under_rcu races mprotect: the rule
checker stays silent; with mprotect's vma_start_write removed it reports the
field access."""

from __future__ import annotations

from typing import Any

import pytest

from mmrace.engine import explore, require, spawn
from mmrace.mm import mprotect as mprotect_mod
from mmrace.mm.mmap_lock import (
    lock_vma_under_rcu,
    mmap_read_lock,
    mmap_read_unlock,
    vma_end_read,
)
from mmrace.mm.rules_check import locking_rules_off
from mmrace.mm.vma import vma_lookup
from mmrace.user import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, System


def fault_like(mm: Any, addr: int, seen: list[int]) -> None:
    vma = lock_vma_under_rcu(mm, addr)
    if vma is not None:
        seen.append(vma.vm_flags)
        require(vma.vm_start <= addr < vma.vm_end, "VMA read lock: range changed")
        vma_end_read(vma)
        return
    mmap_read_lock(mm)
    vma = vma_lookup(mm, addr)
    if vma is not None:
        seen.append(vma.vm_flags)
    mmap_read_unlock(mm)


def scenario(split: bool) -> Any:
    def program() -> None:
        proc = System().process()
        addr = proc.mmap(0, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        seen: list[int] = []
        length = PAGE_SIZE if split else 2 * PAGE_SIZE
        spawn(fault_like, proc.mm, addr, seen, name="fault")
        spawn(proc.mprotect, addr, length, PROT_READ, name="mprotect")

    return program


@pytest.mark.parametrize("split", [False, True])
def test_clean_with_vma_start_write(split: bool) -> None:
    r = explore(scenario(split), max_seconds=60)
    assert r.violation is None, r.violation and r.violation.message
    assert r.complete
    assert r.executions > 1


def test_missing_vma_start_write_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mprotect_mod, "vma_start_write", lambda vma: None)
    r = explore(scenario(False), max_seconds=60)
    assert r.violation is not None
    assert r.violation.kind == "locking-rule"
    assert "vm_flags" in r.violation.title
    assert "mmap W + VMA W" in r.violation.message


def _read_lock_then_mmap_lock(rules: bool) -> Any:
    def reader(mm: Any, addr: int) -> None:
        vma = lock_vma_under_rcu(mm, addr)
        if vma is None:
            return
        mmap_read_lock(mm)  # wrong order
        mmap_read_unlock(mm)
        vma_end_read(vma)

    def program() -> None:
        if not rules:
            locking_rules_off()
        proc = System().process()
        addr = proc.mmap(0, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        spawn(reader, proc.mm, addr, name="fault")
        spawn(proc.mprotect, addr, 2 * PAGE_SIZE, PROT_READ, name="mprotect")

    return program


def test_vma_read_lock_then_mmap_lock_is_a_lock_order_violation() -> None:
    """The documented rule (FORBIDDEN_NESTING) reports the wrong order in the
    first execution that takes it, whether or not it deadlocks there."""
    r = explore(_read_lock_then_mmap_lock(True), max_executions=1)
    assert r.violation is not None
    assert r.violation.kind == "lock-order"
    assert "VMA read lock" in r.violation.title and "mmap_lock" in r.violation.title


def test_vma_read_lock_then_mmap_lock_deadlocks() -> None:
    """Taking the mmap lock while holding a VMA read lock deadlocks against a
    writer waiting in vma_start_write (seen with the rule checks off)."""
    r = explore(_read_lock_then_mmap_lock(False), max_seconds=60)
    assert r.violation is not None
    assert r.violation.kind == "deadlock"
    assert "VMA read lock of vma1" in r.violation.message
    assert "1 reader(s)" in r.violation.message

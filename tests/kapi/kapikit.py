"""Helpers for the typed-API tests: a one-page driver and one-execution runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.engine import Result, explore
from mmrace.kapi import VmaNew, f_op_mmap
from mmrace.mm.mm_types import PAGE_SIZE, File, VmOperations
from mmrace.user import MAP_SHARED, PROT_READ, Process, System

DRV_OPS = VmOperations("drv_vm_ops")


def driver(s: System, p: Process, hook: Callable[[File, VmaNew], None], pages: int = 1,
           prot: int = PROT_READ, flags: int = MAP_SHARED, name: str = "/dev/drv") -> int:
    """Create a device whose f_op->mmap is *hook* (typed) and map it in *p*."""
    s.create_file(name, size=pages * PAGE_SIZE, mmap=f_op_mmap(hook))
    return p.mmap(0, pages * PAGE_SIZE, prot, flags, p.open(name))


def mixedmap_hook(file: File, vma: VmaNew) -> None:
    """A driver's mmap: read-only, VM_MIXEDMAP, its own vm_ops (no ->fault)."""
    vma.try_clear_maywrite()
    vma.set_mixedmap()
    vma.set_vm_ops(DRV_OPS)


def run_once(program: Callable[[], Any]) -> Result:
    """One execution, unshrunk."""
    return explore(program, max_executions=1, shrink=False)


def violation(program: Callable[[], Any], max_executions: int | None = 1) -> Any:
    """Explore *program* and return its violation (failing if there is none)."""
    r = explore(program, max_executions=max_executions, shrink=False)
    assert r.violation is not None, "expected a violation"
    return r.violation


def clean(program: Callable[[], Any], max_executions: int | None = 1) -> Result:
    """Explore *program* and fail on any violation."""
    r = explore(program, max_executions=max_executions, shrink=False)
    assert r.violation is None, r.violation.message if r.violation else ""
    return r

"""Kernel threads a scenario can start on a CPU of its own: khugepaged.

A kernel thread runs kernel code only; it does not switch to a user mm, so
its CPU does not join any process's ``mm_cpumask`` (TLB flushes of that mm
do not go to it), but it takes IPIs like any CPU (an
``smp_call_function`` of ``tlb_remove_table_sync_one`` reaches it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mmrace.arch import bind_cpu, setup_machine
from mmrace.engine import current_thread, spawn

if TYPE_CHECKING:
    from mmrace.user.process import Process


class KernelThread:
    """A started kernel thread: its name, CPU, and what its function
    returned once it finished (``result``)."""

    def __init__(self, name: str, cpu: int) -> None:
        self.name = name
        self.cpu = cpu
        self.result: Any = None
        self.finished = False

    def __repr__(self) -> str:
        return f"<kernel thread {self.name} on cpu{self.cpu}>"


def start_kthread(process: Process, fn: Callable[[], Any], cpu: int, name: str) -> KernelThread:
    """``kthread_run``: run ``fn()`` as a kernel thread bound to CPU *cpu*
    (ValueError for a CPU the system does not have or that already runs a
    thread)."""
    system = process.system
    m = setup_machine(system.cpus, getattr(system, "tlb_evictions", 0), system.tlb_flush)
    if not 0 <= cpu < len(m.cpus):
        raise ValueError(f"cpu {cpu} does not exist (System(cpus={system.cpus}))")
    running = m.cpus[cpu].thread
    if running is not None and not running.finished:
        raise ValueError(f"cpu {cpu} already runs thread {running.name}")
    k = KernelThread(name, cpu)

    def body() -> None:
        th = current_thread()
        assert th is not None
        bind_cpu(th, cpu)
        try:
            k.result = fn()
        finally:
            k.finished = True

    spawn(body, name=name)
    return k


__all__ = ["KernelThread", "start_kthread"]

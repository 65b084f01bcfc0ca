"""Scenario threads: a user program's thread pinned to a CPU.

``process.thread(fn, cpu=i, name=None)`` spawns a simulated thread that
runs ``fn(t)``. The handle *t* offers the process's syscalls (``t.mmap``,
``t.mprotect``, ``t.userfaultfd()``, ``t.clear_refs(v)``, ``t.pagemap(a)``,
...: every public method of :class:`~mmrace.user.process.Process`, run
from this thread) and the user memory operations, which go through the
CPU's TLB (:mod:`mmrace.arch`):

* ``t.load(addr)``, ``t.store(addr, value)``, ``t.atomic_add(addr, n)``
  (returns the old value, like ``atomic_fetch_add``);
* ``t.evict(addr)`` (drop this CPU's TLB entry for *addr*) and
  ``t.flush_tlb()`` (drop all of this CPU's entries of the process).

A page fault enters the kernel (``do_user_addr_fault``: per-VMA lock, then
``mmap_lock``, ``handle_mm_fault``) and retries. An access outside any
VMA, or one the VMA's protection forbids, raises :class:`SegmentationFault`;
a thread that does not catch it ends, as a killed program would (not a
violation). ``t.segfault`` then holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mmrace.arch import PageFault, bind_cpu, flush_tlb_local, local_evict, setup_machine
from mmrace.arch import user_access as _user_access
from mmrace.engine import SimThread, current_thread, spawn

if TYPE_CHECKING:
    from mmrace.arch import Cpu
    from mmrace.user.process import Process

MAX_FAULT_RETRIES = 16


class SegmentationFault(Exception):
    """SIGSEGV (or SIGBUS) delivered to a user access at ``addr``."""

    def __init__(self, addr: int, write: bool, why: str) -> None:
        super().__init__(f"SIGSEGV at {addr:#x} ({'write' if write else 'read'}): {why}")
        self.addr = addr
        self.write = write
        self.why = why


class Thread:
    """What ``fn(t)`` receives: the process's syscalls plus user memory
    operations on this thread's CPU."""

    def __init__(self, process: Process, cpu_id: int, name: str) -> None:
        self.process = process
        self.cpu_id = cpu_id
        self.name = name
        self.sim: SimThread | None = None
        self.cpu: Cpu | None = None
        self.segfault: SegmentationFault | None = None
        self.finished = False

    def __getattr__(self, name: str) -> Any:
        # The process's syscalls, run from this thread.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.process, name)

    # -- user memory ------------------------------------------------------------

    def _word(self, addr: int) -> int:
        return self.process._word(addr)[1]

    def _access(self, addr: int, op: str, arg: int = 0) -> int:
        from mmrace.mm.memory import do_user_addr_fault

        cpu = self.cpu
        if cpu is None or current_thread() is not self.sim:
            raise RuntimeError(f"{self.name}: user memory operations run in the thread itself")
        word = self._word(addr)
        mm = self.process.mm
        if not self.process._user_range(addr):
            raise SegmentationFault(addr, op != "load", "not a user address")
        for _ in range(MAX_FAULT_RETRIES):
            try:
                return _user_access(cpu, mm, addr, op, word, arg)
            except PageFault as pf:
                try:
                    do_user_addr_fault(mm, addr, pf.write)
                except OSError as e:
                    raise SegmentationFault(addr, pf.write, str(e)) from None
        raise RuntimeError(f"fault at {addr:#x} does not resolve")

    def load(self, addr: int) -> int:
        """Load the word at *addr* through this CPU's TLB."""
        return self._access(addr, "load")

    def store(self, addr: int, value: int) -> None:
        """Store *value* to the word at *addr* through this CPU's TLB."""
        self._access(addr, "store", value)

    def atomic_add(self, addr: int, n: int) -> int:
        """``atomic_fetch_add``: add *n* to the word at *addr*; returns the old value."""
        return self._access(addr, "add", n)

    def evict(self, addr: int) -> None:
        """Evict this CPU's TLB entry for *addr* (a local, invisible step)."""
        assert self.cpu is not None
        local_evict(self.cpu, self.process.mm, addr)

    def flush_tlb(self) -> None:
        """Flush this CPU's TLB entries of the process (local)."""
        assert self.cpu is not None
        flush_tlb_local(self.cpu, self.process.mm)

    def __repr__(self) -> str:
        return f"<thread {self.name} on cpu{self.cpu_id}>"


def start_thread(process: Process, fn: Callable[[Thread], Any], cpu: int,
                 name: str | None) -> Thread:
    """``Process.thread``: put the CPU in ``mm_cpumask`` (``switch_mm``; from
    set-up code at once, from a thread one visible RMW) and spawn the thread
    on it."""
    system = process.system
    m = setup_machine(system.cpus, getattr(system, "tlb_evictions", 0), system.tlb_flush)
    if not 0 <= cpu < len(m.cpus):
        raise ValueError(f"cpu {cpu} does not exist (System(cpus={system.cpus}))")
    mm = process.mm
    if cpu not in mm.mm_cpumask.value:
        mm.mm_cpumask.rmw(lambda s: s | {cpu})
    t = Thread(process, cpu, name or f"cpu{cpu}")

    def body() -> None:
        th = current_thread()
        assert th is not None
        t.sim = th
        th.locals["user.mm"] = process.mm  # current->mm (UFFDIO_MOVE checks it)
        t.cpu = bind_cpu(th, cpu)
        try:
            fn(t)
        except SegmentationFault as sf:
            t.segfault = sf  # the program is killed: not a violation
        finally:
            t.finished = True

    spawn(body, name=t.name)
    return t

"""CPUs and user memory accesses through the TLB.

Each scenario thread runs on a CPU (:func:`bind_cpu`). A user load, store
or atomic add (:func:`user_access`) first looks in the CPU's TLB:

* a **hit** (a valid entry allowing the access) is exactly one visible
  operation, whose footprint is the TLB entry (read) and the accessed
  word of the page's data (read, write or RMW; ``Frame.word_footprint``):
  it orders against a remote invalidation of that entry and against the
  kernel copying or freeing the page. It never looks at the page tables --
  a store through a stale writable entry lands in whatever page the entry
  still points to;
* a **miss** runs the hardware walker (:mod:`mmrace.arch.walker`), which
  fills the entry, then retries as a hit;
* a walk that faults raises :class:`PageFault`; the caller enters the
  kernel's fault handler and retries (``mmrace.user.thread``).

An entry that is cached but too weak (read-only for a store, or not dirty
for a store) is dropped and re-walked, as x86 does (it re-walks to set the
dirty bit, and a permission fault invalidates the entry).

Evictions: a real TLB may drop an entry at any time. Before each access
whose entry is valid, if the execution still has eviction budget
(``setup_machine(max_evictions=...)``, default 0), the chooser decides
whether to evict it. Evicting just before an access is as general as
evicting at any earlier point (an eviction is local, and a remote
invalidation of the same entry commutes with it).

Left out: instruction fetches, large pages, speculative fills, the
paging-structure caches, SMT siblings sharing a TLB, more than one thread
per CPU (rejected).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mmrace.arch.hooks import emit
from mmrace.arch.tlb import PAGE_SHIFT, Tlb, TlbEntry, footprint
from mmrace.arch.walker import FAULT_NOT_PRESENT, page_walker
from mmrace.engine import (
    READ,
    RMW,
    WAIT,
    WRITE,
    SharedObject,
    SimThread,
    choose,
    current_execution,
    current_thread,
    execution_local,
    visible,
)
from mmrace.sync import local_irq_restore as _task_irq_restore
from mmrace.sync import local_irq_save as _task_irq_save

if TYPE_CHECKING:
    from mmrace.arch.walker import Frame


class PageFault(Exception):
    """A #PF: the walk of *addr* failed (``FAULT_NOT_PRESENT`` or ``FAULT_PROT``)."""

    def __init__(self, addr: int, write: bool, code: int) -> None:
        what = "not present" if code == FAULT_NOT_PRESENT else "protection"
        super().__init__(f"page fault ({what}, {'write' if write else 'read'}) at {addr:#x}")
        self.addr = addr
        self.write = write
        self.code = code


class Cpu:
    """One CPU: an id, a TLB and the object its IPIs are addressed to.

    ``irqs_off`` is the CPU's interrupt flag as the thread running on it
    set it (:func:`local_irq_save`); IPIs that arrive meanwhile wait in
    ``pending`` until :func:`local_irq_restore` enables interrupts again,
    and their senders wait for them (a visible WAIT on ``ipi``)."""

    def __init__(self, machine: Machine, cpu_id: int) -> None:
        self.machine = machine
        self.id = cpu_id
        self.tlb = Tlb(self)
        self.ipi = SharedObject(f"cpu{cpu_id}.ipi")
        self.tlbi = SharedObject(f"cpu{cpu_id}.tlbi")
        self.thread: SimThread | None = None
        self.irqs_off = False
        self.pending: list[tuple[Callable[[], None], list[bool]]] = []
        # Remote TLB flushes this CPU has taken; the hardware walker restarts
        # a walk during which one arrived (mmrace.arch.walker).
        self.flush_gen = 0

    def entry(self, mm: Any, vpn: int) -> TlbEntry:
        return self.tlb.entry(mm, vpn)

    def __repr__(self) -> str:
        return f"cpu{self.id}"


TLB_FLUSH_MODES = ("ipi", "broadcast")


class Machine:
    """The CPUs of one execution, its eviction budget and how remote TLB
    flushes reach other CPUs: ``ipi`` (x86: an interrupt each CPU must
    take, which waits for a CPU with interrupts off) or ``broadcast`` (a
    TLB-invalidate broadcast by the hardware, as arm64's TLBI or x86's
    INVLPGB and paravirt flushes: it interrupts nobody)."""

    def __init__(self, ncpus: int, max_evictions: int = 0, tlb_flush: str = "ipi") -> None:
        if tlb_flush not in TLB_FLUSH_MODES:
            raise ValueError(f"tlb_flush={tlb_flush!r}: choose from {', '.join(TLB_FLUSH_MODES)}")
        self.cpus = [Cpu(self, i) for i in range(ncpus)]
        self.evictions_left = max_evictions
        self.evictions = 0
        self.tlb_flush = tlb_flush


def setup_machine(ncpus: int, max_evictions: int = 0, tlb_flush: str = "ipi") -> Machine:
    """Create this execution's machine (once; later calls return it,
    growing it to *ncpus* CPUs and raising the eviction budget if asked)."""
    m: Machine | None = execution_local("arch.machine", lambda: None)
    if m is None:
        m = Machine(ncpus, max_evictions, tlb_flush)
        current_execution().locals["arch.machine"] = m
        return m
    while len(m.cpus) < ncpus:
        m.cpus.append(Cpu(m, len(m.cpus)))
    m.evictions_left = max(m.evictions_left, max_evictions)
    if tlb_flush != "ipi":
        m.tlb_flush = tlb_flush
    return m


def machine() -> Machine:
    """This execution's machine (two CPUs unless set up otherwise)."""
    m: Machine | None = execution_local("arch.machine", lambda: None)
    if m is None:
        m = setup_machine(2)
    return m


def bind_cpu(thread: SimThread, cpu_id: int) -> Cpu:
    """Run *thread* on CPU *cpu_id* (set before it runs anything)."""
    m = machine()
    if not 0 <= cpu_id < len(m.cpus):
        raise ValueError(f"cpu {cpu_id} does not exist (the system has {len(m.cpus)} CPUs)")
    cpu = m.cpus[cpu_id]
    if cpu.thread is not None and not cpu.thread.finished:
        raise ValueError(f"cpu {cpu_id} already runs thread {cpu.thread.name}")
    cpu.thread = thread
    thread.locals["arch.cpu"] = cpu
    return cpu


def this_cpu() -> Cpu | None:
    """The CPU the running thread is bound to (None for set-up code and
    threads not bound to a CPU, such as kernel threads)."""
    th = current_thread()
    if th is None:
        return None
    cpu: Cpu | None = th.locals.get("arch.cpu")
    return cpu


_DATA_KIND = {"load": READ, "store": WRITE, "add": RMW}


def _allows(e: TlbEntry, write: bool) -> bool:
    return e.valid and e.user and (not write or (e.writable and e.dirty))


def user_access(cpu: Cpu, mm: Any, addr: int, op: str, word: int, arg: int = 0) -> int:
    """A user ``load`` / ``store`` / ``add`` (``atomic_fetch_add``) of one
    word at *addr* on *cpu*; returns the loaded (or previous) value. Raises
    :class:`PageFault` when the walk faults."""
    write = op != "load"
    kind = _DATA_KIND[op]
    entry = cpu.entry(mm, addr >> PAGE_SHIFT)
    m = cpu.machine
    if entry.valid and m.evictions_left > 0 and choose(2, "tlb evict"):
        m.evictions_left -= 1
        m.evictions += 1
        entry.invalidate("evicted (chooser)")
    for _ in range(16):
        if _allows(entry, write):
            frame: Frame | None = entry.frame
            assert frame is not None
            # The data part of the footprint is the word, not the page:
            # stores to different words commute (Frame.word_footprint).
            ev = footprint(entry, READ, f"user {op} {addr:#x}",
                           also=frame.word_footprint(word, kind))
            if _allows(entry, write) and entry.frame is frame:
                emit("user-access", cpu, entry, write, word, arg)
                if op == "load":
                    v = frame.read(word)
                    if ev is not None:
                        ev.detail = f"{v} from {frame.describe()}"
                    return v
                old = frame.read(word) if op == "add" else 0
                new = old + arg if op == "add" else arg
                frame.write(word, new)
                if ev is not None:
                    ev.detail = f"{new} to {frame.describe()}"
                return old
            # A remote invalidation ran while this access waited: it was a
            # lookup that missed. Walk.
        elif entry.valid:
            entry.invalidate("dropped (too weak for the access)")
        code = page_walker().walk(cpu, mm, addr, write, entry)
        if code:
            raise PageFault(addr, write, code)
    raise RuntimeError(f"user access at {addr:#x} on cpu{cpu.id} does not settle")


# --- interrupts and IPIs ------------------------------------------------------------------


def local_irq_save() -> int:
    """``local_irq_save(flags)`` on the running thread's CPU: returns the
    saved flags (1 if interrupts were already off). Turning them off is a
    visible write of the CPU's IPI object: an IPI sent before it runs at
    once, one sent after it waits until :func:`local_irq_restore`. (The
    task's flag, which the sleeping-in-atomic check reads, is set too.)
    An interrupts-off section is also an RCU read-side critical section
    (consolidated RCU: a grace period waits for it) -- the caller takes
    ``rcu_read_lock`` for that, as the model's grace periods only watch
    read sections."""
    flags = _task_irq_save()
    cpu = this_cpu()
    if cpu is not None and not flags:
        visible(cpu.ipi, WRITE, "local_irq_disable")
        cpu.irqs_off = True
    return flags


def local_irq_restore(flags: int) -> None:
    """``local_irq_restore(flags)``: if this enables interrupts, run the IPIs
    that arrived meanwhile (their handlers, on this CPU) in the same visible
    write of the CPU's IPI object, which lets their senders go on."""
    cpu = this_cpu()
    if cpu is not None and not flags and cpu.irqs_off:
        visible(cpu.ipi, WRITE, "local_irq_enable")
        cpu.irqs_off = False
        pending, cpu.pending = cpu.pending, []
        for handler, done in pending:
            handler()
            done[0] = True
    _task_irq_restore(flags)


def send_ipi(cpu: Cpu, handler: Callable[[], None], label: str,
             also: tuple[tuple[SharedObject, int], ...] = ()) -> list[bool] | None:
    """Deliver an IPI to *cpu* (one visible read of its IPI object, plus
    *also*): run *handler* now if its interrupts are on; else queue it and
    return the flag that says it ran (wait for it with :func:`wait_ipi`).
    IPIs to one CPU commute with each other; they conflict with the CPU
    turning its interrupts off or on."""
    ev = visible(cpu.ipi, READ, label, also=also)
    if cpu.irqs_off:
        done = [False]
        cpu.pending.append((handler, done))
        if ev is not None:
            ev.detail = f"cpu{cpu.id} has interrupts off: pending"
        return done
    handler()
    return None


def wait_ipi(cpu: Cpu, done: list[bool], label: str) -> None:
    """Wait (a visible WAIT on *cpu*'s IPI object) until a queued IPI ran
    (``csd_lock_wait``)."""
    visible(cpu.ipi, WAIT, label, guard=lambda: done[0])


def smp_call_function_sync(label: str) -> None:
    """``smp_call_function(func, NULL, wait=1)`` with an empty *func*: an IPI
    to every other CPU, returning once each has taken it -- that is, once
    every interrupts-off section running now has ended."""
    me = this_cpu()
    waits: list[tuple[Cpu, list[bool]]] = []
    for cpu in machine().cpus:
        if me is not None and cpu is me:
            continue
        done = send_ipi(cpu, lambda: None, f"{label}: IPI -> cpu{cpu.id}")
        if done is not None:
            waits.append((cpu, done))
    for cpu, done in waits:
        wait_ipi(cpu, done, f"{label}: wait for cpu{cpu.id}")

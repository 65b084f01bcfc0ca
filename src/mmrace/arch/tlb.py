"""Per-CPU TLBs and shootdowns (arch/x86/mm/tlb.c, arch/x86/include/asm/tlbflush.h).

A TLB caches, per CPU, one :class:`TlbEntry` per (mm, virtual page) it has
ever translated (objects are created lazily and reused; ``valid`` says
whether the entry currently holds a translation). The entry is the
footprint of everything that touches the translation: a user access that
hits it (a read), the fill by the walker (a write) and a remote
invalidation (a write). So accesses to different pages, and shootdowns of
other pages, stay independent for DPOR.

``flush_tlb_mm_range`` is the one flush primitive: the local CPU's entries
are invalidated inline (``flush_tlb_func`` called directly, no visible
operation: only this CPU fills or uses them, and a concurrent remote
invalidation of the same entry commutes with it); every other CPU in
``mm_cpumask`` gets one IPI (``native_flush_tlb_multi``), a visible
operation that invalidates that CPU's entries for the range. The flush
returns only after the last IPI has run.

A remote invalidation invalidates exactly the entries that existed when it
was announced (its footprint). An entry first created after that was
filled from page-table state written after the flush was issued, so it is
not stale with respect to the PTE changes this flush is for.

A machine may instead broadcast its invalidations in hardware
(``Machine.tlb_flush == "broadcast"``, :func:`broadcast_flush_tlb`): no
IPI, so a CPU with interrupts off (GUP-fast) does not hold a flush up --
which is why freeing a page table needs its own IPI or RCU there.

Left out: PCID/ASIDs and lazy TLB mode (``mm_cpumask`` bits are set when a
thread starts on a CPU and never cleared), the paging-structure caches,
global pages, huge-page entries, ``flush_tlb_kernel_range``, batched
unmap flushing (``arch_tlbbatch``), INVLPGB broadcast flushes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from mmrace.engine import (
    READ,
    WAIT,
    WRITE,
    Event,
    SharedObject,
    current_execution,
    current_thread,
    visible,
)

if TYPE_CHECKING:
    from mmrace.arch.cpu import Cpu
    from mmrace.arch.walker import Frame

PAGE_SHIFT = 12
TLB_FLUSH_ALL = -1
tlb_single_page_flush_ceiling = 33
"""x86: a range of more pages than this is flushed as a whole (``flush_tlb_mm``)."""

P = ParamSpec("P")
R = TypeVar("R")


def kfunc(fn: Callable[P, R]) -> Callable[P, R]:
    """Like ``mmrace.mm.internal.kfunc`` (which this layer cannot import):
    name the kernel function on the running thread's ``where`` stack."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        th = current_thread()
        if th is None:
            return fn(*args, **kwargs)
        th.where.append(name)
        try:
            return fn(*args, **kwargs)
        finally:
            th.where.pop()

    return wrapper


# --- multi-object footprints ------------------------------------------------------------

def footprint(obj: SharedObject, kind: int, label: str = "",
              also: Iterable[tuple[SharedObject, int]] = ()) -> Event | None:
    """One visible operation whose footprint is *obj* plus every (object,
    kind) pair in *also* (the engine's multi-object footprint)."""
    return visible(obj, kind, label, also=tuple(also))


# --- entries -------------------------------------------------------------------------------


class TlbEntry(SharedObject):
    """One CPU's cached translation of one virtual page of one mm."""

    __slots__ = ("cpu", "mm", "vpn", "valid", "frame", "writable", "user", "dirty",
                 "pte", "source", "filled_at", "gone_at")

    def __init__(self, cpu: Cpu, mm: Any, vpn: int) -> None:
        super().__init__(f"cpu{cpu.id}.tlb[{mm.name}:{vpn << PAGE_SHIFT:#x}]")
        self.cpu = cpu
        self.mm = mm
        self.vpn = vpn
        self.valid = False
        self.frame: Frame | None = None
        self.writable = False
        self.user = False
        self.dirty = False
        self.pte = 0  # the PTE value the walker cached
        self.source: Any = None  # where that PTE lives (the walker's choice)
        self.filled_at = -1  # event index of the fill
        self.gone_at = ""  # why the last translation went away

    @property
    def addr(self) -> int:
        return self.vpn << PAGE_SHIFT

    def fill(self, frame: Frame, writable: bool, user: bool, dirty: bool, pte: int,
             source: Any, event: Event | None) -> None:
        """Cache a translation (the walker calls this inside the event that
        reads the PTE)."""
        self.valid = True
        self.frame = frame
        self.writable = writable
        self.user = user
        self.dirty = dirty
        self.pte = pte
        self.source = source
        self.filled_at = _index(event)

    def invalidate(self, why: str) -> None:
        if self.valid:
            self.valid = False
            self.gone_at = why

    def describe(self) -> str:
        if not self.valid or self.frame is None:
            return f"{self.name} (invalid)"
        perm = "rw" if self.writable else "ro"
        return (f"{self.name} -> {self.frame.describe()} {perm}"
                f"{' dirty' if self.dirty else ''} (filled at event {self.filled_at})")


def _index(ev: Event | None) -> int:
    if ev is None:
        return -1
    return len(current_execution().events) - 1


class Tlb:
    """One CPU's TLB: ``(mm serial, vpn) -> TlbEntry``, in creation order."""

    __slots__ = ("cpu", "entries")

    def __init__(self, cpu: Cpu) -> None:
        self.cpu = cpu
        self.entries: dict[tuple[int, int], TlbEntry] = {}

    def entry(self, mm: Any, vpn: int) -> TlbEntry:
        key = (mm.serial, vpn)
        e = self.entries.get(key)
        if e is None:
            e = self.entries[key] = TlbEntry(self.cpu, mm, vpn)
        return e

    def in_range(self, mm: Any, start: int, end: int) -> list[TlbEntry]:
        """The entry objects of *mm* for ``[start, end)`` (every one of *mm*
        for ``end == TLB_FLUSH_ALL``), valid or not."""
        serial = mm.serial
        if end == TLB_FLUSH_ALL:
            return [e for (s, _), e in self.entries.items() if s == serial]
        out = []
        for vpn in range(start >> PAGE_SHIFT, (end + (1 << PAGE_SHIFT) - 1) >> PAGE_SHIFT):
            e = self.entries.get((serial, vpn))
            if e is not None:
                out.append(e)
        return out


# --- flushing ----------------------------------------------------------------------------


def _what(start: int, end: int) -> str:
    if end == TLB_FLUSH_ALL:
        return "all"
    return f"{start:#x}-{end:#x}"


def _describe_flush(start: int, end: int) -> str:
    """Who flushed, for ``TlbEntry.gone_at``."""
    th = current_thread()
    who = th.name if th is not None else "set-up"
    fn = th.where[-1] if th is not None and th.where else "?"
    ev = len(current_execution().events) - 1
    return f"flushed {_what(start, end)} by {who} in {fn} (event {ev})"


@kfunc
def flush_tlb_func(cpu: Cpu, mm: Any, start: int, end: int) -> None:
    """``flush_tlb_func`` run on the local CPU: invalidate its entries for
    the range inline (see the module docstring for why this is not a
    visible operation)."""
    why = _describe_flush(start, end)
    for e in cpu.tlb.in_range(mm, start, end):
        e.invalidate(why)


def flush_tlb_local(cpu: Cpu, mm: Any | None = None) -> None:
    """Flush *cpu*'s whole TLB (or its entries of *mm*) locally: a scenario
    step, like a context switch without PCID."""
    why = _describe_flush(0, TLB_FLUSH_ALL)
    for (_, _), e in list(cpu.tlb.entries.items()):
        if mm is None or e.mm is mm:
            e.invalidate(why)


def local_evict(cpu: Cpu, mm: Any, addr: int) -> None:
    """Evict one entry of *cpu*'s TLB (a capacity eviction or ``invlpg``)."""
    e = cpu.tlb.entries.get((mm.serial, addr >> PAGE_SHIFT))
    if e is not None:
        e.invalidate("evicted")


def _ran(done: list[bool]) -> Callable[[], bool]:
    """The guard of a wait for a queued IPI: it ran (monotone)."""
    return lambda: done[0]


@kfunc
def native_flush_tlb_multi(cpus: list[Cpu], mm: Any, start: int, end: int) -> None:
    """``native_flush_tlb_multi`` / ``on_each_cpu_cond_mask(..., wait=true)``:
    one IPI per remote CPU, each a visible operation that runs
    ``flush_tlb_func`` there -- at once, or, if that CPU has interrupts off,
    when it enables them; returns after the last one ran (a visible WAIT
    for each delayed one)."""
    waits: list[tuple[Cpu, list[bool]]] = []
    for cpu in cpus:
        entries = cpu.tlb.in_range(mm, start, end)
        cpu.flush_gen += 1
        # Footprint: the target's entry objects for the range (writes: this
        # orders the IPI against every hit and fill of those pages there);
        # the CPU's IPI object itself is only read, so IPIs commute (and
        # conflict with the target turning its interrupts off or on).
        ev = footprint(cpu.ipi, READ, f"flush IPI -> cpu{cpu.id}",
                       also=[(e, WRITE) for e in entries])
        why = _describe_flush(start, end)
        if cpu.irqs_off:
            # The target has interrupts off (GUP-fast): the flush runs there
            # when it enables them (mmrace.arch.cpu.local_irq_restore).
            done = [False]

            def handler(cpu: Cpu = cpu, why: str = why) -> None:
                for e in cpu.tlb.in_range(mm, start, end):
                    e.invalidate(why)

            cpu.pending.append((handler, done))
            waits.append((cpu, done))
            if ev is not None:
                ev.detail = f"{_what(start, end)}: cpu{cpu.id} has interrupts off: pending"
            continue
        hit = []
        for e in entries:
            if e.valid:
                hit.append(f"{e.addr:#x}")
            e.invalidate(why)
        if ev is not None:
            ev.detail = f"{_what(start, end)}: " + (", ".join(hit) if hit else "nothing cached")
    for cpu, done in waits:
        visible(cpu.ipi, WAIT, f"flush IPI: wait for cpu{cpu.id}", guard=_ran(done))


@kfunc
def broadcast_flush_tlb(cpus: list[Cpu], mm: Any, start: int, end: int) -> None:
    """A TLB invalidation the hardware broadcasts (arm64's ``TLBI ...IS`` +
    ``DSB``, x86's INVLPGB + TLBSYNC, a hypervisor's flush for a paravirt
    guest): every remote CPU's entries for the range are invalidated, one
    visible operation per CPU (its entry objects, written, and its
    ``tlbi`` object), without interrupting it -- a CPU with interrupts off
    is flushed all the same and nobody waits for it. The completion
    barrier also waits out page walks in flight there (see the walker)."""
    for cpu in cpus:
        entries = cpu.tlb.in_range(mm, start, end)
        cpu.flush_gen += 1
        ev = footprint(cpu.tlbi, WRITE, f"broadcast TLB flush -> cpu{cpu.id}",
                       also=[(e, WRITE) for e in entries])
        why = _describe_flush(start, end)
        hit = []
        for e in entries:
            if e.valid:
                hit.append(f"{e.addr:#x}")
            e.invalidate(why)
        if ev is not None:
            ev.detail = f"{_what(start, end)}: " + (", ".join(hit) if hit else "nothing cached")


@kfunc
def flush_tlb_mm_range(mm: Any, start: int, end: int, stride_shift: int = PAGE_SHIFT,
                       freed_tables: bool = False) -> None:
    """``flush_tlb_mm_range``: flush ``[start, end)`` of *mm* (``end ==
    TLB_FLUSH_ALL``: all of it) on every CPU in ``mm_cpumask``: the local
    one inline, the others by IPI (``flush_tlb_multi``). Ranges larger than
    ``tlb_single_page_flush_ceiling`` pages become full flushes.

    ``mm_cpumask`` is read directly, not as a visible operation: a bit is
    set when a thread is started on a CPU, before that thread can cache
    anything, so a flush that misses a new bit has nothing to flush there
    that is stale for the changes it is about. *freed_tables* is accepted
    for the kernel's signature (the model has no paging-structure caches)."""
    if end != TLB_FLUSH_ALL and (end - start) >> stride_shift > tlb_single_page_flush_ceiling:
        start, end = 0, TLB_FLUSH_ALL
    mask: frozenset[int] = mm.mm_cpumask.value
    if not mask:
        return
    me = this_cpu()
    if me is not None and me.id in mask:
        flush_tlb_func(me, mm, start, end)
    m = machine()
    others = [m.cpus[i] for i in sorted(mask) if (me is None or i != me.id) and i < len(m.cpus)]
    if others and m.tlb_flush == "broadcast":
        broadcast_flush_tlb(others, mm, start, end)
    elif others:
        native_flush_tlb_multi(others, mm, start, end)

# cpu.py builds CPUs from this module's TLB types; the flush needs the
# machine back: imported once this module is complete (the seam; the arch
# package loads this module first).
from mmrace.arch.cpu import machine, this_cpu  # noqa: E402

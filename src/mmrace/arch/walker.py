"""The interface between the hardware page walker and the page tables.

The arch layer cannot import the kernel model, so the walk itself is a
:class:`PageWalker` that ``mmrace.mm.pgtable`` implements and registers
with :func:`set_page_walker`. Its contract:

* read each level's entry as one visible read (inside an RCU read section:
  a hardware walk happens within one instruction, which an IPI or an
  RCU-sched grace period cannot split, so page-table pages freed through
  ``mmu_gather`` cannot be freed under it);
* access the leaf PTE as **one** visible operation whose footprint also
  writes the TLB entry (``footprint(..., also=((entry, WRITE),))``): an
  atomic read-modify-write when the accessed/dirty bits must be set, a read
  otherwise; in that same event either fill the entry
  (:meth:`~mmrace.arch.tlb.TlbEntry.fill`) and return 0, or return a fault
  code (nothing is cached for a faulting translation);
* never take locks, never check the locking rules (the MMU does not);
* if a remote TLB flush reached the CPU during the walk
  (``cpu.flush_gen`` changed), start over instead of going on with what
  it read: a flush cannot split a walk (an IPI is taken between
  instructions, a broadcast invalidation completes only once walks in
  flight are done), so the walk counts as one begun after the flush --
  which is what lets a page table be freed at once after such a flush.

A :class:`Frame` is what a filled entry points at: the page's data object
(whole-page accesses), the footprint of a one-word access, and its words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from mmrace.engine import SharedObject

if TYPE_CHECKING:
    from mmrace.arch.cpu import Cpu
    from mmrace.arch.tlb import TlbEntry

FAULT_NOT_PRESENT = 1
"""The walk found a non-present entry (error code without ``X86_PF_PROT``)."""
FAULT_PROT = 2
"""The leaf forbids the access: read-only for a write, or not user (``X86_PF_PROT``)."""


class Frame(Protocol):
    """A physical page as the machine sees it."""

    pfn: int

    @property
    def data(self) -> SharedObject:
        """The shared object of the page's contents (whole-page accesses)."""
        ...

    def word_footprint(self, word: int, kind: int) -> tuple[tuple[SharedObject, int], ...]:
        """The (object, kind) accesses of a user load (READ), store (WRITE)
        or add (RMW) of *word*: accesses to different words of a page must
        commute, each must conflict with a same-word access that writes and
        with any whole-page write, and a store with a whole-page read."""
        ...

    def read(self, word: int) -> int: ...

    def write(self, word: int, value: int) -> None: ...

    def describe(self) -> str: ...


class PageWalker(Protocol):
    """What the MMU needs from the page tables."""

    def walk(self, cpu: Cpu, mm: Any, addr: int, write: bool, entry: TlbEntry) -> int:
        """Translate *addr* for *mm* on *cpu*; 0 with *entry* filled, or
        ``FAULT_NOT_PRESENT`` / ``FAULT_PROT``."""
        ...


_walker: list[PageWalker] = []


def set_page_walker(walker: PageWalker) -> None:
    """Register the page-table side of the MMU (the mm layer does it on import)."""
    _walker[:] = [walker]


def page_walker() -> PageWalker:
    if not _walker:
        raise RuntimeError("no page walker registered: import mmrace.mm.pgtable")
    return _walker[0]

"""NUMA-balancing scans (kernel/sched/fair.c's ``task_numa_work``), the part
that touches VMA locking: ``vma->numab_state``.

``task_numa_work`` runs from a task's NUMA-balancing work: of the tasks of
one mm, only the one whose cmpxchg of ``mm->numa_next_scan`` wins starts a
scan period; it then walks the VMAs under the mmap *read* lock and creates
or updates each VMA's ``numab_state``. That cmpxchg is the
"numab-specific lock" of the rule table (token ``numab``): the rule lets
``numab_state`` be written under the mmap read lock only by the winner.

The model has no clock: the kernel starts a new period only once the scan
period has elapsed; here the next claim needs the previous scan to have
finished (``numa_next_scan`` counts claims and finished scans), so the
claim behaves as the try-lock the period makes it in practice.

Left out: the scan window, page-table protection changes
(``change_prot_numa``), the per-VMA PID tracking and the access checks that
skip VMAs.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmrace.mm.internal import held, kfunc
from mmrace.mm.mm_types import MmStruct
from mmrace.mm.mmap_lock import mmap_read_trylock, mmap_read_unlock
from mmrace.mm.vma import VmaIterator, for_each_vma


@dataclass
class VmaNumabState:
    """``struct vma_numab_state``: the fields the scan keeps per VMA."""

    start_scan_seq: int = 0
    prev_scan_seq: int = 0
    next_scan: int = 0


def _claim(mm: MmStruct) -> bool:
    """The ``try_cmpxchg(&mm->numa_next_scan, ...)`` that starts a scan
    period: an even value means no scan is running (see the module doc)."""
    seen = mm.numa_next_scan.load()
    if seen % 2:
        return False
    return mm.numa_next_scan.rmw(lambda v: v + 1 if v == seen else v) == seen


@kfunc
def task_numa_work(mm: MmStruct) -> int:
    """``task_numa_work``: claim the mm's scan period, then under the mmap
    read lock give every VMA a ``numab_state`` and advance it. Returns the
    number of VMAs scanned (0 if another task holds the period or the mmap
    lock is contended)."""
    if not _claim(mm):
        return 0
    h = held()
    h.numab[mm.serial] = mm
    scanned = 0
    if mmap_read_trylock(mm):
        mm.numa_scan_seq += 1  # written only by the claim's winner
        for vma in for_each_vma(VmaIterator(mm)):
            state = vma.numab_state
            if state is None:
                state = VmaNumabState(start_scan_seq=mm.numa_scan_seq)
                vma.numab_state = state
            state.prev_scan_seq = mm.numa_scan_seq
            state.next_scan += 1
            scanned += 1
        mmap_read_unlock(mm)
    del h.numab[mm.serial]
    mm.numa_next_scan.rmw(lambda v: v + 1)  # the period ends
    return scanned


__all__ = ["VmaNumabState", "task_numa_work"]

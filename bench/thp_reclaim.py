"""Benchmark of issue 15's paths: visible operations of a THP fault (and of a
small fault, for comparison), of a GUP-fast pin of one page, of one reclaim
(swap-out) of an anonymous page, of one migration, and of a swap-in fault.

Each figure is the number of visible operations (scheduling points) the
operation costs when run in one simulated thread (set-up code is free):
what drives the cost of exploring scenarios that use it.

Run: ``.venv/bin/python bench/thp_reclaim.py``.
"""

from __future__ import annotations

import platform
import sys
from typing import Any

from benchkit import ops
from mmrace.mm.memory import do_user_addr_fault
from mmrace.mm.vmscan import reclaim_folio
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    Process,
    System,
)

ANON = MAP_PRIVATE | MAP_ANONYMOUS
RW = PROT_READ | PROT_WRITE
THP_BASE = 0x7E0000000000


def process(thp: str = "madvise") -> tuple[Process, int]:
    p = System(thp=thp).process()
    return p, p.mmap(THP_BASE, 1 << 21, RW, ANON | MAP_FIXED)


def warm(thp: str) -> tuple[Process, int]:
    """A process whose upper page tables exist (a fault 2 MiB below was
    taken): the steady-state cost of a fault."""
    p = System(thp=thp).process()
    a = p.mmap(THP_BASE, 2 << 21, RW, ANON | MAP_FIXED)
    p.poke(a, 1)
    return p, a + (1 << 21)


def populated() -> tuple[Process, int]:
    p, a = process()
    p.poke(a, 1)
    return p, a


def main() -> None:
    print(f"# {platform.system()} {platform.release()} {platform.machine()}, "
          f"Python {sys.version.split()[0]}")
    small = ops(lambda: process("never"), lambda s: do_user_addr_fault(s[0].mm, s[1], True))
    thp = ops(lambda: process("always"), lambda s: do_user_addr_fault(s[0].mm, s[1], True))
    small_warm = ops(lambda: warm("never"), lambda s: do_user_addr_fault(s[0].mm, s[1], True))
    thp_warm = ops(lambda: warm("always"), lambda s: do_user_addr_fault(s[0].mm, s[1], True))
    print(f"visible operations of a small anonymous write fault: {small_warm} "
          f"(the first in an mm, allocating the upper tables: {small})")
    print(f"visible operations of a THP write fault (512 pages): {thp_warm} "
          f"(the first in an mm: {thp})")
    pin = ops(populated, lambda s: s[0].unpin(s[0].gup_fast(s[1], write=True)))
    unpin = ops(lambda: (lambda p, a: (p, p.gup_fast(a, write=True)))(*populated()),
                lambda s: s[0].unpin(s[1]))
    print(f"visible operations of a GUP-fast pin of one page: {pin - unpin} "
          f"(+{unpin} to unpin it)")
    # kswapd's path on a folio whose young bit a first pass cleared
    def unreferenced() -> Any:
        p, a = populated()
        f = p.folio_at(a)
        reclaim_folio(f)
        return p, a, f

    swapout = ops(unreferenced, lambda s: reclaim_folio(s[2]))
    pageout = ops(populated, lambda s: s[0].reclaim(s[1]))
    print(f"visible operations of reclaiming one anonymous page (swap-out): {swapout} "
          f"(MADV_PAGEOUT of it, with the page-table walk: {pageout})")

    def swapped_out() -> Any:
        p, a = populated()
        p.reclaim(a)
        return p, a

    swapin = ops(swapped_out, lambda s: do_user_addr_fault(s[0].mm, s[1], False))
    migrate = ops(populated, lambda s: s[0].migrate(s[1]))
    print(f"visible operations of a swap-in read fault: {swapin}")
    print(f"visible operations of migrating one page (move_pages): {migrate}")


if __name__ == "__main__":
    main()

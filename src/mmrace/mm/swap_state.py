"""Swap readahead state of a VMA (mm/swap_state.c): ``vma->swap_readahead_info``.

The swap-in path keeps a readahead window per VMA in one ``atomic_long_t``:
the page address of the last fault, the window size and the hits, packed as
``SWAP_RA_VAL``. It is read and written with atomic operations under
whatever lock the fault holds -- the mmap read lock, or since 6.6 the
per-VMA lock -- which is the rule table's ``atomic`` token: the field is
the one VMA field several readers of the same VMA may write at once.

The model has no swap, so nothing in it faults pages in from swap: these
are the accessors such a path uses, checked against the rule
(``swap_readahead_info``), for scenarios and tests that exercise them.
Left out: the readahead itself and the window heuristics.
"""

from __future__ import annotations

from typing import Any

from mmrace.mm.mm_types import PAGE_MASK, PAGE_SHIFT
from mmrace.mm.rules_check import check_vma_write

SWAP_RA_WIN_SHIFT = PAGE_SHIFT // 2
SWAP_RA_HITS_MASK = (1 << SWAP_RA_WIN_SHIFT) - 1
SWAP_RA_HITS_MAX = SWAP_RA_HITS_MASK
SWAP_RA_WIN_MASK = ~PAGE_MASK & ~SWAP_RA_HITS_MASK


def SWAP_RA_VAL(addr: int, win: int, hits: int) -> int:
    return (addr & PAGE_MASK) | (win << SWAP_RA_WIN_SHIFT) | hits


def swap_ra_hits(val: int) -> int:
    return val & SWAP_RA_HITS_MASK


def swap_ra_win(val: int) -> int:
    return (val & SWAP_RA_WIN_MASK) >> SWAP_RA_WIN_SHIFT


def get_swap_ra_val(vma: Any) -> int:
    """``GET_SWAP_RA_VAL``: ``atomic_long_read(&vma->swap_readahead_info)``
    (a checked read of the field)."""
    return int(vma.swap_readahead_info)


def swap_update_readahead(vma: Any, addr: int, readahead: bool) -> None:
    """``swap_update_readahead``: count a readahead hit and record the fault
    address with ``atomic_long_set`` (checked as an atomic write)."""
    val = get_swap_ra_val(vma)
    win = swap_ra_win(val)
    hits = swap_ra_hits(val)
    if readahead:
        hits = min(hits + 1, SWAP_RA_HITS_MAX)
    new = SWAP_RA_VAL(addr, win, hits)
    if vma.published:
        check_vma_write(vma, "swap_readahead_info", new, atomic=True)
    vma._f_swap_readahead_info = new


__all__ = ["SWAP_RA_VAL", "get_swap_ra_val", "swap_update_readahead"]

"""A swap device and its slot counts (mm/swapfile.c, include/linux/swap.h).

One swap device (type 0), RAM-backed and always large enough: slots are
handed out in order from offset 1 (offset 0 is the header), each with its
``swap_map`` count -- the number of swap PTEs that name it -- and the
``SWAP_HAS_CACHE`` bit (a folio for it is in the swap cache). Each slot is
its own shared object, so operations on different slots are independent;
allocation is one visible RMW of the device (its ``swap_lock`` / cluster
lock). A slot whose count and cache bit both drop to zero is freed: a swap
PTE that still names it is a use-after-free of swap space.

The slot also stores what was written to it (``swap_writepage``), so a
swap-out / swap-in round trip keeps the data.

Left out: more than one device, swapon/swapoff, clusters and per-CPU slot
caches, ``SWP_SYNCHRONOUS_IO``'s skipping of the swap cache, swap
readahead, large-folio (mTHP) swap entries, zswap, memcg swap accounting.
"""

from __future__ import annotations

from mmrace.engine import READ, RMW, SharedObject, ViolationError, execution_local, visible
from mmrace.mm.internal import kfunc
from mmrace.mm.swapops import SwpEntry, swp_entry, swp_entry_str

SWAP_HAS_CACHE = 0x40
ENOENT, EEXIST = 2, 17


class SwapSlot(SharedObject):
    """One slot: ``swap_map[offset]`` (``count`` plus ``has_cache``), the
    swap-cache folio (the swap address space's xarray entry), the data
    written to it, and a generation bumped whenever the cache entry
    changes (what a waiting swap-in watches)."""

    __slots__ = ("offset", "count", "has_cache", "folio", "data", "freed", "generation")

    def __init__(self, offset: int) -> None:
        super().__init__(f"swap0[{offset:#x}]")
        self.offset = offset
        self.count = 0
        self.has_cache = False
        self.folio: object = None
        self.data: list[dict[int, int]] | None = None
        self.freed = False
        self.generation = 0


class SwapInfo(SharedObject):
    """``struct swap_info_struct`` of the one swap device."""

    def __init__(self) -> None:
        super().__init__("swap_info[0]")
        self.next_offset = 1
        self.slots: dict[int, SwapSlot] = {}
        self.inuse_pages = 0


def swap_info() -> SwapInfo:
    """The execution's swap device (created on first use)."""
    si: SwapInfo = execution_local("mm.swap", SwapInfo)
    return si


def swap_slot(entry: SwpEntry) -> SwapSlot:
    """The slot an entry names (a violation if it was never allocated)."""
    slot = swap_info().slots.get(entry.offset)
    if slot is None:
        raise ViolationError("invariant", f"bad swap entry {swp_entry_str(entry)}",
                             f"{swp_entry_str(entry)} was never allocated")
    return slot


def _check_slot(slot: SwapSlot, what: str) -> None:
    if slot.freed:
        raise ViolationError(
            "use-after-free", f"use-after-free of swap entry {slot.name}",
            f"{what} on {slot.name}, a swap slot that was already freed "
            "(a swap PTE outlived its slot)")


def _maybe_free(slot: SwapSlot) -> None:
    if slot.count == 0 and not slot.has_cache:
        slot.freed = True
        slot.data = None
        swap_info().inuse_pages -= 1


@kfunc
def folio_alloc_swap(folio: object) -> SwpEntry:
    """``folio_alloc_swap`` (``get_swap_pages``): a free slot with
    ``SWAP_HAS_CACHE`` set, for *folio* about to enter the swap cache."""
    si = swap_info()
    ev = visible(si, RMW, "get_swap_pages")
    offset = si.next_offset
    si.next_offset += 1
    slot = si.slots[offset] = SwapSlot(offset)
    slot.has_cache = True
    si.inuse_pages += 1
    if ev is not None:
        ev.detail = slot.name
    return swp_entry(0, offset)


@kfunc
def swap_duplicate(entry: SwpEntry) -> int:
    """``swap_duplicate``: one more swap PTE names the slot; 0 or -ENOENT."""
    slot = swap_slot(entry)
    visible(slot, RMW, "swap_duplicate")
    if slot.freed or (slot.count == 0 and not slot.has_cache):
        return -ENOENT
    slot.count += 1
    return 0


@kfunc
def swap_free(entry: SwpEntry) -> None:
    """``swap_free``: one swap PTE fewer; the slot is freed with its last
    user (count and cache bit both zero)."""
    slot = swap_slot(entry)
    visible(slot, RMW, "swap_free")
    _check_slot(slot, "swap_free")
    if slot.count <= 0:
        raise ViolationError("refcount", f"swap count underflow on {slot.name}",
                             f"swap_free of {slot.name} with a count of {slot.count}")
    slot.count -= 1
    _maybe_free(slot)


def __swap_count(entry: SwpEntry) -> int:
    """``__swap_count``: the slot's count (one visible read)."""
    slot = swap_slot(entry)
    visible(slot, READ, "__swap_count")
    return 0 if slot.freed else slot.count


@kfunc
def swapcache_prepare(entry: SwpEntry) -> int:
    """``swapcache_prepare``: set ``SWAP_HAS_CACHE`` before adding a folio
    for the slot to the swap cache; -EEXIST if another task is doing so (or
    did), -ENOENT if the slot is no longer in use."""
    slot = swap_slot(entry)
    ev = visible(slot, RMW, "swapcache_prepare")
    if slot.freed or slot.count == 0:
        err = -ENOENT
    elif slot.has_cache:
        err = -EEXIST
    else:
        slot.has_cache = True
        err = 0
    if ev is not None and err:
        ev.detail = "-EEXIST" if err == -EEXIST else "-ENOENT"
    return err


@kfunc
def put_swap_folio(folio: object, entry: SwpEntry) -> None:
    """``put_swap_folio`` (``swapcache_clear``): the folio left the swap
    cache; clear ``SWAP_HAS_CACHE`` and free the slot if nothing names it."""
    slot = swap_slot(entry)
    visible(slot, RMW, "put_swap_folio")
    _check_slot(slot, "put_swap_folio")
    slot.has_cache = False
    slot.generation += 1
    _maybe_free(slot)


__all__ = [
    "SWAP_HAS_CACHE",
    "SwapSlot",
    "folio_alloc_swap",
    "put_swap_folio",
    "swap_duplicate",
    "swap_free",
    "swap_info",
    "swap_slot",
    "swapcache_prepare",
]

"""Swap and migration entries in non-present page-table entries
(include/linux/swapops.h, include/linux/swap.h, the x86 ``__swp_entry``
layout of arch/x86/include/asm/pgtable_64.h).

A non-present, non-none PTE holds a *swap entry*: a type and an offset.
Types below ``MAX_SWAPFILES`` name a swap device and the offset is a slot
on it; the types above are "non-swap" entries whose offset is a page frame
number: migration entries (read, read-exclusive, write) -- and PTE
markers (``SWP_PTE_MARKER``: the uffd-wp marker an empty entry of
file-backed memory keeps when a monitor write-protects it). As in the kernel,
slot 0 of a swap device holds its header and is never handed out, so no
swap PTE is ever zero (``pte_none``).

The model's layout keeps the flag bits where x86 keeps them for swap PTEs
(``_PAGE_SWP_SOFT_DIRTY`` is ``_PAGE_RW``'s bit, ``_PAGE_SWP_UFFD_WP``
``_PAGE_USER``'s, ``_PAGE_SWP_EXCLUSIVE`` ``_PAGE_PWT``'s), the type in the
top five bits as x86-64 does, and the offset from bit 12 up, where a
present PTE keeps its pfn (x86 inverts the offset and starts it at bit 9;
nothing in the model depends on that). No swap PTE has ``_PAGE_PSE`` set,
so it never looks like a huge PMD.

Left out: device-private/exclusive entries, hwpoison entries and markers,
PMD-level swap entries (THP migration is not modelled).
"""

from __future__ import annotations

PAGE_SHIFT = 12
_PAGE_PRESENT = 1 << 0
_PAGE_SWP_SOFT_DIRTY = 1 << 1
_PAGE_SWP_UFFD_WP = 1 << 2
_PAGE_SWP_EXCLUSIVE = 1 << 3
_SWP_TYPE_SHIFT = 59  # x86-64 keeps the type in the top five bits
_SWP_TYPE_MASK = 0x1F
_SWP_OFFSET_MASK = (1 << (_SWP_TYPE_SHIFT - PAGE_SHIFT)) - 1
_SWP_FLAGS = _PAGE_SWP_SOFT_DIRTY | _PAGE_SWP_UFFD_WP | _PAGE_SWP_EXCLUSIVE

MAX_SWAPFILES_SHIFT = 5
SWP_MIGRATION_NUM = 3
SWP_PTE_MARKER_NUM = 1
MAX_SWAPFILES = (1 << MAX_SWAPFILES_SHIFT) - SWP_MIGRATION_NUM - SWP_PTE_MARKER_NUM
SWP_MIGRATION_READ = MAX_SWAPFILES
SWP_MIGRATION_READ_EXCLUSIVE = MAX_SWAPFILES + 1
SWP_MIGRATION_WRITE = MAX_SWAPFILES + 2
SWP_PTE_MARKER = MAX_SWAPFILES + SWP_MIGRATION_NUM

PTE_MARKER_UFFD_WP = 1 << 0
"""A uffd-wp marker: the empty entry of a page a monitor write-protected
(file-backed memory, whose page may be in the page cache unmapped)."""


class SwpEntry:
    """``swp_entry_t``: a (type, offset) pair; compares by value."""

    __slots__ = ("type", "offset")

    def __init__(self, type_: int, offset: int) -> None:
        self.type = type_
        self.offset = offset

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SwpEntry) and other.type == self.type
                and other.offset == self.offset)

    def __hash__(self) -> int:
        return hash((self.type, self.offset))

    def __repr__(self) -> str:
        return swp_entry_str(self)


def swp_entry(type_: int, offset: int) -> SwpEntry:
    """``swp_entry(type, offset)``."""
    return SwpEntry(type_, offset)


def swp_type(entry: SwpEntry) -> int:
    return entry.type


def swp_offset(entry: SwpEntry) -> int:
    return entry.offset


def is_swap_pte(pte: int) -> bool:
    """``is_swap_pte``: neither none nor present."""
    return pte != 0 and not pte & _PAGE_PRESENT


def pte_to_swp_entry(pte: int) -> SwpEntry:
    """``pte_to_swp_entry`` (the flag bits are dropped)."""
    return SwpEntry((pte >> _SWP_TYPE_SHIFT) & _SWP_TYPE_MASK,
                    (pte >> PAGE_SHIFT) & _SWP_OFFSET_MASK)


def swp_entry_to_pte(entry: SwpEntry) -> int:
    """``swp_entry_to_pte``: a non-present entry with no flag bits."""
    return (entry.offset << PAGE_SHIFT) | (entry.type << _SWP_TYPE_SHIFT)


def non_swap_entry(entry: SwpEntry) -> bool:
    """``non_swap_entry``: a migration entry rather than a swap slot."""
    return entry.type >= MAX_SWAPFILES


def is_migration_entry(entry: SwpEntry) -> bool:
    return entry.type in (SWP_MIGRATION_READ, SWP_MIGRATION_READ_EXCLUSIVE, SWP_MIGRATION_WRITE)


def is_writable_migration_entry(entry: SwpEntry) -> bool:
    return entry.type == SWP_MIGRATION_WRITE


def is_readable_exclusive_migration_entry(entry: SwpEntry) -> bool:
    return entry.type == SWP_MIGRATION_READ_EXCLUSIVE


def make_readable_migration_entry(pfn: int) -> SwpEntry:
    return SwpEntry(SWP_MIGRATION_READ, pfn)


def make_readable_exclusive_migration_entry(pfn: int) -> SwpEntry:
    return SwpEntry(SWP_MIGRATION_READ_EXCLUSIVE, pfn)


def make_writable_migration_entry(pfn: int) -> SwpEntry:
    return SwpEntry(SWP_MIGRATION_WRITE, pfn)


def make_pte_marker_entry(marker: int) -> SwpEntry:
    """``make_pte_marker_entry``: a PTE marker (the offset holds its bits)."""
    return SwpEntry(SWP_PTE_MARKER, marker)


def make_pte_marker(marker: int) -> int:
    """``make_pte_marker``: the non-present PTE of marker *marker*."""
    return swp_entry_to_pte(make_pte_marker_entry(marker))


def is_pte_marker_entry(entry: SwpEntry) -> bool:
    return entry.type == SWP_PTE_MARKER


def is_pte_marker(pte: int) -> bool:
    """``is_pte_marker``: a non-present PTE that holds a marker."""
    return is_swap_pte(pte) and is_pte_marker_entry(pte_to_swp_entry(pte))


def pte_marker_uffd_wp(pte: int) -> bool:
    """``pte_marker_uffd_wp``: a uffd-wp marker."""
    return is_pte_marker(pte) and bool(pte_to_swp_entry(pte).offset & PTE_MARKER_UFFD_WP)


def swp_offset_pfn(entry: SwpEntry) -> int:
    """``swp_offset_pfn``: the frame a migration entry stands for."""
    return entry.offset


def pte_swp_soft_dirty(pte: int) -> bool:
    return bool(pte & _PAGE_SWP_SOFT_DIRTY)


def pte_swp_mksoft_dirty(pte: int) -> int:
    return pte | _PAGE_SWP_SOFT_DIRTY


def pte_swp_uffd_wp(pte: int) -> bool:
    return bool(pte & _PAGE_SWP_UFFD_WP)


def pte_swp_mkuffd_wp(pte: int) -> int:
    return pte | _PAGE_SWP_UFFD_WP


def pte_swp_clear_uffd_wp(pte: int) -> int:
    return pte & ~_PAGE_SWP_UFFD_WP


def pte_swp_exclusive(pte: int) -> bool:
    return bool(pte & _PAGE_SWP_EXCLUSIVE)


def pte_swp_mkexclusive(pte: int) -> int:
    return pte | _PAGE_SWP_EXCLUSIVE


def pte_swp_flags(pte: int) -> int:
    """The flag bits of a swap PTE (to carry them over to a new entry)."""
    return pte & _SWP_FLAGS


def swp_entry_str(entry: SwpEntry) -> str:
    """``swap 0:0x1`` / ``migration-write pfn 0x1004`` for traces."""
    if entry.type == SWP_MIGRATION_WRITE:
        return f"migration-write pfn {entry.offset:#x}"
    if entry.type == SWP_MIGRATION_READ_EXCLUSIVE:
        return f"migration-read-exclusive pfn {entry.offset:#x}"
    if entry.type == SWP_MIGRATION_READ:
        return f"migration-read pfn {entry.offset:#x}"
    if entry.type == SWP_PTE_MARKER:
        return "marker uffd-wp" if entry.offset & PTE_MARKER_UFFD_WP else "marker"
    return f"swap {entry.type}:{entry.offset:#x}"


def swap_pte_str(pte: int) -> str:
    text = swp_entry_str(pte_to_swp_entry(pte))
    flags = [n for b, n in ((_PAGE_SWP_EXCLUSIVE, "exclusive"), (_PAGE_SWP_SOFT_DIRTY,
                            "soft-dirty"), (_PAGE_SWP_UFFD_WP, "uffd-wp")) if pte & b]
    return text + (" " + "|".join(flags) if flags else "")

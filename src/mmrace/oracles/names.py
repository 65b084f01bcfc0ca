"""The oracles a user can switch off by name (``System(oracles_off=...)``)."""

from __future__ import annotations

from collections.abc import Iterable

ORACLES: dict[str, str] = {
    "lost-write": "a user store through a stale TLB entry into a page whose contents a "
    "preserving kernel operation (COW's wp_page_copy) had already copied away",
    "use-after-free": "the explanation of a user access through a stale TLB entry into a "
    "freed page (the entry, when its PTE changed, when the page was freed); with it off "
    "the model's own object-lifetime check still reports the access, tersely",
    "uffd-view": "a userfaultfd fill or move ioctl that took effect in the range of an "
    "event its non-cooperative monitor had not read, or had read after the ioctl began "
    "(only for descriptors whose monitor called expect_consistent_view(); off, that call "
    "does nothing)",
    "rmap": "a mapped anonymous page that its rmap (anon_vma, index) does not lead to "
    "(rmap_mismatch, a scenario's final check; off, it finds nothing)",
}


def oracle_names(names: Iterable[str]) -> frozenset[str]:
    """*names* as a frozenset; ValueError (one line) naming an unknown one."""
    if isinstance(names, str):
        names = (names,)
    out = frozenset(names)
    for name in sorted(out):
        if name not in ORACLES:
            raise ValueError(f"unknown oracle {name!r} (known: {', '.join(ORACLES)})")
    return out

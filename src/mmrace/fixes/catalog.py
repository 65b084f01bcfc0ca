"""The historical fixes and policies the mm model knows about.

Each entry names the upstream commit (title, release, abbreviated id) that
changed the behaviour; model code asks ``kernel.has(slug)`` /
``kernel.policy(slug)`` where that behaviour differs. This module imports
nothing from ``mmrace`` beyond the registry it fills.
"""

from __future__ import annotations

from mmrace.fixes import Era, Fix, Policy, register_fix, register_policy

COW_REUSE = register_policy(
    Policy(
        "cow-reuse",
        "how do_wp_page decides whether a write fault may reuse an anonymous page "
        "instead of copying it",
        (
            Era(
                "mapcount",
                "0",
                "(original behaviour: reuse_swap_page / page_mapcount)",
                "reuse when the page is mapped once (page_mapcount == 1), ignoring extra "
                "references such as GUP pins",
            ),
            Era(
                "page_count",
                "5.9",
                "mm: do_wp_page() simplification",
                "reuse only when page_count == 1 (after trylock_page): any extra reference, "
                "a pin or a swap-cache or LRU-pagevec one, forces a copy",
            ),
            Era(
                "anon_exclusive",
                "5.19",
                "mm: remember exclusively mapped anonymous pages with PG_anon_exclusive",
                "reuse when PageAnonExclusive is set; otherwise fall back to the "
                "refcount check of wp_can_reuse_anon_folio and mark the page exclusive",
            ),
        ),
    )
)

FORK_COW_PINNED = register_fix(
    Fix(
        "fork-copy-pinned",
        "mm: Do early cow for pinned pages during fork() for ptes",
        "copy_present_pte copies a private anonymous page that may be DMA-pinned "
        "(page_maybe_dma_pinned, mm has pinned) into the child instead of sharing it "
        "write-protected, so the pinned page stays the parent's",
        release="5.9",
        commit="70e806e4e645",
    )
)

__all__ = ["COW_REUSE", "FORK_COW_PINNED"]

"""The mremap fixes: entries moved past an rmap walk (mm/mremap.c).

mremap moves page-table entries from the old place to the new one while an
rmap walker (truncation's ``unmap_mapping_range``, reclaim's
``try_to_unmap``, migration's ``remove_migration_ptes``, a THP split) may
be looking for them. The walker must see every entry at its old place or
at its new one, and must not leave a stale TLB entry behind for a page it
frees. ``take_rmap_locks`` / ``need_rmap_locks`` and the flush before the
page-table lock is dropped are what these fixes added.

Commit ids are the upstream ones as recalled (abbreviated); releases are
the first release containing the commit, inferred from the posting dates
where noted.
"""

from __future__ import annotations

from mmrace.fixes import Fix, register_fix

MREMAP_FLUSH_BEFORE_PTL_DROP = register_fix(
    Fix(
        "mremap-flush-before-ptl-drop",
        "mremap: properly flush TLB before releasing the page",
        "move_ptes flushes the old range whenever it moved a present entry, before it "
        "drops the page-table locks (the new one included); before it, a clean entry's "
        "flush was deferred to the end of move_page_tables, after both locks were "
        "dropped, and a dirty one's came after the new lock was dropped, so a "
        "truncation could zap the new place and free the page while another CPU still "
        "reached it through its TLB entry for the old address (CVE-2018-18281, Jann "
        "Horn)",
        release="4.19",
        commit="eb66ae030829",
    )
)

MREMAP_PGTABLE_MOVE_RMAP_LOCK = register_fix(
    Fix(
        "mremap-pgtable-move-rmap-lock",
        "mm/mremap: hold the rmap lock in write mode when moving page table entries.",
        "move_pgt_entry takes the rmap locks (i_mmap_rwsem and the anon_vma lock, "
        "write) for every whole-table move (move_normal_pmd, move_normal_pud), not only "
        "when need_rmap_locks: a walker holding the PTE lock of a table that moves under "
        "it (only the PMD lock is taken) clears the entry and flushes the old address, "
        "leaving a TLB entry for the new address to a page it then frees. Release 5.14: "
        "queued in the -mm tree in June 2021 (linux-next 20210622)",
        release="5.14",
        commit="97113eb39fa7",
    )
)

MREMAP_THP_RMAP_LOCK = register_fix(
    Fix(
        "mremap-thp-rmap-lock",
        "mm, thp: close race between mremap() and split_huge_page()",
        "move_page_tables takes the anon_vma lock around move_huge_pmd when "
        "need_rmap_locks (the destination was merged into a VMA an rmap walk may visit "
        "before the source), as move_ptes already did; before it, a huge PMD moved "
        "without it and split_huge_page's rmap walk could miss the PMD at both places. "
        "Release 3.15: posted 2014-05-05 for the 3.15 cycle (Cc stable 3.7+)",
        release="3.15",
        commit="dd18dbc2d42a",
    )
)

REMOVE_MIGRATION_PTE_PTL = register_fix(
    Fix(
        "remove-migration-pte-ptl",
        "mm: fix race between mremap and removing migration entry",
        "remove_migration_pte no longer peeks at the PTE (is_swap_pte) before taking the "
        "page-table lock: move_ptes, which then took no anon_vma lock, could move the "
        "migration entry between the walker's look at the new place and its look at "
        "the old one, so it was found at neither and left behind for a page migration "
        "then unlocked and freed (kernel BUG in migration_entry_to_page). Read by "
        "remove_migration_pte: its page_vma_mapped_walk uses PVMW_SYNC",
        release="3.1",
        commit="486cf46f3f9b",
    )
)

__all__ = [
    "MREMAP_FLUSH_BEFORE_PTL_DROP",
    "MREMAP_PGTABLE_MOVE_RMAP_LOCK",
    "MREMAP_THP_RMAP_LOCK",
    "REMOVE_MIGRATION_PTE_PTL",
]

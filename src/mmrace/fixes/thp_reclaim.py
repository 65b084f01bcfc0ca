"""Fixes in the paths of huge pages, reclaim and GUP-fast (issue 15).

Each names the upstream commit that changed the behaviour; model code asks
``kernel.has(slug)``. This module imports nothing from ``mmrace`` beyond the
registry it fills.
"""

from __future__ import annotations

from mmrace.fixes import Fix, register_fix

MADV_FREE_RECLAIM_GUP_REFCOUNT = register_fix(
    Fix(
        "madv-free-reclaim-gup-refcount",
        "mm: fix race between MADV_FREE reclaim and blkdev direct IO read",
        "try_to_unmap_one discards a clean lazy-free (MADV_FREE) page only if "
        "nothing but the isolation and its mappings reference it "
        "(ref_count == 1 + map_count, read after the PTE is cleared; GUP-fast "
        "takes its reference before rechecking the PTE); otherwise it restores "
        "the PTE and makes the folio swap-backed. Before it, a page taken by "
        "GUP for an O_DIRECT read that the device had not written yet was "
        "discarded as clean, and the process later read zeroes",
        release="5.18",
        commit="6c8e2a256915",
        link="https://lore.kernel.org/r/20220131230255.789059-1-mfo@canonical.com",
    )
)

THP_MADV_FREE_PMDP_INVALIDATE = register_fix(
    Fix(
        "thp-madv-free-pmdp-invalidate",
        "thp: fix MADV_DONTNEED vs. MADV_FREE race",
        "madvise_free_huge_pmd rewrites the huge PMD through pmdp_invalidate "
        "(it stays pmd_trans_huge) instead of clearing it with "
        "pmdp_huge_get_and_clear_full and setting it again: a concurrent "
        "MADV_DONTNEED, also under the mmap read lock, checks the PMD for none "
        "without the lock and skipped the THP while it was clear, returning "
        "with the page still mapped",
        release="4.11",
        commit="58ceeb6bec86",
    )
)

__all__ = ["MADV_FREE_RECLAIM_GUP_REFCOUNT", "THP_MADV_FREE_PMDP_INVALIDATE"]

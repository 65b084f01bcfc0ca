"""The eras of khugepaged's page-table retraction and of the page-table
reader protocol (issue 16, seed 004).

Three generations of one rule -- who may change a PMD entry that points
to a PTE table, and what a walker that found such an entry may assume:

* before 6.1 (the seed's bug): ``collapse_pte_mapped_thp`` retracted a
  table under the mmap write lock and the PMD lock alone, while rmap
  walkers (truncation, reclaim) holding only ``i_mmap_rwsem`` could be
  inside it; the table was freed at once;
* 6.1 to 6.5 (``khugepaged-retract-locks``): retraction takes every lock a
  walk can start under, for write (mmap, ``i_mmap_rwsem``, the anon_vma
  root), and walkers may keep assuming that a non-terminal entry is stable;
* since 6.6 (``pte-map-revalidate`` in 6.5, then ``retract-pgtable-rcu``):
  PTE tables are freed after an RCU grace period and ``pte_offset_map_lock``
  rechecks the PMD under the PTE lock, so retraction needs only
  ``i_mmap_rwsem`` for read plus the PMD and PTE locks.

Each switch names the upstream commit (title, release, abbreviated id);
model code asks ``kernel.has(slug)``. This module imports nothing from
``mmrace`` beyond the registry it fills.
"""

from __future__ import annotations

from mmrace.fixes import Fix, register_fix

KHUGEPAGED_RETRACT_LOCKS = register_fix(
    Fix(
        "khugepaged-retract-locks",
        "mm/khugepaged: take the right locks for page table retraction",
        "the seed's fix (Jann Horn, 2022-11): collapse_pte_mapped_thp takes "
        "i_mmap_rwsem for write around the retraction and refuses a VMA with an "
        "anon_vma (as retract_page_tables already did); collapse_and_free_pmd asserts "
        "the mmap, i_mmap and anon_vma-root write locks instead of taking the PMD lock. "
        "Before it, an rmap walk (truncation's unmap_mapping_range, reclaim's "
        "try_to_unmap, folio_mkclean) holding only i_mmap_rwsem could be inside the "
        "PTE table that was being freed",
        release="6.1",
        commit="8d3c106e19e8",
        link="https://lore.kernel.org/r/20221129154730.2274278-1-jannh@google.com",
    )
)

KHUGEPAGED_GUP_FAST_IPI = register_fix(
    Fix(
        "khugepaged-gup-fast-ipi",
        "mm/khugepaged: fix GUP-fast interaction by sending IPI",
        "patch 2/3 of the seed's series: after pmdp_collapse_flush, collapse_huge_page "
        "and collapse_and_free_pmd call tlb_remove_table_sync_one (an IPI every other "
        "CPU must take) before a page table is reused or freed, so a GUP-fast walk "
        "(interrupts off) that read the old PMD has finished. A TLB flush need not "
        "interrupt anyone (broadcast TLB invalidation, paravirt flushes), so without "
        "it GUP-fast could read a freed PTE table",
        release="6.1",
        commit="2ba99c5e0881",
    )
)

GUP_FAST_PMD_RECHECK = register_fix(
    Fix(
        "gup-fast-pmd-recheck",
        "mm: gup: fix the fast GUP race against THP collapse",
        "gup_fast_pte_range rechecks the PMD (not only the PTE) after taking its "
        "reference or pin, and backs off if it changed: collapse_huge_page clears the "
        "PMD before it checks the small pages' refcounts, so a pin taken through the "
        "old table after that check was missed, and the pinned page was copied and "
        "freed from under the pin. Serialising by the TLB-flush IPI is not enough on "
        "machines whose flushes send none",
        release="6.0",
        commit="70cbc3cc78a9",
        link="https://lore.kernel.org/r/20220907180144.555485-1-shy828301@gmail.com",
    )
)

PTE_MAP_REVALIDATE = register_fix(
    Fix(
        "pte-map-revalidate",
        "mm/pgtable: allow pte_offset_map[_lock]() to fail",
        "the page-table reader protocol of 6.5: pte_offset_map maps a PTE table "
        "inside an RCU read section and may fail; pte_offset_map_lock (and "
        "page_vma_mapped_walk's map_pte) take the PTE lock and recheck that the PMD "
        "still points to the same table, retrying if not. Before it a walker that "
        "read a PMD pointing to a table assumed the entry stayed (only the "
        "higher-level locks protected it) and held no RCU read lock",
        release="6.5",
        commit="0d940a9b270b",
    )
)

RETRACT_PGTABLE_RCU = register_fix(
    Fix(
        "retract-pgtable-rcu",
        "mm/khugepaged: retract_page_tables() without mmap or vma lock",
        "Hugh Dickins' series (with 'mm/pgtable: add pte_free_defer() for pgtable as "
        "page', 'mm/khugepaged: collapse_pte_mapped_thp() with mmap_read_lock()' and "
        "'mm/khugepaged: delete khugepaged_collapse_pte_mapped_thps()'): "
        "retract_page_tables runs under i_mmap_rwsem for read, and each retraction "
        "holds the PMD lock and the PTE table's lock, rechecks the VMA's anon_vma and "
        "uffd-wp registration under them, and frees the table with pte_free_defer "
        "(after a grace period); collapse_pte_mapped_thp does the same under the mmap "
        "read lock, clearing the PTEs itself. It relies on the readers of "
        "pte-map-revalidate",
        release="6.6",
        commit="1d65b771bc08",
    )
)

RETRACT_PTL_RECHECK = register_fix(
    Fix(
        "retract-ptl-recheck",
        "mm/khugepaged: retract_page_tables() without mmap or vma lock",
        "the v2 change of that commit (\"repeat checks under ptl because UFFD, per "
        "PeterX and JannH\"): once it holds the PMD and PTE locks, retract_page_tables "
        "checks the VMA's anon_vma and uffd-wp registration again. Holding no mmap lock, "
        "it can race with UFFDIO_REGISTER + UFFDIO_WRITEPROTECT: the first check sees an "
        "unregistered VMA, the monitor then installs a uffd-wp marker in the still "
        "empty table, and v1 freed the table with the marker in it. Separate from "
        "retract-pgtable-rcu only so the review's point can be switched off",
        release="6.6",
        commit="1d65b771bc08",
    )
)

UFFD_WP_POPULATE_RECHECK = register_fix(
    Fix(
        "uffd-wp-populate-recheck",
        "(proposal, mmrace) change_pmd_range: populate again when the PMD went empty",
        "never posted: the fix for a window mmrace's exploration found in the 6.6+ code. "
        "change_pmd_range populates the PTE table of file-backed memory being uffd-wp "
        "protected (change_pmd_prepare), then skips the PMD if it is empty (\"if "
        "(pmd_none(*pmd)) goto next\"): a retract_page_tables that rechecked the VMA "
        "under its locks before UFFDIO_REGISTER, and clears the PMD between the two, "
        "makes UFFDIO_WRITEPROTECT leave the range without markers, so a later write "
        "does not trap. With this switch an empty PMD goes back to change_pmd_prepare "
        "when a table is needed (pgtable_populate_needed)",
        merged=False,
    )
)

MADV_COLLAPSE_FILE = register_fix(
    Fix(
        "madv-collapse",
        "mm/madvise: introduce MADV_COLLAPSE sync hugepage collapse",
        "MADV_COLLAPSE (25): collapse a range synchronously with khugepaged's paths, "
        "anonymous and (with 'mm/madvise: add file and shmem support to "
        "MADV_COLLAPSE') shmem; khugepaged then also recognises a PMD-sized folio "
        "already in the page cache (SCAN_PTE_MAPPED_HUGEPAGE) and queues its address "
        "for collapse_pte_mapped_thp. Before it madvise rejects the advice with EINVAL",
        release="6.1",
        commit="7d8faaf15545",
    )
)

KHUGEPAGED_UFFD_WP_KEEP_PGTABLE = register_fix(
    Fix(
        "khugepaged-uffd-wp-keep-pgtable",
        "mm/khugepaged: don't recycle vma pgtable if uffd-wp registered",
        "retract_page_tables and collapse_pte_mapped_thp leave the PTE table of a VMA "
        "registered for uffd-wp in place: it may hold uffd-wp PTE markers, which "
        "freeing it would lose (the range would fault in as a writable huge PMD "
        "without a userfault). Part of the series that let shmem register for "
        "uffd-wp (5.19)",
        release="5.19",
        commit="deb4c93a9871",
    )
)

__all__ = [
    "GUP_FAST_PMD_RECHECK",
    "KHUGEPAGED_GUP_FAST_IPI",
    "KHUGEPAGED_RETRACT_LOCKS",
    "KHUGEPAGED_UFFD_WP_KEEP_PGTABLE",
    "MADV_COLLAPSE_FILE",
    "PTE_MAP_REVALIDATE",
    "RETRACT_PGTABLE_RCU",
    "RETRACT_PTL_RECHECK",
    "UFFD_WP_POPULATE_RECHECK",
]

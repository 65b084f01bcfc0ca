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

# --- the seed-002 history: deferred TLB flushes vs COW ------------------------
#
# Thread "[RFC PATCH v2 0/2] mm: fix races due to deferred TLB flushes"
# (Nadav Amit, 2020-12-25, linux-mm). userfaultfd write-protect and soft-dirty
# clear_refs write-protected PTEs under the mmap *read* lock with the TLB
# flush deferred; a concurrent write fault could then COW (wp_page_copy) the
# page while another CPU still wrote through a stale writable TLB entry.

UFFD_WP_FLUSH_PENDING = register_fix(
    Fix(
        "uffd-wp-flush-pending",
        "mm/userfaultfd: fix memory corruption due to writeprotect",
        "do_wp_page flushes the faulting address (flush_tlb_page) before copying "
        "when the VMA is registered for uffd-wp and mm_tlb_flush_pending(mm): a "
        "concurrent UFFDIO_WRITEPROTECT may still be deferring its flush",
        release="5.12",
        commit="6ce64428d620",
        link="https://lkml.kernel.org/r/20210304095423.3825684-1-namit@vmware.com",
    )
)

SOFT_DIRTY_TLB_FLUSH = register_fix(
    Fix(
        "soft-dirty-tlb-flush",
        "mm: proc: Invalidate TLB after clearing soft-dirty page state",
        "clear_refs_write(CLEAR_REFS_SOFT_DIRTY) brackets the walk with "
        "inc/dec_tlb_flush_pending and calls flush_tlb_mm; before it, the walk ran "
        "inside tlb_gather_mmu/tlb_finish_mmu, which (since 0758cd830494 "
        "\"asm-generic/tlb: avoid potential double flush\") elides the flush when "
        "nothing was gathered, so write-protected PTEs stayed writable in TLBs",
        release="5.12",
        commit="912efa17e512",
        link="https://patchwork.kernel.org/project/linux-mm/patch/"
        "20201210121110.10094-2-will@kernel.org/",
    )
)

CLEAR_REFS_WRITE_LOCK = register_fix(
    Fix(
        "clear-refs-mmap-write-lock",
        "mm: fix clear_refs_write locking",
        "clear_refs_write takes the mmap lock for write for the whole operation; "
        "before it, it took it for read and, for soft-dirty, upgraded to write "
        "only to clear VM_SOFTDIRTY, then downgraded and write-protected the PTEs "
        "under the read lock, concurrently with page faults",
        release="5.11",
        commit="29a951dfb3c3",
    )
)

MPROTECT_EXCLUSIVE_ANON_WRITABLE = register_fix(
    Fix(
        "mprotect-exclusive-anon-writable",
        "mm/mprotect: try avoiding write faults for exclusive anonymous pages when "
        "changing protection",
        "change_protection (MM_CP_TRY_CHANGE_WRITABLE) maps an exclusive anonymous "
        "page, or a dirty page of a shared mapping, writable at once instead of "
        "leaving it to the write fault. The model also applies the flag to "
        "uffd-wp resolve (uffd_wp_range), which upstream did in a later, separately "
        "titled commit not registered here. Release: the commit (64fe24a3e05e) "
        "was queued in the mm tree in June 2022; 6.0 is inferred from that, not "
        "confirmed against a tag",
        release="6.0",
        commit="64fe24a3e05e",
        link="https://lore.kernel.org/r/20220610181436.84713-1-david@redhat.com",
    )
)

# Proposed in the seed-002 thread, never merged (turn on with with_=).

UFFD_WP_MMAP_WRITE_LOCK = register_fix(
    Fix(
        "uffd-wp-mmap-write-lock",
        "mm/userfaultfd: fix memory corruption due to writeprotect",
        "RFC PATCH v2 1/2 (Nadav Amit, 2020-12-25), mm/userfaultfd.c part: "
        "mwriteprotect_range takes the mmap lock for write when protecting "
        "(enable_wp), so no fault runs while the flush is deferred; unprotecting "
        "keeps the read lock. Superseded by the merged do_wp_page flush "
        "(uffd-wp-flush-pending). Message-id of the RFC posting not confirmed",
        merged=False,
    )
)

UFFD_WP_RESOLVE_PRESERVE_WRITE = register_fix(
    Fix(
        "uffd-wp-resolve-preserve-write",
        "mm/userfaultfd: fix memory corruption due to writeprotect",
        "RFC PATCH v2 1/2 (Nadav Amit, 2020-12-25), mm/mprotect.c part: "
        "change_pte_range's preserve_write = (prot_numa || uffd_wp_resolve) && "
        "pte_write(oldpte): write-unprotect no longer clears an RW bit that is "
        "already set (a demotion whose flush is deferred)",
        merged=False,
    )
)

UFFD_WP_RESOLVE_SKIP = register_fix(
    Fix(
        "uffd-wp-resolve-skip",
        "(review suggestion) skip PTEs that are not uffd-wp on resolve",
        "Peter Xu, 2021-01-05, in reply to RFC PATCH v2 1/2: in change_pte_range "
        "\"if (uffd_wp_resolve && !pte_uffd_wp(oldpte)) continue;\" — leave a PTE "
        "that is not uffd-wp-protected untouched on write-unprotect (no "
        "modify_prot_start/commit, no RW clear, no flush). Andrea Arcangeli "
        "proposed the same plus skipping already-protected PTEs on protect",
        merged=False,
    )
)

WP_FAULT_FLUSH_PENDING = register_fix(
    Fix(
        "wp-fault-flush-pending",
        "(proposal) flush a pending TLB flush on every write-protect fault",
        "do_wp_page flushes the faulting address (flush_tlb_page) whenever "
        "mm_tlb_flush_pending(mm), whatever the VMA: covers soft-dirty clear_refs "
        "as well as uffd-wp. Argued in the seed-002 thread (Andrea Arcangeli's "
        "PoC https://lkml.kernel.org/r/X+QLr1WmGXMs33Ld@redhat.com, Peter "
        "Zijlstra's variant waiting for the pending flush instead); the merged "
        "fix filters on userfaultfd_wp(vma)",
        merged=False,
        link="https://lkml.kernel.org/r/X+QLr1WmGXMs33Ld@redhat.com",
    )
)

from mmrace.fixes import gup_cow as _gup_cow  # noqa: E402,F401  (GUP/COW eras)
from mmrace.fixes import rust_mm as _rust_mm  # noqa: E402,F401  (seed 003's switches)
from mmrace.fixes import userfaultfd as _userfaultfd  # noqa: E402,F401  (userfaultfd eras)

__all__ = [
    "CLEAR_REFS_WRITE_LOCK",
    "COW_REUSE",
    "FORK_COW_PINNED",
    "MPROTECT_EXCLUSIVE_ANON_WRITABLE",
    "SOFT_DIRTY_TLB_FLUSH",
    "UFFD_WP_FLUSH_PENDING",
    "UFFD_WP_MMAP_WRITE_LOCK",
    "UFFD_WP_RESOLVE_PRESERVE_WRITE",
    "UFFD_WP_RESOLVE_SKIP",
    "WP_FAULT_FLUSH_PENDING",
]

from mmrace.fixes import khugepaged as _khugepaged  # noqa: E402,F401  (issue 16: retraction eras)
from mmrace.fixes import mremap as _mremap  # noqa: E402,F401  (the mremap fixes)
from mmrace.fixes import rules_eras as _rules_eras  # noqa: E402,F401  (the locking rules' eras)
from mmrace.fixes import thp_reclaim as _thp_reclaim  # noqa: E402,F401  (issue 15's switches)

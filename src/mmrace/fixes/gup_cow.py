"""GUP and COW through the eras: how get_user_pages keeps the page it hands
out coherent with the page tables (mm/gup.c, mm/memory.c).

The history, oldest first (the ``cow-reuse`` policy of :mod:`catalog` is the
other half of it: how ``do_wp_page`` decides to reuse a page):

* up to 5.7 a read-only ``get_user_pages`` takes the page as mapped; COW
  could later "break the wrong way": a child that took a reference (vmsplice)
  and unmapped the page saw its parent's later writes (CVE-2020-29374);
* 5.8 breaks COW at GUP time for every ``FOLL_GET``/``FOLL_PIN`` lookup in a
  COW mapping, as if ``FOLL_WRITE`` had been asked;
* 5.9 removes that again: with the ``page_count`` reuse policy of the same
  release, the reference itself keeps the writer from reusing the page;
* 5.19 remembers exclusive anonymous pages (``PageAnonExclusive``, the
  ``anon_exclusive`` reuse policy) and unshares a possibly shared anonymous
  page before a read-only pin (``FAULT_FLAG_UNSHARE``);
* 6.0 drops ``FOLL_COW``: ``FOLL_FORCE`` writes through a read-only PTE only
  to an exclusive anonymous page, no longer to any dirty one;
* 6.2 unshares the shared zero page and page-cache pages too before a
  read-only *long-term* pin in a COW mapping.

This module imports nothing from ``mmrace`` beyond the registry it fills.
"""

from __future__ import annotations

from mmrace.fixes import Fix, register_fix

GUP_COW_BREAK_READS = register_fix(
    Fix(
        "gup-cow-break-reads",
        'gup: document and work around "COW can break either way" issue',
        "__get_user_pages turns on FOLL_WRITE for every FOLL_GET/FOLL_PIN lookup in a "
        "COW mapping (should_force_cow_break), so even a read-only GUP breaks COW and "
        "gets a page of its own; can_follow_write_pte accepts a dirty PTE after such a "
        "COW (FOLL_COW) without FOLL_FORCE. Fixes CVE-2020-29374 (the vmsplice leak). "
        "Removed again in 5.9 by gup-remove-enforced-cow",
        release="5.8",
        commit="17839856fd58",
    )
)

GUP_REMOVE_ENFORCED_COW = register_fix(
    Fix(
        "gup-remove-enforced-cow",
        "mm/gup: Remove enfornced COW mechanism",
        "undoes gup-cow-break-reads: a read-only GUP takes the page as mapped again "
        "(and can_follow_write_pte needs FOLL_FORCE again); safe only together with the "
        "page_count reuse policy of the same release (mm: do_wp_page() simplification), "
        "under which the GUP reference makes the writer copy",
        release="5.9",
        commit="a308c71bf1e6",
    )
)

GUP_UNSHARE_ANON_RO_PIN = register_fix(
    Fix(
        "gup-unshare-anon-ro-pin",
        "mm/gup: trigger FAULT_FLAG_UNSHARE when R/O-pinning a possibly shared "
        "anonymous page",
        "gup_must_unshare: a FOLL_PIN without FOLL_WRITE of an anonymous page that is "
        "not PageAnonExclusive makes follow_page_pte return -EMLINK and faultin_page "
        "fault with FAULT_FLAG_UNSHARE, which reuses (marking it exclusive) or copies "
        "the page, so later writes by the process reach the pinned page. Needs the "
        "anon_exclusive reuse policy of the same series: under the older policies a "
        "reused page is never marked exclusive and the GUP retry loop never ends",
        release="5.19",
        commit="a7f226604170",
    )
)

FOLL_FORCE_ANON_EXCLUSIVE = register_fix(
    Fix(
        "foll-force-anon-exclusive",
        "mm/gup: fix FOLL_FORCE COW security issue and remove FOLL_COW",
        "can_follow_write_pte lets a FOLL_FORCE write through a read-only PTE of a "
        "private, not VM_WRITE mapping only to a PageAnonExclusive anonymous page that "
        "needs no soft-dirty or uffd-wp write fault; before it (since the Dirty COW fix "
        "of 4.9) faultin_page set FOLL_COW after a COW and any dirty PTE was then "
        "followed for writing (CVE-2022-2590: a dirty R/O PTE of a shmem page)",
        release="6.0",
        commit="5535be309971",
    )
)

GUP_LONGTERM_UNSHARE_COW = register_fix(
    Fix(
        "gup-longterm-unshare-cow",
        "mm/gup: reliable R/O long-term pinning in COW mappings",
        "gup_must_unshare also asks to unshare a page that is not anonymous (the shared "
        "zero page, a page-cache page) before a read-only FOLL_LONGTERM pin in a COW "
        "mapping, and do_wp_page's FAULT_FLAG_UNSHARE copies such a page into an "
        "exclusive anonymous one mapped read-only (\"mm: extend FAULT_FLAG_UNSHARE "
        "support to anything in a COW mapping\", same series); before it the pin stayed "
        "on the shared page and the next write copied away from it",
        release="6.2",
        commit="84209e87c696",
    )
)

__all__ = [
    "FOLL_FORCE_ANON_EXCLUSIVE",
    "GUP_COW_BREAK_READS",
    "GUP_LONGTERM_UNSHARE_COW",
    "GUP_REMOVE_ENFORCED_COW",
    "GUP_UNSHARE_ANON_RO_PIN",
]

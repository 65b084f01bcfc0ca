"""The catalog of switches: every fix has a title and, if merged, a release;
System(kernel="5.10") turns off every later fix and picks the 5.10 eras."""

from __future__ import annotations

from mmrace.fixes import FIXES, POLICIES, KernelConfig, all_fixes, parse_release
from mmrace.user import System

SEED_002 = {
    "uffd-wp-flush-pending": ("mm/userfaultfd: fix memory corruption due to writeprotect", "5.12"),
    "soft-dirty-tlb-flush": ("mm: proc: Invalidate TLB after clearing soft-dirty page state",
                             "5.12"),
    "clear-refs-mmap-write-lock": ("mm: fix clear_refs_write locking", "5.11"),
}
PROPOSALS = {"uffd-wp-mmap-write-lock", "uffd-wp-resolve-preserve-write",
             "uffd-wp-resolve-skip", "wp-fault-flush-pending"}


def test_every_fix_has_title_and_release() -> None:
    for fix in all_fixes():
        assert fix.title.strip(), fix.slug
        assert fix.summary.strip(), fix.slug
        if fix.merged:
            assert fix.release is not None, fix.slug
            parse_release(fix.release)
        else:
            assert fix.release is None, fix.slug
    for policy in POLICIES.values():
        for era in policy.eras:
            assert era.title.strip()
            parse_release(era.since)


def test_seed_002_fixes() -> None:
    for slug, (title, release) in SEED_002.items():
        fix = FIXES[slug]
        assert (fix.title, fix.release, fix.merged) == (title, release, True)
    for slug in PROPOSALS:
        assert not FIXES[slug].merged


def test_kernel_5_10() -> None:
    k = System(kernel="5.10").kernel
    for fix in all_fixes():
        later = fix.merged and fix.release is not None and parse_release(fix.release) > (5, 10)
        assert k.has(fix.slug) is (fix.merged and not later), fix.slug
    assert k.policy("cow-reuse") == "page_count"
    current = KernelConfig()
    assert all(current.has(s) for s in SEED_002)
    assert not any(current.has(s) for s in PROPOSALS)
    assert current.policy("cow-reuse") == "anon_exclusive"


def test_adjust_on_top_of_release() -> None:
    k = System(kernel="5.10", with_=["uffd-wp-flush-pending", "uffd-wp-resolve-skip"]).kernel
    assert k.has("uffd-wp-flush-pending") and k.has("uffd-wp-resolve-skip")
    assert not k.has("soft-dirty-tlb-flush")
    k = System(kernel="5.11").kernel
    assert k.has("clear-refs-mmap-write-lock") and not k.has("soft-dirty-tlb-flush")

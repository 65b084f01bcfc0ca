"""The scenario catalog: each entry a scenario function plus what it shows,
where it comes from, and the outcome expected on every variant (the current
kernel, the buggy base, each fix, each fix removed, each proposal).

``get(name)``, ``all_scenarios()``; the API is in :mod:`mmrace.scenarios.api`,
model patching in :mod:`mmrace.scenarios.patch`, running in
:mod:`mmrace.scenarios.run`.
"""

from __future__ import annotations

from mmrace.scenarios.api import (
    OUTCOMES,
    VIOLATION_KINDS,
    Explore,
    Kernel,
    Scenario,
    ScenarioError,
    Variant,
    scenario,
)
from mmrace.scenarios.patch import patched

_CATALOG: dict[str, Scenario] | None = None


def _catalog() -> dict[str, Scenario]:
    global _CATALOG
    if _CATALOG is None:
        from mmrace.scenarios.binder import CATALOG as BINDER
        from mmrace.scenarios.deferred_flush import CATALOG
        from mmrace.scenarios.gup_cow import CATALOG as GUP_COW
        from mmrace.scenarios.khugepaged import CATALOG as KHUGEPAGED
        from mmrace.scenarios.mremap import CATALOG as MREMAP
        from mmrace.scenarios.thp_reclaim import CATALOG as THP_RECLAIM
        from mmrace.scenarios.userfaultfd import CATALOG as UFFD

        _CATALOG = {sc.name: sc for sc in (*CATALOG, *GUP_COW, *BINDER, *THP_RECLAIM,
                                           *KHUGEPAGED, *UFFD, *MREMAP)}
    return _CATALOG


def all_scenarios() -> list[Scenario]:
    """The catalog, in catalog order."""
    return list(_catalog().values())


def names() -> list[str]:
    return list(_catalog())


def get(name: str) -> Scenario:
    """The catalog entry *name*; ScenarioError if there is none."""
    try:
        return _catalog()[name]
    except KeyError:
        raise ScenarioError(
            f"unknown scenario {name!r} (known: {', '.join(_catalog())})"
        ) from None


# Switches no catalog scenario exercises yet, with the reason.
NOT_COVERED: dict[str, str] = {
    "foll-force-anon-exclusive": "what a user saw change needs a dirty read-only PTE of a "
    "shared page (UFFDIO_CONTINUE on shmem, CVE-2022-2590), which the model cannot make; "
    "tests/mm/test_gup_eras.py covers both eras",
    "uffdio-move": "a feature (the ioctl exists or not), not a fix: the uffd-move-pin entry "
    "runs on 6.8, which has it; tests/mm/test_uffd_ioctls.py checks that 6.7 refuses it",
    "uffdio-continue": "a feature (shmem minor faults and UFFDIO_CONTINUE exist or not): "
    "tests/mm/test_uffd_ioctls.py checks both sides of 5.14",
    "mprotect-exclusive-anon-writable": "exercised only indirectly: it is on in the "
    "'current' variants of the uffd scenarios (unprotect keeps RW on an exclusive page)",
    "madv-collapse": "not a race: MADV_COLLAPSE exists (EINVAL before 6.1) and khugepaged "
    "recognises a PTE-mapped THP; tests/mm/test_khugepaged.py covers both eras",
    # The locking rules' era switches (mmrace.fixes.rules_eras): the 5.10 base
    # variants run without them and the current variants with them;
    # tests/mm/test_rules_eras.py checks each era's behaviour and rules.
    "per-vma-locks": "an era switch: every base variant (5.10) runs without per-VMA locks",
    "stack-expand-write-locked": "an era switch (no catalog entry grows a stack); "
    "tests/mm/test_rules_eras.py",
    "vma-slab-typesafe-rcu": "an era switch (the read of vm_mm under RCU before 6.15); "
    "tests/mm/test_rules_eras.py",
    "mremap-thp-rmap-lock": "its walker is 3.14's split_huge_page of an anonymous THP, "
    "which BUG'd on a PMD its rmap walk missed; the model has no anonymous split, and "
    "today's split fails safely (-EAGAIN) on a missed PMD (docs/mremap.md); "
    "tests/mm/test_mremap_race.py shows a tmpfs THP split missing the moving PMD "
    "without the switch",
}

__all__ = [
    "NOT_COVERED",
    "OUTCOMES",
    "VIOLATION_KINDS",
    "Explore",
    "Kernel",
    "Scenario",
    "ScenarioError",
    "Variant",
    "all_scenarios",
    "get",
    "names",
    "patched",
    "scenario",
]

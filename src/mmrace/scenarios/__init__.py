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
        from mmrace.scenarios.deferred_flush import CATALOG
        from mmrace.scenarios.mremap import CATALOG as MREMAP_CATALOG

        _CATALOG = {sc.name: sc for sc in (*CATALOG, *MREMAP_CATALOG)}
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
    "fork-copy-pinned": "needs a fork-while-pinned scenario (issue 7 lists only the "
    "seed-002 races); tests/mm/test_fork.py covers the switch",
    "mprotect-exclusive-anon-writable": "exercised only indirectly: it is on in the "
    "'current' variants of the uffd scenarios (unprotect keeps RW on an exclusive page)",
    "remove-migration-pte-ptl": "its walker is migration's remove_migration_ptes, which the "
    "model does not have yet (docs/mremap.md says what the entry needs)",
    "mremap-thp-rmap-lock": "its walker is a THP split (split_huge_page's rmap walk) and "
    "its mover a huge PMD: neither exists yet (docs/mremap.md says what the entry needs); "
    "tests/mm/test_mremap.py covers the switch",
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

"""Behaviour switches, one per historical fix, and policies with eras.

A *fix* is a change that landed upstream (or was only proposed on the list).
Model code asks ``kernel.has("slug")`` at the point where behaviour differs;
nothing forks a function into old and new copies. A *policy* is a
multi-valued behaviour that changed over releases (for instance how
``do_wp_page`` decides whether it may reuse a page); each value records the
release that introduced it.

``KernelConfig(release="5.10")`` behaves as that release did: every merged fix
that landed later is off and every policy takes the value of that era.
``without`` and ``with_`` then adjust single switches on top (``with_`` is how a
proposed, never-merged alternative is turned on).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "FIXES",
    "POLICIES",
    "Era",
    "Fix",
    "FixError",
    "KernelConfig",
    "Policy",
    "all_fixes",
    "all_policies",
    "parse_release",
    "register_fix",
    "register_policy",
]


class FixError(ValueError):
    """An unknown switch or release, or a contradictory request."""


def parse_release(text: str) -> tuple[int, ...]:
    """``"5.19"`` -> ``(5, 19)``; raises FixError for anything else."""
    parts = text.strip().removeprefix("v").split(".")
    try:
        nums = tuple(int(p) for p in parts)
    except ValueError:
        raise FixError(f"not a kernel release: {text!r} (expected e.g. 5.10)") from None
    if not 1 <= len(nums) <= 3 or any(n < 0 for n in nums):
        raise FixError(f"not a kernel release: {text!r} (expected e.g. 5.10)")
    return nums


@dataclass(frozen=True)
class Fix:
    """One behaviour switch.

    *title* is the upstream commit title (or the patch subject for a proposal);
    *release* the first release that contained it (None if never merged)."""

    slug: str
    title: str
    summary: str
    release: str | None = None
    merged: bool = True
    commit: str | None = None
    link: str | None = None

    def in_release(self, release: tuple[int, ...]) -> bool:
        if not self.merged or self.release is None:
            return False
        return parse_release(self.release) <= release


@dataclass(frozen=True)
class Era:
    value: str
    since: str  # first release with this value ("0" for the beginning)
    title: str  # the commit that introduced it
    summary: str


@dataclass(frozen=True)
class Policy:
    """A behaviour with several historical values, each with its era."""

    slug: str
    summary: str
    eras: tuple[Era, ...]  # oldest first

    def value_in(self, release: tuple[int, ...]) -> str:
        value = self.eras[0].value
        for era in self.eras:
            if parse_release(era.since) <= release:
                value = era.value
        return value

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(e.value for e in self.eras)


FIXES: dict[str, Fix] = {}
POLICIES: dict[str, Policy] = {}


def register_fix(fix: Fix) -> Fix:
    if fix.slug in FIXES or fix.slug in POLICIES:
        raise FixError(f"switch {fix.slug!r} registered twice")
    if fix.merged and fix.release is None:
        raise FixError(f"merged fix {fix.slug!r} needs the release it landed in")
    if fix.release is not None:
        parse_release(fix.release)
    FIXES[fix.slug] = fix
    return fix


def register_policy(policy: Policy) -> Policy:
    if policy.slug in FIXES or policy.slug in POLICIES:
        raise FixError(f"switch {policy.slug!r} registered twice")
    if not policy.eras:
        raise FixError(f"policy {policy.slug!r} has no eras")
    for era in policy.eras:
        parse_release(era.since)
    POLICIES[policy.slug] = policy
    return policy


def all_fixes() -> list[Fix]:
    return sorted(FIXES.values(), key=lambda f: f.slug)


def all_policies() -> list[Policy]:
    return sorted(POLICIES.values(), key=lambda p: p.slug)


def _known(slug: str) -> Fix:
    try:
        return FIXES[slug]
    except KeyError:
        known = ", ".join(sorted(FIXES)) or "none registered"
        raise FixError(f"unknown switch {slug!r} (known: {known})") from None


class KernelConfig:
    """Which fixes are in and which policy values hold, for one run.

    Default: the current kernel — every merged fix applied, every policy at
    its newest value, no proposal applied."""

    __slots__ = ("_on", "_policies", "release")

    def __init__(
        self,
        release: str | None = None,
        without: Iterable[str] = (),
        with_: Iterable[str] = (),
        policies: dict[str, str] | None = None,
    ) -> None:
        self.release = release
        rel = parse_release(release) if release is not None else None
        on: set[str] = set()
        for fix in FIXES.values():
            if rel is None:
                if fix.merged:
                    on.add(fix.slug)
            elif fix.in_release(rel):
                on.add(fix.slug)
        without = list(without)
        with_ = list(with_)
        for slug in without:
            _known(slug)
            if slug in with_:
                raise FixError(f"switch {slug!r} given both with and without")
            on.discard(slug)
        for slug in with_:
            _known(slug)
            on.add(slug)
        chosen: dict[str, str] = {}
        for policy in POLICIES.values():
            chosen[policy.slug] = (
                policy.value_in(rel) if rel is not None else policy.eras[-1].value
            )
        for slug, value in (policies or {}).items():
            known = POLICIES.get(slug)
            if known is None:
                raise FixError(f"unknown policy {slug!r}")
            if value not in known.values:
                raise FixError(
                    f"policy {slug!r} has no value {value!r} "
                    f"(choose from {', '.join(known.values)})"
                )
            chosen[slug] = value
        self._on = frozenset(on)
        self._policies = chosen

    def has(self, slug: str) -> bool:
        """Whether the fix *slug* is applied (unknown slugs are an error)."""
        if slug in self._on:
            return True
        if slug not in FIXES:
            _known(slug)
        return False

    def policy(self, slug: str) -> str:
        try:
            return self._policies[slug]
        except KeyError:
            raise FixError(f"unknown policy {slug!r}") from None

    @property
    def applied(self) -> frozenset[str]:
        return self._on

    def describe(self) -> str:
        return f"as of {self.release}" if self.release else "current kernel"


from mmrace.fixes import catalog as _catalog  # noqa: E402,F401  (registers the known fixes)

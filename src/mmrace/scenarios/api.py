"""The scenario API: a function that builds a machine and threads, plus the
metadata that says what it shows and how to find it.

A scenario function takes one argument, a :class:`Kernel` (the behaviour
switches of the variant being run), and builds everything through
:mod:`mmrace.user`::

    @scenario(
        name="my-race",
        summary="one line",
        references=("mm: the commit title (5.12)",),
        fixes=("uffd-wp-flush-pending",),
        proposals=("wp-fault-flush-pending",),
        base=Kernel(release="5.10"),
        expect={"current": "clean", "base": "lost-write", ...},
    )
    def my_race(kernel: Kernel) -> Any:
        s = kernel.system(cpus=3)
        ...

Its **variants** are derived from the metadata:

* ``current`` — the current kernel (every merged fix, newest policies);
* ``base`` — the buggy base the race was reported on (e.g. 5.10);
* ``base+SLUG`` for each merged fix — the fix applied on the buggy base
  (does the fix alone close it?), and ``base+fixes`` (all of them) when
  there are several;
* ``current-SLUG`` for each merged fix — today's kernel with the fix removed
  (does something else close it too?);
* ``base+SLUG`` for each proposal (a never-merged alternative from the
  thread) — does the proposal close it?;
* ``POLICY=VALUE`` variants for the policies the scenario compares
  (``policies=("cow-reuse",)``): the base with that policy value.

Every variant has an expected outcome: ``clean`` or a violation kind
(``lost-write``, ``use-after-free``, ``wrong-data``, ``deadlock``,
``lock-order``, ``locking-rule``, ``invariant``, ``assertion``, ``livelock``,
``uffd-view``). A clean
outcome is only claimed when the bounded exploration completed; otherwise
the outcome is ``budget-exhausted``, which never matches ``clean``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mmrace.fixes import FIXES, POLICIES, FixError, KernelConfig
from mmrace.user import System

VIOLATION_KINDS = (
    "lost-write",
    "use-after-free",
    "wrong-data",
    "deadlock",
    "lock-order",
    "locking-rule",
    "invariant",
    "assertion",
    "livelock",
    "bug",
    "uffd-view",
    "lock-held-at-exit",
)
OUTCOMES = ("clean", *VIOLATION_KINDS)


class ScenarioError(ValueError):
    """A malformed scenario, an unknown name, or an unsupported switch."""


@dataclass(frozen=True)
class Kernel:
    """The kernel behaviour of one run: a release (None: current), fixes
    removed, proposals (or fixes) added, and policy values."""

    release: str | None = None
    without: tuple[str, ...] = ()
    with_: tuple[str, ...] = ()
    policies: tuple[tuple[str, str], ...] = ()

    def config(self) -> KernelConfig:
        return KernelConfig(release=self.release, without=self.without, with_=self.with_,
                            policies=dict(self.policies))

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`mmrace.user.System`."""
        return {"kernel": self.release, "without": self.without, "with_": self.with_,
                "policies": dict(self.policies)}

    def system(self, cpus: int = 2, **kw: Any) -> System:
        """``System(cpus=..., **kw)`` with this kernel. A ``policies`` keyword
        gives the scenario's own policy choice, which a variant's overrides."""
        policies = dict(kw.pop("policies", None) or {})
        policies.update(dict(self.policies))
        return System(cpus=cpus, kernel=self.release, without=self.without,
                      with_=self.with_, policies=policies, **kw)

    def plus(self, *, release: str | None = None, without: Iterable[str] = (),
             with_: Iterable[str] = (), policies: Mapping[str, str] | None = None) -> Kernel:
        pol = dict(self.policies)
        pol.update(policies or {})
        return Kernel(
            release=release if release is not None else self.release,
            without=tuple(dict.fromkeys((*self.without, *without))),
            with_=tuple(dict.fromkeys((*self.with_, *with_))),
            policies=tuple(sorted(pol.items())),
        )

    def describe(self) -> str:
        parts = [f"as of {self.release}" if self.release else "current kernel"]
        parts += [f"without {s}" for s in self.without]
        parts += [f"with {s}" for s in self.with_]
        parts += [f"{k}={v}" for k, v in self.policies]
        return ", ".join(parts)


@dataclass(frozen=True)
class Explore:
    """How to explore a variant: strategy and bounds. ``bounded`` with
    ``preemption_bound=K`` covers every trace that has a schedule with at
    most K preemptions (checked against naive enumeration, not proven:
    ``docs/scale.md``)."""

    strategy: str = "bounded"
    preemption_bound: int | None = 3
    max_executions: int | None = None
    max_seconds: float | None = None
    seed: int | None = None

    def describe(self) -> str:
        text = self.strategy
        if self.preemption_bound is not None:
            text += f" K={self.preemption_bound}"
        if self.max_executions is not None:
            text += f", <= {self.max_executions} executions"
        if self.max_seconds is not None:
            text += f", <= {self.max_seconds:g}s"
        return text


@dataclass(frozen=True)
class Variant:
    """One way to run a scenario: a kernel and the outcome expected."""

    name: str
    kernel: Kernel
    expected: str
    role: str  # current | base | fix | removed | proposal | policy
    switch: str | None = None
    note: str = ""


ScenarioFn = Callable[[Kernel], Any]


@dataclass(frozen=True)
class Scenario:
    """A catalog entry (or a user's own scenario): the function and its
    metadata. Calling it with a :class:`Kernel` gives an engine program."""

    name: str
    summary: str
    fn: ScenarioFn
    references: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()
    proposals: tuple[str, ...] = ()
    policies: tuple[tuple[str, str], ...] = ()  # (policy, value) variants on the base
    base: Kernel = field(default_factory=Kernel)
    expect: tuple[tuple[str, str], ...] = ()
    explore: Explore = field(default_factory=Explore)
    notes: tuple[tuple[str, str], ...] = ()  # per-variant one-line explanations
    patches: tuple[tuple[str, Any], ...] = ()  # model functions replaced for each run
    ci: tuple[str, ...] | None = None  # variants cheap enough for the default test suite

    def program(self, kernel: Kernel | None = None) -> Callable[[], Any]:
        """The no-argument engine program of this scenario under *kernel*."""
        k = kernel if kernel is not None else Kernel()
        fn = self.fn

        def program() -> Any:
            return fn(k)

        program.__name__ = self.name.replace("-", "_")
        return program

    @property
    def switches(self) -> tuple[str, ...]:
        """Every switch the scenario exercises (fixes, proposals, policies,
        and those its base turns on or off)."""
        pol = tuple(dict.fromkeys(p for p, _ in self.policies))
        base = tuple(s for s in (*self.base.with_, *self.base.without)
                     if s not in self.fixes and s not in self.proposals)
        return (*self.fixes, *self.proposals, *pol, *base)

    def variants(self) -> list[Variant]:
        expect = dict(self.expect)
        notes = dict(self.notes)
        out: list[Variant] = []

        def add(name: str, kernel: Kernel, role: str, switch: str | None = None) -> None:
            if name not in expect:
                raise ScenarioError(f"scenario {self.name!r}: no expected outcome for "
                                    f"variant {name!r}")
            out.append(Variant(name, kernel, expect[name], role, switch, notes.get(name, "")))

        add("current", Kernel(), "current")
        add("base", self.base, "base")
        for slug in self.fixes:
            add(f"base+{slug}", self.base.plus(with_=(slug,)), "fix", slug)
        if len(self.fixes) > 1:
            add("base+fixes", self.base.plus(with_=self.fixes), "fix")
        for slug in self.fixes:
            add(f"current-{slug}", Kernel(without=(slug,)), "removed", slug)
        for slug in self.proposals:
            add(f"base+{slug}", self.base.plus(with_=(slug,)), "proposal", slug)
        for policy, value in self.policies:
            add(f"{policy}={value}", self.base.plus(policies={policy: value}), "policy", policy)
        names = {v.name for v in out}
        extra = sorted(set(expect) - names)
        if extra:
            raise ScenarioError(f"scenario {self.name!r}: expectation for unknown variant "
                                f"{extra[0]!r}")
        return out

    def variant(self, name: str) -> Variant:
        for v in self.variants():
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.variants())
        raise ScenarioError(f"scenario {self.name!r} has no variant {name!r} (known: {known})")

    def ci_variants(self) -> list[Variant]:
        """The variants the default test suite explores (all when ``ci`` is None)."""
        vs = self.variants()
        return vs if self.ci is None else [v for v in vs if v.name in self.ci]

    def validate(self) -> None:
        """Raise ScenarioError for malformed metadata."""
        if not self.name or not self.summary:
            raise ScenarioError("a scenario needs a name and a one-line summary")
        for slug in (*self.fixes, *self.proposals):
            if slug not in FIXES:
                raise ScenarioError(f"scenario {self.name!r}: unknown switch {slug!r}")
        for slug in self.fixes:
            if not FIXES[slug].merged:
                raise ScenarioError(f"scenario {self.name!r}: {slug!r} was never merged; "
                                    "list it under proposals")
        for slug in self.proposals:
            if FIXES[slug].merged:
                raise ScenarioError(f"scenario {self.name!r}: {slug!r} is a merged fix; "
                                    "list it under fixes")
        for policy, value in self.policies:
            if policy not in POLICIES or value not in POLICIES[policy].values:
                raise ScenarioError(f"scenario {self.name!r}: unknown policy value "
                                    f"{policy}={value}")
        for name, outcome in self.expect:
            if outcome not in OUTCOMES:
                raise ScenarioError(f"scenario {self.name!r}: variant {name!r} expects "
                                    f"{outcome!r} (choose from {', '.join(OUTCOMES)})")
        try:
            for v in self.variants():
                v.kernel.config()
        except FixError as exc:
            raise ScenarioError(f"scenario {self.name!r}: {exc}") from None
        if self.ci is not None:
            names = {v.name for v in self.variants()}
            for n in self.ci:
                if n not in names:
                    raise ScenarioError(f"scenario {self.name!r}: ci lists unknown variant {n!r}")

    def with_kernel(self, kernel: Kernel) -> Variant:
        """An ad-hoc variant (``--kernel/--without/--with``): no expectation."""
        return Variant("custom", kernel, "", "custom")

    def replace(self, **changes: Any) -> Scenario:
        return replace(self, **changes)


def scenario(
    *,
    name: str,
    summary: str,
    references: Iterable[str] = (),
    fixes: Iterable[str] = (),
    proposals: Iterable[str] = (),
    policies: Iterable[tuple[str, str]] = (),
    base: Kernel | None = None,
    expect: Mapping[str, str] | None = None,
    explore: Explore | None = None,
    notes: Mapping[str, str] | None = None,
    patches: Mapping[str, Any] | None = None,
    ci: Iterable[str] | None = None,
) -> Callable[[ScenarioFn], Scenario]:
    """Decorator turning ``fn(kernel)`` into a :class:`Scenario`."""

    def wrap(fn: ScenarioFn) -> Scenario:
        params = inspect.signature(fn).parameters
        if len(params) != 1:
            raise ScenarioError(f"scenario {name!r}: the function takes one argument, "
                                "the Kernel")
        sc = Scenario(
            name=name,
            summary=summary,
            fn=fn,
            references=tuple(references),
            fixes=tuple(fixes),
            proposals=tuple(proposals),
            policies=tuple(policies),
            base=base or Kernel(),
            expect=tuple((expect or {}).items()),
            explore=explore or Explore(),
            notes=tuple((notes or {}).items()),
            patches=tuple((patches or {}).items()),
            ci=tuple(ci) if ci is not None else None,
        )
        sc.validate()
        return sc

    return wrap


__all__ = [
    "OUTCOMES",
    "VIOLATION_KINDS",
    "Explore",
    "Kernel",
    "Scenario",
    "ScenarioError",
    "Variant",
    "scenario",
]

"""Running scenario variants: outcomes, tokens, and replay by token.

A token's context string is ``"SCENARIO/VARIANT"`` for catalog variants and
``"SCENARIO/custom;release=..;without=..;with=.."`` for ad-hoc kernels, so
``mmrace replay TOKEN`` knows what to re-run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any

from mmrace.engine import Result, TokenError, explore, replay
from mmrace.engine.token import decode
from mmrace.fixes import FixError
from mmrace.scenarios.api import Explore, Kernel, Scenario, ScenarioError, Variant
from mmrace.scenarios.patch import patched

# Engine kinds that map onto the documented violation kinds.
_KIND_ALIASES = {"lockdep": "lock-order", "rule": "locking-rule"}


def violation_kind(kind: str) -> str:
    return _KIND_ALIASES.get(kind, kind)


def outcome_of(result: Result) -> str:
    """``clean`` (complete and clean), ``budget-exhausted``, or the kind of
    the violation found."""
    if result.violation is not None:
        return violation_kind(result.violation.kind)
    return "clean" if result.complete else "budget-exhausted"


@dataclass
class VariantRun:
    scenario: str
    variant: str
    expected: str
    result: Result
    settings: str

    @property
    def outcome(self) -> str:
        return outcome_of(self.result)

    @property
    def ok(self) -> bool:
        return self.expected == "" or self.outcome == self.expected

    def as_dict(self) -> dict[str, Any]:
        v = self.result.violation
        return {
            "scenario": self.scenario,
            "variant": self.variant,
            "expected": self.expected or None,
            "outcome": self.outcome,
            "violation": {"kind": violation_kind(v.kind), "title": v.title} if v else None,
            "executions": self.result.executions,
            "complete": self.result.complete,
            "seconds": round(self.result.seconds, 3),
            "token": self.result.token,
            "settings": self.settings,
        }


def _kernel_context(kernel: Kernel) -> str:
    parts = []
    if kernel.release:
        parts.append(f"release={kernel.release}")
    if kernel.without:
        parts.append("without=" + ",".join(kernel.without))
    if kernel.with_:
        parts.append("with=" + ",".join(kernel.with_))
    if kernel.policies:
        parts.append("policies=" + ",".join(f"{k}:{v}" for k, v in kernel.policies))
    return ";".join(parts)


def token_context(sc: Scenario, variant: Variant) -> str:
    if variant.role == "custom":
        return f"{sc.name}/custom;{_kernel_context(variant.kernel)}"
    return f"{sc.name}/{variant.name}"


def parse_context(context: str) -> tuple[str, str, Kernel | None]:
    """``(scenario, variant, kernel)``; kernel only for custom variants."""
    name, sep, rest = context.partition("/")
    if not sep or not name or not rest:
        raise TokenError(f"the token does not name a scenario (context {context!r}); "
                         "replay it with mmrace explore FILE.py:FUNC --token")
    variant, _, spec = rest.partition(";")
    if variant != "custom":
        return name, variant, None
    fields: dict[str, str] = {}
    for part in filter(None, spec.split(";")):
        k, eq, v = part.partition("=")
        if not eq or k not in ("release", "without", "with", "policies"):
            raise TokenError(f"the token's kernel is malformed: {part[:60]!r}")
        fields[k] = v
    pol: list[tuple[str, str]] = []
    for p in filter(None, fields.get("policies", "").split(",")):
        policy, colon, value = p.partition(":")
        if not colon or not policy or not value:
            raise TokenError(f"the token's kernel has a malformed policy: {p[:60]!r} "
                             "(expected POLICY:VALUE)")
        pol.append((policy, value))
    kernel = Kernel(
        release=fields.get("release") or None,
        without=tuple(filter(None, fields.get("without", "").split(","))),
        with_=tuple(filter(None, fields.get("with", "").split(","))),
        policies=tuple(pol),
    )
    try:
        kernel.config()
    except FixError as exc:
        # A hand-edited token naming a release, switch or policy value this
        # mmrace does not know: bad input, not a crash of the model.
        raise TokenError(f"the token's kernel is not valid here: {exc}") from None
    return name, "custom", kernel


def _patches(sc: Scenario) -> Any:
    return patched(dict(sc.patches)) if sc.patches else nullcontext()


def run_variant(
    sc: Scenario,
    variant: Variant,
    *,
    settings: Explore | None = None,
    progress: Callable[[int, float], None] | None = None,
    shrink: bool = True,
) -> VariantRun:
    """Explore one variant with the scenario's settings (or *settings*)."""
    st = settings or sc.explore
    with _patches(sc):
        result = explore(
            sc.program(variant.kernel),
            strategy=st.strategy,
            max_executions=st.max_executions,
            preemption_bound=st.preemption_bound,
            seed=st.seed,
            max_seconds=st.max_seconds,
            shrink=shrink,
            progress=progress,
            token_context=token_context(sc, variant),
        )
    return VariantRun(sc.name, variant.name, variant.expected, result, st.describe())


def replay_token(token: str, lookup: Callable[[str], Scenario]) -> tuple[Scenario, Variant,
                                                                            Result]:
    """Re-run the execution a scenario token records. Raises TokenError or
    ScenarioError."""
    _decisions, context = decode(token)
    name, vname, kernel = parse_context(context)
    sc = lookup(name)
    variant = sc.with_kernel(kernel) if kernel is not None else sc.variant(vname)
    with _patches(sc):
        result = replay(sc.program(variant.kernel), token)
    return sc, variant, result


# How a running variant reports progress: (scenario, variant, executions, seconds).
Running = Callable[[str, str, int, float], None]

# Worker processes put progress here; forked workers inherit it.
_progress_queue: Any = None


def run_all(jobs: Iterable[tuple[Scenario, Variant]], *, workers: int = 1,
            settings: Explore | None = None,
            on_done: Callable[[VariantRun], None] | None = None,
            on_progress: Running | None = None) -> list[VariantRun]:
    """Run variants, in *workers* processes when > 1; results in input order.
    *on_progress* hears about running variants about twice a second (from
    the workers too, relayed through a queue)."""
    todo = list(jobs)
    out: list[VariantRun | None] = [None] * len(todo)
    if workers <= 1 or len(todo) <= 1:
        for i, (sc, v) in enumerate(todo):
            report = None if on_progress is None else partial(on_progress, sc.name, v.name)
            r = run_variant(sc, v, settings=settings, progress=report)
            out[i] = r
            if on_done is not None:
                on_done(r)
        return [r for r in out if r is not None]
    import multiprocessing
    import queue
    import threading
    from concurrent.futures import ProcessPoolExecutor, as_completed

    global _progress_queue
    ctx = multiprocessing.get_context("fork")
    _progress_queue = ctx.Queue() if on_progress is not None else None
    stop = threading.Event()

    def relay() -> None:
        assert on_progress is not None
        while not stop.is_set():
            try:
                on_progress(*_progress_queue.get(timeout=0.2))
            except queue.Empty:
                continue

    relay_thread = threading.Thread(target=relay, daemon=True) if on_progress else None
    if relay_thread is not None:
        relay_thread.start()
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {
                pool.submit(_run_in_worker, sc.name, v.name, _kernel_key(v), settings): i
                for i, (sc, v) in enumerate(todo)
            }
            for fut in as_completed(futures):
                i = futures[fut]
                r = fut.result()
                out[i] = r
                if on_done is not None:
                    on_done(r)
    finally:
        stop.set()
        if relay_thread is not None:
            relay_thread.join()
        _progress_queue = None
    return [r for r in out if r is not None]


def _kernel_key(v: Variant) -> Kernel | None:
    return v.kernel if v.role == "custom" else None


def _run_in_worker(name: str, vname: str, kernel: Kernel | None,
                   settings: Explore | None) -> VariantRun:
    from mmrace.scenarios import get

    sc = get(name)
    variant = sc.with_kernel(kernel) if kernel is not None else sc.variant(vname)
    q = _progress_queue
    report = None
    if q is not None:

        def report(n: int, secs: float) -> None:
            q.put((name, vname, n, secs))

    r = run_variant(sc, variant, settings=settings, progress=report)
    # The trace holds the worker's model objects, which do not cross
    # processes; the token re-renders it (mmrace replay).
    if r.result.violation is not None:
        r.result.violation.trace = []
    return r


__all__ = [
    "ScenarioError",
    "VariantRun",
    "outcome_of",
    "parse_context",
    "replay_token",
    "run_all",
    "run_variant",
    "token_context",
    "violation_kind",
]

"""Running scenario variants: outcomes, tokens, and replay by token.

A token's context string is ``"SCENARIO/VARIANT"`` for catalog variants and
``"SCENARIO/custom;release=..;without=..;with=.."`` for ad-hoc kernels, so
``mmrace replay TOKEN`` knows what to re-run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from mmrace import __version__
from mmrace.engine import Result, TokenError, Violation, explore, frontier, replay
from mmrace.engine.explore import (
    DEFAULT_MAX_STEPS,
    DFS_STRATEGIES,
    make_strategy,
    prepare_run,
    result_of,
    run_once,
    run_unit,
)
from mmrace.engine.frontier import CheckpointError
from mmrace.engine.parallel import Exploration, Outcome, Run, drive
from mmrace.engine.pools import InlinePool, LocalPool, Pool
from mmrace.engine.strategy import DfsStrategy
from mmrace.engine.token import decode
from mmrace.engine.units import Program, ProgramSource, Settings
from mmrace.fixes import FixError
from mmrace.scenarios import get
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
    if result.interrupted:
        return "interrupted"
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
            # a bounded search's first pass: its executions, whether it found
            # the violation (docs/scale.md)
            "quick_pass": self.result.extra.get("quick_pass"),
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


class ScenarioSource(ProgramSource):
    """A catalog variant as a worker rebuilds it: by scenario name and variant
    (or the ad-hoc kernel), with the scenario's patches applied around each
    slice. Picklable, so it also goes to Dask workers."""

    def __init__(self, sc: Scenario, variant: Variant) -> None:
        self.name = sc.name
        self.vname = variant.name
        self.kernel = _kernel_key(variant)
        self.key = token_context(sc, variant)

    def describe(self) -> str:
        return f"scenario {self.name}"

    @contextmanager
    def _open(self) -> Iterator[Program]:
        sc = get(self.name)
        variant = sc.with_kernel(self.kernel) if self.kernel is not None \
            else sc.variant(self.vname)
        with _patches(sc):
            yield sc.program(variant.kernel)

    def open(self) -> AbstractContextManager[Program]:
        return self._open()


# Per process: user files executed for FileSource, by (path, text).
_FILES: dict[tuple[str, str], Any] = {}


class FileSource(ProgramSource):
    """``FILE.py:FUNC`` as a worker rebuilds it from the file's text (so a
    remote worker needs no copy of the file): a program, or with *kernel* a
    scenario function or :class:`Scenario` run on that kernel."""

    def __init__(self, path: str, text: str, func: str, kernel: Kernel | None) -> None:
        self.path = path
        self.text = text
        self.func = func
        self.kernel = kernel
        self.key = f"{path}:{func}"

    def describe(self) -> str:
        return f"program {self.path}:{self.func}"


    def _object(self) -> Any:
        module = _FILES.get((self.path, self.text))
        if module is None:
            import types

            module = types.ModuleType("mmrace_program_" + "".join(
                c if c.isalnum() else "_" for c in Path(self.path).stem))
            module.__file__ = self.path
            exec(compile(self.text, self.path, "exec"), module.__dict__)
            _FILES[(self.path, self.text)] = module
        return getattr(module, self.func)

    @contextmanager
    def _open(self) -> Iterator[Program]:
        obj = self._object()
        if self.kernel is None:
            yield obj
            return
        sc = obj if isinstance(obj, Scenario) else Scenario(name=self.func, summary=self.func,
                                                            fn=obj)
        with _patches(sc):
            yield sc.program(self.kernel)

    def open(self) -> AbstractContextManager[Program]:
        return self._open()


def _kernel_key(v: Variant) -> Kernel | None:
    return v.kernel if v.role == "custom" else None


def _settings_for(st: Explore) -> tuple[str, Settings] | None:
    """The DFS settings of an exploration setting, or None (random, pct)."""
    if st.strategy not in DFS_STRATEGIES:
        return None
    strat = make_strategy(st.strategy, st.preemption_bound, None, 0)
    assert isinstance(strat, DfsStrategy)
    return strat.name, Settings(strat.reduce, strat.bound, DEFAULT_MAX_STEPS, quick_pass=True)


def estimate(sc: Scenario, variant: Variant) -> tuple[int, int]:
    """How big a variant's search looks from one execution: (threads,
    visible operations). ``check`` starts the biggest first."""
    src = ScenarioSource(sc, variant)
    with src.open() as program:
        ex = run_once(program, DfsStrategy(), DEFAULT_MAX_STEPS, {})
    return len(ex.threads), len(ex.events)


# --- results of a check, saved and resumed ---------------------------------------

CHECK_FORMAT = "mmrace-check"
CHECK_VERSION = 1


def _record_key(context: str, settings: str) -> str:
    return f"{context} [{settings}]"


class CheckRecord:
    """What ``mmrace check --save FILE`` keeps: every decided variant's
    result and the frontier of every interrupted one, so ``--resume FILE``
    skips the first and continues the second. Written after every variant
    and every checkpoint interval (atomically)."""

    def __init__(self, path: str | None = None, data: dict[str, Any] | None = None) -> None:
        self.path = path
        self.results: dict[str, dict[str, Any]] = {}
        self.frontiers: dict[str, dict[str, Any]] = {}
        if data is not None:
            self.results = dict(data.get("variants") or {})
            self.frontiers = dict(data.get("frontiers") or {})

    @classmethod
    def read(cls, path: str) -> CheckRecord:
        data = frontier.read(path)
        if data.get("format") != CHECK_FORMAT:
            raise CheckpointError(f"{path} is not a file of mmrace check --save")
        if data.get("version") != CHECK_VERSION:
            raise CheckpointError(f"{path} is in format {data.get('version')!r}; this mmrace "
                                  f"reads format {CHECK_VERSION}")
        if data.get("mmrace") != __version__:
            raise CheckpointError(f"{path} was written by mmrace {data.get('mmrace')}, this "
                                  f"is {__version__}: its results are not this model's")
        variants, frontiers = data.get("variants") or {}, data.get("frontiers") or {}
        if not isinstance(variants, dict) or not isinstance(frontiers, dict) \
                or not all(_well_formed(d) for d in variants.values()) \
                or not all(isinstance(d, dict) for d in frontiers.values()):
            raise CheckpointError(f"{path} is damaged (a variant's record is malformed)")
        return cls(path, data)

    def write(self) -> None:
        if self.path is None:
            return
        frontier.write(self.path, {
            "format": CHECK_FORMAT,
            "version": CHECK_VERSION,
            "mmrace": __version__,
            "variants": self.results,
            "frontiers": self.frontiers,
        })


def _well_formed(d: Any) -> bool:
    """Whether a decided variant's record has what :func:`_restored` reads."""
    if not isinstance(d, dict):
        return False
    v = d.get("violation")
    return (
        isinstance(d.get("scenario"), str) and isinstance(d.get("variant"), str)
        and isinstance(d.get("settings"), str)
        and isinstance(d.get("executions"), int) and isinstance(d.get("complete"), bool)
        and isinstance(d.get("seconds"), (int, float))
        and (v is None or (isinstance(v, dict) and isinstance(v.get("kind"), str)
                           and isinstance(v.get("title"), str)))
    )


def _restored(d: dict[str, Any]) -> VariantRun:
    """A decided variant as a saved record holds it (the trace is not kept:
    the token re-renders it)."""
    v = d.get("violation")
    result = Result(
        strategy=str(d.get("strategy", "")),
        violation=Violation(v["kind"], v["title"], v.get("message", v["title"]), [], [])
        if v else None,
        executions=int(d["executions"]),
        complete=bool(d["complete"]),
        token=d.get("token"),
        seconds=float(d["seconds"]),
    )
    result.extra["resumed"] = True
    if isinstance(d.get("quick_pass"), dict):
        result.extra["quick_pass"] = d["quick_pass"]
    return VariantRun(d["scenario"], d["variant"], d.get("expected") or "", result,
                      d["settings"])


def run_all(jobs: Iterable[tuple[Scenario, Variant]], *, workers: int = 1,
            settings: Explore | None = None,
            on_done: Callable[[VariantRun], None] | None = None,
            on_progress: Running | None = None,
            pool: Pool | None = None,
            should_stop: Callable[[], bool] | None = None,
            record: CheckRecord | None = None,
            checkpoint_every: float = 60.0) -> list[VariantRun]:
    """Run variants; results in input order.

    Every variant's exhaustive search goes over one pool of workers (*pool*,
    or *workers* local processes, started only as work appears), biggest
    variant first; a long variant is split over idle workers (the result is
    the one a serial run gives). Variants with a sampling strategy run here,
    one after the other. *on_progress* hears about running variants about
    twice a second, *on_done* about each variant as it is decided.

    *should_stop* is polled: when it returns True the runs in flight stop
    (under a second) and come back marked interrupted. *record* (``--save``
    / ``--resume``) supplies variants already decided, which are not run
    again, and frontiers to continue; it is rewritten as variants finish and
    every *checkpoint_every* seconds."""
    todo = list(jobs)
    out: list[VariantRun | None] = [None] * len(todo)

    def decided(i: int, r: VariantRun, key: str) -> None:
        out[i] = r
        if record is not None and not r.result.interrupted:
            record.results[key] = _as_record(r)
            record.frontiers.pop(key, None)
            record.write()
        if on_done is not None:
            on_done(r)

    runs: list[Run] = []
    serial: list[int] = []
    for i, (sc, v) in enumerate(todo):
        st = settings or sc.explore
        key = _record_key(token_context(sc, v), st.describe())
        if record is not None and key in record.results:
            decided(i, _restored(record.results[key]), key)
            continue
        dfs = _settings_for(st)
        if dfs is None:
            serial.append(i)
            continue
        runs.append(_variant_run(i, sc, v, st, dfs, key, record, decided, on_progress))
    for i in serial:
        if should_stop is not None and should_stop():
            break
        sc, v = todo[i]
        st = settings or sc.explore
        vr = run_variant(sc, v, settings=settings,
                         progress=None if on_progress is None
                         else partial(on_progress, sc.name, v.name))
        decided(i, vr, _record_key(token_context(sc, v), st.describe()))
    if runs:
        own = pool is None
        # local workers start one by one as work appears (never more than
        # there is work for)
        use = pool if pool is not None else (LocalPool(workers) if workers > 1
                                             else InlinePool())
        if len(runs) > 1 and use.slots > 1:
            for run in runs:
                if run.priority == 0.0:
                    sc, v = todo[run.tag[0]]
                    threads, steps = estimate(sc, v)
                    run.priority = threads * 1_000_000.0 + steps
        saver = None
        if record is not None and record.path is not None:
            def saver(rs: list[Run], now: float) -> None:
                _save_frontiers(record, [x for x in rs if x.outcome is None], now)

        try:
            drive(runs, use, run_unit, should_stop=should_stop, checkpoint=saver,
                  checkpoint_every=checkpoint_every)
        finally:
            if own:
                use.close()
        if record is not None:
            _save_frontiers(record, [x for x in runs if x.outcome is not None
                                     and x.outcome.interrupted], time.perf_counter())
    return [r for r in out if r is not None]


def _variant_run(i: int, sc: Scenario, v: Variant, st: Explore,
                 dfs: tuple[str, Settings], key: str, record: CheckRecord | None,
                 decided: Callable[[int, VariantRun, str], None],
                 on_progress: Running | None) -> Run:
    name, sets = dfs
    src = ScenarioSource(sc, v)
    ctx = token_context(sc, v)
    resume = record.frontiers.get(key) if record is not None else None
    progress = None if on_progress is None else partial(on_progress, sc.name, v.name)
    try:
        run = prepare_run(src, name, sets, ctx, resume=resume,
                          max_executions=st.max_executions, max_seconds=st.max_seconds,
                          progress=progress)
    except CheckpointError:
        # a frontier saved with other settings (the key names them, so this
        # is a damaged file): start afresh
        run = prepare_run(src, name, sets, ctx, max_executions=st.max_executions,
                          max_seconds=st.max_seconds, progress=progress)
    run.tag = (i, key)
    if record is not None and key in record.frontiers:
        prev = record.frontiers[key].get("seconds")
        run.priority = float(prev or 0.0) * 1e9  # known to be long: first

    def done(outcome: Outcome) -> None:
        result = result_of(outcome, src, name, max_steps=sets.max_steps, shrink=True,
                           token_context=ctx, workers=0)
        # Variants share the workers: what a variant took is the time the
        # workers spent on it (its wall time includes waiting for them).
        result.extra["wall_seconds"] = result.seconds
        result.seconds = float(outcome.extra.get("worker_seconds", result.seconds))
        decided(i, VariantRun(sc.name, v.name, v.expected, result, st.describe()), key)

    run.done = done
    return run


def _save_frontiers(record: CheckRecord, runs: list[Run], now: float) -> None:
    for r in runs:
        key = r.tag[1]
        ex = r.exploration
        src = ex.source
        record.frontiers[key] = frontier.dump(
            ex, program=src.describe(), context=src.key, strategy=_strategy_name(ex),
            seconds=r.seconds(now))
    record.write()


def _strategy_name(ex: Exploration) -> str:
    s = ex.settings
    if not s.reduce:
        return "naive"
    return "bounded" if s.bound is not None else "dpor"


def _as_record(r: VariantRun) -> dict[str, Any]:
    d = r.as_dict()
    v = r.result.violation
    if v is not None:
        d["violation"]["message"] = v.message
    d["strategy"] = r.result.strategy
    return d


__all__ = [
    "CheckRecord",
    "FileSource",
    "ScenarioError",
    "ScenarioSource",
    "VariantRun",
    "outcome_of",
    "parse_context",
    "replay_token",
    "run_all",
    "run_variant",
    "token_context",
    "violation_kind",
]

"""Running a program under a strategy: exploration, replay and shrinking."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mmrace.engine import frontier
from mmrace.engine.core import Event, Execution, ViolationError
from mmrace.engine.parallel import Exploration, Outcome, Run, drive
from mmrace.engine.pools import InlinePool, LocalPool, Pool
from mmrace.engine.progress import ProgressDetail, ProgressInfo
from mmrace.engine.snapshot import SNAPSHOT_AFTER, SetupCache
from mmrace.engine.strategy import (
    DecisionReplay,
    DfsStrategy,
    GuidedStrategy,
    PctStrategy,
    RandomStrategy,
    Strategy,
)
from mmrace.engine.token import TokenError, decode, encode
from mmrace.engine.units import (
    LOCALS,
    RUN_LOCK,
    CallableSource,
    ProgramSource,
    Settings,
    UnitJob,
    UnitResult,
    quick_pass_figures,
    setup_for,
)

STRATEGIES = ("dpor", "bounded", "random", "pct", "replay", "naive")
DEFAULT_MAX_STEPS = 20_000


@dataclass
class Violation:
    """What went wrong in one execution, with the execution's trace."""

    kind: str
    title: str
    message: str
    trace: list[Event]
    threads: list[str]
    thread: str | None = None
    preemptions: int = 0

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "title": self.title, "message": self.message}


@dataclass
class Result:
    """The outcome of an exploration."""

    strategy: str
    violation: Violation | None
    executions: int
    complete: bool
    token: str | None
    seconds: float
    blocked: int = 0  # executions cut short by sleep sets (DPOR)
    steps: int = 0  # visible operations executed, over all executions
    shrunk_from: int | None = None  # preemptions before shrinking
    extra: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False  # stopped by the user (Ctrl-C, SIGTERM)

    @property
    def outcome(self) -> str:
        if self.violation is not None:
            return "step-limit" if self.violation.kind == "step-limit" else "violation"
        if self.interrupted:
            return "interrupted"
        return "clean" if self.complete else "budget-exhausted"

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "executions": self.executions,
            "complete": self.complete,
            "seconds": round(self.seconds, 3),
            "violation": self.violation.as_dict() if self.violation else None,
            "token": self.token,
            "quick_pass": self.extra.get("quick_pass"),  # a bounded search's first pass
        }


Program = Callable[[], Any]
Progress = Callable[[int, float], None]
DFS_STRATEGIES = ("dpor", "bounded", "naive")


def make_strategy(
    strategy: str, preemption_bound: int | None, seed: int | None, depth: int
) -> Strategy:
    if strategy == "dpor":
        return DfsStrategy(reduce=True, bound=preemption_bound)
    if strategy == "bounded":
        return DfsStrategy(reduce=True, bound=2 if preemption_bound is None else preemption_bound)
    if strategy == "naive":
        return DfsStrategy(reduce=False, bound=preemption_bound)
    if strategy == "random":
        return RandomStrategy(seed or 0)
    if strategy == "pct":
        return PctStrategy(seed or 0, depth)
    raise ValueError(
        f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})"
    )


class _GcPause:
    """Pauses the cyclic garbage collector while executions run.

    An execution allocates a few long-lived objects per visible operation
    (events, vector clocks, search nodes), none of them in cycles, and they
    all die together when the execution is dropped. With the collector on,
    it scanned them all while they were alive: ~10% of the time of a long
    execution. Instead, collect only between executions, after the previous
    one is gone (``between``), when as many objects are pending as would
    have triggered the collector; garbage cycles the model makes are then
    collected as usual. The oldest generation is left to the collector once
    the exploration returns."""

    def __init__(self) -> None:
        self.on = False

    def __enter__(self) -> _GcPause:
        self.on = gc.isenabled()
        if self.on:
            gc.disable()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.on:
            gc.enable()

    def between(self) -> None:
        if self.on:
            t0, t1, _ = gc.get_threshold()
            c0, c1, _ = gc.get_count()
            if c0 > t0:
                gc.collect(1 if c1 >= t1 else 0)


def run_once(
    program: Program,
    strategy: Strategy,
    max_steps: int,
    exploration_locals: dict[str, Any],
    setup: SetupCache | None = None,
) -> Execution:
    ex = Execution(program, strategy, max_steps, exploration_locals, setup)
    strategy.begin(ex)
    ex.run()
    strategy.end(ex)
    return ex


def _violation(ex: Execution) -> Violation:
    v = ex.violation
    assert v is not None
    return Violation(
        kind=v.kind,
        title=v.title,
        message=v.message,
        trace=ex.events,
        threads=[t.name for t in ex.threads],
        thread=ex.threads[ex.violation_tid].name if ex.violation_tid is not None else None,
        preemptions=ex.preemptions,
    )


@dataclass
class _Tally:
    """What a run of executions did: one exploration's loop, or one slice of
    a unit of a parallel one."""

    executions: int = 0
    blocked: int = 0  # cut short by sleep sets
    steps: int = 0
    depth: int = 0  # decision points of the latest execution
    found: Execution | None = None  # the execution that violated, if one did


def run_executions(
    program: Program,
    strat: Strategy,
    max_steps: int,
    exploration_locals: dict[str, Any],
    setup: SetupCache | None,
    go_on: Callable[[_Tally], bool],
    tally: _Tally | None = None,
) -> _Tally:
    """The exploration loop, one for :func:`explore` and for a parallel
    unit's slice (:func:`run_unit`): run executions while the strategy has
    more and *go_on* (asked before each one, with the figures so far)
    agrees; stop at the first violation. Counts into *tally* if given (the
    bounded search's two passes share one)."""
    if tally is None:
        tally = _Tally()
    with _GcPause() as pause:
        while strat.more() and go_on(tally):
            ex = run_once(program, strat, max_steps, exploration_locals, setup)
            tally.steps += len(ex.events)
            if ex.sleep_blocked:
                tally.blocked += 1
            else:
                tally.executions += 1
            if ex.violation is not None:
                tally.found = ex
                break
            tally.depth = len(ex.decisions)
            # The execution's state is one big reference cycle (threads,
            # greenlets, the model's objects), freed by the collector in
            # pause.between(). Its events hang off it but are in no cycle
            # of their own: dropped here, refcounting frees them and their
            # clocks and details, and the collector has a third less to
            # scan (measured: 9% of an exploration's time in the collector
            # on uffd-wp-protect-unprotect/current, 6.6% after).
            ex.events.clear()
            del ex
            pause.between()
    return tally


def explore(
    program: Program,
    strategy: str = "dpor",
    max_executions: int | None = None,
    preemption_bound: int | None = None,
    seed: int | None = None,
    max_seconds: float | None = None,
    *,
    depth: int = 3,
    max_steps: int = DEFAULT_MAX_STEPS,
    shrink: bool = True,
    progress: Progress | None = None,
    token_context: str = "",
    progress_info: ProgressDetail | None = None,
    setup_snapshot: int | None = SNAPSHOT_AFTER,
    workers: int | None = None,
    pool: Pool | None = None,
    source: ProgramSource | None = None,
    checkpoint: str | None = None,
    checkpoint_every: float = 60.0,
    resume: str | dict[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    quick_pass: bool = True,
) -> Result:
    """Explore *program*'s executions with *strategy* until a violation, the
    end of the search (exhaustive strategies), or a budget runs out.

    A bounded search (``bounded``, or ``dpor`` with a preemption bound)
    starts with a *quick pass* unless *quick_pass* is False: source-DPOR
    with sleep sets whose branches beyond the bound are cut. It finds most
    violations within the bound in a fraction of the executions, and proves
    nothing; then the complete bounded search runs. Executions are counted
    over both; ``Result.extra["quick_pass"]`` has the first pass's figures.

    ``random`` and ``pct`` never complete; without ``max_executions`` or
    ``max_seconds`` they run 1,000 executions. *progress* and
    *progress_info* are called about twice a second.

    After *setup_snapshot* executions the state after set-up is saved and
    later executions start from a copy of it, when that is sound
    (:mod:`mmrace.engine.snapshot`; ``Result.extra["setup_snapshot"]`` says
    whether it was used); None runs set-up in every execution. Split over
    workers, each worker does this for itself.

    The exhaustive strategies (``dpor``, ``bounded``, ``naive``) can split
    their tree over *workers* local processes, or over a given *pool*
    (:mod:`mmrace.engine.parallel`); the result is the serial one (see
    there). *source* says how a worker gets the program (default: the
    callable itself, which forked local workers inherit). *checkpoint*
    names a file the frontier is saved to every *checkpoint_every* seconds
    and when stopped; *resume* continues from one (a path or its data).
    *should_stop* is polled between executions (or slices): when it returns
    True the exploration stops with ``interrupted`` set."""
    if strategy == "replay":
        raise ValueError("use replay(program, token) for the replay strategy")
    if workers is not None and workers < 1:
        raise ValueError("workers must be at least 1")
    parallel = (workers or 1) > 1 or pool is not None or checkpoint is not None \
        or resume is not None
    if parallel:
        if strategy not in DFS_STRATEGIES:
            raise ValueError(
                f"workers, checkpoints and resuming apply to {', '.join(DFS_STRATEGIES)}, "
                f"not to {strategy}"
            )
        return _explore_split(
            program, strategy, preemption_bound, max_executions, max_seconds,
            max_steps=max_steps, shrink=shrink, progress=progress,
            progress_info=progress_info, setup_snapshot=setup_snapshot,
            token_context=token_context, workers=workers or 1, pool=pool, source=source,
            checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
            should_stop=should_stop, quick_pass=quick_pass,
        )
    strat = make_strategy(strategy, preemption_bound, seed, depth)
    if max_executions is None and max_seconds is None and not strat.complete_when_done:
        max_executions = 1000
    locals_: dict[str, Any] = {}
    cache = (
        SetupCache(program, locals_, setup_snapshot) if setup_snapshot is not None else None
    )
    start = time.perf_counter()
    last_progress = start
    interrupted = False

    def go_on(t: _Tally) -> bool:
        nonlocal last_progress, interrupted
        if max_executions is not None and t.executions >= max_executions:
            return False
        now = time.perf_counter()
        if max_seconds is not None and now - start >= max_seconds:
            return False
        if should_stop is not None and should_stop():
            interrupted = True
            return False
        if now - last_progress >= 0.5 and (progress or progress_info):
            last_progress = now
            if progress is not None:
                progress(t.executions, now - start)
            if progress_info is not None:
                progress_info(ProgressInfo(t.executions, now - start, t.depth, t.steps))
        return True

    tally = _Tally()
    quick: dict[str, Any] | None = None
    if quick_pass and isinstance(strat, DfsStrategy) and strat.compensate:
        first = DfsStrategy(reduce=True, bound=strat.bound, quick=True)
        run_executions(program, first, max_steps, locals_, cache, go_on, tally)
        quick = quick_pass_figures(tally.executions, tally.blocked, tally.found is not None,
                                   not first.more() and tally.found is None)
    if tally.found is None:
        run_executions(program, strat, max_steps, locals_, cache, go_on, tally)
    found = tally.found
    complete = found is None and strat.complete_when_done and not strat.more()
    result = Result(
        strategy=strat.name,
        violation=None,
        executions=tally.executions,
        complete=complete,
        token=None,
        seconds=0.0,
        blocked=tally.blocked,
        steps=tally.steps,
        interrupted=interrupted,
    )
    if quick is not None:
        result.extra["quick_pass"] = quick
    if found is not None:
        _report(result, program, found, max_steps, locals_, shrink, token_context, cache)
    result.seconds = time.perf_counter() - start
    if cache is not None:
        result.extra["setup_snapshot"] = cache.status
    return result


def _report(result: Result, program: Program, found: Execution, max_steps: int,
            locals_: dict[str, Any], shrink: bool, token_context: str,
            setup: SetupCache | None) -> None:
    """Put a violating execution (shrunk if asked) and its token in *result*."""
    if shrink and found.violation is not None and found.violation.kind != "step-limit":
        before = found.preemptions
        with _GcPause() as pause:
            found = shrink_execution(program, found, max_steps, locals_, pause=pause,
                                     setup=setup)
        if found.preemptions < before:
            result.shrunk_from = before
    result.violation = _violation(found)
    result.token = encode(found.decisions, token_context)


def _explore_split(
    program: Program,
    strategy: str,
    preemption_bound: int | None,
    max_executions: int | None,
    max_seconds: float | None,
    *,
    max_steps: int,
    shrink: bool,
    progress: Progress | None,
    progress_info: ProgressDetail | None,
    setup_snapshot: int | None,
    token_context: str,
    workers: int,
    pool: Pool | None,
    source: ProgramSource | None,
    checkpoint: str | None,
    checkpoint_every: float,
    resume: str | dict[str, Any] | None,
    should_stop: Callable[[], bool] | None,
    quick_pass: bool,
) -> Result:
    """:func:`explore` for a DFS strategy through the parallel driver."""
    strat = make_strategy(strategy, preemption_bound, None, 0)
    assert isinstance(strat, DfsStrategy)
    settings = Settings(strat.reduce, strat.bound, max_steps, setup_snapshot,
                        quick_pass=quick_pass)
    src = source if source is not None else CallableSource(program)
    run = prepare_run(src, strategy, settings, token_context, resume=resume,
                      max_executions=max_executions, max_seconds=max_seconds,
                      progress=progress)
    run.progress_info = progress_info
    saver = None
    if checkpoint is not None:
        saver = checkpoint_saver(checkpoint, src, strategy, token_context)
    own = pool is None
    use = pool if pool is not None else (LocalPool(workers) if workers > 1 else InlinePool())
    try:
        drive([run], use, run_unit, should_stop=should_stop, checkpoint=saver,
              checkpoint_every=checkpoint_every)
        if saver is not None:
            saver([run], time.perf_counter())
        assert run.outcome is not None
        return result_of(run.outcome, src, strat.name, max_steps=max_steps, shrink=shrink,
                         token_context=token_context, workers=use.slots)
    finally:
        if own:
            use.close()
        if source is None and isinstance(src, CallableSource):
            src.release()


_names = 0


def prepare_run(src: ProgramSource, strategy: str, settings: Settings, token_context: str,
                *, resume: str | dict[str, Any] | None = None,
                max_executions: int | None = None, max_seconds: float | None = None,
                progress: Progress | None = None) -> Run:
    """A :class:`Run` of one exploration, fresh or from a checkpoint (a
    path or its data; CheckpointError if it does not fit)."""
    global _names
    _names += 1
    name = f"{src.key}#{_names}"
    before = 0.0
    if resume is not None:
        data = frontier.read(resume) if not isinstance(resume, dict) else resume
        where = str(resume) if not isinstance(resume, dict) else "the checkpoint"
        frontier.check(data, where=where, program=src.describe(), context=token_context,
                       strategy=strategy, settings=settings)
        ex = frontier.load(data, name, src, settings)
        before = float(data.get("seconds") or 0.0)
    else:
        ex = Exploration(name, src, settings)
    return Run(ex, max_executions=max_executions, max_seconds=max_seconds, progress=progress,
               elapsed_before=before)


def checkpoint_saver(path: str, src: ProgramSource, strategy: str, token_context: str
                     ) -> Callable[[list[Run], float], None]:
    """A ``drive`` checkpoint callback that writes the first run's frontier."""

    def save(runs: list[Run], now: float) -> None:
        r = runs[0]
        frontier.write(path, frontier.dump(
            r.exploration, program=src.describe(), context=token_context,
            strategy=strategy, seconds=r.seconds(now)))

    return save


def result_of(out: Outcome, src: ProgramSource, strategy_name: str, *, max_steps: int,
              shrink: bool, token_context: str, workers: int) -> Result:
    """The :class:`Result` of a parallel exploration: the serial search's
    figures; the violation re-run here from its decisions (and shrunk)."""
    decided = out.complete or out.violation is not None
    figures = out.committed if decided else out.performed
    result = Result(
        strategy=strategy_name,
        violation=None,
        executions=figures.executions,
        complete=out.complete,
        token=None,
        seconds=float(out.extra.get("seconds", 0.0)),
        blocked=figures.blocked,
        steps=figures.steps,
        interrupted=out.interrupted and not decided,
    )
    result.extra.update({
        "workers": workers,
        "units": out.units,
        "splits": out.splits,
        "discarded_executions": out.performed.executions - out.committed.executions
        if decided else 0,
        "worker_seconds": out.extra.get("worker_seconds", 0.0),
    })
    if out.extra.get("quick_pass") is not None:
        result.extra["quick_pass"] = out.extra["quick_pass"]
    if out.extra.get("setup_snapshot"):
        # as a worker last saw it (each worker saves its own)
        result.extra["setup_snapshot"] = out.extra["setup_snapshot"]
    if out.violation is not None:
        decisions, kind, title = out.violation
        locals_: dict[str, Any] = {}
        # RUN_LOCK: one program runs per process at a time (the engine's
        # current execution is per process), and a pool may run workers as
        # threads of this one (Dask in-process)
        with RUN_LOCK, src.open() as program, _GcPause():
            found = run_once(program, DecisionReplay(list(decisions)), max_steps, locals_)
            if found.violation is not None and (found.violation.kind, found.violation.title
                                                ) == (kind, title):
                _report(result, program, found, max_steps, locals_, shrink, token_context,
                        SetupCache(program, locals_))
            else:
                result.violation = Violation(
                    kind="nondeterminism",
                    title="a worker's violation did not repeat in the coordinator",
                    message=f"a worker found {kind}: {title}, but re-running its decisions "
                    "here did not: the program must be deterministic given the engine's "
                    "decisions",
                    trace=found.events,
                    threads=[t.name for t in found.threads],
                )
    return result


def replay(program: Program, token: str, *, max_steps: int = DEFAULT_MAX_STEPS) -> Result:
    """Re-run the one execution a token records. Raises TokenError if the
    token is malformed or does not fit the program."""
    decisions, context = decode(token)
    return replay_decisions(program, decisions, max_steps=max_steps, token_context=context)


def replay_decisions(
    program: Program,
    decisions: list[int],
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
    token_context: str = "",
) -> Result:
    start = time.perf_counter()
    strat = _StackRecordingReplay(decisions)
    with _GcPause():
        ex = run_once(program, strat, max_steps, {})
    if strat.error is not None:
        raise TokenError(strat.error)
    result = Result(
        strategy="replay",
        violation=_violation(ex) if ex.violation else None,
        executions=1,
        complete=True,
        token=encode(ex.decisions, token_context),
        seconds=time.perf_counter() - start,
        steps=len(ex.events),
    )
    result.extra["stacks"] = strat.stacks
    return result


class _StackRecordingReplay(DecisionReplay):
    """A replay that also records, per event, the whole ``where`` stack of
    its thread (events keep only the innermost function): the kernel
    functions a trace viewer draws as nested slices. One execution, so the
    copies cost nothing that matters; explorations do not pay for them."""

    def __init__(self, decisions: list[int]) -> None:
        super().__init__(decisions)
        self.stacks: list[tuple[str, ...]] = []

    def on_event(self, ex: Execution, ev: Event) -> None:
        self.stacks.append(tuple(ex.threads[ev.tid].where))


def run_unit(job: UnitJob) -> UnitResult:
    """Run one unit of a parallel exploration for a slice (in a worker;
    module-level, so that any worker can find it): the explorer's loop
    (:func:`run_executions`) from the unit's search state, with the
    worker's set-up snapshot of the exploration."""
    start = time.perf_counter()
    with RUN_LOCK:
        locals_ = LOCALS.setdefault(job.exploration, {})
        strat = job.settings.strategy()
        strat.load(job.state)
        deadline = start + job.seconds

        def go_on(t: _Tally) -> bool:
            # a slice runs at least one execution, then until its deadline
            # or execution budget
            if t.executions == 0 and t.blocked == 0:
                return True
            if time.perf_counter() >= deadline:
                return False
            return job.max_executions is None or t.executions < job.max_executions

        with job.source.open() as opened:
            program, cache = setup_for(job.exploration, opened, job.settings, locals_)
            tally = run_executions(program, strat, job.settings.max_steps, locals_, cache,
                                   go_on)
        violation: list[Any] | None = None
        if tally.found is not None:
            v = tally.found.violation
            assert v is not None
            violation = [list(tally.found.decisions), v.kind, v.title]
        done = violation is not None or not strat.more()
        return UnitResult(
            records=strat.out,
            executions=tally.executions,
            blocked=tally.blocked,
            steps=tally.steps,
            violation=violation,
            state=None if done else strat.snapshot(),
            seconds=time.perf_counter() - start,
            depth=tally.depth,
            setup=cache.status if cache is not None else "",
        )


def _same(a: ViolationError | None, b: ViolationError | None) -> bool:
    return a is not None and b is not None and a.kind == b.kind and a.title == b.title


def shrink_execution(
    program: Program,
    ex: Execution,
    max_steps: int,
    exploration_locals: dict[str, Any],
    budget: int = 200,
    pause: _GcPause | None = None,
    setup: SetupCache | None = None,
) -> Execution:
    """Look for an execution with the same violation and fewer preemptions.

    Each attempt takes one switch away from a thread *a* and lets *a* carry
    on there: first with its whole next run of steps (which removes the
    switch, and usually the one back), then, if no such attempt helps, with
    just one more step. The rest follows the original order as closely as
    the program allows. Accept any attempt that keeps the same violation
    with fewer preemptions; repeat until no attempt helps or the budget of
    runs is spent. (Moving single steps only, as this used to, rarely
    removes a switch: a random schedule shrank from ~25 preemptions to ~9.)"""
    best = ex
    runs = 0
    improved = True
    while improved and runs < budget and best.preemptions > 0:
        improved = False
        for order in _shrink_candidates(best.schedule):
            if runs >= budget:
                break
            runs += 1
            cand = run_once(
                program, GuidedStrategy(order, best.choices), max_steps, exploration_locals,
                setup,
            )
            if _same(cand.violation, best.violation) and cand.preemptions < best.preemptions:
                best = cand
                improved = True
                break
            del cand
            if pause is not None:
                pause.between()
    return best


def _shrink_candidates(sched: list[int]) -> Iterator[list[int]]:
    switches = [i for i in range(1, len(sched)) if sched[i - 1] != sched[i]]
    nexts: list[tuple[int, int]] = []
    for i in switches:
        a = sched[i - 1]
        try:
            k = sched.index(a, i)
        except ValueError:
            continue
        nexts.append((i, k))
    for i, k in nexts:
        a = sched[k]
        e = k
        while e < len(sched) and sched[e] == a:
            e += 1
        yield sched[:i] + sched[k:e] + sched[i:k] + sched[e:]
    for i, k in nexts:
        if k + 1 < len(sched) and sched[k + 1] == sched[k]:  # else tried above
            yield sched[:i] + [sched[k]] + sched[i:k] + sched[k + 1 :]

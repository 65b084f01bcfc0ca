"""Running a program under a strategy: exploration, replay and shrinking."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mmrace.engine.core import Event, Execution, ViolationError
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

    @property
    def outcome(self) -> str:
        if self.violation is not None:
            return "step-limit" if self.violation.kind == "step-limit" else "violation"
        return "clean" if self.complete else "budget-exhausted"

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "executions": self.executions,
            "complete": self.complete,
            "seconds": round(self.seconds, 3),
            "violation": self.violation.as_dict() if self.violation else None,
            "token": self.token,
        }


Program = Callable[[], Any]
Progress = Callable[[int, float], None]


@dataclass(frozen=True)
class ProgressInfo:
    """What a long exploration reports about itself (``explore(...,
    progress_info=...)``, at the cadence of ``progress``)."""

    executions: int
    seconds: float
    depth: int  # decision points (more than one option) of the latest execution
    steps: int  # visible operations run so far, over all executions

    @property
    def rate(self) -> float:
        """Executions per second."""
        return self.executions / self.seconds if self.seconds > 0 else 0.0


ProgressDetail = Callable[[ProgressInfo], None]


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
) -> Result:
    """Explore *program*'s executions with *strategy* until a violation, the
    end of the search (exhaustive strategies), or a budget runs out.

    ``random`` and ``pct`` never complete; without ``max_executions`` or
    ``max_seconds`` they run 1,000 executions. *progress* and
    *progress_info* are called about twice a second.

    After *setup_snapshot* executions the state after set-up is saved and
    later executions start from a copy of it, when that is sound
    (:mod:`mmrace.engine.snapshot`; ``Result.extra["setup_snapshot"]`` says
    whether it was used); None runs set-up in every execution."""
    if strategy == "replay":
        raise ValueError("use replay(program, token) for the replay strategy")
    strat = make_strategy(strategy, preemption_bound, seed, depth)
    if max_executions is None and max_seconds is None and not strat.complete_when_done:
        max_executions = 1000
    locals_: dict[str, Any] = {}
    cache = (
        SetupCache(program, locals_, setup_snapshot) if setup_snapshot is not None else None
    )
    start = time.perf_counter()
    executions = 0
    blocked = 0
    steps = 0
    last_progress = start
    found: Execution | None = None
    with _GcPause() as pause:
        while strat.more():
            if max_executions is not None and executions >= max_executions:
                break
            now = time.perf_counter()
            if max_seconds is not None and now - start >= max_seconds:
                break
            ex = run_once(program, strat, max_steps, locals_, cache)
            steps += len(ex.events)
            if ex.sleep_blocked:
                blocked += 1
            else:
                executions += 1
            if ex.violation is not None:
                found = ex
                break
            depth = len(ex.decisions)
            del ex
            pause.between()
            if now - last_progress >= 0.5 and (progress or progress_info):
                last_progress = now
                if progress is not None:
                    progress(executions, now - start)
                if progress_info is not None:
                    progress_info(ProgressInfo(executions, now - start, depth, steps))
    complete = found is None and strat.complete_when_done and not strat.more()
    result = Result(
        strategy=strat.name,
        violation=None,
        executions=executions,
        complete=complete,
        token=None,
        seconds=0.0,
        blocked=blocked,
        steps=steps,
    )
    if found is not None:
        if shrink and found.violation is not None and found.violation.kind != "step-limit":
            before = found.preemptions
            with _GcPause() as pause:
                found = shrink_execution(
                    program, found, max_steps, locals_, pause=pause, setup=cache
                )
            if found.preemptions < before:
                result.shrunk_from = before
        result.violation = _violation(found)
        result.token = encode(found.decisions, token_context)
    result.seconds = time.perf_counter() - start
    if cache is not None:
        result.extra["setup_snapshot"] = cache.status
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

"""What a worker of a parallel exploration runs: the program's source, the
search settings, a unit's job and its result (see :mod:`mmrace.engine.parallel`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from mmrace.engine.snapshot import SNAPSHOT_AFTER, SetupCache
from mmrace.engine.strategy import DfsStrategy, Record

Program = Callable[[], Any]


class PoolError(Exception):
    """The workers cannot be had: a pool that cannot start, a scheduler that
    cannot be reached, a worker that died. A usage error for the CLI."""


class ProgramSource:
    """How a worker gets the program: picklable, and named (the name goes in
    checkpoints). ``open()`` is entered around every slice a worker runs (a
    scenario patches model functions there)."""

    key = "program"

    def open(self) -> AbstractContextManager[Program]:
        raise NotImplementedError

    def describe(self) -> str:
        return self.key


# Callables handed to local workers by inheritance: a forked worker finds the
# program here under its key (closures do not pickle).
_INHERITED: dict[str, Program] = {}


class CallableSource(ProgramSource):
    """A program given as a callable. It reaches local workers by
    inheritance (they are forked after it is made), so it can be any
    closure; it cannot go to Dask workers, nor to local workers started
    before it was made (a PoolError says so). *name* names it in
    checkpoints (default: its qualified name)."""

    _made = 0

    def __init__(self, program: Program, name: str | None = None) -> None:
        self.program = program
        self.name = name or f"{getattr(program, '__module__', '?')}." \
                            f"{getattr(program, '__qualname__', 'program')}"
        CallableSource._made += 1
        self.key = f"{self.name}#{CallableSource._made}"  # unique: closures share names
        _INHERITED[self.key] = program

    def describe(self) -> str:
        return self.name

    def release(self) -> None:
        """Forget the callable (in this process) once its exploration is over."""
        _INHERITED.pop(self.key, None)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_inherited, (self.key, self.name))

    @contextmanager
    def _open(self) -> Iterator[Program]:
        yield self.program

    def open(self) -> AbstractContextManager[Program]:
        return self._open()


def _inherited(key: str, name: str) -> CallableSource:
    program = _INHERITED.get(key)
    if program is None:
        raise PoolError(
            f"program {name!r} is not available in this worker: a callable only reaches "
            "local workers started after it was given; give other workers a ProgramSource "
            "they can rebuild"
        )
    src = CallableSource.__new__(CallableSource)
    src.program = program
    src.key = key
    src.name = name
    return src


@dataclass(frozen=True)
class Settings:
    """The search every unit of one exploration runs."""

    reduce: bool
    bound: int | None
    max_steps: int
    # executions before the state after set-up is saved (per worker); None:
    # set-up runs in every execution. Not part of a checkpoint: it changes
    # how fast executions start, never what they do.
    setup_snapshot: int | None = SNAPSHOT_AFTER
    # A bounded search: the exploration starts with a quick pass
    # (explore(quick_pass=...)); ``quick``: the units run that pass.
    quick_pass: bool = False
    quick: bool = False

    def strategy(self) -> DfsStrategy:
        return DfsStrategy(reduce=self.reduce, bound=self.bound, quick=self.quick)

    @property
    def has_quick_pass(self) -> bool:
        return self.quick_pass and self.reduce and self.bound is not None


def quick_pass_figures(executions: int, blocked: int, found: bool, complete: bool
                       ) -> dict[str, Any]:
    """What a bounded search's quick pass did, as ``Result.extra["quick_pass"]``
    has it (serial or split)."""
    return {"executions": executions, "blocked": blocked, "found": found,
            "complete": complete}


@dataclass
class UnitJob:
    exploration: str  # names the exploration (per-process state is kept by it)
    source: ProgramSource
    settings: Settings
    state: dict[str, Any]
    seconds: float  # the slice: stop after this long, between executions
    max_executions: int | None = None


@dataclass
class UnitResult:
    records: list[Record]
    executions: int
    blocked: int
    steps: int
    violation: list[Any] | None  # [decisions, kind, title]
    state: dict[str, Any] | None  # None when the unit's search is over
    seconds: float = 0.0
    depth: int = 0  # decision points of the slice's latest execution
    setup: str = ""  # the worker's set-up snapshot status (SetupCache.status)


# Per worker process: exploration-wide state by exploration, and one unit at
# a time (the engine runs one program per process: Dask may run tasks in
# threads).
LOCALS: dict[str, dict[str, Any]] = {}
RUN_LOCK = threading.Lock()

# Per worker process: the program and set-up snapshot of the explorations it
# ran slices of lately, by exploration. A worker runs later slices of an
# exploration with the program object of its first one (a source may build a
# new one each time it is opened), as a serial exploration runs one program
# throughout: that is what the snapshot refers to. Only the most recent few
# are kept (workers are not told when an exploration ends); one that is
# dropped only costs its set-up again.
SETUPS: OrderedDict[str, tuple[Program, SetupCache]] = OrderedDict()
SETUPS_KEPT = 8


def setup_for(exploration: str, program: Program, settings: Settings,
              exploration_locals: dict[str, Any]) -> tuple[Program, SetupCache | None]:
    """The program and set-up cache a worker's slice of *exploration* runs
    with (*program* is the one its source just opened)."""
    if settings.setup_snapshot is None:
        return program, None
    kept = SETUPS.get(exploration)
    if kept is None:
        kept = (program, SetupCache(program, exploration_locals, settings.setup_snapshot))
        SETUPS[exploration] = kept
        while len(SETUPS) > SETUPS_KEPT:
            SETUPS.popitem(last=False)
    else:
        SETUPS.move_to_end(exploration)
    return kept


Runner = Callable[[UnitJob], UnitResult]
"""Runs one unit slice (``explore.run_unit``; given to the pools, so that
this module does not depend on the explorer's execution loop)."""


def forget(exploration: str) -> None:
    """Drop a finished exploration's per-process state (in this process)."""
    LOCALS.pop(exploration, None)
    SETUPS.pop(exploration, None)

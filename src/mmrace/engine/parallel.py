"""One exploration over many workers: the DPOR tree split into subtrees.

A *unit* is a depth-first search of one subtree: the choices that lead to
its root (replayed, never explored: nodes below its *floor*) and the nodes
of its own search. A worker runs a unit for a slice of time and returns what
it found -- executions counted, backtrack points for the nodes above its
floor (*records*, in the order found), a violation -- and, if it is not
done, its state, which can be run further or split.

The coordinator holds the nodes that are shared by several units
(*c-nodes*). Splitting a unit promotes its nodes from the floor down to the
shallowest one with branches left to c-nodes; each of those branches becomes
a unit, and the rest of the unit goes on below.

**Why the result does not depend on the number of workers.** The serial
search explores the branches of a node in the order they were added (first
in, first out), and a branch's sleep set depends only on the branches added
before it. So a branch's whole subtree -- every execution in it, every
record it makes for nodes above -- is a function of the branch alone, and
can be explored anywhere, any time. What does depend on order is what the
records do at a shared node (source-DPOR adds a thread only if none of the
race's initials is there already): a c-node applies the records of its
branches strictly in branch order, holding back those of a branch until the
branches before it are complete. The coordinator thus replays, exactly, the
sequence of events of the serial search: the executions counted, the
branches added, and the first violation in search order, which is the one
reported (its token is that execution's decisions). Work done after it
(later branches, run speculatively by other workers) is discarded and
counted apart. No execution is run twice: every execution belongs to one
unit.

One exception: state that lives across the executions of an exploration
(``exploration_local``, lockdep's dependency graph) is per worker process,
so a lock-order inversion whose two halves occur only in two different
executions may be reported at another execution, or not at all, with more
than one worker. Within one execution (two threads taking locks in opposite
orders) it is found the same way.

Workers are local processes, the calling process or a Dask cluster
(:mod:`mmrace.engine.pools`); what they run is in :mod:`mmrace.engine.units`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from mmrace.engine.pools import Pool
from mmrace.engine.progress import ProgressDetail, ProgressInfo
from mmrace.engine.strategy import (
    Record,
    _Node,
    has_branches,
    next_branch,
    node_data,
    node_from_data,
    sleepers,
)
from mmrace.engine.units import (
    ProgramSource,
    Runner,
    Settings,
    UnitJob,
    UnitResult,
    forget,
    quick_pass_figures,
)

# --- the coordinator's tree --------------------------------------------------------


class _Branch:
    """One branch of a c-node (or the root): its subtree is a unit or a
    c-node; ``items`` are what the subtree reported and the node has not
    consumed yet."""

    __slots__ = ("option", "child", "items", "owner")

    def __init__(self, option: int, child: _CNode | _Unit, owner: _CNode | None) -> None:
        self.option = option
        self.child = child
        self.owner = owner  # the c-node it is a branch of (None: the root)
        self.items: deque[Record] = deque()


class _CNode:
    """A node shared by several units, held by the coordinator."""

    __slots__ = ("index", "node", "prefix", "parent", "branches", "head", "out", "complete")

    def __init__(self, index: int, node: _Node, prefix: list[list[Any]],
                 parent: _Branch) -> None:
        self.index = index
        self.node = node
        self.prefix = prefix  # the nodes above it, as data, choosing the way here
        self.parent = parent
        self.branches: list[_Branch] = []
        self.head = 0  # branches before it are complete and consumed
        self.out: deque[Record] = deque()  # items for the nodes above, in order
        self.complete = False


class _Unit:
    __slots__ = ("uid", "state", "branch", "status", "handle", "complete")

    def __init__(self, uid: int, state: dict[str, Any]) -> None:
        self.uid = uid
        self.state = state
        self.branch: _Branch | None = None
        self.status = "ready"  # ready | running | done | cancelled
        self.handle: Any = None
        self.complete = False


# Stream items besides records: ("n", executions, blocked, steps) and
# ("v", decisions, kind, title).


@dataclass
class Totals:
    executions: int = 0
    blocked: int = 0
    steps: int = 0

    def add(self, executions: int, blocked: int, steps: int) -> None:
        self.executions += executions
        self.blocked += blocked
        self.steps += steps


@dataclass
class Outcome:
    """How a parallel exploration ended."""

    complete: bool  # the search ran to its end (no violation, no budget stop)
    violation: list[Any] | None  # [decisions, kind, title], first in search order
    committed: Totals  # the serial search's figures
    performed: Totals  # everything the workers ran (includes discarded work)
    interrupted: bool = False
    units: int = 0
    splits: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Exploration:
    """The coordinator of one exploration: a tree of c-nodes over units."""

    def __init__(self, name: str, source: ProgramSource, settings: Settings,
                 state: dict[str, Any] | None = None) -> None:
        self.name = name
        self.source = source
        self.settings = settings
        # A bounded search's two passes (see explore()): the quick pass's
        # tree first, then the complete search's; each is merged in its own
        # search order, as the serial search runs them one after the other.
        self.phase = "quick" if settings.has_quick_pass else "full"
        self.quick_done: list[int] | None = None  # [executions, blocked] of the quick pass
        self.strat = self.unit_settings().strategy()  # applies records to c-nodes
        self.uids = 0
        self.ready: list[_Unit] = []
        self.running: list[_Unit] = []
        self.committed = Totals()
        self.performed = Totals()
        self.violation: list[Any] | None = None
        self.finished = False
        self.splits = 0
        self.busy = 0.0  # seconds workers spent on its units
        self.depth = 0  # decision points of the latest execution a worker reported
        self.setup = ""  # the latest worker's set-up snapshot status
        self.root = _Branch(-1, self._new_unit({"nodes": [], "floor": 0, "finished": False}),
                            None)
        self._link(self.root)
        if state is not None:
            self._load(state)

    # -- units ------------------------------------------------------------------

    def _new_unit(self, state: dict[str, Any]) -> _Unit:
        self.uids += 1
        u = _Unit(self.uids, state)
        self.ready.append(u)
        return u

    @staticmethod
    def _link(branch: _Branch) -> None:
        child = branch.child
        if isinstance(child, _Unit):
            child.branch = branch

    def unit_settings(self) -> Settings:
        """What the units of the current pass run."""
        return replace(self.settings, quick=self.phase == "quick")

    def job(self, unit: _Unit, seconds: float, max_executions: int | None) -> UnitJob:
        return UnitJob(self.name, self.source, self.unit_settings(), unit.state, seconds,
                       max_executions)

    def key(self, unit: _Unit) -> tuple[int, ...]:
        """The unit's place in search order (branch positions from the root)."""
        out: list[int] = []
        b = unit.branch
        while b is not None and b.owner is not None:
            out.append(b.owner.branches.index(b))
            b = b.owner.parent
        out.reverse()
        return tuple(out)

    def take_ready(self) -> _Unit | None:
        """The ready unit first in search order (it unblocks the merge and,
        when there is a violation to find, is the one that counts)."""
        if not self.ready:
            return None
        best = min(self.ready, key=self.key)
        self.ready.remove(best)
        best.status = "running"
        self.running.append(best)
        return best

    def on_result(self, unit: _Unit, res: UnitResult, want_split: int) -> None:
        """Take a unit's slice into the tree; split it if *want_split* more
        units are wanted."""
        self.performed.add(res.executions, res.blocked, res.steps)
        self.busy += res.seconds
        self.depth = res.depth or self.depth
        self.setup = res.setup or self.setup
        self.running.remove(unit)
        if unit.status == "cancelled":
            return
        b = unit.branch
        assert b is not None
        b.items.extend(res.records)
        b.items.append(("n", res.executions, res.blocked, res.steps))
        if res.violation is not None:
            b.items.append(("v", *res.violation))
        if res.state is None:
            unit.status = "done"
            unit.complete = True
        else:
            unit.state = res.state
            unit.status = "ready"
            self.ready.append(unit)
            while want_split > 0 and unit.status == "ready":
                made = self._split(unit)
                if not made:
                    break
                want_split -= made
        self._drain_all()

    # -- splitting ----------------------------------------------------------------

    def _split(self, unit: _Unit) -> int:
        """Promote the unit's nodes from its floor to the shallowest one with
        branches left; each of those branches becomes a unit. Returns how many
        units were made."""
        state = unit.state
        datas = state["nodes"]
        floor = int(state["floor"])
        nodes = [node_from_data(d) for d in datas[floor:]]
        m = next((i for i, n in enumerate(nodes) if has_branches(n)), -1)
        if m < 0:
            return 0
        b = unit.branch
        assert b is not None
        prefix = [list(d) for d in datas[:floor]]
        parent_branch = b
        cn: _CNode | None = None
        for k in range(m + 1):
            node = nodes[k]
            cn = _CNode(floor + k, node, prefix, parent_branch)
            parent_branch.child = cn
            branch = _Branch(node.chosen, unit, cn)
            cn.branches.append(branch)
            prefix = [*prefix, datas[floor + k]]
            parent_branch = branch
        assert cn is not None
        unit.branch = parent_branch
        # the unit goes on below the promoted nodes
        new_nodes = list(datas)
        for k in range(m + 1):
            d = list(new_nodes[floor + k])
            d[11] = None  # its branches left are the coordinator's now
            new_nodes[floor + k] = d
        unit.state = {"nodes": new_nodes, "floor": floor + m + 1, "finished": False}
        self.splits += 1
        return self._spawn(cn)

    def _spawn(self, cn: _CNode) -> int:
        """Make units for the branches left at a c-node, in queue order."""
        made = 0
        node = cn.node
        while True:
            q = next_branch(node)
            if q < 0:
                return made
            slept = sleepers(node, q) if self.strat.use_sleep else 0
            d = node_data(node, chosen=q, slept=slept)
            d[11] = None
            u = self._new_unit({"nodes": [*cn.prefix, d], "floor": cn.index + 1,
                                "finished": False})
            branch = _Branch(q, u, cn)
            u.branch = branch
            cn.branches.append(branch)
            made += 1

    # -- merging in search order --------------------------------------------------

    def _drain_all(self) -> None:
        root = self.root
        self._pull(root)
        while root.items:
            it = root.items.popleft()
            if it[0] == "n":
                self.committed.add(it[1], it[2], it[3])
            elif it[0] == "v":
                self.violation = list(it[1:])
                self._cancel(root.child)
                self.finished = True
                return
            else:
                raise AssertionError(f"record for no node: {it}")
        if self._complete(root):
            if self.phase == "quick":
                self._full_pass()
            else:
                self.finished = True

    def _full_pass(self) -> None:
        """The quick pass is over without a violation: the complete bounded
        search starts, from a fresh root."""
        self.phase = "full"
        self.quick_done = [self.committed.executions, self.committed.blocked]
        self.strat = self.unit_settings().strategy()
        self.root = _Branch(-1, self._new_unit({"nodes": [], "floor": 0, "finished": False}),
                            None)
        self._link(self.root)

    def _complete(self, b: _Branch) -> bool:
        child = b.child
        return child.complete

    def _pull(self, b: _Branch) -> None:
        child = b.child
        if isinstance(child, _CNode):
            self._drain(child)
            b.items.extend(child.out)
            child.out.clear()

    def _drain(self, cn: _CNode) -> None:
        while cn.head < len(cn.branches):
            b = cn.branches[cn.head]
            self._pull(b)
            items = b.items
            while items:
                it = items.popleft()
                kind = it[0]
                if kind == "v":
                    cn.out.append(it)
                    for later in cn.branches[cn.head + 1:]:
                        self._cancel(later.child)
                    cn.head = len(cn.branches)
                    cn.complete = True
                    return
                if kind != "n" and it[1] == cn.index:
                    self.strat.apply(cn.node, it)
                    self._spawn(cn)
                else:
                    cn.out.append(it)
            if not self._complete(b):
                return
            cn.head += 1
        cn.complete = True

    def _cancel(self, child: _CNode | _Unit) -> None:
        if isinstance(child, _Unit):
            if child.status == "ready":
                self.ready.remove(child)
            if child.status in ("ready", "running"):
                child.status = "cancelled"
            child.complete = True
            return
        for b in child.branches:
            self._cancel(b.child)
        child.complete = True

    # -- checkpoints ----------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        """The frontier as JSON-able data: the c-node tree, every unfinished
        unit's state (a running unit is saved as it was when it started its
        slice), the items not merged yet, the figures so far."""

        def branch(b: _Branch) -> dict[str, Any]:
            child = b.child
            out: dict[str, Any] = {"option": b.option, "items": [list(i) for i in b.items]}
            if isinstance(child, _Unit):
                out["unit"] = None if child.complete else child.state
            else:
                out["cnode"] = {
                    "index": child.index,
                    "node": node_data(child.node),
                    "prefix": child.prefix,
                    "head": child.head,
                    "out": [list(i) for i in child.out],
                    "complete": child.complete,
                    "branches": [branch(x) for x in child.branches],
                }
            return out

        return {
            "root": branch(self.root),
            "violation": self.violation,
            "committed": [self.committed.executions, self.committed.blocked,
                          self.committed.steps],
            "performed": [self.performed.executions, self.performed.blocked,
                          self.performed.steps],
            "splits": self.splits,
            "busy": round(self.busy, 3),
            "phase": self.phase,
            "quick_done": self.quick_done,
        }

    def _load(self, data: dict[str, Any]) -> None:
        self.ready = []
        self.running = []
        self.uids = 0
        # (a frontier saved without a phase is a complete search's)
        phase = data.get("phase", "full")
        if phase not in ("quick", "full") or (phase == "quick"
                                              and not self.settings.has_quick_pass):
            raise ValueError(f"pass {phase!r} does not fit this search")
        self.phase = phase
        done = data.get("quick_done")
        self.quick_done = [int(done[0]), int(done[1])] if done is not None else None
        self.strat = self.unit_settings().strategy()

        def branch(d: dict[str, Any], owner: _CNode | None) -> _Branch:
            items: deque[Record] = deque(tuple(i) for i in d["items"])
            if "cnode" in d:
                c = d["cnode"]
                b = _Branch(int(d["option"]), _Unit(0, {}), owner)  # child set below
                cn = _CNode(int(c["index"]), node_from_data(c["node"]), c["prefix"], b)
                cn.head = int(c["head"])
                cn.out = deque(tuple(i) for i in c["out"])
                cn.complete = bool(c["complete"])
                b.child = cn
                for x in c["branches"]:
                    cn.branches.append(branch(x, cn))
            else:
                st = d["unit"]
                if st is None:
                    u = _Unit(0, {})
                    u.status = "done"
                    u.complete = True
                else:
                    u = self._new_unit(st)
                b = _Branch(int(d["option"]), u, owner)
                u.branch = b
            b.items = items
            return b

        self.root = branch(data["root"], None)
        self.violation = data.get("violation")
        if self.violation is not None:
            self.finished = True
        self.committed = Totals(*data["committed"])
        self.performed = Totals(*data["performed"])
        self.splits = int(data.get("splits", 0))
        self.busy = float(data.get("busy", 0.0))
        if not self.finished:
            self._drain_all()

    def outcome(self, interrupted: bool = False) -> Outcome:
        return Outcome(
            complete=self.finished and self.violation is None,
            violation=self.violation,
            committed=self.committed,
            performed=self.performed,
            interrupted=interrupted,
            units=self.uids,
            splits=self.splits,
            extra={"worker_seconds": round(self.busy, 3), "setup_snapshot": self.setup,
                   "quick_pass": self.quick_figures()},
        )

    def quick_figures(self) -> dict[str, Any] | None:
        """The quick pass's figures so far (``Result.extra["quick_pass"]``),
        or None when the search has none."""
        if self.quick_done is not None:
            return quick_pass_figures(self.quick_done[0], self.quick_done[1], False, True)
        if self.phase != "quick":
            return None
        return quick_pass_figures(self.committed.executions, self.committed.blocked,
                                  self.violation is not None, False)


# --- driving explorations over a pool ----------------------------------------------


@dataclass
class Run:
    """One exploration being driven, with its budgets and callbacks."""

    exploration: Exploration
    priority: float = 0.0  # higher first (check: the longest variant first)
    max_executions: int | None = None
    max_seconds: float | None = None
    progress: Callable[[int, float], None] | None = None
    progress_info: ProgressDetail | None = None
    done: Callable[[Outcome], None] | None = None
    start: float = 0.0  # when its first unit went to a worker
    started: bool = False
    elapsed_before: float = 0.0  # seconds spent before a resume
    outcome: Outcome | None = None
    budget_stop: bool = False
    tag: Any = None  # the caller's (check: which variant)

    def seconds(self, now: float) -> float:
        return self.elapsed_before + now - self.start


LONG_SLICE = 0.5
"""Seconds a unit runs before it reports, when every worker has work (an
interrupt waits for the slices in flight)."""
SHORT_SLICE = 0.15
"""... when some worker is idle: the unit comes back soon to be split."""


def drive(
    runs: list[Run],
    pool: Pool,
    runner: Runner,
    *,
    should_stop: Callable[[], bool] | None = None,
    checkpoint: Callable[[list[Run], float], None] | None = None,
    checkpoint_every: float = 60.0,
    progress_every: float = 0.5,
    slice_executions: int | None = None,
) -> bool:
    """Run explorations to their ends over *pool*. Returns False if stopped
    by *should_stop* (every unfinished run then gets an interrupted outcome,
    after the workers' slices in flight have come back -- under a second).
    *slice_executions* caps a slice's executions too (tests: many splits)."""
    now = time.perf_counter()
    for r in runs:
        r.start = now
    handles: dict[Any, tuple[Run, _Unit]] = {}
    last_progress = now
    last_checkpoint = now
    interrupted = False

    def finish(r: Run, interrupted: bool = False) -> None:
        if r.outcome is None:
            out = r.exploration.outcome(interrupted)
            out.extra["seconds"] = r.seconds(time.perf_counter())
            if r.budget_stop:
                out.complete = False
            r.outcome = out
            forget_everywhere(r.exploration.name)
            if r.done is not None:
                r.done(out)

    def live() -> list[Run]:
        return [r for r in runs if r.outcome is None]

    for r in runs:
        if r.exploration.finished:
            finish(r)
    while True:
        if should_stop is not None and not interrupted and should_stop():
            # stop giving out work; take in the slices in flight (so that a
            # checkpoint keeps them), then stop
            interrupted = True
        active = live()
        if interrupted and not handles:
            for r in active:
                finish(r, interrupted=True)
            break
        if not active and not handles:
            break
        # give every free worker a unit: the highest-priority run first
        if not interrupted:
            free = pool.slots - len(handles)
            while free > 0:
                cands = [r for r in active if r.exploration.ready]
                if not cands:
                    break
                r = max(cands, key=lambda x: x.priority)
                ex = r.exploration
                u = ex.take_ready()
                assert u is not None
                waiting = sum(len(x.exploration.ready) for x in active)
                seconds = LONG_SLICE if waiting >= free - 1 else SHORT_SLICE
                left = slice_executions
                if r.max_executions is not None:
                    left = max(1, r.max_executions - ex.performed.executions)
                    if slice_executions is not None:
                        left = min(left, slice_executions)
                if not r.started:
                    r.started = True
                    r.start = time.perf_counter()
                h = pool.submit(runner, ex.job(u, seconds, left))
                handles[h] = (r, u)
                free -= 1
        if not handles:
            if interrupted:
                continue
            # nothing runs and nothing is ready: the runs left are finished
            for r in live():
                finish(r)
            continue
        for h in pool.wait(list(handles), 0.2):
            r, u = handles.pop(h)
            res = pool.result(h)
            ex = r.exploration
            if r.outcome is not None:
                ex.performed.add(res.executions, res.blocked, res.steps)
                ex.busy += res.seconds
                continue
            spare = 0 if interrupted else pool.slots - len(handles) - sum(
                len(x.exploration.ready) for x in live())
            ex.on_result(u, res, max(0, spare))
            if ex.finished:
                finish(r)
            elif ((r.max_executions is not None
                   and ex.performed.executions >= r.max_executions)
                  or (r.max_seconds is not None
                      and r.seconds(time.perf_counter()) >= r.max_seconds)):
                r.budget_stop = True
                finish(r)
        now = time.perf_counter()
        if now - last_progress >= progress_every:
            last_progress = now
            for r in live():
                ex = r.exploration
                if r.progress is not None:
                    r.progress(ex.performed.executions, r.seconds(now))
                if r.progress_info is not None:
                    r.progress_info(ProgressInfo(ex.performed.executions, r.seconds(now),
                                                 ex.depth, ex.performed.steps))
        if checkpoint is not None and now - last_checkpoint >= checkpoint_every:
            last_checkpoint = now
            checkpoint(runs, now)
    if checkpoint is not None and interrupted:
        checkpoint(runs, time.perf_counter())
    return not interrupted


def forget_everywhere(name: str) -> None:
    """Drop a finished exploration's state in this process (workers keep
    theirs until they exit; it is small)."""
    forget(name)

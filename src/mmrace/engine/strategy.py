"""Exploration strategies: who decides each scheduling point and choice.

Every nondeterministic decision of an execution goes through the strategy's
``schedule`` (which enabled thread runs next) or ``choose`` (a model's
``choose(n)``). Exhaustive strategies keep a stack of decision nodes and
re-run the program from the start for every new branch (stateless search).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from mmrace.engine.core import (
    INDEP,
    RACE,
    ViolationError,
    base_kind,
    dependent,
)

if TYPE_CHECKING:
    from mmrace.engine.core import Event, Execution, SimThread

Footprint = tuple[int, int]  # (object serial, kind)

# Kind class for the per-object access index: reads, writes, waits.
_CLASS_OF_BASE = (0, 1, 1, 2)
# Relation between an earlier access of class a and a later access of class b.
_CREL = (
    (INDEP, RACE, INDEP),
    (RACE, RACE, 1),  # 1 == HB
    (INDEP, INDEP, INDEP),
)


class Strategy:
    """Base class. ``more()`` says whether another execution should run."""

    name = "strategy"
    complete_when_done = False

    def begin(self, ex: Execution) -> None:
        pass

    def schedule(self, ex: Execution, enabled: list[int]) -> int | None:
        raise NotImplementedError

    def choose(self, ex: Execution, n: int) -> int:
        raise NotImplementedError

    def on_event(self, ex: Execution, ev: Event) -> None:
        pass

    def on_spawn(self, ex: Execution, th: SimThread) -> None:
        pass

    def end(self, ex: Execution) -> None:
        pass

    def more(self) -> bool:
        return True


def _nondeterminism(detail: str) -> ViolationError:
    return ViolationError(
        "nondeterminism",
        "the program did not repeat itself under the same schedule",
        f"{detail}: the program must be deterministic given the engine's "
        "decisions (no clocks, randomness, or iteration over id-hashed objects)",
    )


class _Node:
    __slots__ = (
        "data",
        "n",
        "enabled",
        "chosen",
        "backtrack",
        "done",
        "sleep",
        "child_sleep",
        "ops",
        "ev_index",
        "prev",
        "pre",
    )

    def __init__(self) -> None:
        self.data = False
        self.n = 0
        self.enabled: list[int] = []
        self.chosen = 0
        self.backtrack: set[int] = set()
        self.done: set[int] = set()
        self.sleep: dict[int, Footprint] = {}
        self.child_sleep: dict[int, Footprint] = {}
        self.ops: dict[int, Footprint] = {}
        self.ev_index = 0
        self.prev = -1
        self.pre = 0


def _independent(a: Footprint, b: Footprint) -> bool:
    return a[0] != b[0] or not dependent(a[1], b[1])


class DfsStrategy(Strategy):
    """Stateless depth-first search over the decision tree.

    With ``reduce=True`` this is source-DPOR with sleep sets (Abdulla, Aronis,
    Jonsson, Sagonas, POPL 2014): after each execution, every reversible race
    e < e' adds one thread from the initials of ``notdep(e).e'`` to the
    backtrack set before e, unless one is there already. With
    ``reduce=False`` it is naive enumeration of every interleaving (kept for
    testing the reduction).

    With a preemption ``bound`` only schedules with at most that many
    preempting switches are run (CHESS). Bounded DPOR adds every initial, and
    also backtracks at the last context switch before the race (Coons,
    Musuvathi, McKinley, OOPSLA 2013) so that schedules within the bound that
    reach the race with fewer preemptions are not lost; sleep sets are off
    under a bound, since a sleeping thread may have been explored with a
    different preemption budget.
    """

    complete_when_done = True

    def __init__(self, reduce: bool = True, bound: int | None = None) -> None:
        self.reduce = reduce
        self.bound = bound
        self.use_sleep = reduce and bound is None
        self.name = ("bounded" if bound is not None else "dpor") if reduce else "naive"
        self.nodes: list[_Node] = []
        self.pos = 0
        self.replay_events = 0
        self.cur_sleep: dict[int, Footprint] = {}
        self.ev_node: list[int] = []
        self.tvc: list[list[int]] = []
        self.races: list[tuple[int, int, tuple[int, ...]]] = []
        self.finished = False

    # -- one execution ------------------------------------------------------

    def begin(self, ex: Execution) -> None:
        self.pos = 0
        self.ev_node = []
        self.tvc = []
        self.races = []
        self.cur_sleep = {}
        self.replay_events = self.nodes[-1].ev_index if self.nodes else 0

    def on_spawn(self, ex: Execution, th: SimThread) -> None:
        if self.reduce:
            parent = th.parent
            self.tvc.append(list(self.tvc[parent]) if parent is not None else [])

    def schedule(self, ex: Execution, enabled: list[int]) -> int | None:
        pos = self.pos
        self.pos = pos + 1
        nodes = self.nodes
        if pos < len(nodes):
            node = nodes[pos]
            if node.data or node.chosen not in enabled:
                raise _nondeterminism(f"scheduling point {pos} differs")
            if pos == len(nodes) - 1:
                self.cur_sleep = node.child_sleep
            self.ev_node.append(pos)
            return node.chosen
        node = _Node()
        node.enabled = enabled
        node.ev_index = len(ex.events)
        node.prev = ex.prev_tid
        node.pre = ex.preemptions
        threads = ex.threads
        if self.reduce:
            ops = node.ops
            for t in enabled:
                th = threads[t]
                assert th.op_obj is not None
                ops[t] = (th.op_obj.serial, th.op_kind)
        sleep = self.cur_sleep
        node.sleep = sleep
        if self.reduce:
            candidates = [t for t in enabled if t not in sleep] if sleep else enabled
            if not candidates:
                return None  # sleep-set blocked: equivalent runs exist
        else:
            candidates = enabled
        prev = ex.prev_tid
        tid = prev if prev in candidates else candidates[0]
        node.chosen = tid
        node.done.add(tid)
        if self.reduce:
            node.backtrack.add(tid)
        else:
            node.backtrack.update(self._within_bound(node, enabled))
        nodes.append(node)
        self.ev_node.append(pos)
        if self.use_sleep:
            self.cur_sleep = self._child_sleep(node, tid)
        return tid

    def choose(self, ex: Execution, n: int) -> int:
        pos = self.pos
        self.pos = pos + 1
        nodes = self.nodes
        if pos < len(nodes):
            node = nodes[pos]
            if not node.data or node.n != n:
                raise _nondeterminism(f"choice point {pos} differs")
            if pos == len(nodes) - 1:
                self.cur_sleep = node.child_sleep
            return node.chosen
        node = _Node()
        node.data = True
        node.n = n
        node.ev_index = len(ex.events)
        node.sleep = node.child_sleep = self.cur_sleep
        nodes.append(node)
        return 0

    def on_event(self, ex: Execution, ev: Event) -> None:
        if not self.reduce:
            return
        t = ev.tid
        tvc = self.tvc
        vc = list(tvc[t])
        if len(vc) <= t:
            vc.extend([0] * (t + 1 - len(vc)))
        obj = ev.obj
        acc = obj._acc
        if acc is None:
            acc = obj._acc = {}
        cls = _CLASS_OF_BASE[base_kind(ev.kind)]
        idx = len(ex.events) - 1
        if acc:
            cands = []
            for u, slots in acc.items():
                if u == t:
                    continue
                for c in (0, 1, 2):
                    j = slots[c]
                    if j >= 0 and _CREL[c][cls] != INDEP:
                        cands.append(j)
            if cands:
                events = ex.events
                record = idx >= self.replay_events
                if len(cands) > 1:
                    cands.sort(reverse=True)
                for j in cands:
                    e = events[j]
                    evc = e.vc
                    assert evc is not None
                    u = e.tid
                    if (
                        record
                        and _CREL[_CLASS_OF_BASE[base_kind(e.kind)]][cls] == RACE
                        and (len(vc) <= u or vc[u] < evc[u])
                    ):
                        self.races.append((j, idx, tuple(vc)))
                    if len(vc) < len(evc):
                        vc.extend([0] * (len(evc) - len(vc)))
                    for x, y in enumerate(evc):
                        if y > vc[x]:
                            vc[x] = y
        vc[t] += 1
        ev.vc = vc
        tvc[t] = vc
        mine = acc.get(t)
        if mine is None:
            mine = acc[t] = [-1, -1, -1]
        mine[cls] = idx

    # -- between executions -------------------------------------------------

    def end(self, ex: Execution) -> None:
        if self.reduce:
            self._add_backtracks(ex)
        self._advance()

    def more(self) -> bool:
        return not self.finished

    def _within_bound(self, node: _Node, tids: list[int] | set[int]) -> list[int]:
        bound = self.bound
        if bound is None:
            return list(tids)
        out = []
        for q in tids:
            pre = node.pre + (1 if (node.prev in node.enabled and q != node.prev) else 0)
            if pre <= bound:
                out.append(q)
        return out

    def _child_sleep(self, node: _Node, q: int) -> dict[int, Footprint]:
        ops = node.ops
        qop = ops[q]
        out = {r: op for r, op in node.sleep.items() if r != q and _independent(op, qop)}
        for d in node.done:
            if d != q and d not in out:
                op = ops[d]
                if _independent(op, qop):
                    out[d] = op
        return out

    def _add_backtracks(self, ex: Execution) -> None:
        events = ex.events
        nodes = self.nodes
        bounded = self.bound is not None
        for i, j, cvc in self.races:
            e = events[i]
            ep = events[j]
            u = e.tid
            assert e.vc is not None
            s = e.vc[u]
            node_i = self.ev_node[i]
            node = nodes[node_i]
            backtrack = node.backtrack
            first_seq: dict[int, int] = {}
            initials: list[int] = []
            hit = False
            for k in range(i + 1, j):
                w = events[k]
                wvc = w.vc
                assert wvc is not None
                if len(wvc) > u and wvc[u] >= s:
                    continue  # happens after e: not in notdep(e)
                wt = w.tid
                if wt in first_seq:
                    continue
                if all(len(wvc) <= x or wvc[x] < fs for x, fs in first_seq.items()):
                    if wt in backtrack and not bounded:
                        hit = True
                        break
                    initials.append(wt)
                first_seq[wt] = wvc[wt]
            if hit:
                continue
            et = ep.tid
            if et not in first_seq and all(
                len(cvc) <= x or cvc[x] < fs for x, fs in first_seq.items()
            ):
                if et in backtrack and not bounded:
                    continue
                initials.append(et)
            enabled = node.enabled
            usable = [q for q in initials if q in enabled]
            if not usable:
                usable = list(enabled)  # conservative fallback
            if bounded:
                backtrack.update(self._within_bound(node, usable))
                self._coons_point(node_i, usable)
            else:
                backtrack.add(et if et in usable else usable[0])

    def _coons_point(self, node_i: int, threads: list[int]) -> None:
        nodes = self.nodes
        for k in range(node_i - 1, -1, -1):
            nd = nodes[k]
            if nd.data:
                continue
            if nd.prev != nd.chosen:
                extra = [q for q in threads if q in nd.enabled]
                nd.backtrack.update(self._within_bound(nd, extra))
                return

    def _advance(self) -> None:
        nodes = self.nodes
        while nodes:
            node = nodes[-1]
            if node.data:
                if node.chosen + 1 < node.n:
                    node.chosen += 1
                    return
                nodes.pop()
                continue
            cands = node.backtrack - node.done
            if cands and self.use_sleep and node.sleep:
                cands = {q for q in cands if q not in node.sleep}
            if cands and self.bound is not None:
                cands = set(self._within_bound(node, sorted(cands)))
            if cands:
                q = node.prev if node.prev in cands else min(cands)
                node.done.add(q)
                node.chosen = q
                if self.use_sleep:
                    node.child_sleep = self._child_sleep(node, q)
                return
            nodes.pop()
        self.finished = True


class RandomStrategy(Strategy):
    """Uniformly random choice at every decision, seeded per execution."""

    name = "random"

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.count = 0
        self.rng = random.Random(0)

    def begin(self, ex: Execution) -> None:
        self.rng = random.Random(f"random:{self.seed}:{self.count}")
        self.count += 1

    def schedule(self, ex: Execution, enabled: list[int]) -> int | None:
        if len(enabled) == 1:
            return enabled[0]
        return enabled[self.rng.randrange(len(enabled))]

    def choose(self, ex: Execution, n: int) -> int:
        return self.rng.randrange(n)


class PctStrategy(Strategy):
    """Probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi,
    Nagarakatte, ASPLOS 2010) with bug depth *depth*: threads get random
    distinct priorities, the highest-priority enabled thread runs, and at
    ``depth - 1`` random steps the running thread drops below all others.
    As in Shuttle's variant, the step bound k is learnt from the executions
    run so far and steps with a single enabled thread are not counted."""

    name = "pct"

    def __init__(self, seed: int, depth: int) -> None:
        self.seed = seed
        self.depth = max(1, depth)
        self.count = 0
        self.k = 0
        self.rng = random.Random(0)
        self.prio: list[float] = []
        self.change: list[int] = []
        self.steps = 0
        self.lowered = 0

    def begin(self, ex: Execution) -> None:
        self.rng = rng = random.Random(f"pct:{self.seed}:{self.count}")
        self.count += 1
        self.prio = []
        self.steps = 0
        self.lowered = 0
        k = max(self.k, 1)
        n = min(self.depth - 1, k)
        self.change = sorted(rng.sample(range(1, k + 1), n)) if n > 0 else []

    def on_spawn(self, ex: Execution, th: SimThread) -> None:
        # Distinct high priorities (above every change-point priority).
        self.prio.append(self.depth + self.rng.random())

    def schedule(self, ex: Execution, enabled: list[int]) -> int | None:
        prio = self.prio
        if len(enabled) == 1:
            return enabled[0]
        self.steps += 1
        best = max(enabled, key=prio.__getitem__)
        if self.change and self.steps == self.change[0]:
            # The i-th change point (from 1) lowers the runner to d - i, so a
            # thread lowered later runs after one lowered earlier.
            self.change.pop(0)
            self.lowered += 1
            prio[best] = float(self.depth - self.lowered)
            best = max(enabled, key=prio.__getitem__)
        return best

    def choose(self, ex: Execution, n: int) -> int:
        return self.rng.randrange(n)

    def end(self, ex: Execution) -> None:
        self.k = max(self.k, self.steps)


class DecisionReplay(Strategy):
    """Follows a recorded decision list (option indices at every point with
    more than one option), as stored in a replay token."""

    name = "replay"

    def __init__(self, decisions: list[int]) -> None:
        self.decisions = decisions
        self.pos = 0
        self.error: str | None = None

    def begin(self, ex: Execution) -> None:
        self.pos = 0

    def _next(self, n: int) -> int:
        if self.pos >= len(self.decisions):
            self.error = (
                f"token does not match this program: it ends at decision {self.pos} "
                "but the execution goes on"
            )
            raise _Diverged()
        v = self.decisions[self.pos]
        self.pos += 1
        if v >= n:
            self.error = (
                f"token does not match this program: decision {self.pos - 1} picks "
                f"option {v} of {n}"
            )
            raise _Diverged()
        return v

    def schedule(self, ex: Execution, enabled: list[int]) -> int | None:
        if len(enabled) == 1:
            return enabled[0]
        return enabled[self._next(len(enabled))]

    def choose(self, ex: Execution, n: int) -> int:
        return self._next(n)

    def end(self, ex: Execution) -> None:
        if self.error is None and self.pos != len(self.decisions) and not ex.violation:
            self.error = (
                f"token does not match this program: {len(self.decisions) - self.pos} "
                "decisions left over when the execution ended"
            )


class _Diverged(ViolationError):
    def __init__(self) -> None:
        super().__init__("replay-diverged", "replay diverged")


class GuidedStrategy(Strategy):
    """Follows a desired thread order as closely as the program allows: at
    each point, runs the first thread of the remaining wish list that is
    enabled (removing that entry), else keeps the running thread. Data
    choices are taken in their recorded order. Used by the shrinker."""

    name = "guided"

    def __init__(self, order: list[int], choices: list[int]) -> None:
        self.order = order
        self.choices = choices

    def begin(self, ex: Execution) -> None:
        self.wish = list(self.order)
        self.cpos = 0

    def schedule(self, ex: Execution, enabled: list[int]) -> int | None:
        wish = self.wish
        for i, t in enumerate(wish):
            if t in enabled:
                del wish[i]
                return t
        return ex.prev_tid if ex.prev_tid in enabled else enabled[0]

    def choose(self, ex: Execution, n: int) -> int:
        if self.cpos < len(self.choices):
            v = self.choices[self.cpos]
            self.cpos += 1
            return v if v < n else 0
        return 0

"""Exploration strategies: who decides each scheduling point and choice.

Every nondeterministic decision of an execution goes through the strategy's
``schedule`` (which enabled thread runs next) or ``choose`` (a model's
``choose(n)``). Exhaustive strategies keep a stack of decision nodes and
re-run the program from the start for every new branch (stateless search).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from mmrace.engine.core import (
    RACE,
    ViolationError,
    kind_class,
    relation,
)

if TYPE_CHECKING:
    from mmrace.engine.core import Event, Execution, SharedObject, SimThread

Footprint = tuple[int, ...]
"""(serial, kind) of an operation's object, followed by (serial, kind) of each
further object it touches (``visible(..., also=...)``)."""


def _footprint(th: SimThread) -> Footprint:
    """The footprint of the operation *th* announced (runs next)."""
    obj = th.op_obj
    assert obj is not None
    return _fp(obj, th.op_kind, th.op_also)


def _fp(obj: SharedObject, kind: int, also: Any) -> Footprint:
    if not also:
        return (obj.serial, kind)
    fp = [obj.serial, kind]
    for o, k in also:
        fp.append(o.serial)
        fp.append(k)
    return tuple(fp)

# Kind class for the per-object access index: reads (0), writes (1: WRITE
# and RMW), waits (2), lock acquisitions (3), releases (4). Reads race with
# writes, writes with both; a wait happens after the write that enabled it;
# an acquisition after the release that freed the lock (``_RACE_SLOTS``).
# Indexed by kind.
_CLASS_OF_KIND = kind_class  # the list itself, so registered kinds show up


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


_EMPTY: dict[int, Footprint] = {}
"""The empty sleep set, shared (sleep sets are never mutated once made)."""


class _Node:
    """A decision point with more than one option: a scheduling point where
    several threads are enabled, or a data choice (``data``). Points with a
    single enabled thread get no node: nothing could be explored there.

    Thread sets are bit sets (bit ``t`` for thread ``t``). The threads still
    to explore here wait in ``pending`` in the order they were added (first
    in, first out): the order of the search at a node then depends only on
    what was found before, never on what is found later, which is what lets
    a branch be explored elsewhere (another worker) with exactly the sleep
    set this search would give it."""

    __slots__ = (
        "data",
        "n",
        "enabled",
        "chosen",
        "backtrack",
        "done",
        "sleep",
        "slept",
        "ev_index",
        "prev",
        "pre",
        "pending",
    )

    def __init__(
        self,
        enabled: list[int],
        chosen: int,
        ev_index: int,
        prev: int,
        pre: int,
        sleep: dict[int, Footprint],
    ) -> None:
        self.data = False
        self.n = 0
        self.enabled = enabled
        self.chosen = chosen
        self.backtrack = self.done = 1 << chosen
        self.sleep = sleep  # the sleep set on entry
        # The threads explored here that later siblings put to sleep (bit
        # set), recorded when the search moves on from each. Their operations
        # are read off the live threads when a sibling's run gets here: an
        # enabled thread's announced operation is the one it runs here.
        self.slept = 0
        self.ev_index = ev_index
        self.prev = prev
        self.pre = pre
        self.pending: list[int] | None = None


def _independent(a: Footprint, b: Footprint) -> bool:
    """Whether two operations, both enabled in one state, commute. Only
    reversible races (RACE either way) fail to: a WAIT that is enabled stays
    enabled (monotone guard) and changes nothing, so it commutes with
    everything here. (Using the symmetric ``dependent`` woke sleeping waiters
    on every write and let DPOR run equivalent executions twice.)"""
    if len(a) == 2 and len(b) == 2:
        return a[0] != b[0] or (
            relation(a[1], b[1]) != RACE and relation(b[1], a[1]) != RACE
        )
    for i in range(0, len(a), 2):
        for j in range(0, len(b), 2):
            if a[i] == b[j] and (
                relation(a[i + 1], b[j + 1]) == RACE or relation(b[j + 1], a[i + 1]) == RACE
            ):
                return False
    return True


def _wake_sleepers(sleep: dict[int, Footprint], op: Footprint) -> dict[int, Footprint]:
    """The sleep set after an operation *op*: the entries independent of it."""
    out = {r: sop for r, sop in sleep.items() if _independent(sop, op)}
    return out if out else _EMPTY


Record = tuple[Any, ...]
"""A backtrack point for a node above a search's floor, to be applied by
whoever owns that node, in search order: ``("race", node, initials, last)``
(source-DPOR: add one initial unless one is there already) or
``("add", node, threads)`` (bounded search: add every thread within the
bound)."""


class DfsStrategy(Strategy):
    """Stateless depth-first search over the decision tree.

    With ``reduce=True`` this is source-DPOR with sleep sets (Abdulla, Aronis,
    Jonsson, Sagonas, POPL 2014): after each execution, every reversible race
    e < e' adds one thread from the initials of ``notdep(e).e'`` to the
    backtrack set before e, unless one is there already. With
    ``reduce=False`` it is naive enumeration of every interleaving (kept for
    testing the reduction).

    Locks taken with ACQUIRE: two acquisitions of one lock race across the
    first holder's release (the release only happens before the second).
    Under a bound the search also backtracks before that release for the
    acquirer's thread, which may then reach the lock while it is held and
    block, letting the holder run on without a preemption.

    With a preemption ``bound`` only schedules with at most that many
    preempting switches are run (CHESS). Bounded DPOR adds every initial, and
    also backtracks at the last context switch before the race (Coons,
    Musuvathi, McKinley, OOPSLA 2013) so that schedules within the bound that
    reach the race with fewer preemptions are not lost. When the bound
    refuses a race's reversal outright, the search also reverses the later
    event with the latest earlier access of the first event's thread that
    conflicts with it (and that it does not happen after), at that access:
    a schedule within the bound may need the later event before the whole
    stretch, not just the one access (a lock taken twice by one thread and
    once by another; ``test_properties.test_bounded_reverses_an_earlier_
    acquisition``, found by a larger run of the property tests against
    naive enumeration under the same bound).

    Sleep sets are off in the complete bounded search (the quick pass
    below uses them, and proves nothing): no rule tried so far keeps the
    bounded search sound (``docs/scale.md`` lists the six rules measured
    and why each fails). Measured on
    ``uffd-wp-protect-unprotect/base+uffd-wp-mmap-write-lock`` at K=3
    against this search without them, telling traces apart by identities
    that do not depend on the schedule (an object by its creating thread
    and creation index, a thread by its parent and spawn index, as
    ``tests/engine/enginekit.StableCensus`` does; an earlier count, 265 of
    8,915 traces missed by the first rule, was taken on an older model):

    * a sibling q explored before r sleeps in r's subtree when moving q's
      operation to the front costs no preemption (q ran before the node):
      traces missed;
    * q sleeps in r's subtree only if the bound refused no branch anywhere
      in q's subtree (which then was explored as unbounded source-DPOR,
      so it holds an equivalent of every execution starting with q's
      operation): 7 of 7,345 traces missed, and only 2% of the executions
      saved (20,926 against 21,425), since near the root almost every
      subtree is cut somewhere.

    Why: bounded DPOR covers a trace somewhere in the tree, not under the
    branch it starts with, through backtrack points placed at the explored
    schedule's last context switch before a race (Coons, Musuvathi,
    McKinley, OOPSLA 2013). An execution that a sleeper prunes would have
    placed such points where its explored equivalent, a different
    schedule, does not. A sound reduction needs a
    bound that equivalent executions share, or a proof for these points;
    the parallel split also assumes a branch's sleep set is fixed when it
    is added.

    ``quick=True`` (with a bound) is the bounded search's *quick pass*,
    which ``explore`` runs first: source-DPOR with sleep sets, where a race
    is reversed only with an initial that fits the bound, and none of the
    compensations above. It is the combination Coons et al. show loses
    schedules within the bound, so it proves nothing; but it runs about one
    execution per trace it reaches, and reaches most violations within the
    bound in a few percent of the complete search's executions (the lost
    write of ``uffd-wp-protect-unprotect/base`` after 686 executions where
    the complete search needs 15,020).

    Hot path: ``schedule`` and ``on_event`` run once per visible operation.
    A point with one enabled thread makes no node; a fresh node allocates no
    containers (thread sets are ints, the sleep set is shared); an object
    touched by one thread only costs a dict lookup.

    A search can be one part of a larger one: nodes below ``floor`` belong
    to someone else (the coordinator of a parallel exploration). Their
    choices are replayed, the sleep set below the last of them is computed
    as usual, and backtrack points found for them are not applied here but
    appended to ``out`` as records, in the order found.
    """

    complete_when_done = True

    def __init__(self, reduce: bool = True, bound: int | None = None,
                 quick: bool = False) -> None:
        self.reduce = reduce
        self.bound = bound
        # The quick pass (see the class docstring): source-DPOR with sleep
        # sets whose branches the bound cuts, without bounded DPOR's
        # compensations (``compensate``), which are what its completeness
        # within the bound rests on.
        quick = quick and reduce and bound is not None
        self.compensate = reduce and bound is not None and not quick
        self.use_sleep = reduce and (bound is None or quick)
        self.name = ("bounded" if bound is not None else "dpor") if reduce else "naive"
        self.nodes: list[_Node] = []
        self.floor = 0
        self.out: list[Record] = []
        self.pos = 0
        self.last = -1
        self.replay_events = 0
        self.cur_sleep: dict[int, Footprint] = _EMPTY
        # per event: the index of its node, or ~(number of nodes before it)
        # when it ran at a point with a single enabled thread
        self.ev_node: list[int] = []
        self.tvc: list[list[int]] = []
        # (earlier event, later event, the later one's clock at the race,
        # whether it is the bounded search's release-before-acquisition
        # point rather than a reversible race)
        self.races: list[tuple[int, int, tuple[int, ...], bool]] = []
        self.finished = False
        # Per event of the previous execution: (thread, kind, object serial,
        # footprint if it has further accesses, clock). The replayed prefix
        # of the next one reuses the clocks while its events match these
        # one for one. Kept as plain data: holding the events would keep
        # the whole previous execution's state alive (measured: 5% slower).
        self.log: list[tuple[int, int, int, Footprint | None, list[int]]] = []
        self.reuse = 0

    # -- one execution ------------------------------------------------------

    def begin(self, ex: Execution) -> None:
        self.pos = 0
        self.last = len(self.nodes) - 1
        self.ev_node = []
        self.tvc = []
        self.races = []
        self.cur_sleep = _EMPTY
        self.replay_events = self.nodes[-1].ev_index if self.nodes else 0
        self.reuse = min(self.replay_events, len(self.log))

    def on_spawn(self, ex: Execution, th: SimThread) -> None:
        if self.reduce:
            parent = th.parent
            vc = list(self.tvc[parent]) if parent is not None else []
            if len(vc) <= th.tid:
                vc.extend([0] * (th.tid + 1 - len(vc)))
            self.tvc.append(vc)

    def schedule(self, ex: Execution, enabled: list[int]) -> int | None:
        pos = self.pos
        sleep = self.cur_sleep
        if len(enabled) == 1:
            tid = enabled[0]
            if sleep:
                if tid in sleep:
                    return None  # sleep-set blocked: equivalent runs exist
                th = ex.threads[tid]
                self.cur_sleep = _wake_sleepers(sleep, _footprint(th))
            self.ev_node.append(~pos)
            return tid
        nodes = self.nodes
        self.pos = pos + 1
        if pos <= self.last:
            node = nodes[pos]
            tid = node.chosen
            if node.data or tid not in enabled:
                raise _nondeterminism(f"scheduling point {pos} differs")
            if pos == self.last and self.use_sleep:
                self.cur_sleep = self._child_sleep(ex, node, tid)
            self.ev_node.append(pos)
            return tid
        cands = [t for t in enabled if t not in sleep] if sleep else enabled
        if not cands:
            return None  # sleep-set blocked: equivalent runs exist
        prev = ex.prev_tid
        tid = prev if prev in cands else cands[0]
        node = _Node(enabled, tid, len(ex.events), prev, ex.preemptions, sleep)
        nodes.append(node)
        self.ev_node.append(pos)
        if sleep:
            self.cur_sleep = _wake_sleepers(sleep, _footprint(ex.threads[tid]))
        if not self.reduce:
            for q in enabled:
                if q != tid:
                    _add_branch(node, q, False, self.bound)
        return tid

    def choose(self, ex: Execution, n: int) -> int:
        pos = self.pos
        self.pos = pos + 1
        nodes = self.nodes
        if pos <= self.last:
            node = nodes[pos]
            if not node.data or node.n != n:
                raise _nondeterminism(f"choice point {pos} differs")
            if pos == self.last:
                self.cur_sleep = node.sleep
            return node.chosen
        node = _Node([], 0, len(ex.events), ex.prev_tid, ex.preemptions, self.cur_sleep)
        node.data = True
        node.n = n
        nodes.append(node)
        return 0

    def on_event(self, ex: Execution, ev: Event) -> None:
        if not self.reduce:
            return
        t = ev.tid
        tvc = self.tvc
        events = ex.events
        idx = len(events) - 1
        also = ev.also
        obj = ev.obj
        cls = _CLASS_OF_KIND[ev.kind]
        acc = obj._acc
        if acc is None:
            acc = obj._acc = {}
        vc: list[int] | None = None
        if idx < self.reuse:
            # Replaying the prefix the previous execution ran: an event's
            # clock depends only on the events before it, so while the
            # events are the same ones (same thread, operation and objects,
            # by creation serial) the clock is the one computed then. No
            # race is recorded in a replayed prefix, so nothing else is
            # needed but the per-object access records.
            lt, lk, ls, lfp, lvc = self.log[idx]
            if (lt == t and lk == ev.kind and ls == obj.serial
                    and (lfp == _fp(obj, lk, also) if also else lfp is None)):
                vc = lvc
            else:
                # diverged: compute this and every later clock afresh
                self.reuse = 0
                del self.log[idx:]
        if vc is None:
            vc = tvc[t][:]
            cands: list[int] = []
            if cls == 2:
                # A WAIT happens after the write that enabled it (the last write
                # to the object before its guard turned true) and after nothing
                # else on the object. (It used to be ordered after every earlier
                # write, which hid races between a write that came after the wake
                # and the waiter's later events: DPOR then missed traces, e.g. a
                # lock hand-off followed by a third thread taking the free lock.)
                lim = ex.threads[t].wake
                j = obj._lastw
                if j >= lim:
                    j = -1
                    for k in range(lim - 1, -1, -1):
                        if _writes(events[k], obj):
                            j = k
                            break
                if j >= 0:
                    evc = events[j].vc
                    assert evc is not None
                    _join(vc, evc)
            elif len(acc) > 1 or t not in acc:
                _candidates(acc, t, cls, cands)
            if also:
                for o, k in also:
                    oacc = o._acc
                    if oacc is None:
                        o._acc = {}
                    elif len(oacc) > 1 or t not in oacc:
                        _candidates(oacc, t, _CLASS_OF_KIND[k], cands)
            if cands:
                # The latest first: an earlier candidate that happens before a
                # later one is not an immediate race.
                record = idx >= self.replay_events
                if len(cands) > 1:
                    cands.sort(reverse=True)
                for j in cands:
                    e = events[j]
                    evc = e.vc
                    assert evc is not None
                    u = e.tid
                    if len(vc) <= u or vc[u] < evc[u]:
                        # not yet known to happen before: a race
                        if record:
                            self.races.append((j, idx, tuple(vc), False))
                        _join(vc, evc)
            if cls == 3:
                # An acquisition happens after the release that freed the lock,
                # which it never races with: joined only now, so that the race
                # with the previous holder's acquisition is seen across it.
                j = obj._lastrel
                if j >= 0:
                    e = events[j]
                    evc = e.vc
                    assert evc is not None
                    u = e.tid
                    if (
                        self.compensate
                        and idx >= self.replay_events
                        and (len(vc) <= u or vc[u] < evc[u])
                    ):
                        # Bounded search: the acquirer may also get to the lock
                        # while it is still held and block there, which lets the
                        # holder run on without a preemption. Those schedules
                        # are only reached by backtracking before the release.
                        self.races.append((j, idx, tuple(vc), True))
                    _join(vc, evc)
            vc[t] += 1
        ev.vc = vc
        tvc[t] = vc
        _note(acc, obj, t, cls, idx)
        if also:
            for o, k in also:
                oacc = o._acc
                if oacc is None:  # a replayed event (a computed one made it)
                    oacc = o._acc = {}
                _note(oacc, o, t, _CLASS_OF_KIND[k], idx)

    # -- between executions -------------------------------------------------

    def end(self, ex: Execution) -> None:
        if self.reduce:
            self._add_backtracks(ex)
        self._advance()
        if self.reduce:
            self._keep_log(ex)

    def _keep_log(self, ex: Execution) -> None:
        """Log the events the next execution will replay (those before its
        last decision point), keeping what is logged already: built here,
        not per event, so that operations no execution replays (the tail
        of each, a whole single execution) cost nothing."""
        log = self.log
        upto = self.nodes[-1].ev_index if self.nodes and not self.finished else 0
        if len(log) >= upto:
            del log[upto:]
            return
        for e in ex.events[len(log):upto]:
            vc = e.vc
            assert vc is not None
            log.append((e.tid, e.kind, e.obj.serial, _event_fp(e) if e.also else None, vc))

    def more(self) -> bool:
        return not self.finished

    def _child_sleep(self, ex: Execution, node: _Node, q: int) -> dict[int, Footprint]:
        """The sleep set below *node* when it runs *q*: its own sleep set plus
        the threads explored there before that may sleep, less those whose
        operations do not commute with q's."""
        threads = ex.threads
        qop = _footprint(threads[q])
        out = {r: op for r, op in node.sleep.items() if r != q and _independent(op, qop)}
        slept = node.slept
        while slept:
            low = slept & -slept
            slept ^= low
            d = low.bit_length() - 1
            if d != q and d not in out:
                op = _footprint(threads[d])
                if _independent(op, qop):
                    out[d] = op
        return out if out else _EMPTY

    def _add_backtracks(self, ex: Execution) -> None:
        events = ex.events
        nodes = self.nodes
        bounded = self.compensate
        ev_node = self.ev_node
        floor = self.floor
        for i, j, cvc, held in self.races:
            node_i = ev_node[i]
            if node_i < 0:
                # Only e's thread was enabled before e: nothing can be
                # reversed there. Bounded search still backtracks at the
                # last context switch before e, with e's thread (what the
                # conservative fallback below amounts to at such a point;
                # not for a release before an acquisition, which has none).
                if bounded and not held:
                    self._coons_point(ex, i, [events[i].tid])
                continue
            node = nodes[node_i]
            # Whether "one initial is there already" can be decided now (a
            # node of this search, unbounded); else collect them all.
            early = not bounded and node_i >= floor
            found = _initials(events, i, j, cvc, node.backtrack if early else 0)
            if found is None:
                continue
            initials = found
            et = events[j].tid
            if bounded:
                enabled = node.enabled
                usable = [q for q in initials if q in enabled]
                if not usable:
                    if held:
                        # No thread of the acquirer's way there can run
                        # before the release: it is at the lock already.
                        continue
                    usable = list(enabled)  # conservative fallback
                self._add_all(node_i, usable)
                self._coons_point(ex, i, usable)
                if not held and not any(_within_bound(node, q, self.bound) for q in usable):
                    self._reverse_earlier(ex, i, j, cvc)
            elif node_i >= floor:
                _apply_race(node, initials, et, self.use_sleep, self.bound)
            else:
                self.out.append(("race", node_i, tuple(initials), et))

    def _reverse_earlier(self, ex: Execution, i: int, j: int, cvc: tuple[int, ...]) -> None:
        """Bounded search, a race (i, j) whose reversal the bound refused:
        reverse j instead with an earlier access of i's thread that it
        conflicts with and does not happen after, walking back from i until
        a reversal fits the bound."""
        events = ex.events
        u = events[i].tid
        fj = _event_fp(events[j])
        for k in range(i - 1, -1, -1):
            e0 = events[k]
            if e0.tid != u:
                continue
            assert e0.vc is not None
            s0 = e0.vc[u]
            if len(cvc) > u and cvc[u] >= s0:
                return  # j happens after this and every earlier one
            if _independent(_event_fp(e0), fj):
                continue
            initials = _initials(events, k, j, cvc)
            assert initials is not None
            node_k = self.ev_node[k]
            if node_k < 0:
                self._coons_point(ex, k, [u])
                continue
            node = self.nodes[node_k]
            usable = [q for q in initials if q in node.enabled]
            if not usable:
                continue
            self._add_all(node_k, usable)
            self._coons_point(ex, k, usable)
            if any(_within_bound(node, q, self.bound) for q in usable):
                return

    def _add_all(self, node_i: int, threads: list[int]) -> None:
        """Bounded search: add every one of *threads* (enabled at the node)
        that fits the bound, in thread order."""
        if node_i >= self.floor:
            node = self.nodes[node_i]
            for q in sorted(threads):
                _add_branch(node, q, self.use_sleep, self.bound)
        else:
            self.out.append(("add", node_i, tuple(sorted(threads))))

    def _coons_point(self, ex: Execution, i: int, threads: list[int]) -> None:
        """Also backtrack at the last context switch before event *i*."""
        events = ex.events
        ev_node = self.ev_node
        for k in range(i - 1, -1, -1):
            if k == 0 or events[k - 1].tid != events[k].tid:
                nk = ev_node[k]
                if nk >= 0:
                    nd = self.nodes[nk]
                    extra = [q for q in threads if q in nd.enabled]
                    if extra:
                        self._add_all(nk, extra)
                return

    def _advance(self) -> None:
        nodes = self.nodes
        floor = self.floor
        while len(nodes) > floor:
            node = nodes[-1]
            if node.data:
                if node.chosen + 1 < node.n:
                    node.chosen += 1
                    return
                nodes.pop()
                continue
            q = _next_pending(node)
            if q >= 0:
                if self.use_sleep:
                    node.slept |= 1 << node.chosen  # it sleeps in the later siblings
                node.done |= 1 << q
                node.chosen = q
                return
            nodes.pop()
        self.finished = True

    # -- the state between executions, as data -------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The search's state between two executions, as JSON-able data."""
        return {
            "nodes": [node_data(n) for n in self.nodes],
            "floor": self.floor,
            "finished": self.finished,
        }

    def load(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`snapshot` (of a search with the same
        settings)."""
        self.nodes = [node_from_data(d) for d in state["nodes"]]
        self.floor = int(state["floor"])
        self.finished = bool(state["finished"])
        self.out = []
        self.log = []  # another prefix: no clock of the last execution applies

    # -- applying records (also used by a coordinator on its own nodes) -----

    def apply(self, node: _Node, rec: Record) -> None:
        """Apply a record to *node* (the one it names), as this search would
        have applied it to a node of its own."""
        if rec[0] == "race":
            _apply_race(node, list(rec[2]), rec[3], self.use_sleep, self.bound)
        else:
            for q in rec[2]:
                _add_branch(node, q, self.use_sleep, self.bound)


# -- the search's state as plain data (checkpoints, work sent to workers) ------


def node_data(node: _Node, chosen: int | None = None, slept: int | None = None) -> list[Any]:
    """*node* as a JSON-able list (optionally with another chosen branch and
    the siblings that sleep in it, for handing that branch to another
    search)."""
    return [
        node.data,
        node.n,
        list(node.enabled),
        node.chosen if chosen is None else chosen,
        node.backtrack,
        node.done if chosen is None else node.done | (0 if node.data else 1 << chosen),
        [[t, list(fp)] for t, fp in node.sleep.items()],
        node.slept if slept is None else slept,
        node.ev_index,
        node.prev,
        node.pre,
        list(node.pending) if node.pending else None,
    ]


def node_from_data(d: list[Any]) -> _Node:
    """The inverse of :func:`node_data`."""
    sleep = {int(t): tuple(fp) for t, fp in d[6]}
    node = _Node(list(d[2]), int(d[3]), int(d[8]), int(d[9]), int(d[10]), sleep or _EMPTY)
    node.data = bool(d[0])
    node.n = int(d[1])
    node.backtrack = int(d[4])
    node.done = int(d[5])
    node.slept = int(d[7])
    node.pending = [int(t) for t in d[11]] if d[11] else None
    return node


def sleepers(node: _Node, q: int) -> int:
    """The siblings that sleep in a new branch *q* of *node* (bit set): the
    branches taken there before it (first in, first out)."""
    if node.data:
        return 0
    return node.done & ~(1 << q)


def next_branch(node: _Node) -> int:
    """Take the next branch to explore at *node* out of its queue (-1 if
    none): a thread, or the next value of a data choice."""
    if node.data:
        if node.chosen + 1 < node.n:
            node.chosen += 1
            return node.chosen
        return -1
    q = _next_pending(node)
    if q >= 0:
        node.done |= 1 << q
    return q


def has_branches(node: _Node) -> bool:
    """Whether *node* has a branch left to explore."""
    if node.data:
        return node.chosen + 1 < node.n
    return any(not node.done >> q & 1 for q in node.pending or ())


def _event_fp(e: Event) -> Footprint:
    """An event's footprint, as :func:`_footprint` gives a thread's next
    operation."""
    return _fp(e.obj, e.kind, e.also)


def _initials(events: list[Event], i: int, j: int, cvc: tuple[int, ...],
              stop: int = 0) -> list[int] | None:
    """The threads that can start notdep(e_i).e_j (its initials); e_j's
    clock at the race is *cvc*. None as soon as one of them is in the bit
    set *stop* (source-DPOR: one is in the backtrack set already)."""
    u = events[i].tid
    ivc = events[i].vc
    assert ivc is not None
    s = ivc[u]
    first_seq: dict[int, int] = {}
    initials: list[int] = []
    for k in range(i + 1, j):
        w = events[k]
        wvc = w.vc
        assert wvc is not None
        if len(wvc) > u and wvc[u] >= s:
            continue  # happens after e_i: not in notdep(e_i)
        wt = w.tid
        if wt in first_seq:
            continue
        if all(len(wvc) <= x or wvc[x] < fs for x, fs in first_seq.items()):
            if stop >> wt & 1:
                return None
            initials.append(wt)
        first_seq[wt] = wvc[wt]
    et = events[j].tid
    if et not in first_seq and all(len(cvc) <= x or cvc[x] < fs for x, fs in first_seq.items()):
        if stop >> et & 1:
            return None
        initials.append(et)
    return initials


def _within_bound(node: _Node, q: int, bound: int | None) -> bool:
    if bound is None:
        return True
    pre = node.pre + (1 if (node.prev in node.enabled and q != node.prev) else 0)
    return pre <= bound


def _add_branch(node: _Node, q: int, use_sleep: bool, bound: int | None) -> None:
    """Add thread *q* (enabled at *node*) to its backtrack set; queue it for
    exploration unless it is asleep there (its runs are covered elsewhere)."""
    bit = 1 << q
    if node.backtrack & bit or not _within_bound(node, q, bound):
        return
    node.backtrack |= bit
    if use_sleep and q in node.sleep:
        return
    if node.pending is None:
        node.pending = [q]
    else:
        node.pending.append(q)


def _apply_race(node: _Node, initials: list[int], last: int, use_sleep: bool,
                bound: int | None = None) -> None:
    """Source-DPOR's rule for one race: unless one of the initials is in the
    backtrack set already, add one (the racing thread *last* if it can run
    there). With a *bound* (the quick pass) only one that fits it: if none
    does, the race is not reversed here."""
    backtrack = node.backtrack
    if any(backtrack >> q & 1 for q in initials):
        return
    enabled = node.enabled
    usable = [q for q in initials if q in enabled]
    if not usable:
        usable = list(enabled)  # conservative fallback
    if bound is not None:
        usable = [q for q in usable if _within_bound(node, q, bound)]
        if not usable:
            return
    _add_branch(node, last if last in usable else usable[0], use_sleep, bound)


def _next_pending(node: _Node) -> int:
    pend = node.pending
    while pend:
        q = pend.pop(0)
        if not node.done >> q & 1:
            return q
    return -1


# Per thread and object, the latest access in each of four slots: reads,
# writes and acquisitions, waits, releases. Indexed by access class.
_SLOT_OF_CLASS = (0, 1, 2, 1, 3)
# The slots whose accesses an access of each class races with: a read with
# writes, acquisitions and releases; a write with all those and reads; an
# acquisition with reads, writes and acquisitions, but not with the release
# that freed the lock (ordered before it, never reversed: on_event joins it
# after the race check); a release like a write. Waits race with nothing.
_RACE_SLOTS = ((1, 3), (0, 1, 3), (), (0, 1), (0, 1, 3))


def _candidates(acc: dict[int, list[int]], t: int, cls: int, out: list[int]) -> None:
    """The latest access of each other thread that races with an access of
    class *cls* by thread *t* (``_RACE_SLOTS``)."""
    want = _RACE_SLOTS[cls]
    for u, slots in acc.items():
        if u != t:
            for s in want:
                k = slots[s]
                if k >= 0:
                    out.append(k)


def _note(acc: dict[int, list[int]], obj: SharedObject, t: int, cls: int, idx: int) -> None:
    """Record event *idx* as thread *t*'s latest access of class *cls*."""
    mine = acc.get(t)
    if mine is None:
        mine = acc[t] = [-1, -1, -1, -1]
    mine[_SLOT_OF_CLASS[cls]] = idx
    if cls != 0 and cls != 2:
        obj._lastw = idx
        if cls == 4:
            obj._lastrel = idx


def _writes(e: Event, obj: SharedObject) -> bool:
    """Whether *e* changes *obj* (a write, RMW, acquisition or release)."""
    if e.obj is obj and _CLASS_OF_KIND[e.kind] in (1, 3, 4):
        return True
    return bool(e.also) and any(
        o is obj and _CLASS_OF_KIND[k] == 1 for o, k in e.also  # type: ignore[union-attr]
    )


def _join(vc: list[int], other: list[int]) -> None:
    """vc := max(vc, other), componentwise."""
    if len(vc) < len(other):
        vc.extend([0] * (len(other) - len(vc)))
    for x, y in enumerate(other):
        if y > vc[x]:
            vc[x] = y


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

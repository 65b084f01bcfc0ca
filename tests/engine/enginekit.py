"""Shared test programs and trace-counting helpers for the engine tests.

Imported by the tests in this directory (pytest puts it on ``sys.path``) and
by ``bench/engine.py``.

Everything here uses only the engine's public surface plus two internals that
a trace counter needs: ``core.relation`` (the dependence relation between
access kinds) and ``explore.run_once`` (to drive a strategy written here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mmrace.engine import (
    ACQUIRE,
    READ,
    RELEASE,
    RMW,
    WAIT,
    WRITE,
    Event,
    Execution,
    SharedObject,
    SimThread,
    Var,
    current_execution,
    current_thread,
    explore,
    require,
    spawn,
    visible,
)
from mmrace.engine.core import INDEP, RACE, relation
from mmrace.engine.explore import run_once
from mmrace.engine.strategy import Strategy

Program = Callable[[], Any]
Hook = Callable[[Execution], None] | None

# --- a tiny blocking lock built on the engine --------------------------------


class Lock(SharedObject):
    """A FIFO hand-off mutex: ``acquire`` is one RMW (take it, or queue up);
    a queued thread then WAITs until the releaser hands ownership to it."""

    __slots__ = ("owner", "queue")

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.owner: SimThread | None = None
        self.queue: list[SimThread] = []

    def acquire(self) -> None:
        me = current_thread()
        assert me is not None, "locks are for simulated threads"
        visible(self, RMW, "lock")
        if self.owner is None:
            self.owner = me
            return
        require(self.owner is not me, f"{me.name} locks {self.name} recursively")
        self.queue.append(me)
        visible(self, WAIT, "lock-wait", guard=lambda: self.owner is me)

    def release(self) -> None:
        me = current_thread()
        visible(self, RMW, "unlock")
        require(self.owner is me, f"unlock of {self.name} by a non-owner")
        self.owner = self.queue.pop(0) if self.queue else None

    def wait_info(self, thread: SimThread) -> str:
        return f"held by {self.owner.name}" if self.owner is not None else ""


class Mutex(SharedObject):
    """A lock whose acquisition is one ACQUIRE event, blocked while it is
    held; a release is one RELEASE. No queue: whoever is enabled when it is
    free may take it."""

    __slots__ = ("owner",)

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.owner: SimThread | None = None

    def free(self) -> bool:
        return self.owner is None

    def acquire(self) -> None:
        me = current_thread()
        assert me is not None, "locks are for simulated threads"
        require(self.owner is not me, f"{me.name} locks {self.name} recursively")
        visible(self, ACQUIRE, "lock", guard=self.free)
        assert self.owner is None
        self.owner = me

    def trylock(self) -> bool:
        me = current_thread()
        visible(self, RMW, "trylock")
        if self.owner is None:
            self.owner = me
            return True
        return False

    def is_locked(self) -> bool:
        visible(self, READ, "is_locked")
        return self.owner is not None

    def release(self) -> None:
        me = current_thread()
        require(self.owner is me, f"unlock of {self.name} by a non-owner")
        visible(self, RELEASE, "unlock")
        self.owner = None

    def wait_info(self, thread: SimThread) -> str:
        return f"held by {self.owner.name}" if self.owner is not None else ""


# --- programs ----------------------------------------------------------------


def _final(hook: Hook, check: Callable[[], None] | None = None) -> Callable[[], None]:
    def final() -> None:
        if check is not None:
            check()
        if hook is not None:
            hook(current_execution())

    return final


def lost_update(hook: Hook = None, threads: int = 2, check: bool = True) -> Program:
    """Each thread loads and stores a counter: the classic lost update (with
    ``check=False`` the final assertion is left out, to count traces)."""

    def program() -> Any:
        x = Var(0, name="x")

        def inc() -> None:
            x.store(x.load() + 1)

        for i in range(threads):
            spawn(inc, name=f"inc{i}")

        def final_check() -> None:
            require(x.value == threads, f"x == {x.value}")

        return _final(hook, final_check if check else None)

    return program


def abba(hook: Hook = None) -> Program:
    """Two threads take two locks in opposite orders."""

    def program() -> Any:
        a = Lock("A")
        b = Lock("B")

        def worker(first: Lock, second: Lock) -> None:
            first.acquire()
            second.acquire()
            second.release()
            first.release()

        spawn(worker, a, b, name="left")
        spawn(worker, b, a, name="right")
        return _final(hook)

    return program


def message_passing(hook: Hook = None) -> Program:
    """Writer stores data then sets a flag; a reader that sees the flag must
    see the data (sequential consistency)."""

    def program() -> Any:
        data = Var(0, name="data")
        flag = Var(0, name="flag")

        def writer() -> None:
            data.store(42)
            flag.store(1)

        def reader() -> None:
            if flag.load() == 1:
                d = data.load()
                require(d == 42, f"reader saw the flag but data == {d}")

        spawn(writer, name="writer")
        spawn(reader, name="reader")
        return _final(hook)

    return program


def indexer(
    threads: int, hook: Hook = None, size: int = 128, messages: int = 4
) -> Program:
    """The indexer benchmark of Flanagan & Godefroid (POPL 2005): each thread
    inserts ``messages`` values into a hash table of ``size`` entries with
    compare-and-swap and linear probing. With the paper's parameters
    (size 128, 4 messages) there are no collisions below 12 threads; a
    smaller table gives collisions with few threads."""

    def program() -> Any:
        table = [Var(0, name=f"table[{i}]") for i in range(size)]

        def worker(tid: int) -> None:
            for m in range(1, messages + 1):
                w = m * 11 + tid
                h = (w * 7) % size
                while True:
                    # compare-and-swap(table[h], 0, w) as one atomic RMW
                    old = table[h].rmw(lambda v, w=w: w if v == 0 else v)
                    if old == 0:
                        break
                    h = (h + 1) % size

        for t in range(threads):
            spawn(worker, t, name=f"T{t}")

        def check() -> None:
            stored = sorted(v.value for v in table if v.value)
            want = sorted(m * 11 + t for t in range(threads) for m in range(1, messages + 1))
            require(stored == want, f"table holds {stored}")

        return _final(hook, check)

    return program


def filesystem(
    threads: int, hook: Hook = None, inodes: int = 32, blocks: int = 26
) -> Program:
    """The file-system benchmark of Flanagan & Godefroid (POPL 2005): each
    thread locks inode ``tid % inodes`` and, if it has no block yet, scans for
    a free block from ``(2 * i) % blocks`` under per-block locks. With the
    paper's parameters there are no conflicts below 14 threads."""

    def program() -> Any:
        locki = [Lock(f"locki[{i}]") for i in range(inodes)]
        inode = [Var(0, name=f"inode[{i}]") for i in range(inodes)]
        lockb = [Lock(f"lockb[{b}]") for b in range(blocks)]
        busy = [Var(False, name=f"busy[{b}]") for b in range(blocks)]

        def worker(tid: int) -> None:
            i = tid % inodes
            locki[i].acquire()
            if inode[i].load() == 0:
                b = (i * 2) % blocks
                while True:
                    lockb[b].acquire()
                    if not busy[b].load():
                        busy[b].store(True)
                        inode[i].store(b + 1)
                        lockb[b].release()
                        break
                    lockb[b].release()
                    b = (b + 1) % blocks
            locki[i].release()

        for t in range(threads):
            spawn(worker, t, name=f"T{t}")

        def check() -> None:
            used = [v.value for v in inode if v.value]
            require(len(used) == len(set(used)), f"two inodes share a block: {used}")

        return _final(hook, check)

    return program


# --- random straight-line-ish programs (for property tests) ------------------

# An op is (kind, var index, operand): kind "load", "store", "rmw" (add
# operand), "cond" (load; if the value is odd, store operand into the next
# var, else load it) so that control flow depends on values read, or "cs"
# (a critical section: lock the var's lock, add operand with an RMW, unlock),
# or "pair" (one atomic operation that reads the next var and writes this
# one: ``visible(..., also=...)``); with ACQUIRE/RELEASE locks (a second set,
# one per var), "mcs" (lock, add operand, unlock), "try" (trylock; if taken,
# add operand and unlock) or "peek" (is the lock held?).
Op = tuple[str, int, int]
Spec = tuple[int, tuple[tuple[Op, ...], ...]]  # (number of vars, ops per thread)


def spec_program(spec: Spec, sink: list[tuple[Any, ...]] | None = None,
                 traces: list[Any] | None = None) -> Program:
    """A program from a spec. Each complete execution appends its final state
    (every var's value, then what each thread read) to *sink* and its full
    trace plus decisions to *traces*."""
    nvars, threads = spec

    def program() -> Any:
        vs = [Var(0, name=f"v{i}") for i in range(nvars)]
        locks = [Lock(f"L{i}") for i in range(nvars)]
        mutexes = [Mutex(f"M{i}") for i in range(nvars)]
        reads: list[list[Any]] = [[] for _ in threads]

        def worker(tid: int, ops: Sequence[Op]) -> None:
            seen = reads[tid]
            for kind, vi, val in ops:
                v = vs[vi]
                if kind == "load":
                    seen.append(v.load())
                elif kind == "store":
                    v.store(val * 10 + tid)
                elif kind == "rmw":
                    seen.append(v.rmw(lambda x, val=val: x + val))
                elif kind == "pair":
                    # one atomic operation on two vars: v := other + operand
                    other = vs[(vi + 1) % nvars]
                    also = ((other, READ),) if other is not v else None
                    ev = visible(v, WRITE, "pair", also=also)
                    seen.append(other.value)
                    v.value = other.value + val
                    if ev is not None:
                        ev.detail = v.value
                elif kind == "cs":
                    locks[vi].acquire()
                    seen.append(v.rmw(lambda x, val=val: x + val))
                    locks[vi].release()
                elif kind == "mcs":
                    mutexes[vi].acquire()
                    seen.append(v.rmw(lambda x, val=val: x + val))
                    mutexes[vi].release()
                elif kind == "try":
                    if mutexes[vi].trylock():
                        seen.append(v.rmw(lambda x, val=val: x + val))
                        mutexes[vi].release()
                    else:
                        seen.append(None)
                elif kind == "peek":
                    seen.append(mutexes[vi].is_locked())
                else:
                    got = v.load()
                    seen.append(got)
                    other = vs[(vi + 1) % nvars]
                    if got % 2:
                        other.store(val)
                    else:
                        seen.append(other.load())

        for tid, ops in enumerate(threads):
            spawn(worker, tid, ops, name=f"T{tid}")

        def final() -> None:
            ex = current_execution()
            if sink is not None:
                sink.append((tuple(v.value for v in vs), tuple(tuple(r) for r in reads)))
            if traces is not None:
                traces.append((trace_of(ex.events), list(ex.decisions)))

        return final

    return program


def trace_of(events: Iterable[Event]) -> list[tuple[int, str, int, str, Any]]:
    return [(e.tid, e.obj.name, e.kind, e.label, e.detail) for e in events]


# --- Mazurkiewicz traces -------------------------------------------------------


def accesses(ev: Event) -> tuple[tuple[SharedObject, int], ...]:
    """Every (object, kind) an event touches (``visible(..., also=...)``)."""
    return ev.accesses()


def announced(th: SimThread) -> tuple[tuple[SharedObject, int], ...]:
    """Every (object, kind) a thread's announced operation will touch."""
    assert th.op_obj is not None
    return ((th.op_obj, th.op_kind), *(th.op_also or ()))


def footprint(th: SimThread) -> tuple[tuple[int, int], ...]:
    """A thread's announced operation as (object serial, kind) pairs: serials,
    unlike the objects, stay valid when the search re-runs the program."""
    return tuple((o.serial, k) for o, k in announced(th))


def _conflict(a: Iterable[tuple[int, int]], b: Iterable[tuple[int, int]]) -> bool:
    """Whether two footprints fail to commute when both are enabled: some
    object they share with a RACE either way."""
    bl = list(b)
    return any(
        sa == sb and RACE in (relation(ka, kb), relation(kb, ka)) for sa, ka in a for sb, kb in bl
    )


def canonical(events: Sequence[Event]) -> tuple[frozenset[Any], frozenset[Any]]:
    """A canonical form of an execution's Mazurkiewicz trace: its events
    (thread, index in thread, accesses) and every ordered pair of events of
    different threads that touch one object in a reversible conflict
    (``relation == RACE``). Two executions are equivalent iff the forms are
    equal: program order is implied by the event names, and a WAIT is never
    reversed against the write that enabled it (it could not run first) and
    commutes with later writes (its guard is monotone), so only RACE pairs
    decide the trace."""
    count: dict[int, int] = {}
    ids: list[tuple[Any, ...]] = []
    by_obj: dict[str, list[tuple[int, int]]] = {}
    for n, ev in enumerate(events):
        k = count.get(ev.tid, 0)
        count[ev.tid] = k + 1
        acc = accesses(ev)
        ids.append((ev.tid, k, tuple((o.name, kind) for o, kind in acc)))
        for o, kind in acc:
            by_obj.setdefault(o.name, []).append((n, kind))
    edges = set()
    for idx in by_obj.values():
        for a, (i, ki) in enumerate(idx):
            ti = events[i].tid
            for j, kj in idx[a + 1 :]:
                if ti != events[j].tid and relation(ki, kj) == RACE:
                    edges.add((ids[i], ids[j]))
    return frozenset(ids), frozenset(edges)


class Census:
    """Counts the distinct traces of the executions it is hooked into."""

    def __init__(self) -> None:
        self.forms: set[tuple[frozenset[Any], frozenset[Any]]] = set()
        self.runs = 0

    def __call__(self, ex: Execution) -> None:
        self.runs += 1
        self.forms.add(canonical(ex.events))

    @property
    def traces(self) -> int:
        return len(self.forms)


def naive_traces(factory: Callable[[Hook], Program], max_executions: int | None = None
                 ) -> tuple[int, int, bool]:
    """(naive executions, distinct traces, complete) of ``factory(hook)``."""
    census = Census()
    res = explore(factory(census), strategy="naive", max_executions=max_executions)
    assert res.violation is None, res.violation
    return res.executions, census.traces, res.complete


class LnfStrategy(Strategy):
    """An independent trace counter: depth-first search over interleavings
    that only extends a prefix if it stays in lexicographic normal form
    (Anisimov & Knuth) with threads ordered by id. Every Mazurkiewicz trace
    has exactly one such representative, so the number of complete runs is
    the number of traces. Prefixes that cannot be completed end as blocked
    runs. Only for programs without WAIT operations (with them the lexically
    least representative might not be feasible)."""

    name = "lnf"
    complete_when_done = True

    def __init__(self) -> None:
        self.stack: list[list[int]] = []  # per point: remaining options, chosen first
        self.pos = 0
        self.done = False

    def begin(self, ex: Execution) -> None:
        self.pos = 0

    def _ok(self, ex: Execution, t: int) -> bool:
        th = ex.threads[t]
        mine = announced(th)
        if any(kind == WAIT for _, kind in mine):
            raise AssertionError("LnfStrategy does not support WAIT operations")
        for ev in reversed(ex.events):
            if ev.tid == t:
                return True
            theirs = accesses(ev)
            if any(
                o is p and (relation(k, q) != INDEP or relation(q, k) != INDEP)
                for o, k in theirs for p, q in mine
            ):
                return True
            if ev.tid > t:
                return False  # t's op could move before ev: not lexically least
        return True

    def schedule(self, ex: Execution, enabled: list[int]) -> int | None:
        pos = self.pos
        self.pos += 1
        if pos < len(self.stack):
            return self.stack[pos][0]
        opts = [t for t in enabled if self._ok(ex, t)]
        if not opts:
            return None
        self.stack.append(opts)
        return opts[0]

    def choose(self, ex: Execution, n: int) -> int:
        pos = self.pos
        self.pos += 1
        if pos < len(self.stack):
            return self.stack[pos][0]
        self.stack.append(list(range(n)))
        return 0

    def end(self, ex: Execution) -> None:
        stack = self.stack
        del stack[self.pos :]
        while stack:
            top = stack[-1]
            top.pop(0)
            if top:
                return
            stack.pop()
        self.done = True

    def more(self) -> bool:
        return not self.done


def lnf_traces(program: Program, max_runs: int = 1_000_000) -> tuple[int, int]:
    """(traces, dead-end runs) by lexicographic-normal-form enumeration."""
    return _count(program, LnfStrategy(), max_runs)


class SleepSetStrategy(Strategy):
    """A second independent trace counter, for programs with WAITs too:
    depth-first search over all interleavings pruned by sleep sets alone
    (Godefroid 1996). Without any persistent-set reduction, sleep sets still
    explore exactly one complete execution per Mazurkiewicz trace; the other
    runs end sleep-set blocked.

    Two operations enabled in one state commute unless they touch one object
    and one of them writes while the other reads or writes. A WAIT that is
    enabled stays enabled (monotone guard) and changes nothing, so it
    commutes with everything: this is the equivalence that ``canonical``
    computes (it orders only RACE pairs)."""

    name = "sleep-sets"
    complete_when_done = True

    def __init__(self) -> None:
        # per decision point: [options left (current first), explored tids,
        # sleep set on entry, footprints of the enabled threads] or, for a
        # data choice, [options left]
        self.stack: list[list[Any]] = []
        self.pos = 0
        self.sleep: dict[int, Any] = {}
        self.done = False

    @staticmethod
    def _commute(a: Any, b: Any) -> bool:
        return not _conflict(a, b)

    def begin(self, ex: Execution) -> None:
        self.pos = 0
        self.sleep = {}

    def schedule(self, ex: Execution, enabled: list[int]) -> int | None:
        pos = self.pos
        self.pos += 1
        if pos < len(self.stack):
            frame = self.stack[pos]
        else:
            ops = {t: footprint(ex.threads[t]) for t in enabled}
            opts = [t for t in enabled if t not in self.sleep]
            if not opts:
                return None
            frame = [opts, [], self.sleep, ops]
            self.stack.append(frame)
        opts, explored, sleep_in, ops = frame
        t = opts[0]
        op = ops[t]
        child = {r: o for r, o in sleep_in.items() if r != t and self._commute(o, op)}
        for d in explored:
            if self._commute(ops[d], op):
                child[d] = ops[d]
        self.sleep = child
        return int(t)

    def choose(self, ex: Execution, n: int) -> int:
        pos = self.pos
        self.pos += 1
        if pos < len(self.stack):
            return int(self.stack[pos][0][0])
        self.stack.append([list(range(n))])
        return 0

    def end(self, ex: Execution) -> None:
        stack = self.stack
        del stack[self.pos :]
        while stack:
            frame = stack[-1]
            opts = frame[0]
            first = opts.pop(0)
            if len(frame) > 1:
                frame[1].append(first)
                while opts and opts[0] in frame[2]:
                    opts.pop(0)
            if opts:
                return
            stack.pop()
        self.done = True

    def more(self) -> bool:
        return not self.done


def sleep_set_traces(program: Program, max_runs: int = 1_000_000) -> tuple[int, int]:
    """(traces, blocked runs) by sleep-set-only enumeration."""
    return _count(program, SleepSetStrategy(), max_runs)


def _count(program: Program, strat: Strategy, max_runs: int) -> tuple[int, int]:
    complete = blocked = 0
    locals_: dict[str, Any] = {}
    while strat.more():
        if complete + blocked >= max_runs:
            raise RuntimeError(f"{strat.name}: more than {max_runs} runs")
        ex = run_once(program, strat, 10_000, locals_)
        assert ex.violation is None, ex.violation
        if ex.sleep_blocked:
            blocked += 1
        else:
            complete += 1
    return complete, blocked


# --- traces under names that do not depend on the interleaving -----------------
#
# Object serials and thread ids are handed out in creation order, so two
# equivalent executions that create objects (a COW copy, a TLB entry, a
# per-CPU RCU reader) or spawn threads in different threads name them
# differently. For counting the traces of model scenarios, name a thread by
# its parent's name and its rank among the parent's children, and an object
# by its creator's name and its rank among the creator's objects.


class StableCensus:
    """Counts distinct traces of the executions it is hooked into, with
    interleaving-independent names. Use as a context manager around the
    exploration (it watches object creation), and call it on each finished
    execution (``census(ex)``)."""

    def __init__(self) -> None:
        self.forms: set[tuple[frozenset[Any], frozenset[Any]]] = set()
        self.runs = 0
        self._orig: Any = None

    def __enter__(self) -> StableCensus:
        import mmrace.engine.core as core

        orig = self._orig = core.SharedObject.__init__

        def init(obj: SharedObject, name: str = "") -> None:
            orig(obj, name)
            ex = current_execution()
            th = ex.current
            key = ("set-up",) if th is None else _stable_thread(ex, th.tid)
            counts = ex.locals.setdefault("census.count", {})
            n = counts.get(key, 0)
            counts[key] = n + 1
            ex.locals.setdefault("census.obj", {})[obj.serial] = (key, n)

        core.SharedObject.__init__ = init  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        import mmrace.engine.core as core

        core.SharedObject.__init__ = self._orig  # type: ignore[method-assign]

    def __call__(self, ex: Execution) -> None:
        self.runs += 1
        self.forms.add(stable_canonical(ex))

    @property
    def traces(self) -> int:
        return len(self.forms)


def _stable_thread(ex: Execution, tid: int) -> tuple[Any, ...]:
    memo = ex.locals.setdefault("census.thread", {})
    key = memo.get(tid)
    if key is None:
        th = ex.threads[tid]
        if th.parent is None:
            key = ("root", tid)
        else:
            siblings = [t.tid for t in ex.threads if t.parent == th.parent]
            key = (_stable_thread(ex, th.parent), siblings.index(tid))
        memo[tid] = key
    return key  # type: ignore[no-any-return]


def stable_canonical(ex: Execution) -> tuple[frozenset[Any], frozenset[Any]]:
    """:func:`canonical` with interleaving-independent names (objects made
    outside a :class:`StableCensus` keep their serial)."""
    names = ex.locals.get("census.obj", {})
    events = ex.events
    count: dict[Any, int] = {}
    ids: list[tuple[Any, ...]] = []
    by_obj: dict[Any, list[tuple[int, int]]] = {}
    for n, ev in enumerate(events):
        tk = _stable_thread(ex, ev.tid)
        k = count.get(tk, 0)
        count[tk] = k + 1
        acc = [(names.get(o.serial, o.serial), kind) for o, kind in ev.accesses()]
        ids.append((tk, k, tuple(acc)))
        for o, kind in acc:
            by_obj.setdefault(o, []).append((n, kind))
    edges = set()
    for idx in by_obj.values():
        for a, (i, ki) in enumerate(idx):
            ti = events[i].tid
            for j, kj in idx[a + 1 :]:
                if ti != events[j].tid and relation(ki, kj) == RACE:
                    edges.add((ids[i], ids[j]))
    return frozenset(ids), frozenset(edges)


def dfs_census(program: Program, strat: Strategy, max_steps: int = 20_000
               ) -> tuple[StableCensus, int, int]:
    """Run *strat* (a fresh DFS strategy) to the end on *program*, counting
    traces with a :class:`StableCensus`: (census, executions, blocked). Stops
    at the first violation."""
    census = StableCensus()
    executions = blocked = 0
    locals_: dict[str, Any] = {}
    with census:
        while strat.more():
            ex = run_once(program, strat, max_steps, locals_)
            if ex.sleep_blocked:
                blocked += 1
                continue
            executions += 1
            census(ex)
            if ex.violation is not None:
                break
    return census, executions, blocked

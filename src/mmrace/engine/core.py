"""Threads, visible operations and one execution of a program.

A *program* runs many times, once per explored schedule. Each run is an
:class:`Execution`: the program's set-up code runs first, on the caller's
greenlet, and spawns simulated threads (greenlets); then the scheduler decides,
before every visible operation, which thread performs its next one.

A thread *announces* its next visible operation (object, access kind, label)
and hands control to the scheduler; when the scheduler picks it, the operation
is performed by the code that follows the announcement, together with all the
thread-local code up to the next announcement. So an *event* is one visible
operation plus the invisible computation after it, and the footprint of the
event is exactly the announced operation. This is what lets DPOR reason about
dependence from footprints alone.

Nothing here knows about memory management.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import greenlet

if TYPE_CHECKING:
    from mmrace.engine.strategy import Strategy

# --- access kinds -----------------------------------------------------------
#
# A kind is a small int. Four base kinds decide dependence; higher layers may
# register more kinds that behave like one of them but print differently.

READ = 0
"""Reads the object; commutes with other reads."""
WRITE = 1
"""Writes the object."""
RMW = 2
"""Atomic read-modify-write (also every lock state change)."""
WAIT = 3
"""Waits, blocked, until a guard holds; happens after the write that enabled
it (the last write to the object before the guard turned true) and is never
reversed against it (it could not run before it). It changes nothing and its
guard is monotone, so it commutes with every later write: DPOR orders it
after that one write only, and sleep sets treat it as independent."""

INDEP = 0
HB = 1
RACE = 2

# REL[earlier][later] for base kinds: independent, happens-before only, or a
# reversible race (dependent and co-enabled).
_REL: tuple[tuple[int, ...], ...] = (
    (INDEP, RACE, RACE, INDEP),  # READ then ...
    (RACE, RACE, RACE, HB),  # WRITE then ...
    (RACE, RACE, RACE, HB),  # RMW then ...
    (INDEP, INDEP, INDEP, INDEP),  # WAIT then ...
)

_kind_names: list[str] = ["read", "write", "rmw", "wait"]
_kind_base: list[int] = [READ, WRITE, RMW, WAIT]
# Per kind, DPOR's access class: 0 read, 1 write (WRITE, RMW), 2 wait.
kind_class: list[int] = [0, 1, 1, 2]


def register_kind(name: str, like: int) -> int:
    """Register an access kind that depends like base kind *like* (READ, WRITE,
    RMW or WAIT) but is named *name* in traces. Returns the new kind's id.
    Registering the same name twice returns the same id."""
    if name in _kind_names:
        return _kind_names.index(name)
    if like not in (READ, WRITE, RMW, WAIT):
        raise ValueError(f"kind {name!r}: 'like' must be a base kind")
    _kind_names.append(name)
    _kind_base.append(like)
    kind_class.append((0, 1, 1, 2)[like])
    return len(_kind_names) - 1


def kind_name(kind: int) -> str:
    return _kind_names[kind]


def base_kind(kind: int) -> int:
    return _kind_base[kind]


def relation(earlier: int, later: int) -> int:
    """INDEP, HB or RACE between two accesses of one object, by kind."""
    return _REL[_kind_base[earlier]][_kind_base[later]]


def dependent(kind_a: int, kind_b: int) -> bool:
    """Whether two accesses to one object fail to commute (either order)."""
    ba = _kind_base[kind_a]
    bb = _kind_base[kind_b]
    return _REL[ba][bb] != INDEP or _REL[bb][ba] != INDEP


# --- violations -------------------------------------------------------------


class ViolationError(Exception):
    """Raised by model code to end the execution with a violation.

    *kind* is a short string (the engine's own are ``assertion``,
    ``deadlock``, ``crash`` and ``step-limit``; later layers add theirs);
    *title* is one line that identifies the violation (used to tell whether a
    shrunk schedule still shows the same one); *message* is the detail."""

    def __init__(self, kind: str, title: str, message: str = "") -> None:
        super().__init__(f"{kind}: {title}")
        self.kind = kind
        self.title = title
        self.message = message or title


class _Abort(BaseException):
    """Unwinds a greenlet when its execution has ended (not an error)."""


class SharedObject:
    """Anything visible operations act on. Identified by a creation serial
    that is deterministic for a given schedule (never ``id()``)."""

    __slots__ = ("serial", "name", "_acc", "_lastw", "__weakref__")

    def __init__(self, name: str = "") -> None:
        ex = _current
        if ex is None:
            raise RuntimeError(
                "shared objects can only be created while a program runs "
                "(inside the program function or a simulated thread)"
            )
        ex.serial += 1
        self.serial = ex.serial
        self.name = name or f"{type(self).__name__.lower()}#{self.serial}"
        # DPOR bookkeeping: per thread, the index of its latest event on this
        # object per base kind. Lives on the object because objects are made
        # afresh in every execution.
        self._acc: dict[int, list[int]] | None = None
        self._lastw = -1  # index of its latest write event

    def wait_info(self, thread: SimThread) -> str:
        """Why *thread* cannot proceed on this object (for deadlock reports)."""
        return ""

    def __repr__(self) -> str:
        return self.name


class Event:
    """One executed visible operation."""

    __slots__ = ("tid", "obj", "kind", "also", "label", "detail", "where", "vc")

    def __init__(
        self,
        tid: int,
        obj: SharedObject,
        kind: int,
        label: str,
        where: str | None,
        also: Also | None = None,
    ) -> None:
        self.tid = tid
        self.obj = obj
        self.kind = kind
        # Further (object, kind) accesses of the same atomic operation.
        self.also = also
        self.label = label
        self.detail: Any = None
        self.where = where
        self.vc: list[int] | None = None

    def accesses(self) -> tuple[tuple[SharedObject, int], ...]:
        """Every (object, kind) this operation touches, the main one first."""
        if self.also:
            return ((self.obj, self.kind), *self.also)
        return ((self.obj, self.kind),)

    def describe(self) -> str:
        text = self.label or kind_name(self.kind)
        text = f"{text} {self.obj.name}"
        if self.detail is not None:
            text = f"{text} = {self.detail}"
        return text


Guard = Callable[[], bool]
Also = tuple[tuple["SharedObject", int], ...]


class SimThread:
    """A simulated thread: a greenlet plus its announced next operation."""

    __slots__ = (
        "tid",
        "name",
        "glet",
        "op_obj",
        "op_kind",
        "op_also",
        "op_label",
        "guard",
        "wake",
        "finished",
        "prologue",
        "event",
        "locals",
        "where",
        "parent",
    )

    def __init__(self, tid: int, name: str, parent: int | None) -> None:
        self.tid = tid
        self.name = name
        self.parent = parent
        self.glet: greenlet.greenlet | None = None
        self.op_obj: SharedObject | None = None
        self.op_kind = READ
        self.op_also: Also | None = None
        self.op_label = ""
        self.guard: Guard | None = None
        # How many events had run when the announced operation became
        # enabled: at the announcement, or when its guard was last seen to
        # turn true (-1 while the guard is false). A WAIT happens after the
        # last write to its object before that point, and only after it.
        self.wake = -1
        self.finished = False
        self.prologue = True
        self.event: Event | None = None
        self.locals: dict[str, Any] = {}
        # Stack of model function names ("where am I"), kept by higher layers;
        # the innermost is stamped on every event for traces.
        self.where: list[str] = []

    def __repr__(self) -> str:
        return f"<thread {self.tid} {self.name}>"


class Execution:
    """One run of a program under a strategy's decisions."""

    def __init__(
        self,
        program: Callable[[], Any],
        strategy: Strategy,
        max_steps: int,
        exploration_locals: dict[str, Any],
    ) -> None:
        self.program = program
        self.strategy = strategy
        self.max_steps = max_steps
        self.serial = 0
        self.threads: list[SimThread] = []
        self.live: list[SimThread] = []  # unfinished threads, in tid order
        self.on_event = strategy.on_event
        self.current: SimThread | None = None
        self.events: list[Event] = []
        self.choices: list[int] = []  # every choose() result, in order
        self.decisions: list[int] = []  # option index wherever there was a choice
        self.preemptions = 0
        self.prev_tid = -1
        self.stop = False
        self.sleep_blocked = False
        self.violation: ViolationError | None = None
        self.violation_tid: int | None = None
        self.locals: dict[str, Any] = {}
        self.exploration_locals = exploration_locals
        self.main: greenlet.greenlet = greenlet.getcurrent()

    @property
    def schedule(self) -> list[int]:
        """The thread chosen at every scheduling point (one per event)."""
        return [e.tid for e in self.events]

    # -- running -----------------------------------------------------------

    def run(self) -> None:
        global _current
        prev = _current
        _current = self
        self.main = greenlet.getcurrent()
        try:
            final = None
            try:
                final = self.program()
            except _Abort:
                pass
            except ViolationError as v:
                self._fail(v, None)
            except Exception as exc:
                self._fail(_crash(exc), None)
            if not self.stop:
                self._loop()
            if not self.stop and final is not None and callable(final):
                try:
                    final()
                except ViolationError as v:
                    self._fail(v, None)
                except Exception as exc:
                    self._fail(_crash(exc), None)
        finally:
            self.stop = True
            self._kill_threads()
            _current = prev

    def _loop(self) -> None:
        while not self.stop:
            nxt = self._decide()
            if nxt is None:
                return
            self.current = nxt
            assert nxt.glet is not None
            nxt.glet.switch()
            self.current = None

    def _kill_threads(self) -> None:
        for th in self.threads:
            g = th.glet
            if g is not None and not g.dead and g:
                try:
                    g.throw(greenlet.GreenletExit)
                except BaseException:
                    pass

    def _fail(self, v: ViolationError, tid: int | None) -> None:
        # A sleep-set-blocked execution is abandoned, not finished: what its
        # threads raise while they are unwound (an unlock in a ``finally``
        # that finds its lock state half-done) is not a violation.
        if self.violation is None and not self.sleep_blocked:
            self.violation = v
            self.violation_tid = tid
        self.stop = True

    # -- scheduling --------------------------------------------------------

    def _decide(self) -> SimThread | None:
        """Pick the thread whose announced operation runs next, record it as an
        event, and return it; None when the execution is over.

        This runs once per visible operation: keep it lean."""
        if self.stop:
            return None
        enabled: list[int] = []
        for t in self.live:
            g = t.guard
            if g is None:
                enabled.append(t.tid)
            elif g():
                enabled.append(t.tid)
                if t.wake < 0:
                    t.wake = len(self.events)
            else:
                t.wake = -1
        if not enabled:
            if self.live:
                self._fail(self._deadlock(), None)
            return None
        events = self.events
        if len(events) >= self.max_steps:
            self._fail(
                ViolationError(
                    "step-limit",
                    f"execution exceeded {self.max_steps} steps",
                    f"an execution ran more than {self.max_steps} visible operations "
                    "(a livelock, or an unbounded loop in the program)",
                ),
                None,
            )
            return None
        try:
            tid = self.strategy.schedule(self, enabled)
        except ViolationError as v:
            # A replay that diverges or a program that is not deterministic.
            # Fail here rather than in the caller: _decide also runs on the
            # main greenlet (when a thread ends), where nothing would catch
            # it and the error would escape explore()/replay().
            self._fail(v, None)
            return None
        if tid is None:
            self.sleep_blocked = True
            self.stop = True
            return None
        if len(enabled) > 1:
            self.decisions.append(enabled.index(tid))
            prev = self.prev_tid
            if prev != tid and prev in enabled:
                self.preemptions += 1
        th = self.threads[tid]
        where = th.where
        ev = Event(
            tid,
            th.op_obj,  # type: ignore[arg-type]
            th.op_kind,
            th.op_label,
            where[-1] if where else None,
            th.op_also,
        )
        events.append(ev)
        th.event = ev
        self.on_event(self, ev)
        self.prev_tid = tid
        return th

    def _deadlock(self) -> ViolationError:
        lines = []
        names = []
        for t in self.threads:
            if t.finished:
                continue
            names.append(t.name)
            obj = t.op_obj
            what = t.op_label or kind_name(t.op_kind)
            line = f"{t.name} waits in {what} on {obj.name if obj else '?'}"
            if obj is not None:
                info = obj.wait_info(t)
                if info:
                    line += f" ({info})"
            for describe in self.exploration_locals.get("_thread_describers", ()):
                extra = describe(t)
                if extra:
                    line += "\n" + extra
            lines.append(line)
        return ViolationError(
            "deadlock",
            "deadlock: " + ", ".join(names) + " blocked",
            "no thread can run:\n" + "\n".join(lines),
        )

    # -- called from threads ------------------------------------------------

    def choose(self, n: int, label: str) -> int:
        if n <= 1:
            return 0
        v = self.strategy.choose(self, n)
        self.decisions.append(v)
        self.choices.append(v)
        return v


_current: Execution | None = None


def _crash(exc: BaseException) -> ViolationError:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ViolationError(
        "crash", f"{type(exc).__name__}: {exc}", f"unexpected exception in model code:\n{tb}"
    )


def current_execution() -> Execution:
    ex = _current
    if ex is None:
        raise RuntimeError("no program is running")
    return ex


def current_thread() -> SimThread | None:
    """The simulated thread running now, or None in set-up and final checks."""
    ex = _current
    return ex.current if ex is not None else None


def in_execution() -> bool:
    return _current is not None


def visible(
    obj: SharedObject,
    kind: int,
    label: str = "",
    guard: Guard | None = None,
    also: Also | None = None,
) -> Event | None:
    """Announce a visible operation on *obj* and wait to be scheduled.

    *also* lists further ``(object, kind)`` accesses that the same atomic
    operation makes (READ, WRITE or RMW; not WAIT): a user store through a
    TLB entry, say, reads the entry and writes the page in one step. DPOR
    treats the operation as dependent on anything that conflicts with any of
    its accesses.

    Returns when this thread may perform it; the caller then performs the
    operation's effect (before its next call to :func:`visible`). With a
    *guard*, the thread is blocked until ``guard()`` is true; a guard must be
    monotone (once true, it stays true until this thread runs) and should be
    enabled only by writes to *obj*. Returns the event, so the caller can
    record a value on it (``event.detail``); None in set-up code, where
    operations run at once and are not events.
    """
    ex = _current
    if ex is None:
        raise RuntimeError("visible operation outside a running program")
    th = ex.current
    if th is None:
        # Set-up or final check: nothing runs concurrently.
        if guard is not None and not guard():
            raise ViolationError(
                "deadlock",
                f"set-up blocks in {label or kind_name(kind)} on {obj.name}",
                "the program's set-up (or final check) would wait forever: "
                "no simulated thread is running to wake it",
            )
        return None
    if ex.stop:
        raise _Abort()
    th.op_obj = obj
    th.op_kind = kind
    th.op_also = also
    th.op_label = label
    th.guard = guard
    th.wake = len(ex.events)
    if th.prologue:
        # The spawner is waiting for us to announce our first operation.
        th.prologue = False
        assert th.glet is not None
        spawner = th.glet.parent
        th.glet.parent = ex.main
        assert spawner is not None
        spawner.switch()
    else:
        nxt = ex._decide()
        if nxt is not th:
            if nxt is None:
                ex.main.switch()
            else:
                ex.current = nxt
                assert nxt.glet is not None
                nxt.glet.switch()
    if ex.stop:
        raise _Abort()
    ex.current = th
    th.guard = None
    return th.event


def choose(n: int, label: str = "choice") -> int:
    """A nondeterministic choice in 0..n-1, made by the exploration strategy
    (so it is explored exhaustively by DPOR and reproduced by a replay)."""
    ex = _current
    if ex is None:
        raise RuntimeError("choose() outside a running program")
    return ex.choose(n, label)


def spawn(fn: Callable[..., Any], *args: Any, name: str | None = None) -> SimThread:
    """Start a simulated thread running ``fn(*args)``.

    Its code up to its first visible operation runs now, as part of the
    spawner's current step (it is thread-local by definition)."""
    ex = _current
    if ex is None:
        raise RuntimeError("spawn() outside a running program")
    if ex.stop:
        raise _Abort()
    parent = ex.current
    tid = len(ex.threads)
    th = SimThread(tid, name or f"T{tid}", parent.tid if parent else None)
    ex.threads.append(th)
    ex.live.append(th)

    def body() -> None:
        try:
            fn(*args)
        except (_Abort, greenlet.GreenletExit):
            pass
        except ViolationError as v:
            ex._fail(v, th.tid)
        except Exception as exc:
            ex._fail(_crash(exc), th.tid)
        th.finished = True
        ex.live.remove(th)
        th.prologue = False
        th.op_obj = None
        th.guard = None

    th.glet = greenlet.greenlet(body, parent=greenlet.getcurrent())
    ex.strategy.on_spawn(ex, th)
    ex.current = th
    th.glet.switch()
    ex.current = parent
    if ex.stop:
        raise _Abort()
    return th


def require(cond: Any, message: str) -> None:
    """Fail the execution with an ``assertion`` violation unless *cond*."""
    if not cond:
        raise ViolationError("assertion", message, message)


def exploration_local(key: str, factory: Callable[[], Any]) -> Any:
    """State that persists across all executions of one exploration (for
    instance lockdep's dependency graph)."""
    ex = current_execution()
    store = ex.exploration_locals
    try:
        return store[key]
    except KeyError:
        value = store[key] = factory()
        return value


def execution_local(key: str, factory: Callable[[], Any]) -> Any:
    """State private to the current execution."""
    ex = current_execution()
    try:
        return ex.locals[key]
    except KeyError:
        value = ex.locals[key] = factory()
        return value


def add_thread_describer(describe: Callable[[SimThread], str]) -> None:
    """Register (for this exploration) a function that adds detail about a
    thread to deadlock reports, such as the locks it holds."""
    describers: list[Callable[[SimThread], str]] = exploration_local(
        "_thread_describers", list
    )
    if describe not in describers:
        describers.append(describe)

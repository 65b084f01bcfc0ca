"""Threads, visible operations and one execution of a program.

A *program* runs many times, once per explored schedule. Each run is an
:class:`Execution`: the program's set-up code runs first, on the caller's
greenlet, and spawns simulated threads (greenlets), which start when set-up
is over; then the scheduler decides, before every visible operation, which
thread performs its next one. (An exploration may start an execution from a
saved copy of the state after set-up instead: :mod:`mmrace.engine.snapshot`.)
Outside any exploration, the model runs in a standalone context, as set-up
code does.

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
from typing import TYPE_CHECKING, Any, cast

import greenlet

if TYPE_CHECKING:
    from mmrace.engine.snapshot import SetupCache
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

ACQUIRE = 4
"""Takes an exclusive lock: blocked while the lock is held (its guard), one
event when it is free. Two acquisitions of one lock race (either could have
come first); the release that freed the lock happens before it but is never
reversed against it (it could not run before it). So "took it free" and
"waited, then took it" are one trace, and DPOR finds the race between the
two acquisitions itself, across the holder's release (Flanagan and
Godefroid's treatment of locks). Its guard need not be monotone: another
acquisition can disable it, and that one races with it."""
RELEASE = 5
"""Releases a lock taken with ACQUIRE: a write for every other access, and
ordered before the next ACQUIRE of the lock (happens-before only)."""

INDEP = 0
HB = 1
RACE = 2

# REL[earlier][later] for base kinds: independent, happens-before only, or a
# reversible race (dependent and co-enabled).
_REL: tuple[tuple[int, ...], ...] = (
    (INDEP, RACE, RACE, INDEP, RACE, RACE),  # READ then ...
    (RACE, RACE, RACE, HB, RACE, RACE),  # WRITE then ...
    (RACE, RACE, RACE, HB, RACE, RACE),  # RMW then ...
    (INDEP, INDEP, INDEP, INDEP, INDEP, INDEP),  # WAIT then ...
    (RACE, RACE, RACE, HB, RACE, RACE),  # ACQUIRE then ...
    (RACE, RACE, RACE, HB, HB, RACE),  # RELEASE then ...
)

_kind_names: list[str] = ["read", "write", "rmw", "wait", "acquire", "release"]
_kind_base: list[int] = [READ, WRITE, RMW, WAIT, ACQUIRE, RELEASE]
# Per kind, DPOR's access class: 0 read, 1 write (WRITE, RMW), 2 wait,
# 3 acquire, 4 release.
kind_class: list[int] = [0, 1, 1, 2, 3, 4]


def register_kind(name: str, like: int) -> int:
    """Register an access kind that depends like base kind *like* (READ, WRITE,
    RMW, WAIT, ACQUIRE or RELEASE) but is named *name* in traces. Returns the new kind's id.
    Registering the same name twice returns the same id."""
    if name in _kind_names:
        return _kind_names.index(name)
    if like not in (READ, WRITE, RMW, WAIT, ACQUIRE, RELEASE):
        raise ValueError(f"kind {name!r}: 'like' must be a base kind")
    _kind_names.append(name)
    _kind_base.append(like)
    kind_class.append((0, 1, 1, 2, 3, 4)[like])
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

    __slots__ = ("serial", "name", "_acc", "_lastw", "_lastrel", "__weakref__")

    def __init__(self, name: str = "") -> None:
        ex = _current or _standalone_execution()
        ex.serial += 1
        self.serial = ex.serial
        self.name = name or f"{type(self).__name__.lower()}#{self.serial}"
        # DPOR bookkeeping: per thread, the index of its latest event on this
        # object per base kind. Lives on the object because objects are made
        # afresh in every execution.
        self._acc: dict[int, list[int]] | None = None
        self._lastw = -1  # index of its latest write event
        self._lastrel = -1  # index of its latest RELEASE event

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
        "root",
    )

    def __init__(self, tid: int, name: str, parent: int | None, root: int | None = None) -> None:
        self.tid = tid
        self.name = name
        self.parent = parent
        # The thread the program's set-up spawned that this one descends
        # from (itself for those): a stand-in for "its CPU", for per-CPU
        # state whose set of owners must be known before threads run.
        self.root = tid if root is None else root
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
        setup: SetupCache | None = None,
    ) -> None:
        self.program = program
        # the exploration's saved state after set-up (mmrace.engine.snapshot)
        self.setup = setup
        self.strategy = strategy
        self.max_steps = max_steps
        self.serial = 0
        self.setup_steps = 0  # visible operations run at once (set-up, final check)
        self.setup_done = False
        # threads set-up spawned, started when it is over
        self.deferred: list[tuple[SimThread, Callable[..., Any], tuple[Any, ...]]] = []
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
                restored = False
                setup = self.setup
                if setup is not None:
                    restored, final = setup.restore(self)
                    if not restored:
                        setup.before_setup(self)
                if not restored:
                    final = self.program()
                    if setup is not None:
                        setup.after_setup(self, final)
                self.setup_done = True
                self._start_deferred()
            except _Abort:
                pass
            except ViolationError as v:
                self._fail(v, None)
            except _USER_ERRORS as exc:
                self._fail(_crash(exc), None)
            if not self.stop:
                self._loop()
            if not self.stop and final is not None and callable(final):
                try:
                    final()
                except ViolationError as v:
                    self._fail(v, None)
                except _USER_ERRORS as exc:
                    self._fail(_crash(exc), None)
        finally:
            self.stop = True
            self._kill_threads()
            _current = prev

    def _start_deferred(self) -> None:
        """Start the threads set-up spawned, in spawn order."""
        deferred, self.deferred = self.deferred, []
        for th, fn, args in deferred:
            if self.stop:
                return
            _start(self, th, fn, args)

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
                # Unwinding runs the thread's finally blocks: as itself (so
                # model code sees the right task, and a visible operation
                # aborts at once), not as set-up code.
                self.current = th
                try:
                    g.throw(greenlet.GreenletExit)
                except BaseException:
                    pass
                self.current = None

    def _fail(self, v: ViolationError, tid: int | None) -> None:
        # Once the execution has stopped (a violation, a sleep-set block, the
        # end), what unwinding threads raise is not part of it: a thread cut
        # short in a try/finally that releases a lock must not be reported
        # for releasing it.
        if self.violation is None and not self.stop:
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

# What a program or thread may raise that ends its execution as a ``crash``:
# any error, and ``sys.exit()`` (a program calling it is a bug in the
# program, not a request to stop mmrace). KeyboardInterrupt still stops the
# exploration.
_USER_ERRORS = (Exception, SystemExit)


# --- the model outside an exploration ------------------------------------------
#
# At top level (a REPL, a notebook, a single-threaded check) there is no
# running program. The model then runs in one implicit *standalone* context:
# an execution that is never explored, where visible operations run at once,
# as in set-up code, and choices take their first option. It is separate
# from every exploration (its own serials, execution locals and exploration
# locals), and its objects cannot be used inside one: their serials start at
# STANDALONE_SERIALS, which visible() checks.

STANDALONE_SERIALS = 1 << 48
"""Serials of objects made outside any exploration start here."""
STANDALONE_MAX_STEPS = 10_000_000
"""Visible operations the standalone context may run in all (a livelock at
top level is reported, not a hang); :func:`reset_standalone` starts over."""


class _StandaloneStrategy:
    """Decides the standalone context's choices: always the first option.
    There are no threads to schedule."""

    name = "standalone"

    def on_event(self, ex: Execution, ev: Event) -> None:
        pass

    def choose(self, ex: Execution, n: int) -> int:
        return 0


_standalone: Execution | None = None


def _no_program() -> None:
    return None


def _standalone_execution() -> Execution:
    global _standalone
    ex = _standalone
    if ex is None:
        ex = Execution(
            _no_program,
            cast("Strategy", _StandaloneStrategy()),
            STANDALONE_MAX_STEPS,
            {},
        )
        ex.serial = STANDALONE_SERIALS
        _standalone = ex
    return ex


def reset_standalone() -> None:
    """Drop the standalone context (the model state made at top level); the
    next top-level operation starts a fresh one."""
    global _standalone
    _standalone = None


def _foreign(obj: SharedObject) -> RuntimeError:
    return RuntimeError(
        f"{obj.name} was made outside any exploration (at top level) and cannot be used "
        "inside one: build it in the program function"
    )


def _crash(exc: BaseException) -> ViolationError:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ViolationError(
        "crash", f"{type(exc).__name__}: {exc}", f"unexpected exception in model code:\n{tb}"
    )


def current_execution() -> Execution:
    """The running execution; outside any exploration, the standalone
    context."""
    return _current or _standalone_execution()


def current_thread() -> SimThread | None:
    """The simulated thread running now, or None in set-up and final checks."""
    ex = _current
    return ex.current if ex is not None else None


def in_execution() -> bool:
    """Whether an exploration's program is running (False at top level,
    where the standalone context stands in)."""
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
    operation makes (READ, WRITE or RMW; not WAIT, ACQUIRE or RELEASE): a user store through a
    TLB entry, say, reads the entry and writes the page in one step. DPOR
    treats the operation as dependent on anything that conflicts with any of
    its accesses.

    Returns when this thread may perform it; the caller then performs the
    operation's effect (before its next call to :func:`visible`). With a
    *guard*, the thread is blocked until ``guard()`` is true; a guard must be
    monotone (once true, it stays true until this thread runs) and should be
    enabled only by writes to *obj*, except an ACQUIRE's ("the lock is
    free"), which another ACQUIRE or a write of *obj* (a trylock) may turn
    false: both race with it. Returns the event, so the caller can
    record a value on it (``event.detail``); None in set-up code, where
    operations run at once and are not events.
    """
    ex = _current
    if ex is None:
        ex = _standalone_execution()
    elif obj.serial >= STANDALONE_SERIALS:
        raise _foreign(obj)
    th = ex.current
    if th is None:
        # Set-up or final check: nothing runs concurrently. Its operations
        # are bounded like a thread's, so a loop that makes no progress is
        # reported, not a hang.
        ex.setup_steps += 1
        if ex.setup_steps > ex.max_steps:
            raise _setup_step_limit(ex, obj, kind, label)
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


def _setup_step_limit(ex: Execution, obj: SharedObject, kind: int, label: str) -> ViolationError:
    """``step-limit`` for set-up or final-check code that ran more than the
    execution's step bound of visible operations, naming where it loops:
    the operation and the innermost calls outside the engine."""
    stack = traceback.extract_stack()
    # the program's own frames: those below Execution.run, outside the engine
    start = max(
        (i for i, f in enumerate(stack) if f.name == "run" and f.filename == __file__),
        default=-1,
    )
    frames = [f for f in stack[start + 1 :] if "/mmrace/engine/" not in f.filename][-4:]
    where = " <- ".join(
        f"{f.name} ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})" for f in reversed(frames)
    )
    what = f"{label or kind_name(kind)} {obj.name}"
    code = "top-level code" if ex is _standalone else "set-up"
    return ViolationError(
        "step-limit",
        f"{code} exceeded {ex.max_steps} steps in {frames[-1].name if frames else '?'}",
        f"the program's {code if ex is _standalone else 'set-up (or final check)'} ran "
        f"more than {ex.max_steps} visible operations (a livelock, or an unbounded loop); "
        f"the last was {what}, in {where}",
    )


def choose(n: int, label: str = "choice") -> int:
    """A nondeterministic choice in 0..n-1, made by the exploration strategy
    (so it is explored exhaustively by DPOR and reproduced by a replay)."""
    return (_current or _standalone_execution()).choose(n, label)


def spawn(fn: Callable[..., Any], *args: Any, name: str | None = None) -> SimThread:
    """Start a simulated thread running ``fn(*args)``.

    From a simulated thread, its code up to its first visible operation runs
    now, as part of the spawner's current step (it is thread-local by
    definition). From the program's set-up code it runs when set-up is over,
    before any thread is scheduled, in spawn order: set-up then leaves no
    half-run thread behind, which is what lets an exploration save the state
    after set-up and start each execution from it."""
    ex = _current
    if ex is None:
        raise RuntimeError(
            "spawn() at top level: simulated threads run only in an exploration "
            "(mmrace.engine.explore(program), or mmrace explore FILE.py:FUNC); "
            "outside one the model runs single-threaded, like set-up code"
        )
    if ex.stop:
        raise _Abort()
    parent = ex.current
    tid = len(ex.threads)
    th = SimThread(
        tid, name or f"T{tid}", parent.tid if parent else None, parent.root if parent else None
    )
    ex.threads.append(th)
    ex.live.append(th)
    ex.strategy.on_spawn(ex, th)  # in tid order, even if it starts later
    if parent is None and not ex.setup_done:
        ex.deferred.append((th, fn, args))
        return th
    _start(ex, th, fn, args)
    return th


def _start(ex: Execution, th: SimThread, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Make *th*'s greenlet and run it up to its first visible operation."""

    def body() -> None:
        try:
            fn(*args)
            # The thread returns (to user space): the layers above check
            # what it must not still hold.
            for check in ex.exploration_locals.get("_exit_checks", ()):
                check(th)
        except (_Abort, greenlet.GreenletExit):
            pass
        except ViolationError as v:
            ex._fail(v, th.tid)
        except _USER_ERRORS as exc:
            ex._fail(_crash(exc), th.tid)
        th.finished = True
        ex.live.remove(th)
        th.prologue = False
        th.op_obj = None
        th.guard = None

    parent = ex.current
    th.glet = greenlet.greenlet(body, parent=greenlet.getcurrent())
    ex.current = th
    th.glet.switch()
    ex.current = parent
    if ex.stop:
        raise _Abort()


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


def add_thread_exit_check(check: Callable[[SimThread], None]) -> None:
    """Register (for this exploration) a check that runs when a simulated
    thread's function returns normally, in that thread, before it ends; it
    raises :class:`ViolationError` to report what the thread left behind
    (a lock still held, say)."""
    checks: list[Callable[[SimThread], None]] = exploration_local("_exit_checks", list)
    if check not in checks:
        checks.append(check)


def add_thread_describer(describe: Callable[[SimThread], str]) -> None:
    """Register (for this exploration) a function that adds detail about a
    thread to deadlock reports, such as the locks it holds."""
    describers: list[Callable[[SimThread], str]] = exploration_local(
        "_thread_describers", list
    )
    if describe not in describers:
        describers.append(describe)

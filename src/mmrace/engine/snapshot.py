"""Set-up once per exploration: saving the state after set-up and starting
executions from a copy of it.

Every execution of a program starts with the same set-up code (nothing runs
concurrently with it, and it makes no decision) and differs only after it.
So an exploration runs set-up for real a few times, then saves the state it
left -- the program's final check, the threads it spawned (not started yet:
see :func:`~mmrace.engine.core.spawn`), the execution locals -- and starts
later executions from a copy of that state instead of running set-up again.

The copy is a pickle of everything set-up made, with references to
everything it did not make kept as references (*shared*): modules, classes,
code, module-level objects, functions without a closure, the exploration's
own state (``exploration_local``: lockdep's graph must persist across
executions), and everything the program function could reach before set-up
ran (a test's result list, the scenario's kernel config: the program shares
those across executions as it always did). Closures are copied with their
cells, so a copied thread function sees the copied objects. Serials and
names are copied, so an execution from a copy is the execution set-up would
have made, byte for byte; DPOR's bookkeeping on objects (``_acc``) is empty
after set-up, since set-up makes no events.

A snapshot is only used when it is sound, else the exploration runs set-up
every time (and says why in ``Result.extra["setup_snapshot"]``):

* set-up made a nondeterministic choice (``choose``), or failed;
* something in the state cannot be pickled (a generator, a greenlet, a
  file, a lock of the host Python);
* set-up changed an object it did not make (it appended to a list the test
  reads, cleared one, set an attribute): those changes are not in the copy,
  so an execution from it would not repeat them;
* two set-ups run for real do not save the same state (set-up depends on
  something that changes between executions).

What it cannot see: set-up that *reads* external state which changes only
later in the exploration, or that changes state no object it can reach
holds (a module global it assigns, say). The engine's determinism rules
already forbid both.
"""

from __future__ import annotations

import io
import pickle
import sys
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmrace.engine.core import Execution

SNAPSHOT_AFTER = 50
"""Executions that run set-up for real before the state is saved. Saving
costs some tens of milliseconds once (finding what set-up did not make,
pickling twice); a copy saves about half a millisecond per execution on the
catalog's scenarios, so short explorations never pay for it."""


class Unsnapshottable(Exception):
    """The state after set-up cannot be saved soundly (the message says why)."""


_ALWAYS_SHARED = (
    types.ModuleType,
    type,
    types.CodeType,
    types.BuiltinFunctionType,
    types.MethodWrapperType,
    types.WrapperDescriptorType,
)


_ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None)})


def _reduce(obj: Any) -> Any:
    """Copy functions (with their closure cells) and cells, which pickle
    would otherwise save by name or refuse."""
    # Built by C code only (no Python frame per object on load): the type
    # makes the object, and pickle's BUILD sets the rest as attributes once
    # what they refer to exists, so closures may refer to themselves.
    t = type(obj)
    if t is types.FunctionType:
        attrs = {"__defaults__": obj.__defaults__, "__kwdefaults__": obj.__kwdefaults__,
                 "__qualname__": obj.__qualname__}
        return (
            types.FunctionType,
            (obj.__code__, obj.__globals__, obj.__name__, None, obj.__closure__),
            (obj.__dict__ or None, attrs),
        )
    if t is types.CellType:
        try:
            value = obj.cell_contents
        except ValueError:
            return (types.CellType, ())
        return (types.CellType, (), (None, {"cell_contents": value}))
    return NotImplemented


class _Copier(pickle.Pickler):
    """Pickles the state; the execution and the objects the state refers to
    without owning them are saved as references: persistent id 0 for the
    execution, 1.. for the shared objects in order of first use
    (:attr:`used`)."""

    def __init__(self, file: io.BytesIO, shared_ids: dict[int, Any], ex: Execution) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.shared_ids = shared_ids
        self.ex = ex
        self.used: list[Any] = []
        self.index: dict[int, int] = {}

    def persistent_id(self, obj: Any) -> Any:
        if obj is self.ex:
            return 0
        i = self.index.get(id(obj))
        if i is not None:
            return i
        share = id(obj) in self.shared_ids or isinstance(obj, _ALWAYS_SHARED) or (
            type(obj) is types.FunctionType
            and obj.__closure__ is None
            and not obj.__defaults__
            and not obj.__kwdefaults__
        )
        if not share:
            return None
        self.used.append(obj)
        i = self.index[id(obj)] = len(self.used)
        return i

    def reducer_override(self, obj: Any) -> Any:
        return _reduce(obj)


def _same(a: Any, b: Any) -> bool:
    """Whether two shared objects are interchangeable: the same object, or
    two closure-free functions of the same code (set-up makes a new function
    object each time it runs a ``def``; without a closure it holds nothing
    of the execution)."""
    if a is b:
        return True
    return (
        type(a) is types.FunctionType
        and type(b) is types.FunctionType
        and a.__code__ is b.__code__
        and a.__globals__ is b.__globals__
        and a.__closure__ is None
        and b.__closure__ is None
    )


class Snapshot:
    """The state set-up left, as a pickle plus the objects it shares."""

    __slots__ = ("data", "shared", "serial", "setup_steps")

    def __init__(self, data: bytes, shared: list[Any], serial: int, setup_steps: int) -> None:
        self.data = data
        self.shared = shared
        self.serial = serial
        self.setup_steps = setup_steps

    def same_as(self, other: Snapshot) -> bool:
        return (
            self.data == other.data
            and self.serial == other.serial
            and self.setup_steps == other.setup_steps
            and len(self.shared) == len(other.shared)
            and all(_same(a, b) for a, b in zip(self.shared, other.shared, strict=True))
        )

    def restore(self, ex: Execution) -> Any:
        """Put a fresh copy of the saved state into *ex* (as set-up would
        have left it); returns the program's final check."""
        u = pickle.Unpickler(io.BytesIO(self.data))
        table = [ex, *self.shared]
        # a C method, not a Python function: no frame per reference
        u.persistent_load = table.__getitem__  # type: ignore[method-assign]
        final, locals_, threads, deferred = u.load()
        ex.locals = locals_
        ex.threads = threads
        ex.live = [t for t in threads if not t.finished]
        ex.deferred = deferred
        ex.serial = self.serial
        ex.setup_steps = self.setup_steps
        for th in threads:  # as spawn() did, in tid order
            ex.strategy.on_spawn(ex, th)
        return final


def _program_module(program: Any) -> str | None:
    fn = getattr(program, "func", program)  # functools.partial
    name = getattr(fn, "__module__", None)
    return name if isinstance(name, str) else None


def _module_values(program: Any) -> tuple[dict[int, Any], list[Any]]:
    """Every module attribute's value (shared by reference: kept alive by
    its module), and those of mmrace's modules and the program's module,
    which are followed into (their contents are shared too, and checked for
    changes by set-up)."""
    own = _program_module(program)
    values: dict[int, Any] = {}
    followed: list[Any] = []
    for name, m in list(sys.modules.items()):
        d = getattr(m, "__dict__", None)
        if d is None:
            continue
        mine = name == "mmrace" or name.startswith("mmrace.") or name == own
        for v in list(d.values()):
            values[id(v)] = v
            if mine:
                followed.append(v)
    return values, followed


def reachable(roots: list[Any], stop: Callable[[Any], bool]) -> dict[int, Any]:
    """Every object reachable from *roots* (by ``gc.get_referents``), not
    looking inside objects for which *stop* is true."""
    import gc

    seen: dict[int, Any] = {}
    todo = list(roots)
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen[id(obj)] = obj
        if stop(obj):
            continue
        todo.extend(gc.get_referents(obj))
    return seen


def _fingerprint(objs: dict[int, Any]) -> list[tuple[int, int, tuple[int, ...]]]:
    """One level of every object's contents, by identity: enough to see a
    list appended to or cleared, a dict or attribute set."""
    import gc

    out = []
    for i, obj in objs.items():
        if isinstance(obj, (int, float, str, bytes, type(None), bool)):
            continue
        parts = gc.get_referents(obj)
        out.append((i, len(parts), tuple(id(p) for p in parts)))
    out.sort()
    return out


class SetupCache:
    """Per exploration: when to save the state after set-up, and the saved
    state once it is known to be sound."""

    def __init__(self, program: Callable[[], Any], exploration_locals: dict[str, Any],
                 after: int = SNAPSHOT_AFTER) -> None:
        self.program = program
        self.exploration_locals = exploration_locals
        self.after = after
        self.runs = 0
        self.snapshot: Snapshot | None = None
        self.candidate: Snapshot | None = None
        self.disabled: str | None = None
        self.external: dict[int, Any] | None = None
        self.before: list[tuple[int, int, tuple[int, ...]]] | None = None
        # what executions share rather than copy, by id (kept alive here)
        self.shared_ids: dict[int, Any] = {}

    @property
    def status(self) -> str:
        """For ``Result.extra``: in use, not used and why, or not tried."""
        if self.snapshot is not None:
            return "used"
        if self.disabled is not None:
            return f"not used: {self.disabled}"
        return "not taken (short exploration)"

    # -- called by Execution.run ------------------------------------------------

    def restore(self, ex: Execution) -> tuple[bool, Any]:
        """(True, final) if *ex* starts from the saved state; else (False,
        None) and *ex* runs set-up (and maybe saves it)."""
        self.runs += 1
        snap = self.snapshot
        if snap is not None:
            return True, snap.restore(ex)
        return False, None

    def capturing(self) -> bool:
        return self.disabled is None and self.snapshot is None and self.runs >= self.after

    def before_setup(self, ex: Execution) -> None:
        """Remember what the objects set-up did not make look like."""
        if not self.capturing():
            return
        if self.external is None:
            self._find_external(ex)
        assert self.external is not None
        self.before = _fingerprint(self.external)

    def after_setup(self, ex: Execution, final: Any) -> None:
        """Save the state set-up left (twice, and compare), or give up."""
        if not self.capturing() or self.before is None:
            return
        try:
            snap = self._capture(ex, final)
        except Unsnapshottable as e:
            self.disabled = str(e)
            return
        if self.candidate is None:
            self.candidate = snap
        elif self.candidate.same_as(snap):
            self.snapshot = self.candidate
            self.candidate = None
        else:
            self.disabled = "two set-ups left different states"

    # -- internals ----------------------------------------------------------------

    def _find_external(self, ex: Execution) -> None:
        """What set-up does not make: everything the program function can
        reach, mmrace's and the program module's module-level objects (and
        what they reach), the exploration's state; plus every module-level
        value of every module (shared by reference, not watched)."""
        module_dicts = {id(m.__dict__) for m in list(sys.modules.values()) if m is not None}
        values, followed = _module_values(self.program)

        def stop(obj: Any) -> bool:
            return (
                isinstance(obj, _ALWAYS_SHARED)
                or id(obj) in module_dicts
                or obj is ex
                # the engine's own bookkeeping, which changes as set-up
                # runs (this cache; a parallel worker keeps its caches in a
                # module-level table): set-up's state never refers to it
                or isinstance(obj, SetupCache)
                or (type(obj) is types.FunctionType and obj.__closure__ is None)
            )

        ext = reachable([self.program, *followed], stop)
        for v in self.exploration_locals.values():
            ext[id(v)] = v
        self.external = {i: o for i, o in ext.items() if not stop(o)}
        for i, obj in (*values.items(), *ext.items()):
            # immutable atoms are cheaper copied than referred to
            if obj is not ex and type(obj) not in _ATOMS:
                self.shared_ids[i] = obj

    def _capture(self, ex: Execution, final: Any) -> Snapshot:
        if ex.stop or ex.violation is not None:
            raise Unsnapshottable("set-up ended the execution")
        if ex.decisions or ex.choices:
            raise Unsnapshottable("set-up made a nondeterministic choice")
        if ex.events:
            raise Unsnapshottable("set-up ran a scheduled operation")
        assert self.external is not None and self.before is not None
        if _fingerprint(self.external) != self.before:
            raise Unsnapshottable("set-up changed an object it did not make")
        for th in ex.threads:
            if th.glet is not None:
                raise Unsnapshottable("a thread started during set-up")
        # The exploration's own state, wherever set-up stored a reference.
        for v in ex.exploration_locals.values():
            self.shared_ids[id(v)] = v
        state = (final, ex.locals, ex.threads, ex.deferred)
        try:
            buf = io.BytesIO()
            copier = _Copier(buf, self.shared_ids, ex)
            copier.dump(state)
        except Exception as e:  # pickle raises many kinds
            raise Unsnapshottable(f"the state cannot be copied ({type(e).__name__}: {e})") from None
        return Snapshot(buf.getvalue(), copier.used, ex.serial, ex.setup_steps)

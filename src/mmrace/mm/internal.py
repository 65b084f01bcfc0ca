"""Helpers shared by the mm model (the kernel keeps such things in mm/internal.h).

* :func:`kfunc` pushes a model function's kernel name on the running thread's
  ``where`` stack, so traces can say which kernel function an operation is in.
* :class:`Held` records, per simulated thread (and for set-up code), which mm
  locks the thread holds. The rule checker (``mm/rules.py``) consults it on
  every VMA field access. Only the mm model's own lock wrappers update it, so
  it is exact for the locks the rule table names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from mmrace.engine import current_execution, current_thread, execution_local

P = ParamSpec("P")
R = TypeVar("R")


def kfunc(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: while *fn* runs in a simulated thread, its name (the kernel
    function it mirrors) is on ``current_thread().where``."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        th = current_thread()
        if th is None:
            return fn(*args, **kwargs)
        where = th.where
        where.append(name)
        try:
            return fn(*args, **kwargs)
        finally:
            where.pop()

    return wrapper


class _Tracked(dict):  # type: ignore[type-arg]
    """A dict that bumps its owner's :attr:`Held.version` on every change, so
    the rule checker's cached verdicts (``mm/rules_check.py``) can never
    outlive a lock acquisition or release, whoever makes it."""

    __slots__ = ("owner",)

    def __init__(self, owner: Held) -> None:
        super().__init__()
        self.owner = owner

    def __setitem__(self, key: Any, value: Any) -> None:
        self.owner.version += 1
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: Any) -> None:
        self.owner.version += 1
        dict.__delitem__(self, key)

    def pop(self, key: Any, *default: Any) -> Any:
        self.owner.version += 1
        return dict.pop(self, key, *default)

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("change a lock record only by item assignment, del or pop")

    clear = popitem = setdefault = update = __ior__ = _refuse


class Held:
    """The mm-level locks one thread holds, keyed by object serial (never id()).

    Every change bumps :attr:`version` (the dicts are :class:`_Tracked`; the
    RCU depth is a property), which is what the rule checker caches its
    verdicts against."""

    __slots__ = ("mmap", "names", "vma_read", "rwsem", "rmap", "spin", "numab", "paths",
                 "_rcu", "version", "cache", "rules_off", "setup")

    def __init__(self) -> None:
        self.version = 0
        self.mmap: dict[int, str] = _Tracked(self)  # mm serial -> "R", "W" or "D"
        self.names: dict[int, str] = {}  # lock serial -> lock name, for messages
        self.vma_read: dict[int, Any] = _Tracked(self)  # vma serial -> vma
        self.rwsem: dict[int, str] = _Tracked(self)  # rmap rwsem serial -> "R" or "W"
        self.rmap: dict[int, Any] = {}  # rmap rwsem serial -> its address_space / anon_vma
        self.spin: dict[int, Any] = _Tracked(self)  # spinlock serial -> lock
        self.numab: dict[int, Any] = _Tracked(self)  # mm serial -> mm (task_numa_work)
        # documented-exception code paths this thread is in -> nesting depth
        # (mm/rules.py EXCEPTIONS; rules_check.exception_path_enter)
        self.paths: dict[str, int] = _Tracked(self)
        self._rcu = 0  # RCU read-side nesting (as seen by the mm model)
        self.cache: dict[Any, Any] = {}  # the rule checker's verdicts (rules_check.py)
        self.rules_off = False  # mm.rules_off of the execution, when this was made
        self.setup = False  # the record of set-up code and final checks (no thread)

    @property
    def rcu(self) -> int:
        return self._rcu

    @rcu.setter
    def rcu(self, depth: int) -> None:
        self.version += 1
        self._rcu = depth

    def describe(self) -> str:
        """The held locks, for a violation message."""
        mode_name = {"R": "read", "W": "write", "D": "read (downgraded)"}
        parts: list[str] = []
        for serial, mode in self.mmap.items():
            parts.append(f"{self.names.get(serial, serial)} ({mode_name[mode]})")
        for vma in self.vma_read.values():
            parts.append(f"VMA read lock of {vma.name}")
        for serial, mode in self.rwsem.items():
            parts.append(f"{self.names.get(serial, serial)} ({mode_name[mode]})")
        for lock in self.spin.values():
            parts.append(f"spin({lock.name})")
        for mm in self.numab.values():
            parts.append(f"NUMA-scan claim of {mm.name}")
        if self._rcu:
            parts.append("rcu_read_lock")
        return ", ".join(parts) or "none"


_KEY = "mm.held"
_SETUP_KEY = "mm.held.setup"


def _held_table() -> dict[int, Held]:
    table: dict[int, Held] = execution_local(_KEY, dict)
    return table


def held() -> Held:
    """The lock record of the running thread (tid -1 is set-up code). Kept
    on the thread (and for set-up on the execution), so the common case is
    two lookups."""
    ex = current_execution()
    th = ex.current
    h: Held | None
    if th is not None:
        h = cast("Held | None", th.locals.get(_KEY))
        if h is not None:
            return h
        key = th.tid
    else:
        h = cast("Held | None", ex.locals.get(_SETUP_KEY))
        if h is not None:
            return h
        key = -1
    h = _new_held(ex, key)
    if th is not None:
        th.locals[_KEY] = h
    else:
        ex.locals[_SETUP_KEY] = h
    return h


def _new_held(ex: Any, key: int) -> Held:
    table = _held_table()
    h = table.get(key)
    if h is None:
        h = table[key] = Held()
        h.rules_off = bool(ex.locals.get("mm.rules_off"))
        h.setup = key == -1
    return h


def all_held() -> dict[int, Held]:
    """Every thread's lock record in this execution, by tid (set-up is -1)."""
    return _held_table()


def errno_error(err: int, what: str = "") -> OSError:
    """An OSError like the os module raises for a failed syscall."""
    import os

    return OSError(err, os.strerror(err) + (f": {what}" if what else ""))


def kernel_config(mm: Any) -> Any:
    """The ``KernelConfig`` (``mmrace.fixes``) of the system *mm* belongs to:
    which fixes are applied and which policy values hold. An mm created
    outside a ``System`` gets the current kernel."""
    k = mm.kernel
    if k is None:
        from mmrace.fixes import KernelConfig

        k = mm.kernel = KernelConfig()
    return k

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
from typing import Any, ParamSpec, TypeVar

from mmrace.engine import current_thread, execution_local

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


class Held:
    """The mm-level locks one thread holds, keyed by object serial (never id())."""

    __slots__ = ("mmap", "names", "vma_read", "rwsem", "spin", "rcu")

    def __init__(self) -> None:
        self.mmap: dict[int, str] = {}  # mm serial -> "R", "W" or "D" (downgraded)
        self.names: dict[int, str] = {}  # lock serial -> lock name, for messages
        self.vma_read: dict[int, Any] = {}  # vma serial -> vma
        self.rwsem: dict[int, str] = {}  # rmap rwsem serial -> "R" or "W"
        self.spin: dict[int, Any] = {}  # spinlock serial -> lock
        self.rcu = 0  # RCU read-side nesting (as seen by the mm model)

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
        if self.rcu:
            parts.append("rcu_read_lock")
        return ", ".join(parts) or "none"


def _held_table() -> dict[int, Held]:
    table: dict[int, Held] = execution_local("mm.held", dict)
    return table


def held() -> Held:
    """The lock record of the running thread (tid -1 is set-up code)."""
    th = current_thread()
    key = th.tid if th is not None else -1
    table = _held_table()
    h = table.get(key)
    if h is None:
        h = table[key] = Held()
    return h


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

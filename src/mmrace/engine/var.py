"""A shared variable with visible loads, stores and atomic updates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from mmrace.engine.core import READ, RMW, WRITE, SharedObject, visible

T = TypeVar("T")


class Var(SharedObject, Generic[T]):
    """A shared memory location. Every access is one visible operation."""

    __slots__ = ("value",)

    def __init__(self, initial: T, name: str = "") -> None:
        super().__init__(name)
        self.value = initial

    def load(self) -> T:
        ev = visible(self, READ, "load")
        v = self.value
        if ev is not None:
            ev.detail = v
        return v

    def store(self, v: T) -> None:
        ev = visible(self, WRITE, "store")
        self.value = v
        if ev is not None:
            ev.detail = v

    def rmw(self, fn: Callable[[T], T]) -> T:
        """Atomically replace the value with ``fn(old)``; return the old value."""
        ev = visible(self, RMW, "rmw")
        old = self.value
        new = self.value = fn(old)
        if ev is not None:
            ev.detail = f"{old} -> {new}"
        return old

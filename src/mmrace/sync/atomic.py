"""``atomic_t`` / ``atomic_long_t`` (include/linux/atomic).

Every operation is one visible operation on the counter: ``atomic_read`` a
read, ``atomic_set`` a write, everything else an RMW. Memory ordering is
sequentially consistent (the model's memory model), so the ``_relaxed`` /
``_acquire`` / ``_release`` variants are not distinguished.
"""

from __future__ import annotations

from mmrace.engine import READ, RMW, WRITE, SharedObject, visible


class Atomic(SharedObject):
    """``atomic_t``."""

    __slots__ = ("counter",)

    def __init__(self, value: int = 0, name: str = "") -> None:
        super().__init__(name)
        self.counter = value


atomic_t = Atomic
atomic_long_t = Atomic


def ATOMIC_INIT(value: int, name: str = "") -> Atomic:
    """``ATOMIC_INIT(i)``: a new counter."""
    return Atomic(value, name)


def atomic_read(v: Atomic) -> int:
    """``atomic_read(v)``: one visible read."""
    ev = visible(v, READ, "atomic_read")
    if ev is not None:
        ev.detail = v.counter
    return v.counter


def atomic_set(v: Atomic, i: int) -> None:
    """``atomic_set(v, i)``: one visible write."""
    ev = visible(v, WRITE, "atomic_set")
    v.counter = i
    if ev is not None:
        ev.detail = i


def _rmw(v: Atomic, label: str, delta: int) -> int:
    ev = visible(v, RMW, label)
    new = v.counter = v.counter + delta
    if ev is not None:
        ev.detail = new
    return new


def atomic_inc(v: Atomic) -> None:
    """``atomic_inc(v)``: one visible RMW."""
    _rmw(v, "atomic_inc", 1)


def atomic_dec(v: Atomic) -> None:
    """``atomic_dec(v)``: one visible RMW."""
    _rmw(v, "atomic_dec", -1)


def atomic_add(i: int, v: Atomic) -> None:
    """``atomic_add(i, v)``: one visible RMW."""
    _rmw(v, "atomic_add", i)


def atomic_sub(i: int, v: Atomic) -> None:
    """``atomic_sub(i, v)``: one visible RMW."""
    _rmw(v, "atomic_sub", -i)


def atomic_add_return(i: int, v: Atomic) -> int:
    """``atomic_add_return(i, v)``: one visible RMW; returns the new value."""
    return _rmw(v, "atomic_add_return", i)


def atomic_sub_return(i: int, v: Atomic) -> int:
    """``atomic_sub_return(i, v)``: one visible RMW; returns the new value."""
    return _rmw(v, "atomic_sub_return", -i)


def atomic_inc_return(v: Atomic) -> int:
    """``atomic_inc_return(v)``: returns the new value."""
    return _rmw(v, "atomic_inc_return", 1)


def atomic_dec_return(v: Atomic) -> int:
    """``atomic_dec_return(v)``: returns the new value."""
    return _rmw(v, "atomic_dec_return", -1)


def atomic_dec_and_test(v: Atomic) -> bool:
    """``atomic_dec_and_test(v)``: True when the new value is 0."""
    return _rmw(v, "atomic_dec_and_test", -1) == 0


def atomic_cmpxchg(v: Atomic, old: int, new: int) -> int:
    """``atomic_cmpxchg(v, old, new)``: one visible RMW; returns the value
    found (the exchange happened iff it equals *old*)."""
    ev = visible(v, RMW, "atomic_cmpxchg")
    cur = v.counter
    if cur == old:
        v.counter = new
    if ev is not None:
        ev.detail = f"{cur} -> {v.counter}"
    return cur


def atomic_try_cmpxchg(v: Atomic, old: int, new: int) -> tuple[bool, int]:
    """``atomic_try_cmpxchg(v, &old, new)``: returns (succeeded, value found)."""
    cur = atomic_cmpxchg(v, old, new)
    return cur == old, cur


def atomic_xchg(v: Atomic, new: int) -> int:
    """``atomic_xchg(v, new)``: returns the old value."""
    ev = visible(v, RMW, "atomic_xchg")
    cur = v.counter
    v.counter = new
    if ev is not None:
        ev.detail = f"{cur} -> {new}"
    return cur


def atomic_add_unless(v: Atomic, a: int, u: int) -> bool:
    """``atomic_add_unless(v, a, u)``: add *a* unless the value is *u*; one
    visible RMW; True if it added."""
    ev = visible(v, RMW, "atomic_add_unless")
    cur = v.counter
    if cur == u:
        return False
    v.counter = cur + a
    if ev is not None:
        ev.detail = v.counter
    return True


def atomic_inc_not_zero(v: Atomic) -> bool:
    """``atomic_inc_not_zero(v)``: one visible RMW; True if it incremented."""
    return atomic_add_unless(v, 1, 0)

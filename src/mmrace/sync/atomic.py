"""``atomic_t`` / ``atomic_long_t`` (include/linux/atomic).

Footprints follow what commutes: an ``atomic_add`` (``_sub``, ``_inc``,
``_dec``) whose result nobody reads commutes with another, so the counter
is kept in parts. The :class:`Atomic` object holds a base value; each
thread the program's set-up spawned (a CPU, roughly: threads it spawns in
turn, such as RCU callbacks, share it) has a slot holding the sum of its
result-less additions. ``atomic_add`` is one visible write of the adder's
own slot; two of them by different threads are independent. Everything
that reads the value -- ``atomic_read``, and the read-modify-writes that
return something (``atomic_add_return``, ``atomic_dec_and_test``,
``atomic_cmpxchg``, ...) -- is one visible operation on the base that also
reads every slot; ``atomic_set`` writes the base and every slot. The value
is the base plus the slots.

Memory ordering is sequentially consistent (the model's memory model), so
the ``_relaxed`` / ``_acquire`` / ``_release`` variants are not
distinguished.
"""

from __future__ import annotations

from mmrace.engine import READ, RMW, WRITE, Event, SharedObject, visible
from mmrace.sync._task import task
from mmrace.sync.slots import Slots


class Atomic(SharedObject):
    """``atomic_t``: *counter* is the base; :attr:`adds` the per-CPU sums of
    result-less additions (:meth:`value` is the kernel's value)."""

    __slots__ = ("counter", "adds")

    def __init__(self, value: int = 0, name: str = "") -> None:
        super().__init__(name)
        self.counter = value
        self.adds = Slots(self, "adds", per_root=True)

    def value(self) -> int:
        """The counter's value (debugger view: no operation)."""
        return self.counter + self.adds.total()


atomic_t = Atomic
atomic_long_t = Atomic


def ATOMIC_INIT(value: int, name: str = "") -> Atomic:
    """``ATOMIC_INIT(i)``: a new counter."""
    return Atomic(value, name)


def _look(v: Atomic, kind: int, label: str, slot_kind: int = READ) -> tuple[Event | None, int]:
    """One visible operation of *kind* on the base that also accesses every
    slot (*slot_kind*); returns its event and the value it saw."""
    if task().thread is None:
        return None, v.value()  # set-up: nothing runs concurrently
    ev, _slots = v.adds.look(v, kind, label, own=True, slot_kind=slot_kind)
    return ev, v.value()


def atomic_read(v: Atomic) -> int:
    """``atomic_read(v)``: one visible read of the base and every slot."""
    ev, cur = _look(v, READ, "atomic_read")
    if ev is not None:
        ev.detail = cur
    return cur


def atomic_set(v: Atomic, i: int) -> None:
    """``atomic_set(v, i)``: one visible write of the base and every slot."""
    ev, _cur = _look(v, WRITE, "atomic_set", WRITE)
    if ev is not None:
        ev.detail = i
    v.counter = i
    for s in v.adds.table.values():
        s.count = 0


def _add(v: Atomic, label: str, delta: int) -> None:
    """A result-less addition: one visible write of the caller's own slot
    (in set-up code, of the base)."""
    if task().thread is None:
        v.counter += delta
        return
    slot = v.adds.current()
    ev = visible(slot, WRITE, label)
    slot.count += delta
    if ev is not None:
        ev.detail = f"{delta:+d}"


def _rmw(v: Atomic, label: str, delta: int) -> int:
    """An addition whose result the caller reads: one visible RMW of the
    base that reads every slot. Returns the new value."""
    ev, cur = _look(v, RMW, label)
    v.counter += delta
    if ev is not None:
        ev.detail = cur + delta
    return cur + delta


def atomic_inc(v: Atomic) -> None:
    """``atomic_inc(v)``: one visible write of the caller's slot."""
    _add(v, "atomic_inc", 1)


def atomic_dec(v: Atomic) -> None:
    """``atomic_dec(v)``: one visible write of the caller's slot."""
    _add(v, "atomic_dec", -1)


def atomic_add(i: int, v: Atomic) -> None:
    """``atomic_add(i, v)``: one visible write of the caller's slot."""
    _add(v, "atomic_add", i)


def atomic_sub(i: int, v: Atomic) -> None:
    """``atomic_sub(i, v)``: one visible write of the caller's slot."""
    _add(v, "atomic_sub", -i)


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
    ev, cur = _look(v, RMW, "atomic_cmpxchg")
    if cur == old:
        v.counter += new - cur
    if ev is not None:
        ev.detail = f"{cur} -> {v.value()}"
    return cur


def atomic_try_cmpxchg(v: Atomic, old: int, new: int) -> tuple[bool, int]:
    """``atomic_try_cmpxchg(v, &old, new)``: returns (succeeded, value found)."""
    cur = atomic_cmpxchg(v, old, new)
    return cur == old, cur


def atomic_xchg(v: Atomic, new: int) -> int:
    """``atomic_xchg(v, new)``: returns the old value."""
    ev, cur = _look(v, RMW, "atomic_xchg")
    v.counter += new - cur
    if ev is not None:
        ev.detail = f"{cur} -> {new}"
    return cur


def atomic_add_unless(v: Atomic, a: int, u: int) -> bool:
    """``atomic_add_unless(v, a, u)``: add *a* unless the value is *u*; one
    visible RMW; True if it added."""
    ev, cur = _look(v, RMW, "atomic_add_unless")
    if cur == u:
        return False
    v.counter += a
    if ev is not None:
        ev.detail = cur + a
    return True


def atomic_inc_not_zero(v: Atomic) -> bool:
    """``atomic_inc_not_zero(v)``: one visible RMW; True if it incremented."""
    return atomic_add_unless(v, 1, 0)

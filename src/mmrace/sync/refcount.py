"""``refcount_t`` (include/linux/refcount.h, lib/refcount.c).

The kernel's saturation warnings are violations: incrementing from zero and
underflow are ``use-after-free`` ("refcount_t: addition on 0;
use-after-free." and "refcount_t: underflow; use-after-free."),
``refcount_dec`` reaching zero is ``refcount`` ("refcount_t: decrement hit
0; leaking memory.").

Footprints: as with ``atomic_t`` (:mod:`mmrace.sync.atomic`), the count is a
base plus one slot per CPU (per thread the set-up spawned). ``refcount_inc``
and ``refcount_add`` are one visible write of the caller's own slot, so
increments by different threads are independent. They still warn on an
addition on 0, checked against the whole count without an operation on the
other slots; that is sound for the verdict because increments only raise
the count: in any run of increments that commute, the first one sees the
same count in every order, and whichever increment comes first in a given
order is the one that warns -- every order of the run warns, or none does.
The operations that read the count or may take it to zero -- ``refcount_read``,
``refcount_inc_not_zero``, ``refcount_dec``, ``refcount_dec_and_test`` --
are one visible operation on the base that reads every slot;
``refcount_set`` writes them all.

Left out: saturation at ``REFCOUNT_SATURATED`` (the first misuse already
ends the execution).
"""

from __future__ import annotations

from mmrace.engine import READ, RMW, WRITE, Event, SharedObject, ViolationError, visible
from mmrace.sync._task import task
from mmrace.sync.slots import Slots


class Refcount(SharedObject):
    """``refcount_t``: *refs* is the base, :attr:`incs` the per-CPU
    increments (:attr:`value` is the kernel's count)."""

    __slots__ = ("refs", "incs")

    def __init__(self, value: int = 1, name: str = "") -> None:
        super().__init__(name)
        self.refs = value
        self.incs = Slots(self, "incs", per_root=True)

    @property
    def value(self) -> int:
        """The count (debugger view: no operation)."""
        return self.refs + self.incs.total()


refcount_t = Refcount


def _warn(r: Refcount, kind: str, what: str) -> ViolationError:
    ts = task()
    return ViolationError(
        kind,
        f"refcount_t: {what} ({r.name})",
        f"WARNING: refcount_t: {what}\non {r.name} in {ts.name}\n{ts.held_report()}",
    )


def _look(r: Refcount, kind: int, label: str, slot_kind: int = READ) -> Event | None:
    if task().thread is None:
        return None  # set-up: nothing runs concurrently
    ev, _slots = r.incs.look(r, kind, label, own=True, slot_kind=slot_kind)
    return ev


def refcount_set(r: Refcount, n: int) -> None:
    """``refcount_set(r, n)``: one visible write (of the base and every slot)."""
    _look(r, WRITE, "refcount_set", WRITE)
    r.refs = n
    for s in r.incs.table.values():
        s.count = 0


def refcount_read(r: Refcount) -> int:
    """``refcount_read(r)``: one visible read."""
    ev = _look(r, READ, "refcount_read")
    if ev is not None:
        ev.detail = r.value
    return r.value


def _inc(r: Refcount, label: str, n: int) -> None:
    if task().thread is None:
        if r.value == 0:
            raise _warn(r, "use-after-free", "addition on 0; use-after-free.")
        r.refs += n
        return
    slot = r.incs.current()
    ev = visible(slot, WRITE, label)
    # The whole count, read without an operation on the other slots: see
    # the module docstring for why the verdict does not depend on it.
    if r.value == 0:
        raise _warn(r, "use-after-free", "addition on 0; use-after-free.")
    slot.count += n
    if ev is not None:
        ev.detail = f"+{n}"


def refcount_inc(r: Refcount) -> None:
    """``refcount_inc(r)``: one visible write of the caller's slot; from
    zero it is a violation."""
    _inc(r, "refcount_inc", 1)


def refcount_add(n: int, r: Refcount) -> None:
    """``refcount_add(n, r)``: as :func:`refcount_inc` by *n*."""
    _inc(r, "refcount_add", n)


def refcount_inc_not_zero(r: Refcount) -> bool:
    """``refcount_inc_not_zero(r)``: one visible RMW; False (and no change)
    if the count was zero."""
    ev = _look(r, RMW, "refcount_inc_not_zero")
    if r.value == 0:
        if ev is not None:
            ev.detail = "0: failed"
        return False
    r.refs += 1
    if ev is not None:
        ev.detail = r.value
    return True


def refcount_dec_and_test(r: Refcount) -> bool:
    """``refcount_dec_and_test(r)``: one visible RMW; True when it dropped
    the last reference. Underflow is a violation."""
    ev = _look(r, RMW, "refcount_dec_and_test")
    if r.value <= 0:
        raise _warn(r, "use-after-free", "underflow; use-after-free.")
    r.refs -= 1
    if ev is not None:
        ev.detail = r.value
    return r.value == 0


def refcount_dec(r: Refcount) -> None:
    """``refcount_dec(r)``: one visible RMW; dropping the last reference
    here (instead of with ``refcount_dec_and_test``) is a violation."""
    ev = _look(r, RMW, "refcount_dec")
    if r.value <= 0:
        raise _warn(r, "use-after-free", "underflow; use-after-free.")
    r.refs -= 1
    if r.value == 0:
        raise _warn(r, "refcount", "decrement hit 0; leaking memory.")
    if ev is not None:
        ev.detail = r.value

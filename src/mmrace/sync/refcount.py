"""``refcount_t`` (include/linux/refcount.h, lib/refcount.c).

Every operation is one visible operation on the counter. The kernel's
saturation warnings are violations: incrementing from zero and underflow
are ``use-after-free`` ("refcount_t: addition on 0; use-after-free." and
"refcount_t: underflow; use-after-free."), ``refcount_dec`` reaching zero is
``refcount`` ("refcount_t: decrement hit 0; leaking memory.").

Left out: saturation at ``REFCOUNT_SATURATED`` (the first misuse already
ends the execution).
"""

from __future__ import annotations

from mmrace.engine import READ, RMW, WRITE, SharedObject, ViolationError, visible
from mmrace.sync._task import task


class Refcount(SharedObject):
    """``refcount_t``."""

    __slots__ = ("refs",)

    def __init__(self, value: int = 1, name: str = "") -> None:
        super().__init__(name)
        self.refs = value


refcount_t = Refcount


def _warn(r: Refcount, kind: str, what: str) -> ViolationError:
    ts = task()
    return ViolationError(
        kind,
        f"refcount_t: {what} ({r.name})",
        f"WARNING: refcount_t: {what}\non {r.name} in {ts.name}\n{ts.held_report()}",
    )


def refcount_set(r: Refcount, n: int) -> None:
    """``refcount_set(r, n)``: one visible write."""
    visible(r, WRITE, "refcount_set")
    r.refs = n


def refcount_read(r: Refcount) -> int:
    """``refcount_read(r)``: one visible read."""
    ev = visible(r, READ, "refcount_read")
    if ev is not None:
        ev.detail = r.refs
    return r.refs


def refcount_inc(r: Refcount) -> None:
    """``refcount_inc(r)``: one visible RMW; from zero it is a violation."""
    ev = visible(r, RMW, "refcount_inc")
    if r.refs == 0:
        raise _warn(r, "use-after-free", "addition on 0; use-after-free.")
    r.refs += 1
    if ev is not None:
        ev.detail = r.refs


def refcount_add(n: int, r: Refcount) -> None:
    """``refcount_add(n, r)``: as :func:`refcount_inc` by *n*."""
    ev = visible(r, RMW, "refcount_add")
    if r.refs == 0:
        raise _warn(r, "use-after-free", "addition on 0; use-after-free.")
    r.refs += n
    if ev is not None:
        ev.detail = r.refs


def refcount_inc_not_zero(r: Refcount) -> bool:
    """``refcount_inc_not_zero(r)``: one visible RMW; False (and no change)
    if the count was zero."""
    ev = visible(r, RMW, "refcount_inc_not_zero")
    if r.refs == 0:
        if ev is not None:
            ev.detail = "0: failed"
        return False
    r.refs += 1
    if ev is not None:
        ev.detail = r.refs
    return True


def refcount_dec_and_test(r: Refcount) -> bool:
    """``refcount_dec_and_test(r)``: one visible RMW; True when it dropped
    the last reference. Underflow is a violation."""
    ev = visible(r, RMW, "refcount_dec_and_test")
    if r.refs <= 0:
        raise _warn(r, "use-after-free", "underflow; use-after-free.")
    r.refs -= 1
    if ev is not None:
        ev.detail = r.refs
    return r.refs == 0


def refcount_dec(r: Refcount) -> None:
    """``refcount_dec(r)``: one visible RMW; dropping the last reference
    here (instead of with ``refcount_dec_and_test``) is a violation."""
    ev = visible(r, RMW, "refcount_dec")
    if r.refs <= 0:
        raise _warn(r, "use-after-free", "underflow; use-after-free.")
    r.refs -= 1
    if r.refs == 0:
        raise _warn(r, "refcount", "decrement hit 0; leaking memory.")
    if ev is not None:
        ev.detail = r.refs

"""Completions (kernel/sched/completion.c): wait until an event.

``complete`` is one visible RMW that hands one "done" to the first waiter
(or banks it); ``wait_for_completion`` is one visible RMW that consumes a
banked "done" or queues, then a visible WAIT until a ``complete`` grants it.

Footprints: ``complete`` before ``wait_for_completion`` (a banked done the
waiter consumes) and after it (a queued waiter woken) are two traces, as
they are two paths in the kernel (``do_wait_for_common`` returns at once or
sleeps). Two ``complete`` calls without waiters would commute (both bank a
done), but with waiters queued each hands one waiter its done in FIFO
order, so they stay ordered: making them commute would need a waiter to
wait on the sum of several objects, which a WAIT (one object, a monotone
guard) cannot express.

Left out: timeouts, and waking a killable waiter when a fatal signal arrives
while it sleeps (the signal is checked when it would have to sleep).
"""

from __future__ import annotations

from mmrace.engine import READ, RMW, WAIT, SharedObject, SimThread, visible
from mmrace.sync._task import Waiter, might_sleep, task
from mmrace.sync.signal import ERESTARTSYS, pending

_ALL = 1 << 30  # complete_all: UINT_MAX done


class Completion(SharedObject):
    """``struct completion``."""

    __slots__ = ("done", "queue")

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.done = 0
        self.queue: list[Waiter] = []

    def wait_info(self, thread: SimThread) -> str:
        return f"done={self.done}, waiters: " + ", ".join(w.ts.name for w in self.queue)


def init_completion(name: str = "") -> Completion:
    """``init_completion(x)`` / ``DECLARE_COMPLETION``."""
    return Completion(name)


def reinit_completion(x: Completion) -> None:
    """``reinit_completion(x)``: one visible RMW resetting done to 0."""
    visible(x, RMW, "reinit_completion")
    x.done = 0


def complete(x: Completion) -> None:
    """``complete(x)``: wake the first waiter, or bank one done."""
    visible(x, RMW, "complete")
    if x.queue:
        x.queue.pop(0).granted = True
    elif x.done < _ALL:
        x.done += 1


def complete_all(x: Completion) -> None:
    """``complete_all(x)``: wake every waiter and every later one."""
    visible(x, RMW, "complete_all")
    for w in x.queue:
        w.granted = True
    x.queue = []
    x.done = _ALL


def _wait(x: Completion, label: str, killable: bool) -> int:
    ts = task()
    might_sleep(ts, f"{label}({x.name})")
    visible(x, RMW, label)
    if x.done:
        if x.done < _ALL:
            x.done -= 1
        return 0
    w = Waiter(ts, False)
    x.queue.append(w)
    if killable and pending(ts):
        visible(x, RMW, label + " (interrupted)")
        if not w.granted:
            x.queue.remove(w)
            return -ERESTARTSYS
        return 0
    visible(x, WAIT, label, w.is_granted)
    return 0


def wait_for_completion(x: Completion) -> None:
    """``wait_for_completion(x)``: sleep until *x* is completed (consumes one
    done). Sleeping in atomic context is a violation."""
    _wait(x, "wait_for_completion", False)


def wait_for_completion_killable(x: Completion) -> int:
    """``wait_for_completion_killable(x)``: 0, or ``-ERESTARTSYS`` if it
    would sleep with a fatal signal pending."""
    return _wait(x, "wait_for_completion_killable", True)


def try_wait_for_completion(x: Completion) -> bool:
    """``try_wait_for_completion(x)``: consume a done without sleeping."""
    visible(x, RMW, "try_wait_for_completion")
    if x.done:
        if x.done < _ALL:
            x.done -= 1
        return True
    return False


def completion_done(x: Completion) -> bool:
    """``completion_done(x)``: one visible read; True if a done is banked."""
    visible(x, READ, "completion_done")
    return x.done > 0

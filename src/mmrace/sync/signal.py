"""Fatal signals, for the ``_killable`` lock and wait variants."""

from __future__ import annotations

from mmrace.engine import READ, WRITE, SimThread, visible
from mmrace.sync._task import TaskSignal, TaskState, state_of, task

EINTR = 4
"""``EINTR``: the ``_killable`` variants return ``-EINTR``."""

ERESTARTSYS = 512
"""``ERESTARTSYS``: ``wait_for_completion_killable`` returns ``-ERESTARTSYS``."""


def _signal_of(ts: TaskState) -> TaskSignal:
    sig = ts.signal
    if sig is None:
        sig = ts.signal = TaskSignal(f"signal({ts.name})")
    return sig


def send_fatal_signal(thread: SimThread) -> None:
    """Send SIGKILL to *thread* (the kernel's ``send_sig(SIGKILL, p, 0)`` as
    seen by ``fatal_signal_pending``). One visible write on the task's signal
    object (none in set-up code).

    Left out: waking a task already blocked in a killable wait; the signal is
    seen the next time a killable operation has to block or tests
    :func:`fatal_signal_pending`."""
    sig = _signal_of(state_of(thread))
    ev = visible(sig, WRITE, "send_fatal_signal")
    sig.pending = True
    if ev is not None:
        ev.detail = "SIGKILL"


def fatal_signal_pending() -> bool:
    """``fatal_signal_pending(current)``: one visible read of the current
    task's signal object."""
    return pending(task())


def pending(ts: TaskState) -> bool:
    if ts.thread is None:
        return ts.signal is not None and ts.signal.pending
    sig = _signal_of(ts)
    visible(sig, READ, "fatal_signal_pending")
    return sig.pending

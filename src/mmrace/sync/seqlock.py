"""Sequence counters and seqlocks (include/linux/seqlock.h).

The counter is one shared object: a reader's begin and retry are visible
reads of it, a writer's begin and end are visible RMWs. A reader that finds
a write in progress (odd count) waits (a visible WAIT) until the count
changes, then reads it again, instead of spinning.

Footprints: readers only read the counter, so any number of readers are
independent of each other (one trace); a writer's begin and end change it,
so they are ordered against every reader's begin and retry -- which is
what decides whether the reader retries. A waiting reader's WAIT happens
after the write that ended the write section.

Left out: the latch and raw variants, and lockdep's check that writers are
serialised (``seqcount_LOCKNAME_t``); :class:`SeqLock` pairs a counter with
a spinlock for that.
"""

from __future__ import annotations

from mmrace.engine import READ, RMW, WAIT, SharedObject, visible
from mmrace.sync._task import misuse, task
from mmrace.sync.spinlock import Spinlock, spin_lock, spin_unlock


class SeqCount(SharedObject):
    """``seqcount_t``."""

    __slots__ = ("sequence",)

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.sequence = 0


def seqcount_init(name: str = "") -> SeqCount:
    """``seqcount_init(s)``: a new counter at 0."""
    return SeqCount(name)


def read_seqcount_begin(s: SeqCount) -> int:
    """``read_seqcount_begin(s)``: one visible read; if a write is in
    progress, wait for the count to change and read again. Returns an even
    count."""
    while True:
        ev = visible(s, READ, "read_seqcount_begin")
        seq = s.sequence
        if ev is not None:
            ev.detail = seq
        if not seq & 1:
            return seq

        def changed(s: SeqCount = s, seq: int = seq) -> bool:
            return s.sequence != seq

        visible(s, WAIT, "read_seqcount_begin", changed)


def raw_read_seqcount(s: SeqCount) -> int:
    """``raw_read_seqcount(s)``: one visible read, no waiting (may be odd)."""
    visible(s, READ, "raw_read_seqcount")
    return s.sequence


def read_seqcount_retry(s: SeqCount, start: int) -> bool:
    """``read_seqcount_retry(s, start)``: one visible read; True when a
    writer has been active since *start* (the reader must retry)."""
    ev = visible(s, READ, "read_seqcount_retry")
    retry = s.sequence != start
    if ev is not None:
        ev.detail = "retry" if retry else "ok"
    return retry


def write_seqcount_begin(s: SeqCount) -> None:
    """``write_seqcount_begin(s)``: one visible RMW, making the count odd.
    Two writers inside at once is a ``lock-misuse`` violation."""
    ts = task()
    visible(s, RMW, "write_seqcount_begin")
    if s.sequence & 1:
        raise misuse(ts, f"write_seqcount_begin({s.name}) while another write is in progress")
    s.sequence += 1


def write_seqcount_end(s: SeqCount) -> None:
    """``write_seqcount_end(s)``: one visible RMW, making the count even."""
    ts = task()
    visible(s, RMW, "write_seqcount_end")
    if not s.sequence & 1:
        raise misuse(ts, f"write_seqcount_end({s.name}) without write_seqcount_begin")
    s.sequence += 1


class SeqLock:
    """``seqlock_t``: a sequence counter plus a spinlock for writers."""

    __slots__ = ("seqcount", "lock")

    def __init__(self, name: str) -> None:
        self.seqcount = SeqCount(f"{name}.seqcount")
        self.lock = Spinlock(f"{name}.lock", name)


def seqlock_init(name: str) -> SeqLock:
    """``seqlock_init(sl)``."""
    return SeqLock(name)


def read_seqbegin(sl: SeqLock) -> int:
    """``read_seqbegin(sl)``."""
    return read_seqcount_begin(sl.seqcount)


def read_seqretry(sl: SeqLock, start: int) -> bool:
    """``read_seqretry(sl, start)``."""
    return read_seqcount_retry(sl.seqcount, start)


def write_seqlock(sl: SeqLock) -> None:
    """``write_seqlock(sl)``: take the spinlock, then begin the write."""
    spin_lock(sl.lock)
    write_seqcount_begin(sl.seqcount)


def write_sequnlock(sl: SeqLock) -> None:
    """``write_sequnlock(sl)``: end the write, then release the spinlock."""
    write_seqcount_end(sl.seqcount)
    spin_unlock(sl.lock)

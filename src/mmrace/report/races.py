"""Racing pairs of a trace: the operations a viewer links with an arrow.

Two events *race* when they come from different threads, touch one object,
and their accesses are a reversible race by the engine's own dependence
table (:func:`mmrace.engine.core.relation` is ``RACE``: a write against a
read or a write, lock operations on one lock, ...). For each event and
each object it touches, the pair is made with the latest earlier event of
another thread that races with it there -- the pair DPOR would consider
reversing. Pairs only ordered (a wait after the write that enabled it)
are not races.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mmrace.engine import Event
from mmrace.engine.core import RACE, relation


@dataclass(frozen=True)
class Race:
    """Event *earlier* races with event *later* on the object *name*."""

    earlier: int
    later: int
    obj: int  # the object's serial
    name: str


def racing_pairs(trace: Sequence[Event], shown: Collection[int] | None = None) -> list[Race]:
    """The racing pairs of *trace*, in order of the later event; with
    *shown*, only pairs whose two events are both in it."""
    # per object serial: [(event index, tid, kind)], oldest first
    history: dict[int, list[tuple[int, int, int]]] = {}
    out: list[Race] = []
    for i, ev in enumerate(trace):
        for obj, kind in ev.accesses():
            past = history.setdefault(obj.serial, [])
            for j, tid, k in reversed(past):
                if tid != ev.tid and relation(k, kind) == RACE:
                    if shown is None or (i in shown and j in shown):
                        out.append(Race(j, i, obj.serial, obj.name))
                    break
            past.append((i, ev.tid, kind))
    return out


__all__ = ["Race", "racing_pairs"]

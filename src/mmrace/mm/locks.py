"""The kernel primitives the mm model uses, in one place.

Re-exports ``mmrace.sync`` (rwsem, spinlock, RCU, kfree/kfree_rcu, KObject,
the per-task slots of counts whose updates commute)
and adds :func:`kobject_access`, the one place where the mm model touches an
object that has a lifetime (maple nodes, VMAs) so that an access to a freed
object is reported as a use-after-free.
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import Event, ViolationError, visible
from mmrace.sync import (
    EINTR,
    KObject,
    RwSemaphore,
    Spinlock,
    call_rcu,
    down_read,
    down_read_killable,
    down_read_trylock,
    down_write,
    down_write_killable,
    down_write_trylock,
    downgrade_write,
    kfree,
    kfree_in_op,
    kfree_rcu,
    rcu_read_lock,
    rcu_read_unlock,
    spin_lock,
    spin_unlock,
    up_read,
    up_write,
)
from mmrace.sync.slots import Slot, Slots, wait_released

__all__ = [
    "EINTR",
    "KObject",
    "RwSemaphore",
    "Slot",
    "Slots",
    "Spinlock",
    "call_rcu",
    "down_read",
    "down_read_killable",
    "down_read_trylock",
    "down_write",
    "down_write_killable",
    "down_write_trylock",
    "downgrade_write",
    "kfree",
    "kfree_in_op",
    "kfree_rcu",
    "kobject_access",
    "rcu_read_lock",
    "rcu_read_unlock",
    "spin_lock",
    "spin_unlock",
    "up_read",
    "up_write",
    "wait_released",
]


def kobject_access(obj: Any, kind: int, label: str) -> Event | None:
    """A visible access to an object with a lifetime; a use-after-free if the
    object has been freed (the report names the object and the access)."""
    ev = visible(obj, kind, label)
    if getattr(obj, "freed", False):
        raise ViolationError(
            "use-after-free",
            f"use-after-free: {label} on freed {obj.name}",
            f"{label} touched {obj.name} after it was freed",
        )
    return ev

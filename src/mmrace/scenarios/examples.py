"""Example scenarios outside the catalog: how to patch the model.

``clear-refs-walk-read-locked`` runs the ``softdirty-clear-refs-cow``
scenario on 5.12 (both clear_refs fixes in, the ``page_count`` COW policy),
with one lock removed for its runs only: ``clear_refs_write`` downgrades the
mmap lock to read for the page walk, as 5.10 did, so a page fault may run
during the walk while the TLB flush is pending. The walk is replaced by a
wrapper; nothing in mmrace is edited::

    mmrace explore src/mmrace/scenarios/examples.py:clear_refs_walk_read_locked

reports the lost increment; the same scenario without the patch
(``clear_refs_walk_write_locked``) is clean within K=3 preemptions.
"""

from __future__ import annotations

from typing import Any

from mmrace.mm.mm_types import MmStruct
from mmrace.mm.mmap_lock import mmap_read_unlock, mmap_write_downgrade, mmap_write_lock
from mmrace.scenarios.api import Explore, Kernel, Scenario, scenario
from mmrace.scenarios.deferred_flush import softdirty_clear_refs_cow
from mmrace.scenarios.patch import original


def walk_read_locked(mm: MmStruct, type_: int) -> None:
    """``walk_page_range`` with the mmap lock downgraded to read: page faults
    are no longer excluded during the walk. Gives the caller back the write
    lock it expects to release."""
    walk = original("mmrace.mm.task_mmu.walk_page_range_clear_refs")
    mmap_write_downgrade(mm)
    walk(mm, type_)
    mmap_read_unlock(mm)
    mmap_write_lock(mm)


FIXED = Kernel(release="5.12")  # both clear_refs fixes, page_count COW policy

_META: dict[str, Any] = {
    "references": ("29a951dfb3c3 mm: fix clear_refs_write locking (5.11)",
                   "912efa17e512 mm: proc: Invalidate TLB after clearing soft-dirty page "
                   "state (5.12)"),
    "base": FIXED,
    "explore": Explore(strategy="bounded", preemption_bound=3),
}

clear_refs_walk_write_locked: Scenario = scenario(
    name="clear-refs-walk-write-locked",
    summary="clear_refs as in 5.12: the page walk under the mmap write lock",
    expect={"current": "clean", "base": "clean"},
    **_META,
)(softdirty_clear_refs_cow.fn)

clear_refs_walk_read_locked: Scenario = scenario(
    name="clear-refs-walk-read-locked",
    summary="clear_refs of 5.12 patched to walk the page tables under the read lock",
    expect={"current": "clean", "base": "lost-write"},
    patches={"mmrace.mm.task_mmu.walk_page_range_clear_refs": walk_read_locked},
    **_META,
)(softdirty_clear_refs_cow.fn)

__all__ = ["clear_refs_walk_read_locked", "clear_refs_walk_write_locked", "walk_read_locked"]

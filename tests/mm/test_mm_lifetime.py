"""mm lifetime: mmget/mmget_not_zero/mmput tear the address space down with
the last user, mmgrab/mmdrop free the struct with the last reference; a use
of a torn-down address space (or a freed mm) is a use-after-free naming the
mm; each count change is one visible operation."""

from __future__ import annotations

from typing import Any

import pytest
from mmkit import ANON, RW, run1

from mmrace.engine import current_execution, explore
from mmrace.mm.fork import mmdrop, mmget, mmget_not_zero, mmgrab, mmput
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.mm.page_alloc import mem_state
from mmrace.mm.vma import vma_lookup
from mmrace.user import PAGE_SIZE, System, Thread


def test_last_mmput_tears_down_and_mmget_not_zero_then_fails() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 7)
        mm = p.mm
        mmgrab(mm)  # keep the struct, as a driver that stashed it does
        assert mmget_not_zero(mm)
        p.exit()  # not the last user: nothing is torn down
        assert mm.mm_users.value == 1 and p.maps() != []
        mmput(mm)  # the last one: exit_mmap runs here
        assert mm.mm_users.value == 0 and p.maps() == [] and not mem_state().live
        assert not mmget_not_zero(mm)
        # mmap_read_lock on a torn-down (but grabbed) mm is what the kernel
        # allows: the struct and its lock are still there.
        mmap_read_lock(mm)
        mmap_read_unlock(mm)
        mmdrop(mm)
        assert mm.freed

    run1(program)


def test_process_exit_twice_is_refused() -> None:
    def program() -> None:
        p = System().process()
        p.exit()
        with pytest.raises(ValueError, match="already exited"):
            p.exit()

    run1(program)


def _violation(program: Any, n: int | None = 1) -> Any:
    r = explore(program, max_executions=n, shrink=False)
    assert r.violation is not None
    return r.violation


def test_lookup_after_teardown_is_a_use_after_free_naming_the_mm() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        mm = p.mm
        mmgrab(mm)
        p.exit()
        mmap_read_lock(mm)
        vma_lookup(mm, a)

    v = _violation(program)
    assert v.kind == "use-after-free" and v.title == "use-after-free of mm1's address space"
    assert "vma_lookup" in v.message and "mmget_not_zero" in v.message


def test_mmget_not_zero_on_a_freed_mm_is_a_use_after_free() -> None:
    def program() -> None:
        p = System().process()
        mm = p.mm
        p.exit()  # the last user and the last reference: the struct is freed
        assert mm.freed
        mmget_not_zero(mm)

    v = _violation(program)
    assert v.kind == "use-after-free" and v.title == "use-after-free of mm1"


def _remote_user(take_reference: bool) -> Any:
    """A remote thread looks a VMA up in another process's mm while that
    process exits; with ``mmget_not_zero`` the teardown waits for it."""

    def program() -> None:
        s = System()
        owner = s.process()
        other = s.process()
        a = owner.mmap(0, PAGE_SIZE, RW, ANON)
        mm = owner.mm
        mmgrab(mm)

        def remote(t: Thread) -> None:
            if take_reference and not mmget_not_zero(mm):
                return
            mmap_read_lock(mm)
            vma_lookup(mm, a)
            mmap_read_unlock(mm)
            if take_reference:
                mmput(mm)

        def exiting(t: Thread) -> None:
            owner.exit()

        other.thread(remote, cpu=0)
        owner.thread(exiting, cpu=1)

    return program


def test_remote_lookup_racing_exit_needs_mmget_not_zero() -> None:
    v = _violation(_remote_user(False), None)
    assert v.kind == "use-after-free" and "mm1's address space" in v.title
    r = explore(_remote_user(True))
    assert r.violation is None and r.complete


def test_each_count_change_is_one_visible_operation() -> None:
    counts: dict[str, int] = {}

    def program() -> None:
        p = System().process()
        mm = p.mm

        def t(th: Thread) -> None:
            ops = []
            for fn in (mmgrab, mmget, mmget_not_zero, mmput, mmdrop):
                before = len(th_events())
                fn(mm)
                ops.append((fn.__name__, len(th_events()) - before))
            counts.update(ops)

        p.thread(t, cpu=0)

    def th_events() -> list[Any]:
        return current_execution().events

    explore(program, max_executions=1)
    assert counts == {"mmgrab": 1, "mmget": 1, "mmget_not_zero": 1, "mmput": 1, "mmdrop": 1}

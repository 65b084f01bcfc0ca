"""mmap_lock and per-VMA lock semantics (refcount scheme)."""

from __future__ import annotations

from typing import Any

from mmrace.engine import explore, spawn
from mmrace.mm.mm_types import VMA_LOCK_OFFSET
from mmrace.mm.mmap_lock import (
    lock_vma_under_rcu,
    mmap_assert_locked,
    mmap_read_lock,
    mmap_read_trylock,
    mmap_read_unlock,
    mmap_write_downgrade,
    mmap_write_lock,
    mmap_write_unlock,
    vma_end_read,
    vma_mark_detached,
    vma_start_write,
)
from mmrace.user import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, System, vma_find

ANON = MAP_PRIVATE | MAP_ANONYMOUS


def run(fn: Any) -> None:
    r = explore(fn, max_executions=1)
    assert r.violation is None, r.violation.message if r.violation else ""


def test_write_lock_released_by_unlock_and_downgrade() -> None:
    def program() -> None:
        proc = System().process()
        mm = proc.mm
        a = proc.mmap(0, PAGE_SIZE, PROT_READ, ANON)
        vma = vma_find(mm, a)
        assert vma.vm_lock.vm_refcnt == 1
        mmap_write_lock(mm)
        vma_start_write(vma)
        vma_start_write(vma)  # no-op the second time
        assert lock_vma_under_rcu(mm, a) is None  # write-locked: readers fail
        mmap_write_downgrade(mm)
        mmap_assert_locked(mm)
        got = lock_vma_under_rcu(mm, a)  # downgrade released the VMA lock
        assert got is vma and vma.vm_lock.vm_refcnt == 2
        vma_end_read(got)
        mmap_read_unlock(mm)
        assert mmap_read_trylock(mm)
        mmap_read_unlock(mm)
        assert lock_vma_under_rcu(mm, a + PAGE_SIZE) is None  # no VMA there

    run(program)


def test_detached_vma_cannot_be_read_locked() -> None:
    def program() -> None:
        proc = System().process()
        mm = proc.mm
        a = proc.mmap(0, PAGE_SIZE, PROT_READ, ANON)
        vma = vma_find(mm, a)
        mmap_write_lock(mm)
        vma_start_write(vma)
        vma_mark_detached(vma)
        assert vma.vm_lock.vm_refcnt == 0
        mmap_write_unlock(mm)
        # still in the tree (we only detached it): the lookup finds it, the
        # read lock fails
        assert lock_vma_under_rcu(mm, a) is None

    run(program)


def test_vma_start_write_waits_for_readers() -> None:
    order: list[str] = []

    def reader(mm: Any, addr: int) -> None:
        vma = lock_vma_under_rcu(mm, addr)
        if vma is None:
            order.append("reader-failed")
            return
        order.append("reader-in")
        vma_end_read(vma)
        order.append("reader-out")

    def writer(mm: Any, addr: int) -> None:
        mmap_write_lock(mm)
        vma = vma_find(mm, addr)
        vma_start_write(vma)
        assert vma.vm_lock.vm_refcnt == 1  # no reader inside
        assert vma.vm_lock.vm_refcnt < VMA_LOCK_OFFSET
        order.append("writer-locked")
        mmap_write_unlock(mm)

    seen: set[tuple[str, ...]] = set()

    def program() -> None:
        order.clear()
        proc = System().process()
        a = proc.mmap(0, PAGE_SIZE, PROT_READ, ANON)
        spawn(reader, proc.mm, a, name="reader")
        spawn(writer, proc.mm, a, name="writer")

        def final() -> None:
            seen.add(tuple(order))
            # a reader inside never overlaps the writer's locked section
            if "reader-in" in order and "writer-locked" in order:
                i, w = order.index("reader-in"), order.index("writer-locked")
                assert w < i or order.index("reader-out") < w

        return final  # type: ignore[return-value]

    r = explore(program)
    assert r.violation is None, r.violation.message if r.violation else ""
    assert r.complete
    assert ("reader-in", "reader-out", "writer-locked") in seen
    assert ("writer-locked", "reader-in", "reader-out") in seen
    assert ("reader-failed", "writer-locked") in seen or (
        "writer-locked", "reader-failed") in seen


def test_vma_start_write_needs_mmap_write_lock() -> None:
    def program() -> None:
        proc = System().process()
        mm = proc.mm
        a = proc.mmap(0, PAGE_SIZE, PROT_READ, ANON)
        mmap_read_lock(mm)
        vma_start_write(vma_find(mm, a))

    r = explore(program, max_executions=1)
    assert r.violation is not None and r.violation.kind == "locking-rule"
    assert "mmap_assert_write_locked" in r.violation.title

"""Merge and split rules of mm/vma.c, one case per rule, including which
VMAs get write-locked."""

from __future__ import annotations

from typing import Any

from mmrace.engine import explore
from mmrace.mm.mm_types import VM_IO, AnonVma, VmOperations
from mmrace.mm.mmap_lock import mmap_write_lock, mmap_write_unlock
from mmrace.mm.vma import vma_modify_flags
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    System,
    for_each_vma,
    vma_find,
)

ANON_FIXED = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
RW = PROT_READ | PROT_WRITE
BASE = 0x20000000
P = PAGE_SIZE


def run(fn: Any) -> None:
    r = explore(fn, max_executions=1)
    assert r.violation is None, r.violation.message if r.violation else ""


def layout(proc: Any) -> list[tuple[int, int]]:
    return [((v.raw("vm_start") - BASE) // P, (v.raw("vm_end") - BASE) // P)
            for v in for_each_vma(proc.mm)]


def three(proc: Any, prots: tuple[int, int, int]) -> list[Any]:
    for i, prot in enumerate(prots):
        proc.mmap(BASE + i * P, P, prot, ANON_FIXED)
    return [vma_find(proc.mm, BASE + i * P) for i in range(3)]


def write_locked(proc: Any) -> list[tuple[int, int]]:
    mm = proc.mm
    return [((v.raw("vm_start") - BASE) // P, (v.raw("vm_end") - BASE) // P)
            for v in for_each_vma(mm) if v.vm_lock.vm_lock_seq == mm.mm_lock_seq.sequence]


def modify(proc: Any, start: int, end: int, flags_of: Any) -> list[tuple[int, int]]:
    """vma_modify_flags under the mmap write lock; returns the write-locked
    VMAs (as page ranges) just before the unlock."""
    mm = proc.mm
    mmap_write_lock(mm)
    vma = vma_find(mm, BASE + start * P)
    prev = vma_find(mm, BASE + start * P - 1)
    if vma.raw("vm_start") < BASE + start * P:
        prev = vma
    vma_modify_flags(mm, prev, vma, BASE + start * P, BASE + end * P, flags_of(vma))
    locked = write_locked(proc)
    mmap_write_unlock(mm)
    return locked


def test_split_locks_only_the_split_vma() -> None:
    def program() -> None:
        proc = System().process()
        proc.mmap(BASE, 3 * P, RW, ANON_FIXED)
        proc.mmap(BASE + 3 * P, P, PROT_READ, ANON_FIXED)
        locked = modify(proc, 1, 2, lambda v: v.vm_flags & ~0x2)
        assert layout(proc) == [(0, 1), (1, 2), (2, 3), (3, 4)]
        # the split VMA and the two new ones; the neighbour is untouched
        assert locked == [(0, 1), (1, 2), (2, 3)]
        assert proc.mm.map_count == 4

    run(program)


def test_merge_left_locks_prev_and_deleted() -> None:
    def program() -> None:
        proc = System().process()
        a, b, c = three(proc, (RW, PROT_READ, PROT_READ | 0x4))
        locked = modify(proc, 1, 2, lambda v: a.vm_flags)
        assert layout(proc) == [(0, 2), (2, 3)]
        assert locked == [(0, 2)]  # prev; b (deleted) is gone from the tree
        assert b.vm_lock.vm_refcnt == 0  # detached
        assert c.vm_lock.vm_lock_seq != proc.mm.mm_lock_seq.sequence
        assert proc.mm.map_count == 2

    run(program)


def test_three_way_merge() -> None:
    def program() -> None:
        proc = System().process()
        three(proc, (RW, PROT_READ, RW))
        proc.mprotect(BASE + P, P, RW)
        assert layout(proc) == [(0, 3)]
        assert proc.mm.map_count == 1

    run(program)


def test_partial_merge_shrinks_middle() -> None:
    def program() -> None:
        proc = System().process()
        proc.mmap(BASE, P, RW, ANON_FIXED)
        proc.mmap(BASE + P, 3 * P, PROT_READ, ANON_FIXED)
        proc.mprotect(BASE + P, P, RW)
        assert layout(proc) == [(0, 2), (2, 4)]
        proc.mprotect(BASE + 3 * P, P, RW)
        assert layout(proc) == [(0, 2), (2, 3), (3, 4)]
        proc.mprotect(BASE + 2 * P, P, RW)
        assert layout(proc) == [(0, 4)]

    run(program)


def test_special_vmas_never_merge() -> None:
    def program() -> None:
        sys_ = System()
        sys_.create_file("/dev/mem", special=VM_IO)
        proc = sys_.process()
        fd = proc.open("/dev/mem")
        proc.mmap(BASE, P, RW, MAP_SHARED | MAP_FIXED, fd, 0)
        proc.mmap(BASE + P, P, RW, MAP_SHARED | MAP_FIXED, fd, P)
        assert layout(proc) == [(0, 1), (1, 2)]

    run(program)


def test_file_vmas_merge_with_continuous_pgoff_only() -> None:
    def program() -> None:
        sys_ = System()
        sys_.create_file("/data")
        proc = sys_.process()
        fd = proc.open("/data")
        proc.mmap(BASE, P, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0)
        proc.mmap(BASE + P, P, PROT_READ, MAP_SHARED | MAP_FIXED, fd, P)
        assert layout(proc) == [(0, 2)]
        proc.mmap(BASE + 2 * P, P, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 5 * P)
        assert layout(proc) == [(0, 2), (2, 3)]
        m = proc.maps()
        assert m[1].pgoff == 5 * P and m[1].name == "/data" and m[1].perms == "r--s"
        mapping = sys_.files["/data"].f_mapping
        assert len(mapping.i_mmap) == 2

    run(program)


def test_close_hook_vma_is_never_deleted() -> None:
    closed: list[Any] = []
    opened: list[Any] = []

    def program() -> None:
        sys_ = System()
        ops = VmOperations("drv_ops", close=closed.append, open=opened.append)
        sys_.create_file("/dev/drv", vm_ops=ops)
        proc = sys_.process()
        fd = proc.open("/dev/drv")
        proc.mmap(BASE, 3 * P, RW, MAP_PRIVATE | MAP_FIXED, fd, 0)
        proc.mprotect(BASE + P, P, PROT_READ)
        assert layout(proc) == [(0, 1), (1, 2), (2, 3)]
        assert len(opened) == 2
        # Making the middle compatible again would delete it (and next): the
        # merge is abandoned and the flags are changed in place.
        proc.mprotect(BASE + P, P, RW)
        assert layout(proc) == [(0, 1), (1, 2), (2, 3)]
        assert not closed
        proc.munmap(BASE, 3 * P)
        assert len(closed) == 3

    run(program)


def test_incompatible_anon_vmas_reduce_three_way_merge() -> None:
    def program() -> None:
        proc = System().process()
        a, _b, c = three(proc, (RW, PROT_READ, RW))
        a._f_anon_vma = AnonVma("av1")
        a._f_anon_vma_chain = [a._f_anon_vma]
        c._f_anon_vma = AnonVma("av2")
        c._f_anon_vma_chain = [c._f_anon_vma]
        proc.mprotect(BASE + P, P, RW)
        assert layout(proc) == [(0, 2), (2, 3)]

    run(program)


def test_compatible_anon_vmas_merge_three_way() -> None:
    def program() -> None:
        proc = System().process()
        a, _b, c = three(proc, (RW, PROT_READ, RW))
        av = AnonVma("av")
        for v in (a, c):
            v._f_anon_vma = av
            v._f_anon_vma_chain = [av]
        proc.mprotect(BASE + P, P, RW)
        assert layout(proc) == [(0, 3)]
        assert vma_find(proc.mm, BASE).raw("anon_vma") is av

    run(program)

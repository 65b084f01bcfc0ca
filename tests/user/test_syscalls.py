"""Syscall argument checks (errno), madvise/mlock/brk/stack expansion and
the /proc/PID/maps view."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from mmrace.engine import explore
from mmrace.mm.mm_types import (
    VM_DONTCOPY,
    VM_GROWSDOWN,
    VM_LOCKED,
    VM_WIPEONFORK,
)
from mmrace.mm.mmap import expand_stack, stack_guard_gap
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.user import (
    MADV_DOFORK,
    MADV_DONTFORK,
    MADV_KEEPONFORK,
    MADV_WIPEONFORK,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_GROWSDOWN,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    System,
    vma_find,
)

P = PAGE_SIZE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
RW = PROT_READ | PROT_WRITE
BASE = 0x30000000


def run(fn: Any) -> None:
    r = explore(fn, max_executions=1)
    assert r.violation is None, r.violation.message if r.violation else ""


def err(fn: Any, *args: Any) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)
    return int(info.value.errno or 0)


def test_errnos() -> None:
    def program() -> None:
        proc = System().process()
        assert err(proc.mmap, 0, 0, RW, ANON) == errno.EINVAL
        assert err(proc.mmap, BASE + 1, P, RW, ANON | MAP_FIXED) == errno.EINVAL
        assert err(proc.mmap, 0, P, RW, MAP_ANONYMOUS) == errno.EINVAL
        assert err(proc.mmap, 0, P, RW, MAP_PRIVATE, 42, 0) == errno.EBADF
        assert err(proc.mmap, 0, P, RW, ANON, -1, 5) == errno.EINVAL
        assert err(proc.mmap, 0, 1 << 60, RW, ANON) == errno.ENOMEM
        assert err(proc.mmap, 0x1000, P, RW, ANON | MAP_FIXED) == errno.EPERM
        proc.mmap(BASE, 2 * P, RW, ANON | MAP_FIXED)
        assert err(proc.mmap, BASE + P, P, RW, ANON | MAP_FIXED_NOREPLACE) == errno.EEXIST
        assert proc.mmap(BASE + 2 * P, P, RW, ANON | MAP_FIXED_NOREPLACE) == BASE + 2 * P
        assert err(proc.munmap, BASE + 1, P) == errno.EINVAL
        assert err(proc.munmap, BASE, 0) == errno.EINVAL
        assert err(proc.mprotect, BASE + 1, P, PROT_READ) == errno.EINVAL
        assert err(proc.mprotect, BASE, P, 0x40) == errno.EINVAL
        assert err(proc.mprotect, BASE + 8 * P, P, PROT_READ) == errno.ENOMEM
        assert err(proc.madvise, BASE, P, 12345) == errno.EINVAL
        assert err(proc.mlock, BASE + 8 * P, P) == errno.ENOMEM
        # A hole after mapped VMAs: the mapped part is changed, then ENOMEM.
        assert err(proc.mprotect, BASE, 5 * P, PROT_READ) == errno.ENOMEM
        assert [m.perms for m in proc.maps()] == ["r--p"]
        assert err(proc.mlock, BASE, 5 * P) == errno.ENOMEM
        assert vma_find(proc.mm, BASE).raw("vm_flags") & VM_LOCKED
        proc.munlock(BASE, 3 * P)
        assert not vma_find(proc.mm, BASE).raw("vm_flags") & VM_LOCKED

    run(program)


def test_madvise_fork_flags() -> None:
    def program() -> None:
        proc = System().process()
        a = proc.mmap(0, 4 * P, RW, ANON)
        proc.madvise(a + P, P, MADV_DONTFORK)
        assert len(proc.maps()) == 3
        assert vma_find(proc.mm, a + P).raw("vm_flags") & VM_DONTCOPY
        proc.madvise(a + P, P, MADV_DOFORK)
        assert len(proc.maps()) == 1
        proc.madvise(a, 4 * P, MADV_WIPEONFORK)
        assert vma_find(proc.mm, a).raw("vm_flags") & VM_WIPEONFORK
        proc.madvise(a, 4 * P, MADV_KEEPONFORK)
        assert not vma_find(proc.mm, a).raw("vm_flags") & VM_WIPEONFORK
        s = proc.mmap(0, P, RW, MAP_SHARED | MAP_ANONYMOUS)
        assert err(proc.madvise, s, P, MADV_WIPEONFORK) == errno.EINVAL
        # holes: applied to the mapped parts, then ENOMEM
        proc.munmap(a + P, P)
        assert err(proc.madvise, a, 4 * P, MADV_DONTFORK) == errno.ENOMEM
        assert vma_find(proc.mm, a).raw("vm_flags") & VM_DONTCOPY
        assert vma_find(proc.mm, a + 2 * P).raw("vm_flags") & VM_DONTCOPY

    run(program)


def test_brk() -> None:
    def program() -> None:
        proc = System().process()
        mm = proc.mm
        start = proc.brk(0)
        assert start == mm.start_brk
        assert proc.brk(start - P) == start
        assert proc.brk(start + 3 * P + 10) == start + 3 * P + 10
        maps = proc.maps()
        assert [(m.start, m.end, m.name) for m in maps] == [(start, start + 4 * P, "[heap]")]
        assert proc.brk(start + 5 * P) == start + 5 * P
        assert mm.map_count == 1
        assert proc.brk(start + P) == start + P
        assert [(m.start, m.end) for m in proc.maps()] == [(start, start + P)]

    run(program)


def test_expand_stack() -> None:
    def program() -> None:
        proc = System().process()
        mm = proc.mm
        top = 0x7000_0000_0000
        stack = proc.mmap(top - 4 * P, 4 * P, RW, ANON | MAP_GROWSDOWN | MAP_FIXED)
        assert vma_find(mm, stack).raw("vm_flags") & VM_GROWSDOWN
        assert proc.maps()[0].name == "[stack]"
        mmap_read_lock(mm)
        vma = expand_stack(mm, stack - 2 * P - 8)
        assert vma is not None and vma.vm_start == stack - 3 * P
        mmap_read_unlock(mm)
        assert vma.raw("vm_pgoff") == (stack - 3 * P) // P
        # a mapping within the guard gap below stops the growth
        low = vma.raw("vm_start") - stack_guard_gap
        proc.mmap(low - P, P, RW, ANON | MAP_FIXED)
        mmap_read_lock(mm)
        assert expand_stack(mm, low + P) is None  # returns with no lock held

    run(program)


def test_maps_format() -> None:
    def program() -> None:
        sys_ = System()
        sys_.create_file("/lib/libc.so")
        proc = sys_.process()
        fd = proc.open("/lib/libc.so")
        proc.mmap(BASE, P, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 2 * P)
        proc.mmap(BASE + 2 * P, P, RW, ANON | MAP_FIXED)
        lines = proc.maps_text().splitlines()
        assert lines[0].startswith("30000000-30001000 r--p 00002000 00:00 0")
        assert lines[0].endswith(" /lib/libc.so")
        assert lines[1] == "30002000-30003000 rw-p 00000000 00:00 0"
        assert str(proc.maps()[1]) == lines[1]

    run(program)


def test_syscalls_from_threads() -> None:
    from mmrace.engine import spawn

    def program() -> None:
        proc = System().process()
        a = proc.mmap(0, 4 * P, RW, ANON)
        spawn(proc.mprotect, a, P, PROT_READ, name="t1")
        spawn(proc.munmap, a + 2 * P, P, name="t2")

        def final() -> None:
            assert [m.perms for m in proc.maps()] == ["r--p", "rw-p", "rw-p"]

        return final  # type: ignore[return-value]

    r = explore(program, max_seconds=60)
    assert r.violation is None, r.violation.message if r.violation else ""
    assert r.complete

"""Pipes and vmsplice, /proc/PID/mem, and the GUP calls of a scenario: what
they return, the references they hold, and the errno of every bad input."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest

from mmrace.engine import explore
from mmrace.mm.mm_types import VM_IO, VM_PFNMAP
from mmrace.mm.page_alloc import WORD_SIZE, mem_state
from mmrace.mm.pipe import PIPE_DEF_BUFFERS
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE_SIZE,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    Process,
    System,
    Thread,
)

ANON = MAP_PRIVATE | MAP_ANONYMOUS
RW = PROT_READ | PROT_WRITE
WORD = WORD_SIZE  # one naturally aligned 8-byte word of user memory


def _run(fn: Callable[[], Any]) -> Any:
    out: list[Any] = []
    r = explore(lambda: out.append(fn()), max_executions=1, shrink=False)
    assert r.violation is None, r.violation.message if r.violation else ""
    return out[0]


def _errno(call: Callable[[], Any]) -> int | None:
    try:
        call()
    except OSError as e:
        return e.errno
    return None


def _proc(pages: int = 1, prot: int = RW) -> tuple[Process, int]:
    p = System().process()
    a = p.mmap(0, pages * PAGE_SIZE, prot, ANON)
    return p, a


def test_vmsplice_queues_references_and_read_copies_at_read_time() -> None:
    def fn() -> None:
        p, a = _proc(2)
        for i in range(2):
            p.poke(a + i * PAGE_SIZE, 10 + i)
        r, w = p.pipe()
        assert p.vmsplice(w, a, 2 * PAGE_SIZE) == 2 * PAGE_SIZE
        page0 = p.get_user_pages(a)[0]
        assert page0._refcount == 1 + 1 + 1  # mapping, pipe buffer, our reference
        p.put_page(page0)
        p.poke(a, 99)  # the pipe holds the page itself: it sees this
        assert p.read(r, WORD) == [99]
        rest = p.read(r)
        words = PAGE_SIZE // WORD
        assert rest == [0] * (words - 1) + [11] + [0] * (words - 1)
        assert page0._refcount == 1  # the buffer's reference went with the read
        assert _errno(lambda: p.read(r)) == errno.EAGAIN

    _run(fn)


def test_vmsplice_short_counts_and_a_full_pipe() -> None:
    def fn() -> None:
        p = System().process()
        a = p.mmap(0x10000000, 2 * PAGE_SIZE, RW, ANON | MAP_FIXED)
        r, w = p.pipe()
        assert p.vmsplice(w, a + PAGE_SIZE, 3 * PAGE_SIZE) == PAGE_SIZE  # runs off the end
        big = p.mmap(0, 20 * PAGE_SIZE, RW, ANON)
        assert p.vmsplice(w, big, 20 * PAGE_SIZE) == (PIPE_DEF_BUFFERS - 1) * PAGE_SIZE
        assert _errno(lambda: p.vmsplice(w, big, PAGE_SIZE)) == errno.EAGAIN
        assert len(p.read(r)) == PIPE_DEF_BUFFERS * (PAGE_SIZE // WORD)
        assert sum(f._refcount for f in mem_state().live.values()) == sum(
            f._mapcount for f in mem_state().live.values())  # no reference left over

    _run(fn)


def test_vmsplice_and_read_bad_input() -> None:
    def fn() -> None:
        p, a = _proc(prot=RW)
        none = p.mmap(0, PAGE_SIZE, PROT_NONE, ANON)
        r, w = p.pipe()
        fd = p.system.open_file("file")
        assert _errno(lambda: p.vmsplice(w, a + 16 * PAGE_SIZE, PAGE_SIZE)) == errno.EFAULT
        assert _errno(lambda: p.vmsplice(w, none, PAGE_SIZE)) == errno.EFAULT
        assert _errno(lambda: p.vmsplice(r, a, PAGE_SIZE)) == errno.EBADF  # the read end
        assert _errno(lambda: p.vmsplice(fd, a, PAGE_SIZE)) == errno.EBADF  # not a pipe
        assert _errno(lambda: p.vmsplice(99, a, PAGE_SIZE)) == errno.EBADF
        assert _errno(lambda: p.vmsplice(w, a + 1, WORD)) == errno.EINVAL
        assert _errno(lambda: p.read(w)) == errno.EBADF
        assert _errno(lambda: p.read(r, 3)) == errno.EINVAL
        assert p.vmsplice(w, a, 0) == 0
        assert _errno(lambda: p.mmap(0, PAGE_SIZE, PROT_READ, MAP_SHARED, r)) == errno.ENODEV

    _run(fn)


def test_proc_mem_writes_read_only_private_memory_but_not_the_file() -> None:
    def fn() -> None:
        s = System()
        p = s.process()
        fd = s.open_file("data")
        a = p.mmap(0, PAGE_SIZE, PROT_READ, MAP_PRIVATE, fd)
        p.proc_mem_write(a + WORD, 5)
        assert p.peek(a + WORD) == 5 and p.proc_mem_read(a + WORD) == 5
        assert s.files["data"].f_mapping.i_pages[0].contents.get(0, 1) == 0
        none = p.mmap(0, PAGE_SIZE, PROT_NONE, ANON)
        p.proc_mem_write(none, 6)  # FOLL_FORCE: ptrace may poke PROT_NONE private memory
        assert p.proc_mem_read(none) == 6

    _run(fn)


def test_proc_mem_bad_input() -> None:
    def fn() -> None:
        s = System()
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        s.create_file("dev", special=VM_IO | VM_PFNMAP)
        io = p.mmap(0, PAGE_SIZE, RW, MAP_SHARED, p.open("dev"))
        ro_shared = p.mmap(0, PAGE_SIZE, PROT_READ, MAP_SHARED, s.open_file("f"))
        assert _errno(lambda: p.proc_mem_write(a + 4 * PAGE_SIZE, 1)) == errno.EIO
        assert _errno(lambda: p.proc_mem_read(a + 4 * PAGE_SIZE)) == errno.EIO
        assert _errno(lambda: p.proc_mem_write(io, 1)) == errno.EIO
        assert _errno(lambda: p.proc_mem_write(ro_shared, 1)) == errno.EIO  # not COW
        assert _errno(lambda: p.proc_mem_write(a + 4, 1)) == errno.EINVAL

    _run(fn)


def test_gup_calls_from_threads() -> None:
    seen: list[Any] = []

    def program() -> None:
        p, a = _proc()
        p.poke(a, 3)
        r, w = p.pipe()

        def body(t: Thread) -> None:
            pins = t.pin_user_pages(a, 1, write=True, longterm=True)
            refs = t.get_user_pages(a, 1, force=True)
            t.vmsplice(w, a, WORD)
            seen.append((t.read(r), t.read_page(pins[0]), pins[0] is refs[0]))
            t.unpin(pins)
            t.put_page(refs)

        p.thread(body, cpu=0)

    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation and r.violation.message
    assert seen == [([3], 3, True)]


def test_read_page_checks_the_offset() -> None:
    def fn() -> None:
        p, a = _proc()
        page = p.get_user_pages(a)[0]
        with pytest.raises(ValueError):
            p.read_page(page, 3)
        with pytest.raises(ValueError):
            p.read_page(page, PAGE_SIZE)

    _run(fn)

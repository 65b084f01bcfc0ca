"""Zapping: pages freed exactly once, MADV_DONTNEED, truncate under
i_mmap_rwsem alone, and free_pgtables' rmap rule."""

from __future__ import annotations

import pytest
from mmkit import ANON, RW, check_accounting, run1

from mmrace.engine import explore, spawn
from mmrace.mm import vma as vma_mod
from mmrace.mm.page_alloc import mem_state
from mmrace.mm.pgtable import all_tables
from mmrace.user import MADV_DONTNEED, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, System


def test_zap_frees_shared_pages_exactly_once() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, 4 * PAGE_SIZE, RW, ANON)
        for i in range(4):
            p.poke(a + i * PAGE_SIZE, i)
        c = p.fork()
        st = mem_state()
        assert len(st.live) == 4
        p.munmap(a, 4 * PAGE_SIZE)
        assert len(st.live) == 4  # still mapped by the child
        check_accounting([p, c])
        c.munmap(a, 4 * PAGE_SIZE)  # a double free would be a violation
        assert len(st.live) == 0 and st.freed == 4
        assert [t.level for t in all_tables(c.mm)] == [4]  # tables freed too

    run1(program)


def test_madv_dontneed_zaps_to_zero() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        p.poke(a, 5)
        p.madvise(a, PAGE_SIZE, MADV_DONTNEED)
        assert p.peek(a) == 0 and len(mem_state().live) == 0

    run1(program)


def test_truncate_zaps_every_mapping_even_private_cows() -> None:
    def program() -> None:
        s = System()
        p = s.process()
        fd = s.open_file("t", 2 * PAGE_SIZE)
        sh = p.mmap(0, 2 * PAGE_SIZE, RW, MAP_SHARED, fd)
        pr = p.mmap(0, 2 * PAGE_SIZE, RW, MAP_PRIVATE, fd)
        p.poke(sh, 1)
        p.poke(pr + PAGE_SIZE, 2)  # a private COW copy
        p.ftruncate(fd, 0)  # truncate_pagecache zaps even_cows
        check_accounting([p])
        assert len(mem_state().live) == 0
        for addr in (sh, pr + PAGE_SIZE):
            try:
                p.peek(addr)
            except OSError as e:
                assert "SIGBUS" in str(e)
            else:
                raise AssertionError("fault beyond EOF did not SIGBUS")

    run1(program)


def test_truncate_races_munmap() -> None:
    def program() -> None:
        s = System()
        p = s.process()
        fd = s.open_file("r", PAGE_SIZE)
        a = p.mmap(0, PAGE_SIZE, RW, MAP_SHARED, fd)
        p.poke(a, 1)
        spawn(p.munmap, a, PAGE_SIZE, name="munmap")
        spawn(p.ftruncate, fd, 0, name="truncate")

    r = explore(program, max_executions=300)
    assert r.violation is None, r.violation and r.violation.message


def test_free_pgtables_on_vma_still_in_file_rmap_is_reported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vma_mod, "unlink_file_vma", lambda vma: None)

    def program() -> None:
        s = System()
        p = s.process()
        fd = s.open_file("x", PAGE_SIZE)
        a = p.mmap(0, PAGE_SIZE, RW, MAP_SHARED, fd)
        p.poke(a, 1)
        p.munmap(a, PAGE_SIZE)

    r = explore(program, max_executions=1)
    assert r.violation is not None and r.violation.kind == "locking-rule"
    assert "still reachable through the rmap" in r.violation.title

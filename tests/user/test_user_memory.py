"""User memory is addressed in bytes: every naturally aligned 8-byte word of
a page (issue 12), with per-word footprints that keep DPOR's reduction."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from mmrace.engine import Result, explore
from mmrace.user import (
    CLEAR_REFS_SOFT_DIRTY,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    System,
)

ANON = MAP_PRIVATE | MAP_ANONYMOUS
RW = PROT_READ | PROT_WRITE


def one(program: Any) -> Result:
    r = explore(program, max_executions=1)
    assert r.violation is None, r.violation.message if r.violation else ""
    return r


def test_every_aligned_word_is_addressable_and_untouched_words_read_0() -> None:
    seen: dict[str, Any] = {}

    def program() -> Any:
        p = System(cpus=1).process()
        a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        p.poke(a + 8, 11)
        p.poke(a + PAGE_SIZE - 8, 12)
        seen["setup"] = [p.peek(a), p.peek(a + 8), p.peek(a + 16), p.peek(a + PAGE_SIZE - 8)]

        def thread(t: Any) -> None:
            t.store(a + 24, 13)
            t.store(a + PAGE_SIZE + 4088, 14)
            seen["thread"] = [t.load(a + 8), t.load(a + 24), t.load(a + 32),
                              t.atomic_add(a + 24, 1), t.load(a + PAGE_SIZE + 4088)]

        p.thread(thread, cpu=0)

        def final() -> None:
            seen["final"] = [p.peek(a + 24), p.peek(a + PAGE_SIZE + 4080)]

        return final

    one(program)
    assert seen == {"setup": [0, 11, 0, 12], "thread": [11, 13, 0, 13, 14], "final": [14, 0]}


def test_cow_copies_every_word() -> None:
    seen: list[int] = []

    def program() -> Any:
        p = System(cpus=1, policies={"cow-reuse": "page_count"}).process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        for off in (0, 8, 2048, 4088):
            p.poke(a + off, off + 1)
        p.pin(a, write=True)  # the write fault after clear_refs copies
        p.clear_refs(CLEAR_REFS_SOFT_DIRTY)
        p.thread(lambda t: t.store(a + 16, 99), cpu=0)
        return lambda: seen.extend(p.peek(a + off) for off in (0, 8, 16, 2048, 4088))

    one(program)
    assert seen == [1, 9, 99, 2049, 4089]


def _two_stores(off_a: int, off_b: int) -> Result:
    def program() -> None:
        p = System(cpus=2).process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 0)  # fault the page in during set-up
        p.touch(a, cpu=0, write=True)
        p.touch(a, cpu=1, write=True)
        p.thread(lambda t: t.store(a + off_a, 1), cpu=0)
        p.thread(lambda t: t.store(a + off_b, 2), cpu=1)

    return explore(program, strategy="dpor")


def test_stores_to_different_words_commute_same_word_conflicts() -> None:
    # The footprints are per word: DPOR runs one execution for two stores to
    # neighbouring words, two for two stores to one word.
    assert _two_stores(8, 16).executions == 1
    assert _two_stores(4088, 4080).executions == 1
    assert _two_stores(8, 8).executions == 2


def test_misaligned_access_is_a_one_line_value_error() -> None:
    errors: list[str] = []

    def program() -> None:
        p = System(cpus=1).process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        for bad in (a + 1, a + 4, a + PAGE_SIZE - 1):
            with pytest.raises(ValueError) as info:
                p.poke(bad, 1)
            errors.append(str(info.value))
        with pytest.raises(ValueError):
            p.peek(a + 12)

        def thread(t: Any) -> None:
            with pytest.raises(ValueError):
                t.store(a + 3, 1)
            with pytest.raises(ValueError):
                t.load(a + 4095)

        p.thread(thread, cpu=0)

    one(program)
    assert all("\n" not in e and "not aligned to an 8-byte word" in e for e in errors)


def test_a_misaligned_store_in_a_thread_is_reported_in_one_line() -> None:
    def program() -> None:
        p = System(cpus=1).process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.thread(lambda t: t.store(a + 1, 1), cpu=0)

    r = explore(program, max_executions=1)
    assert r.violation is not None
    assert r.violation.title.startswith("ValueError: address 0x")
    assert "\n" not in r.violation.title


def test_addresses_outside_user_space_fault() -> None:
    out: dict[str, Any] = {}

    def program() -> None:
        p = System(cpus=1).process()
        for bad in (-8, 1 << 47, 1 << 64):
            with pytest.raises(OSError) as info:
                p.peek(bad)
            assert info.value.errno == errno.EFAULT
        with pytest.raises(OSError):
            p.poke(0x1000, 1)  # no VMA there

        def thread(t: Any) -> None:
            t.store(-4096, 1)

        th = p.thread(thread, cpu=0)
        out["t"] = th

    one(program)
    sf = out["t"].segfault
    assert sf is not None and "not a user address" in str(sf)

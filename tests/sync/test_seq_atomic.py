"""seqcount retry, atomics, refcount_t and completions."""

from __future__ import annotations

from collections.abc import Callable

from mmrace.engine import Var, explore, require, spawn
from mmrace.sync import (
    Atomic,
    Refcount,
    SeqCount,
    atomic_add_return,
    atomic_cmpxchg,
    atomic_dec,
    atomic_inc,
    atomic_inc_not_zero,
    atomic_read,
    atomic_set,
    complete,
    init_completion,
    read_seqbegin,
    read_seqcount_begin,
    read_seqcount_retry,
    read_seqretry,
    refcount_dec_and_test,
    refcount_inc,
    refcount_inc_not_zero,
    seqlock_init,
    wait_for_completion,
    write_seqcount_begin,
    write_seqcount_end,
    write_seqlock,
    write_sequnlock,
)


def _seq(retry: bool, retries: list[int]) -> Callable[[], None]:
    def program() -> None:
        s = SeqCount("seq")
        x = Var(0, "x")
        y = Var(0, "y")

        def writer() -> None:
            write_seqcount_begin(s)
            x.store(1)
            y.store(1)
            write_seqcount_end(s)

        def reader() -> None:
            tries = 0
            while True:
                start = read_seqcount_begin(s)
                a = x.load()
                b = y.load()
                if not retry or not read_seqcount_retry(s, start):
                    break
                tries += 1
            retries.append(tries)
            require(a == b, f"torn read x={a} y={b}")

        spawn(writer, name="W")
        spawn(reader, name="R")

    return program


def test_seqcount_retry() -> None:
    retries: list[int] = []
    r = explore(_seq(True, retries), "dpor")
    assert r.outcome == "clean" and r.complete
    assert max(retries) >= 1  # some interleaving had to retry
    r = explore(_seq(False, []), "dpor")
    assert r.violation is not None and r.violation.kind == "assertion"


def test_seqlock() -> None:
    def program() -> None:
        sl = seqlock_init("sl")
        x = Var(0, "x")
        y = Var(0, "y")

        def writer() -> None:
            write_seqlock(sl)
            x.store(x.load() + 1)
            y.store(y.load() + 1)
            write_sequnlock(sl)

        def reader() -> None:
            while True:
                start = read_seqbegin(sl)
                a, b = x.load(), y.load()
                if not read_seqretry(sl, start):
                    break
            require(a == b, "torn read")

        spawn(writer, name="W1")
        spawn(writer, name="W2")
        spawn(reader, name="R")

    r = explore(program, "dpor")
    assert r.outcome == "clean" and r.complete


def test_atomics() -> None:
    def program() -> Callable[[], None]:
        v = Atomic(0, "v")

        def t() -> None:
            atomic_inc(v)
            atomic_add_return(2, v)
            atomic_dec(v)

        spawn(t, name="T1")
        spawn(t, name="T2")

        def check() -> None:
            require(atomic_read(v) == 4, "atomics lost an update")
            atomic_set(v, 0)
            require(not atomic_inc_not_zero(v), "inc_not_zero on 0")
            require(atomic_cmpxchg(v, 0, 5) == 0 and atomic_read(v) == 5, "cmpxchg")

        return check

    r = explore(program, "dpor")
    assert r.outcome == "clean" and r.complete


def test_refcount_increment_from_zero_and_underflow() -> None:
    def inc_from_zero() -> None:
        r = Refcount(1, "ref")

        def put() -> None:
            refcount_dec_and_test(r)

        def get() -> None:
            refcount_inc(r)  # should have been refcount_inc_not_zero
            refcount_dec_and_test(r)

        spawn(put, name="T1")
        spawn(get, name="T2")

    v = explore(inc_from_zero, "dpor").violation
    assert v is not None and v.kind == "use-after-free"
    assert v.title == "refcount_t: addition on 0; use-after-free. (ref)"

    def underflow() -> None:
        r = Refcount(1, "ref")

        def t() -> None:
            refcount_dec_and_test(r)
            refcount_dec_and_test(r)

        spawn(t, name="T1")

    v = explore(underflow, "dpor").violation
    assert v is not None and v.title == "refcount_t: underflow; use-after-free. (ref)"

    def correct() -> None:
        r = Refcount(1, "ref")

        def get() -> None:
            if refcount_inc_not_zero(r):
                refcount_dec_and_test(r)

        spawn(lambda: refcount_dec_and_test(r), name="T1")
        spawn(get, name="T2")

    r = explore(correct, "dpor")
    assert r.outcome == "clean" and r.complete


def test_completion() -> None:
    def program() -> None:
        c = init_completion("fault_done")
        x = Var(0, "x")

        def handler() -> None:
            x.store(1)
            complete(c)

        def faulter() -> None:
            wait_for_completion(c)
            require(x.load() == 1, "woken before the event")

        spawn(faulter, name="F")
        spawn(handler, name="H")

    r = explore(program, "dpor")
    assert r.outcome == "clean" and r.complete

    def never() -> None:
        c = init_completion("never")
        spawn(lambda: wait_for_completion(c), name="F")

    v = explore(never, "dpor").violation
    assert v is not None and v.kind == "deadlock"

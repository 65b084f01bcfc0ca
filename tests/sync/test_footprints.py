"""Footprints as fine as the kernel's semantics: for each primitive, the
number of traces (executions under ``dpor``) of a small canonical program,
and DPOR against naive enumeration keeping every verdict.

The trace counts pin down which operations commute: two readers of an
rwsem, N independent ``call_rcu``s, two result-less ``atomic_add``s are one
trace each; taking a free lock and waiting for its holder to let go are one
trace, so N tasks taking one lock are the N! orders they get it in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mmrace.engine import Var, explore, require, spawn
from mmrace.engine.explore import make_strategy, run_once
from mmrace.sync import (
    ATOMIC_INIT,
    KObject,
    Refcount,
    atomic_add,
    atomic_add_return,
    atomic_dec_and_test,
    atomic_inc,
    atomic_read,
    complete,
    debug_locks_off,
    down_read,
    down_write,
    init_completion,
    init_rwsem,
    kfree,
    kfree_rcu,
    kmem_cache_alloc,
    mutex_init,
    mutex_lock,
    mutex_unlock,
    rcu_assign_pointer,
    rcu_dereference,
    rcu_read_lock,
    rcu_read_unlock,
    read_seqcount_begin,
    read_seqcount_retry,
    refcount_add,
    refcount_dec_and_test,
    refcount_inc,
    refcount_read,
    seqcount_init,
    spin_lock,
    spin_lock_init,
    spin_unlock,
    synchronize_rcu,
    up_read,
    up_write,
    wait_for_completion,
    write_seqcount_begin,
    write_seqcount_end,
)

Program = Callable[[], Any]


class Node(KObject):
    pass


def traces(program: Program) -> int:
    """Executions of a complete, clean ``dpor`` exploration (one per trace)."""
    r = explore(program, "dpor")
    assert r.violation is None, r.violation.message if r.violation else ""
    assert r.complete and r.blocked == 0
    return r.executions


def spawn_each(*bodies: Callable[[], None]) -> None:
    for i, body in enumerate(bodies):
        spawn(body, name=f"T{i}")


# --- trace counts ---------------------------------------------------------------


def test_two_readers_of_one_rwsem_are_one_trace() -> None:
    def program() -> None:
        sem = init_rwsem("sem")

        def reader() -> None:
            down_read(sem)
            up_read(sem)

        spawn_each(reader, reader, reader)

    assert traces(program) == 1


def test_rwsem_reader_and_writer() -> None:
    """Reader first (the writer waits for its up_read, before or after the
    writer's RMW: one trace); writer first, the reader then either comes
    after the release, or fails its fast path and takes the slow path
    before or after the release (queued and handed the lock, or taking it
    free)."""

    def program() -> None:
        sem = init_rwsem("sem")

        def reader() -> None:
            down_read(sem)
            up_read(sem)

        def writer() -> None:
            down_write(sem)
            up_write(sem)

        spawn_each(reader, writer)

    assert traces(program) == 4


@pytest.mark.parametrize("one_thread", [False, True])
def test_independent_call_rcus_are_one_trace(one_thread: bool) -> None:
    def program() -> None:
        nodes = [kmem_cache_alloc(Node, f"n{i}") for i in range(3)]
        if one_thread:

            def free_all() -> None:
                for n in nodes:
                    kfree_rcu(n)

            spawn_each(free_all)
        else:
            spawn_each(*(lambda n=n: kfree_rcu(n) for n in nodes))

    assert traces(program) == 1


@pytest.mark.parametrize("how", ["call_rcu", "synchronize_rcu"])
def test_reader_unlock_commutes_with_the_grace_periods_look(how: str) -> None:
    """The reader's section starts before or after the grace period starts
    (two traces); whether it ends before or after the grace period looks at
    it is not a third."""

    def program() -> None:
        n = kmem_cache_alloc(Node, "n")

        def reader() -> None:
            rcu_read_lock()
            rcu_read_unlock()

        def updater() -> None:
            if how == "call_rcu":
                kfree_rcu(n)
            else:
                synchronize_rcu()

        spawn_each(reader, updater)

    assert traces(program) == 2


def test_result_less_atomic_adds_commute() -> None:
    def program() -> None:
        v = ATOMIC_INIT(0, "v")
        spawn_each(lambda: atomic_add(2, v), lambda: atomic_inc(v), lambda: atomic_add(-1, v))

    assert traces(program) == 1


def test_atomic_add_and_read_do_not() -> None:
    seen: set[int] = set()

    def program() -> None:
        v = ATOMIC_INIT(0, "v")
        spawn_each(lambda: atomic_add(1, v), lambda: seen.add(atomic_read(v)))

    assert traces(program) == 2
    assert seen == {0, 1}


def test_refcount_increments_commute() -> None:
    def program() -> None:
        r = Refcount(1, "r")
        spawn_each(lambda: refcount_inc(r), lambda: refcount_add(2, r))

    assert traces(program) == 1


def test_refcount_dec_and_test_orders_against_increments() -> None:
    def program() -> None:
        r = Refcount(2, "r")
        spawn_each(lambda: refcount_inc(r), lambda: refcount_dec_and_test(r) and None)

    assert traces(program) == 2


@pytest.mark.parametrize("kind", ["mutex", "spinlock"])
def test_exclusive_lock_traces(kind: str) -> None:
    """Two tasks taking one lock: either goes first (two traces; the second
    finding it free or waiting until it is released is the same trace, as
    both end with it owning the lock right after the release). Three tasks:
    the six orders they get it in. Two tasks taking two different locks:
    one."""

    def program(tasks: int, shared: bool) -> Program:
        def prog() -> None:
            if kind == "mutex":
                locks = [mutex_init(f"m{i}") for i in range(tasks)]
                lock, unlock = mutex_lock, mutex_unlock
            else:
                locks = [spin_lock_init(f"s{i}") for i in range(tasks)]
                lock, unlock = spin_lock, spin_unlock

            def body(i: int) -> None:
                lk = locks[0 if shared else i]
                lock(lk)  # type: ignore[arg-type]
                unlock(lk)  # type: ignore[arg-type]

            spawn_each(*(lambda i=i: body(i) for i in range(tasks)))

        return prog

    assert traces(program(2, True)) == 2
    assert traces(program(3, True)) == 6
    assert traces(program(2, False)) == 1


def test_seqcount_readers_commute() -> None:
    def program() -> None:
        s = seqcount_init("s")

        def reader() -> None:
            start = read_seqcount_begin(s)
            read_seqcount_retry(s, start)

        spawn_each(reader, reader)

    assert traces(program) == 1


def test_completion_traces() -> None:
    """``complete`` before the wait (it banks a done the wait consumes) or
    after it (the waiter queued and is woken): two kernel paths."""

    def program() -> None:
        c = init_completion("c")
        spawn_each(lambda: wait_for_completion(c), lambda: complete(c))

    assert traces(program) == 2


# --- DPOR keeps every verdict ----------------------------------------------------


Make = Callable[[list[Any]], Program]


def verdicts(make: Make, strategy: str) -> set[Any]:
    """Every outcome of every execution, not stopping at violations: the
    violation (kind, title), or ``clean`` with what the execution observed
    (*make* gets a list to append observations to; their order is not
    compared, since the threads append to it without visible operations)."""
    strat = make_strategy(strategy, None, None, 3)
    out: set[Any] = set()
    locals_: dict[str, Any] = {}
    runs = 0
    while strat.more():
        runs += 1
        assert runs < 100_000, "program too large for naive enumeration"
        obs: list[Any] = []
        ex = run_once(make(obs), strat, 2_000, locals_)
        if ex.sleep_blocked:
            continue
        if ex.violation is not None:
            out.add((ex.violation.kind, ex.violation.title))
        else:
            out.add(("clean", tuple(sorted(obs, key=repr))))
    return out


def same_verdicts(make: Make) -> set[Any]:
    naive = verdicts(make, "naive")
    dpor = verdicts(make, "dpor")
    assert dpor == naive
    return dpor


def _rwsem(mode: str) -> Make:
    """A writer updates x and y under the rwsem; readers check them. *mode*:
    ``ok``; ``reader-write`` (the writer only takes it for read: a reader
    can see half an update); ``recursive`` (a reader takes it twice: with a
    writer queued in between, a deadlock)."""

    def make(obs: list[Any]) -> Program:
        def program() -> None:
            debug_locks_off()
            sem = init_rwsem("sem")
            x, y = Var(0, "x"), Var(0, "y")

            def writer() -> None:
                (down_read if mode == "reader-write" else down_write)(sem)
                x.store(1)
                y.store(1)
                (up_read if mode == "reader-write" else up_write)(sem)

            def reader() -> None:
                down_read(sem)
                if mode == "recursive":
                    down_read(sem)
                    up_read(sem)
                a, b = x.load(), y.load()
                require(a == b, "reader saw half an update")
                obs.append(a)
                up_read(sem)

            spawn_each(writer, reader)

        return program

    return make


def test_rwsem_verdicts() -> None:
    ok = same_verdicts(_rwsem("ok"))
    assert {v[0] for v in ok} == {"clean"}
    assert ("assertion", "reader saw half an update") in same_verdicts(_rwsem("reader-write"))
    rec = same_verdicts(_rwsem("recursive"))
    assert any(v[0] == "deadlock" for v in rec) and any(v[0] == "clean" for v in rec)


def _rcu(free: str) -> Make:
    """A reader dereferences a published node under RCU; the updater
    unpublishes it and frees it with *free*; ``late-unpublish`` queues the
    free before unpublishing (a reader that starts after the call_rcu can
    still find the node)."""

    def make(obs: list[Any]) -> Program:
        def program() -> None:
            gp: Var[Any] = Var(None, "gp")
            rcu_assign_pointer(gp, kmem_cache_alloc(Node, "node", data=1))

            def reader() -> None:
                rcu_read_lock()
                p = rcu_dereference(gp)
                obs.append(p is not None and p.load("data"))
                rcu_read_unlock()

            def updater() -> None:
                old = gp.load()
                if free == "late-unpublish":
                    kfree_rcu(old)
                    rcu_assign_pointer(gp, None)
                    return
                rcu_assign_pointer(gp, None)
                if free == "kfree":
                    kfree(old)
                elif free == "kfree_rcu":
                    kfree_rcu(old)
                else:
                    synchronize_rcu()
                    kfree(old)

            spawn_each(reader, updater)

        return program

    return make


@pytest.mark.parametrize(
    ("free", "uaf"),
    [("kfree", True), ("kfree_rcu", False), ("synchronize_rcu", False), ("late-unpublish", True)],
)
def test_rcu_verdicts(free: str, uaf: bool) -> None:
    got = same_verdicts(_rcu(free))
    assert any(v[0] == "use-after-free" for v in got) == uaf
    assert ("clean", (1,)) in got and ("clean", (False,)) in got


def test_atomic_verdicts() -> None:
    def make(obs: list[Any]) -> Program:
        def program() -> None:
            v = ATOMIC_INIT(1, "v")
            spawn_each(
                lambda: atomic_add(2, v),
                lambda: obs.append(atomic_read(v)),
                lambda: obs.append(atomic_dec_and_test(v)),
                lambda: obs.append(atomic_add_return(1, v)),
            )

        return program

    got = same_verdicts(make)
    assert len(got) > 4


def test_refcount_verdicts() -> None:
    """A get racing the put of the last reference: increment on zero is a
    use-after-free in some orders only."""

    def make(obs: list[Any]) -> Program:
        def program() -> None:
            r = Refcount(1, "r")
            spawn_each(
                lambda: refcount_inc(r),
                lambda: obs.append(refcount_dec_and_test(r)),
                lambda: obs.append(refcount_read(r)),
            )

        return program

    got = same_verdicts(make)
    assert any(v[0] == "use-after-free" for v in got) and any(v[0] == "clean" for v in got)


@pytest.mark.parametrize("kind", ["mutex", "spinlock"])
def test_exclusive_lock_verdicts(kind: str) -> None:
    """Two locks taken in opposite orders: a deadlock in some orders; and a
    counter incremented under the lock is never lost."""

    def make(obs: list[Any]) -> Program:
        def program() -> None:
            debug_locks_off()
            if kind == "mutex":
                a, b = mutex_init("a"), mutex_init("b")
                lock, unlock = mutex_lock, mutex_unlock
            else:
                a, b = spin_lock_init("a"), spin_lock_init("b")
                lock, unlock = spin_lock, spin_unlock
            x = Var(0, "x")

            def body(first: Any, second: Any) -> None:
                lock(first)
                lock(second)
                x.store(x.load() + 1)
                unlock(second)
                unlock(first)

            spawn_each(lambda: body(a, b), lambda: body(b, a))

            def final() -> None:
                obs.append(x.value)

            return final  # type: ignore[return-value]

        return program

    got = same_verdicts(make)
    assert {v[0] for v in got} == {"deadlock", "clean"}
    assert ("clean", (2,)) in got and ("clean", (1,)) not in got


def test_seqcount_verdicts() -> None:
    def make(obs: list[Any]) -> Program:
        def program() -> None:
            s = seqcount_init("s")
            x, y = Var(0, "x"), Var(0, "y")

            def writer() -> None:
                write_seqcount_begin(s)
                x.store(1)
                y.store(1)
                write_seqcount_end(s)

            def reader() -> None:
                start = read_seqcount_begin(s)
                a, b = x.load(), y.load()
                if not read_seqcount_retry(s, start):
                    require(a == b, "a consistent read saw half an update")
                    obs.append(a)

            spawn_each(writer, reader)

        return program

    got = same_verdicts(make)
    assert {v[0] for v in got} == {"clean"}


def test_completion_verdicts() -> None:
    def make(obs: list[Any]) -> Program:
        def program() -> None:
            c = init_completion("c")
            x = Var(0, "x")

            def waiter() -> None:
                wait_for_completion(c)
                obs.append(x.load())

            def completer() -> None:
                complete(c)
                x.store(1)
                complete(c)

            spawn_each(waiter, waiter, completer)

        return program

    got = same_verdicts(make)
    assert got == {("clean", (0, 1)), ("clean", (1, 1))}

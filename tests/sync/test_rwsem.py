"""rw_semaphore: the writer-waiting rule, downgrade, trylocks, killable."""

from __future__ import annotations

from mmrace.engine import Var, explore, require, spawn
from mmrace.sync import (
    EINTR,
    RwSemaphore,
    debug_locks_off,
    down_read,
    down_read_killable,
    down_read_trylock,
    down_write,
    down_write_trylock,
    downgrade_write,
    init_rwsem,
    send_fatal_signal,
    up_read,
    up_write,
)


def _recursive_read(with_lockdep: bool, with_writer: bool = True):  # type: ignore[no-untyped-def]
    def program() -> None:
        sem = RwSemaphore("mmap_lock#1", "&mm->mmap_lock")
        if not with_lockdep:
            debug_locks_off()

        def reader() -> None:
            down_read(sem)
            down_read(sem)  # recursive read: deadlocks if a writer queued in between
            up_read(sem)
            up_read(sem)

        def writer() -> None:
            down_write(sem)
            up_write(sem)

        spawn(reader, name="T1")
        if with_writer:
            spawn(writer, name="T2")

    return program


def test_writer_waiting_deadlock() -> None:
    """A task holding the rwsem for read asks again while a writer waits:
    the new read queues behind the writer, so nobody can run."""
    r = explore(_recursive_read(with_lockdep=False), "dpor")
    assert r.outcome == "violation"
    assert r.violation is not None and r.violation.kind == "deadlock"
    msg = r.violation.message
    assert "held by T1: mmap_lock#1 [&mm->mmap_lock] (read)" in msg
    assert "queue: T2 (write), T1 (read)" in msg


def test_recursive_read_without_writer_is_clean_without_lockdep() -> None:
    r = explore(_recursive_read(with_lockdep=False, with_writer=False), "dpor")
    assert r.outcome == "clean" and r.complete


def test_recursive_read_reported_by_lockdep_even_without_writer() -> None:
    """As in the kernel: down_read is a non-recursive read for lockdep, so the
    recursion is reported before any writer shows up."""
    r = explore(_recursive_read(with_lockdep=True, with_writer=False), "dpor")
    assert r.violation is not None and r.violation.kind == "lock-order"
    assert r.executions == 1


def test_recursive_read_with_waiting_writer_lockdep() -> None:
    """Lockdep treats down_read as a non-recursive read: the recursion is
    reported before it can deadlock."""
    r = explore(_recursive_read(with_lockdep=True), "dpor")
    assert r.outcome == "violation"
    assert r.violation is not None and r.violation.kind == "lock-order"
    assert r.violation.title == "possible recursive locking detected: &mm->mmap_lock"
    assert "WARNING: possible recursive locking detected" in r.violation.message


def test_downgrade() -> None:
    """downgrade_write lets queued readers in while keeping the data
    consistent, and a queued writer stays out until the downgraded holder
    releases."""

    def program() -> None:
        sem = init_rwsem("sem")
        x = Var(0, "x")
        y = Var(0, "y")
        holder = Var("", "holder")

        def updater() -> None:
            down_write(sem)
            x.store(1)
            y.store(1)
            downgrade_write(sem)
            require(y.load() == 1, "still see own write after downgrade")
            holder.store("U")
            holder.store("")
            up_read(sem)

        def reader() -> None:
            down_read(sem)
            require(x.load() == y.load(), "reader saw a half update")
            up_read(sem)

        def writer() -> None:
            down_write(sem)
            require(holder.load() == "", "writer entered while a reader held the lock")
            x.store(2)
            y.store(2)
            up_write(sem)

        spawn(updater, name="U")
        spawn(reader, name="R")
        spawn(writer, name="W")

    r = explore(program, "dpor")
    assert r.outcome == "clean" and r.complete


def test_downgrade_without_write_is_misuse() -> None:
    def program() -> None:
        sem = init_rwsem("sem")

        def t() -> None:
            down_read(sem)
            downgrade_write(sem)

        spawn(t, name="T1")

    r = explore(program, "dpor")
    assert r.violation is not None and r.violation.kind == "lock-misuse"


def test_trylock_never_blocks() -> None:
    """Trylocks against a held lock fail at once; no execution blocks."""
    fails: list[str] = []

    def program() -> None:
        sem = init_rwsem("sem")

        def owner() -> None:
            down_write(sem)
            up_write(sem)

        def trier() -> None:
            if down_read_trylock(sem):
                up_read(sem)
            else:
                fails.append("read")
            if down_write_trylock(sem):
                up_write(sem)
            else:
                fails.append("write")

        spawn(owner, name="O")
        spawn(trier, name="T")

    r = explore(program, "dpor")
    assert r.outcome == "clean" and r.complete
    assert "read" in fails and "write" in fails


def test_killable_returns_eintr_when_it_would_sleep() -> None:
    seen: list[int] = []

    def program() -> None:
        sem = init_rwsem("sem")
        debug_locks_off()
        down_write(sem)  # held by set-up, never released
        t = spawn(lambda: seen.append(down_read_killable(sem)), name="T1")
        send_fatal_signal(t)

    r = explore(program, "dpor")
    assert r.outcome == "clean" and r.complete
    assert seen == [-EINTR]


def test_killable_uncontended_succeeds_despite_signal() -> None:
    seen: list[int] = []

    def program() -> None:
        sem = init_rwsem("sem")

        def t() -> None:
            seen.append(down_read_killable(sem))
            up_read(sem)

        send_fatal_signal(spawn(t, name="T1"))

    r = explore(program, "dpor")
    assert r.outcome == "clean"
    assert seen == [0]


def test_bad_unlocks_are_misuse() -> None:
    def not_held() -> None:
        sem = init_rwsem("sem")
        spawn(lambda: up_read(sem), name="T1")

    def double() -> None:
        sem = init_rwsem("sem")

        def t() -> None:
            down_write(sem)
            up_write(sem)
            up_write(sem)

        spawn(t, name="T1")

    for prog in (not_held, double):
        r = explore(prog, "dpor")
        assert r.violation is not None and r.violation.kind == "lock-misuse", r.violation

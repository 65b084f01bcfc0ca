"""RCU: grace periods, kfree vs kfree_rcu, SLAB_TYPESAFE_BY_RCU reuse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.engine import Var, explore, require, spawn
from mmrace.sync import (
    KObject,
    kfree,
    kfree_rcu,
    kmem_cache_alloc,
    rcu_assign_pointer,
    rcu_dereference,
    rcu_read_lock,
    rcu_read_unlock,
    synchronize_rcu,
)


class Node(KObject):
    pass


class Sock(KObject):
    SLAB_TYPESAFE_BY_RCU = True


def _reader_updater(free: str) -> Callable[[], None]:
    def program() -> None:
        gp: Var[Any] = Var(None, "gp")
        rcu_assign_pointer(gp, kmem_cache_alloc(Node, "node", data=1))

        def reader() -> None:
            rcu_read_lock()
            rcu_read_lock()  # nesting
            p = rcu_dereference(gp)
            rcu_read_unlock()
            if p is not None:
                require(p.load("data") == 1, "bad data")
            rcu_read_unlock()

        def updater() -> None:
            old = gp.load()
            rcu_assign_pointer(gp, None)
            if free == "kfree":
                kfree(old)
            elif free == "kfree_rcu":
                kfree_rcu(old)
            else:
                synchronize_rcu()
                kfree(old)

        spawn(reader, name="reader")
        spawn(updater, name="updater")

    return program


def test_kfree_under_reader_is_use_after_free() -> None:
    r = explore(_reader_updater("kfree"), "dpor")
    v = r.violation
    assert v is not None and v.kind == "use-after-free"
    assert v.title == "use-after-free of node"
    assert "freed: kfree by updater" in v.message
    assert "accessed: load data by reader" in v.message


def test_kfree_rcu_is_clean() -> None:
    r = explore(_reader_updater("kfree_rcu"), "dpor")
    assert r.outcome == "clean" and r.complete


def test_synchronize_rcu_then_kfree_is_clean() -> None:
    r = explore(_reader_updater("synchronize_rcu"), "dpor")
    assert r.outcome == "clean" and r.complete


def _typesafe(recheck: bool) -> Callable[[], None]:
    """A lookup table slot holds a SLAB_TYPESAFE_BY_RCU socket with key 1;
    the updater removes and frees it, then allocates a socket with key 2,
    which reuses the same memory."""

    def program() -> None:
        slot: Var[Any] = Var(None, "slot")
        slot.store(kmem_cache_alloc(Sock, "sockA", key=1, data="A"))

        def reader() -> None:
            rcu_read_lock()
            s = rcu_dereference(slot)
            if s is not None:
                data = s.load("data")
                if not recheck or s.load("key") == 1:
                    require(data == "A", f"lookup of key 1 read {data}'s data")
            rcu_read_unlock()

        def updater() -> None:
            s = slot.load()
            slot.store(None)
            kfree(s)
            slot2 = kmem_cache_alloc(Sock, "sockB", key=2, data="B")
            require(slot2 is s, "typesafe cache reuses the freed object")

        spawn(reader, name="reader")
        spawn(updater, name="updater")

    return program


def test_typesafe_by_rcu_reuse_seen_without_recheck() -> None:
    r = explore(_typesafe(recheck=False), "dpor")
    v = r.violation
    assert v is not None and v.kind == "assertion"
    assert v.title == "lookup of key 1 read B's data"


def test_typesafe_by_rcu_with_identity_recheck_is_clean() -> None:
    r = explore(_typesafe(recheck=True), "dpor")
    assert r.outcome == "clean" and r.complete


def test_rcu_dereference_outside_read_section() -> None:
    def program() -> None:
        gp: Var[Any] = Var(None, "gp")
        spawn(lambda: rcu_dereference(gp), name="T1")

    v = explore(program, "dpor").violation
    assert v is not None and v.kind == "lock-misuse"


def test_double_free() -> None:
    def program() -> None:
        n = kmem_cache_alloc(Node, "n")

        def t() -> None:
            kfree(n)
            kfree(n)

        spawn(t, name="T1")

    v = explore(program, "dpor").violation
    assert v is not None and v.kind == "use-after-free" and "double-free" in v.title

"""The VMA tree: lookups, replacement nodes freed by RCU, and walkers that
are neither in an RCU read section nor excluded from writers."""

from __future__ import annotations

from typing import Any

from mmrace.engine import explore, spawn
from mmrace.mm.locks import rcu_read_lock, rcu_read_unlock
from mmrace.mm.maple_tree import MAPLE_RANGE64_SLOTS
from mmrace.mm.mmap_lock import mmap_write_lock, mmap_write_unlock
from mmrace.mm.rules_check import locking_rules_off
from mmrace.mm.vma import find_vma, find_vma_prev, vma_lookup
from mmrace.user import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, System

ANON = MAP_PRIVATE | MAP_ANONYMOUS


def run(fn: Any) -> None:
    r = explore(fn, max_executions=1)
    assert r.violation is None, r.violation.message if r.violation else ""


def test_lookups_over_many_leaves() -> None:
    def program() -> None:
        proc = System().process()
        mm = proc.mm
        addrs = []
        for i in range(100):
            prot = PROT_READ if i % 2 else PROT_READ | PROT_WRITE
            addrs.append(proc.mmap(0, PAGE_SIZE, prot, ANON))
        tree = mm.mm_mt
        assert len(tree) == 100 == mm.map_count
        assert len(tree.ma_root.leaves) > 100 // MAPLE_RANGE64_SLOTS
        assert all(len(leaf.starts) <= MAPLE_RANGE64_SLOTS for leaf in tree.ma_root.leaves)
        mmap_write_lock(mm)
        for a in addrs:
            vma = vma_lookup(mm, a + 5)
            assert vma is not None and vma.vm_start == a
            assert vma_lookup(mm, a - 1) is not vma
        lowest = min(addrs)
        assert vma_lookup(mm, lowest - 1) is None
        assert find_vma(mm, 0).vm_start == lowest
        vma, prev = find_vma_prev(mm, lowest + PAGE_SIZE)
        assert vma.vm_start == lowest + PAGE_SIZE and prev.vm_start == lowest
        mmap_write_unlock(mm)
        for a in addrs[::3]:
            proc.munmap(a, PAGE_SIZE)
        assert len(tree) == mm.map_count == 100 - len(addrs[::3])

    run(program)


def _walk_scenario(with_rcu: bool, rules: bool = True) -> Any:
    def walker(mm: Any, addr: int) -> None:
        if with_rcu:
            rcu_read_lock()
        mm.mm_mt.load(addr)
        if with_rcu:
            rcu_read_unlock()

    def program() -> None:
        if not rules:
            locking_rules_off()  # to see what breaking the rule leads to
        proc = System().process()
        a = proc.mmap(0, PAGE_SIZE, PROT_READ, ANON)
        b = proc.mmap(0, PAGE_SIZE, PROT_READ | PROT_WRITE, ANON)
        spawn(walker, proc.mm, a, name="walker")
        spawn(proc.munmap, b, PAGE_SIZE, name="munmap")

    return program


def test_walk_outside_rcu_breaks_the_tree_rule() -> None:
    r = explore(_walk_scenario(False), max_seconds=60)
    assert r.violation is not None
    assert r.violation.kind == "locking-rule"
    assert "mm_mt" in r.violation.title


def test_walk_outside_rcu_touches_freed_node() -> None:
    r = explore(_walk_scenario(False, rules=False), max_seconds=60)
    assert r.violation is not None
    assert r.violation.kind == "use-after-free"
    assert "mm_mt" in r.violation.title


def test_walk_under_rcu_is_safe() -> None:
    r = explore(_walk_scenario(True), max_seconds=60)
    assert r.violation is None, r.violation.message if r.violation else ""
    assert r.complete

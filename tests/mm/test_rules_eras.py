"""Rules per kernel era: the same access is allowed on one release and a
``locking-rule`` violation on another, and the behaviour the eras' rules
describe (no per-VMA lock before 6.4, stack growth under the read lock
before 6.5, vm_mm read under RCU before 6.15) is what the model does."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rules_witness import (
    P,
    Program,
    Witness,
    flags_without_vma_lock,
    old_stack_write,
    pmd_table_change,
    pte_under_rcu,
    retract_free_now,
    stack_growth,
    vm_mm_under_rcu,
)

from mmrace.cli import main
from mmrace.engine import current_execution, explore, spawn
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_GROWSDOWN,
    MAP_PRIVATE,
    PROT_READ,
    PROT_WRITE,
    System,
)

Build = Callable[[str | None], Program]

# (the access, releases where it is allowed, releases where it is a breach)
ERAS: list[tuple[str, Build, list[str | None], list[str | None]]] = [
    ("VMA write without vma_start_write (no VMA lock before 6.4)",
     flags_without_vma_lock, ["5.10", "6.1", "6.3"], ["6.4", None]),
    ("stack growth's writes under the mmap read lock (until 6.5)",
     old_stack_write, ["6.1", "6.4"], ["6.5", None]),
    ("vm_mm read under RCU alone (VMAs RCU-freed, 6.4 to 6.14)",
     vm_mm_under_rcu, ["6.4", "6.10", "6.14"], ["6.1", "6.15", None]),
    ("PTE read under RCU alone (since 6.5)", pte_under_rcu, ["6.5", None], ["6.1", "6.4"]),
    ("PMD to a PTE table cleared under mmap W + PMD lock (khugepaged before 6.1)",
     pmd_table_change("old"), ["5.10", "6.0"], ["6.1", "6.5", None]),
    ("PMD to a PTE table cleared under mmap R + PMD and PTE locks (since 6.6)",
     pmd_table_change("new"), ["6.6", None], ["6.0", "6.1", "6.5"]),
    ("a retracted PTE table freed at once (until 6.6; RCU since)",
     retract_free_now, ["6.1", "6.5"], [None]),
]


@pytest.mark.parametrize("what, build, allowed, breach", ERAS, ids=[e[0] for e in ERAS])
def test_the_same_access_per_era(what: str, build: Build, allowed: list[str | None],
                                 breach: list[str | None]) -> None:
    for release in allowed:
        r = Witness(what, release, build).run()
        assert r.violation is None, (release, r.violation and r.violation.message)
    for release in breach:
        r = Witness(what, release, build).run()
        assert r.violation is not None, release
        assert r.violation.kind == "locking-rule", (release, r.violation.message)


def _ops(program: Callable[[], None]) -> list[tuple[str, str]]:
    """(object name, label) of every operation of one execution of *program*."""
    seen: list[tuple[str, str]] = []

    def wrapped() -> Callable[[], None]:
        program()
        return lambda: seen.extend((ev.obj.name, ev.label)
                                   for ev in current_execution().events)

    r = explore(wrapped, max_executions=1)
    assert r.violation is None, r.violation.message if r.violation else ""
    return seen


def _fault_ops(kernel: str | None, without: tuple[str, ...] = ()) -> list[str]:
    """The labels of the operations one fault by a thread makes."""
    def program() -> None:
        p = System(kernel=kernel, without=without).process()
        a = p.mmap(0, 2 * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        spawn(p.poke, a, 1, name="fault")

    return [label for _obj, label in _ops(program)]


def test_no_per_vma_lock_before_6_4() -> None:
    old = _fault_ops("6.1")
    new = _fault_ops(None)
    assert not any("vm_refcnt" in op or "vm_lock_seq" in op for op in old), old
    assert any("refcount_inc_not_zero_limited(vm_refcnt)" in op for op in new), new
    # the switch alone gives the mmap-lock fault path on today's kernel
    without = _fault_ops(None, ("per-vma-locks",))
    assert not any("vm_refcnt" in op or "vm_lock_seq" in op for op in without), without
    assert without[0] == old[0] == "down_read"
    # Before 6.5 a reader holding the mmap read lock does not exclude a stack
    # expansion's write of vm_start, so that read is a visible operation on
    # 6.1 and needs none today.
    assert "read vm_start" in old and "read vm_start" not in without


def _grows_under(kernel: str | None, with_: tuple[str, ...] = ()) -> list[str]:
    def program() -> None:
        p = System(kernel=kernel, with_=with_).process()
        top = 0x7FF000000000
        stack = p.mmap(top - 4 * P, 4 * P, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_FIXED)
        spawn(p.poke, stack - P, 1, name="grow")

    return [label for obj, label in _ops(program) if obj.endswith("mmap_lock")]


def test_stack_grows_under_the_read_lock_before_6_5() -> None:
    assert Witness("grow", "6.1", stack_growth).run().violation is None
    old = _grows_under("6.1")
    assert not any(op.startswith("down_write") for op in old), old
    new = _grows_under(None)
    assert any(op.startswith("down_write") for op in new), new
    # the switch brings the 6.5 behaviour, and 6.1's rules allow it too
    assert _grows_under("6.1", ("stack-expand-write-locked",)) == new


def test_rules_command_shows_a_release(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "vm_start", "--kernel", "6.1"]) == 0
    out = capsys.readouterr().out
    assert "mmap R + anon_vma W + page_table_lock" in out and "Linux 6.1" in out
    assert main(["rules", "vm_start"]) == 0
    assert "page_table_lock" not in capsys.readouterr().out.split("history")[0]
    assert main(["rules", "vm_start", "--kernel", "six"]) == 2

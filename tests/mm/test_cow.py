"""The three historical do_wp_page reuse policies on crafted folio states,
and COW end to end under each."""

from __future__ import annotations

import pytest
from mmkit import ANON, RW, run1

from mmrace.mm.memory import VmFault, can_reuse
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.mm.page_alloc import GUP_PIN_COUNTING_BIAS, folio_alloc
from mmrace.mm.rmap import folio_add_new_anon_rmap
from mmrace.mm.vma import find_vma
from mmrace.user import PAGE_SIZE, System

# (refcount, mapcount, exclusive) -> expected reuse per policy
STATES = {
    "exclusive, sole reference": ((1, 1, True), {"mapcount": True, "page_count": True,
                                                  "anon_exclusive": True}),
    "mapped once, extra GUP reference, shared flag": (
        (2, 1, False), {"mapcount": True, "page_count": False, "anon_exclusive": False}),
    "exclusive and pinned": ((1 + GUP_PIN_COUNTING_BIAS, 1, True),
                             {"mapcount": True, "page_count": False, "anon_exclusive": True}),
    "shared with a child": ((2, 2, False), {"mapcount": False, "page_count": False,
                                            "anon_exclusive": False}),
    "child unmapped, sole reference left": ((1, 1, False), {"mapcount": True,
                                                            "page_count": True,
                                                            "anon_exclusive": True}),
}


@pytest.mark.parametrize("policy", ["mapcount", "page_count", "anon_exclusive"])
@pytest.mark.parametrize("state", sorted(STATES))
def test_reuse_decision(policy: str, state: str) -> None:
    (ref, mapc, excl), expected = STATES[state]
    out: list[bool] = []

    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)  # gives the VMA an anon_vma
        mmap_read_lock(p.mm)
        vma = find_vma(p.mm, a)
        assert vma is not None
        f = folio_alloc(0)
        folio_add_new_anon_rmap(f, vma, a, excl)
        f._refcount, f._mapcount = ref, mapc
        vmf = VmFault(vma, a, 1)
        out.append(can_reuse(vmf, f, policy))
        mmap_read_unlock(p.mm)

    run1(program)
    assert out == [expected[policy]]


@pytest.mark.parametrize("kernel", [None, "5.10", "5.4"])
def test_cow_after_fork_each_era(kernel: str | None) -> None:
    def program() -> None:
        p = System(kernel=kernel).process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        c = p.fork()
        c.poke(a, 2)
        p.poke(a, 3)
        assert (p.peek(a), c.peek(a)) == (3, 2)

    run1(program)

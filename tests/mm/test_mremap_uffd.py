"""mremap and userfaultfd's REMAP event (issue 13 item 3 with issue 14's
events): ``mremap_userfaultfd_prep`` raises the monitor's ``mmap_changing``
under the mmap write lock once the pages moved, and ``notify_uffd`` sends
the REMAP message (from, to, len) after the lock is dropped and waits until
the monitor read it; until then every fill ioctl gets ``EAGAIN``."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from mmkit import mmap_changing_settled, run1

from mmrace.engine import explore, require
from mmrace.mm import mremap as mremap_mod
from mmrace.mm.pgtable import lookup_pte, peek_pte, pte_uffd_wp
from mmrace.mm.userfaultfd_k import mmap_changing_value
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    UFFD_EVENT_REMAP,
    UFFD_FEATURE_EVENT_REMAP,
    UFFDIO_REGISTER_MODE_MISSING,
    UFFDIO_REGISTER_MODE_WP,
    System,
    Thread,
    vma_find,
)

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
MOVE = MREMAP_MAYMOVE | MREMAP_FIXED
OLD = 0x7E0000000000
NEW = 0x7E0000400000


settled = mmap_changing_settled


def remap_program(seen: dict[str, Any]) -> Any:
    """cpu0 moves a registered two-page mapping (the first page populated)
    with mremap; the monitor, in another process, tries to fill the second
    page at the new address, then reads an event, waits for the move to be
    acknowledged and fills it. The early fill must fail (no VMA there yet:
    ENOENT; or the move under way: EAGAIN), never land; the event is
    REMAP (OLD, NEW, 2 pages); the late fill lands; the moved page keeps
    its data."""

    def program() -> Any:
        s = System(cpus=2)
        p = s.process()
        a = p.mmap(OLD, 2 * P, RW, ANON | MAP_FIXED)
        p.poke(a, 5)
        uffd = p.userfaultfd(UFFD_FEATURE_EVENT_REMAP)
        uffd.register(a, 2 * P, UFFDIO_REGISTER_MODE_MISSING)
        got: dict[str, Any] = {}

        def mover(t: Thread) -> None:
            got["moved"] = t.mremap(a, 2 * P, 2 * P, MOVE, NEW)

        def monitor(t: Thread) -> None:
            try:
                got["early"] = uffd.copy(NEW + P, 1, P)
            except OSError as e:
                got["early"] = -int(e.errno or 0)
            got["msg"] = uffd.read()
            settled(uffd.ctx)
            got["late"] = uffd.copy(NEW + P, 7, P)

        p.thread(mover, cpu=0, name="mover")
        s.process().thread(monitor, cpu=1, name="monitor")

        def check() -> None:
            require(got["early"] in (-errno.ENOENT, -errno.EAGAIN),
                    f"a fill at the new address went through before the REMAP event was "
                    f"read: {got['early']}")
            msg = got["msg"]
            require(msg.event == UFFD_EVENT_REMAP and (msg.from_, msg.to, msg.len)
                    == (OLD, NEW, 2 * P), f"read {msg}")
            require(got["moved"] == NEW and got["late"] == P, f"{got}")
            require((p.peek(NEW), p.peek(NEW + P)) == (5, 7), "the data did not follow")
            seen.setdefault("early", set()).add(got["early"])

        return check

    return program


def test_remap_event_reports_the_move_and_fills_wait_for_it() -> None:
    """Every interleaving (DPOR): the REMAP message and the EAGAIN window;
    both outcomes of the early fill occur."""
    seen: dict[str, Any] = {}
    r = explore(remap_program(seen), max_seconds=120)
    assert r.violation is None, r.violation and r.violation.message
    assert r.complete
    assert seen["early"] == {-errno.ENOENT, -errno.EAGAIN}


def test_mmap_changing_is_raised_while_the_move_completes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """When ``notify_uffd`` runs (the mmap lock dropped, the event not yet
    sent) the monitor's ``mmap_changing`` is already raised: the prep did
    it under the mmap write lock, right after the page tables moved."""
    levels: list[int] = []
    real = mremap_mod.notify_uffd

    def spy(vrm: Any, failed: bool) -> None:
        if vrm.uf.ctx is not None:
            levels.append(mmap_changing_value(vrm.uf.ctx))
        real(vrm, failed)

    monkeypatch.setattr(mremap_mod, "notify_uffd", spy)

    def program() -> None:
        s = System(cpus=2)
        p = s.process()
        a = p.mmap(OLD, P, RW, ANON | MAP_FIXED)
        uffd = p.userfaultfd(UFFD_FEATURE_EVENT_REMAP)
        uffd.register(a, P, UFFDIO_REGISTER_MODE_MISSING)

        def mover(t: Thread) -> None:
            t.mremap(a, P, P, MOVE, NEW)

        def monitor(t: Thread) -> None:
            uffd.read()

        p.thread(mover, cpu=0, name="mover")
        s.process().thread(monitor, cpu=1, name="monitor")

    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation and r.violation.message
    assert levels == [1]


def test_with_event_remap_the_registration_and_uffd_wp_bits_follow() -> None:
    """A VMA whose userfaultfd takes REMAP events keeps its registration at
    the new place, and its PTEs keep their uffd-wp bits (the monitor learns
    where they went), so a whole PTE table may move; without the feature
    the registration is dropped (``test_mremap.py``)."""
    def program() -> Any:
        s = System(cpus=2)
        p = s.process()
        a = p.mmap(OLD, 2 * 1024 * P, RW, ANON | MAP_FIXED)
        p.poke(a, 1)
        uffd = p.userfaultfd(UFFD_FEATURE_EVENT_REMAP)
        uffd.register(a, 2 * 1024 * P, UFFDIO_REGISTER_MODE_WP)
        uffd.writeprotect(a, P, True)
        table = lookup_pte(p.mm, a)[0]
        done: list[int] = []

        def mover(t: Thread) -> None:
            done.append(t.mremap(a, 512 * P, 512 * P, MOVE, NEW))

        def monitor(t: Thread) -> None:
            msg = uffd.read()
            require(msg.event == UFFD_EVENT_REMAP, f"read {msg}")

        p.thread(mover, cpu=0, name="mover")
        s.process().thread(monitor, cpu=1, name="monitor")

        def check() -> None:
            vma = vma_find(p.mm, NEW)
            require(vma is not None and vma.raw("vm_userfaultfd_ctx") is uffd.ctx,
                    "the registration did not follow")
            require(pte_uffd_wp(peek_pte(p.mm, NEW)), "the uffd-wp bit was dropped")
            require(lookup_pte(p.mm, NEW)[0] is table, "the PTE table did not move whole")
            require(p.peek(NEW) == 1, "the data did not follow")

        return check

    run1(program)

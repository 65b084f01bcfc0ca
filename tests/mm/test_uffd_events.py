"""userfaultfd's monitor protocol: fault messages resolved by a copy and its
wake-up, the non-cooperative events (fork, mremap, munmap, MADV_DONTNEED)
in the order ``read()`` returns them, the fork fix (child registration and
uffd-wp bits), which lock each era's ioctls take, and the uffd-view oracle
on the seed-001 question with a single-threaded monitor."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest
from mmkit import check_accounting, mmap_changing_settled, run1

from mmrace.engine import current_execution, explore, require
from mmrace.mm.fs_userfaultfd import mremap_userfaultfd_complete, mremap_userfaultfd_prep
from mmrace.mm.mm_types import VM_UFFD_MISSING, VM_UFFD_WP
from mmrace.mm.mmap_lock import mmap_write_lock, mmap_write_unlock
from mmrace.mm.page_alloc import WORD_SIZE
from mmrace.mm.pgtable import peek_pte, pte_present, pte_uffd_wp
from mmrace.mm.userfaultfd_k import (
    UffdMsg,
    UserfaultfdWaitQueue,
    VmUserfaultfdCtx,
    mmap_changing_value,
)
from mmrace.sync.completion import complete
from mmrace.user import (
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    UFFD_EVENT_FORK,
    UFFD_EVENT_PAGEFAULT,
    UFFD_EVENT_REMAP,
    UFFD_EVENT_REMOVE,
    UFFD_EVENT_UNMAP,
    UFFD_FEATURE_EVENT_FORK,
    UFFD_FEATURE_EVENT_REMAP,
    UFFD_FEATURE_EVENT_REMOVE,
    UFFD_FEATURE_EVENT_UNMAP,
    UFFD_PAGEFAULT_FLAG_WRITE,
    UFFDIO_COPY_MODE_DONTWAKE,
    UFFDIO_REGISTER_MODE_MISSING,
    UFFDIO_REGISTER_MODE_WP,
    System,
    Thread,
    for_each_vma,
)

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
WORD = WORD_SIZE  # one naturally aligned 8-byte word of user memory
EVENTS = (UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE
          | UFFD_FEATURE_EVENT_UNMAP)


settled = mmap_changing_settled


def exhaust(program: Callable[[], Any], seconds: float = 50) -> int:
    """Every interleaving (DPOR) is clean; returns the executions."""
    r = explore(program, max_seconds=seconds)
    assert r.violation is None, r.violation and r.violation.message
    assert r.complete
    return r.executions


# --- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize("dontwake", [False, True])
def test_fault_message_copy_wake(dontwake: bool) -> None:
    """A write to a missing registered page waits for the monitor: it reads
    the message, copies the page (and wakes, or wakes explicitly after a
    DONTWAKE copy); the retried write lands on the copied page."""
    def program() -> Any:
        s = System(cpus=2)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        uffd = p.userfaultfd()
        uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        seen: list[Any] = []

        def writer(t: Thread) -> None:
            t.store(a + WORD, 5)

        def monitor(t: Thread) -> None:
            msg = uffd.read()
            seen.append(msg)
            if dontwake:
                uffd.copy(msg.address, 7, PAGE_SIZE, UFFDIO_COPY_MODE_DONTWAKE)
                uffd.wake(msg.address, PAGE_SIZE)
            else:
                uffd.copy(msg.address, 7, PAGE_SIZE)

        p.thread(writer, cpu=0, name="writer")
        s.process().thread(monitor, cpu=1, name="monitor")

        def check() -> None:
            require(len(seen) == 1 and seen[0].event == UFFD_EVENT_PAGEFAULT
                    and seen[0].address == a
                    and bool(seen[0].flags & UFFD_PAGEFAULT_FLAG_WRITE), f"saw {seen}")
            require((p.peek(a), p.peek(a + WORD)) == (7, 5), "the write did not land")

        return check

    assert exhaust(program) > 1


def test_faults_are_read_before_events_and_each_in_order() -> None:
    """With two page faults and two events pending, read() returns the
    faults first, then the events, each queue oldest first (the queues are
    filled directly: which thread queues first is the other tests' job)."""
    def program() -> None:
        p = System().process()
        uffd = p.userfaultfd()
        ctx = uffd.ctx
        for addr in (0x1000, 0x2000):
            ctx.fault_pending_wqh.append(UserfaultfdWaitQueue(UffdMsg(UFFD_EVENT_PAGEFAULT,
                                                                      addr), "f"))
            ewq = UserfaultfdWaitQueue(UffdMsg(UFFD_EVENT_REMOVE), "e")
            ewq.msg.start = addr
            ctx.event_wqh.append(ewq)
        for _ in range(4):
            complete(ctx.fd_wqh)
        got = [uffd.read() for _ in range(4)]
        assert [(m.event, m.address or m.start) for m in got] == [
            (UFFD_EVENT_PAGEFAULT, 0x1000), (UFFD_EVENT_PAGEFAULT, 0x2000),
            (UFFD_EVENT_REMOVE, 0x1000), (UFFD_EVENT_REMOVE, 0x2000)]
        assert not ctx.event_wqh and len(ctx.fault_wqh) == 2  # read, not yet resolved

    run1(program)


# --- events -------------------------------------------------------------------------------


def test_remove_waits_for_the_read_then_zaps() -> None:
    def program() -> Any:
        s = System(cpus=2)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        uffd = p.userfaultfd(UFFD_FEATURE_EVENT_REMOVE)
        uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        uffd.copy(a, 7, PAGE_SIZE)
        got: list[Any] = []

        def process(t: Thread) -> None:
            t.madvise(a, PAGE_SIZE, MADV_DONTNEED)

        def monitor(t: Thread) -> None:
            got.append(uffd.read())
            got.append(pte_present(peek_pte(p.mm, a)))  # not zapped before the read

        p.thread(process, cpu=0)
        s.process().thread(monitor, cpu=1)

        def check() -> None:
            msg = got[0]
            require(msg.event == UFFD_EVENT_REMOVE and (msg.start, msg.end)
                    == (a, a + PAGE_SIZE), f"read {msg}")
            require(got[1] is True, "zapped before the monitor read REMOVE")
            require(not pte_present(peek_pte(p.mm, a)), "not zapped")
            require(mmap_changing_value(uffd.ctx) == 0, "mmap_changing left raised")
            check_accounting([p])

        return check

    exhaust(program)


def test_munmap_sends_unmap_after_the_unmap() -> None:
    def program() -> Any:
        s = System(cpus=2)
        p = s.process()
        a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        uffd = p.userfaultfd(UFFD_FEATURE_EVENT_UNMAP)
        uffd.register(a, 2 * PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        got: list[Any] = []

        def process(t: Thread) -> None:
            t.munmap(a, PAGE_SIZE)

        def monitor(t: Thread) -> None:
            got.append(uffd.read())
            got.append([e.start for e in p.maps()])

        p.thread(process, cpu=0)
        s.process().thread(monitor, cpu=1)

        def check() -> None:
            msg = got[0]
            require(msg.event == UFFD_EVENT_UNMAP and (msg.start, msg.end)
                    == (a, a + PAGE_SIZE), f"read {msg}")
            require(got[1] == [a + PAGE_SIZE], "the event came before the unmap")

        return check

    exhaust(program)


def test_fork_event_gives_the_child_a_context_of_its_own() -> None:
    def program() -> Any:
        s = System(cpus=2)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        uffd = p.userfaultfd(UFFD_FEATURE_EVENT_FORK)
        uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        kids: list[Any] = []
        got: list[Any] = []

        def process(t: Thread) -> None:
            kids.append(t.fork())

        def monitor(t: Thread) -> None:
            msg = uffd.read()
            got.append(msg)
            msg.ufd.copy(a, 9, PAGE_SIZE)  # fill the child's page

        p.thread(process, cpu=0)
        s.process().thread(monitor, cpu=1)

        def check() -> None:
            child = kids[0]
            msg = got[0]
            require(msg.event == UFFD_EVENT_FORK, f"read {msg}")
            cvma = next(for_each_vma(child.mm))
            cctx = cvma.raw("vm_userfaultfd_ctx")
            require(cctx is msg.ufd.ctx and cctx is not uffd.ctx and cctx.mm is child.mm,
                    "the child's VMA is not on the new context")
            require(cctx.features == uffd.ctx.features and bool(
                cvma.raw("vm_flags") & VM_UFFD_MISSING), "registration not kept")
            require(child.peek(a) == 9, "the copy did not reach the child")
            require(not pte_present(peek_pte(p.mm, a)), "the copy reached the parent")

        return check

    exhaust(program)


def test_fork_without_event_fork_unregisters_the_child() -> None:
    """The fidelity fix: the child's VMA loses the context and the
    VM_UFFD_* flags, and its PTEs the uffd-wp bit."""
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        uffd = p.userfaultfd()
        uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP)
        uffd.writeprotect(a, PAGE_SIZE, True)
        child = p.fork()
        cvma = next(for_each_vma(child.mm))
        assert cvma.raw("vm_userfaultfd_ctx") is None
        assert not cvma.raw("vm_flags") & (VM_UFFD_MISSING | VM_UFFD_WP)
        assert not pte_uffd_wp(peek_pte(child.mm, a))
        assert pte_uffd_wp(peek_pte(p.mm, a))
        child.poke(a, 2)  # no uffd-wp fault in the child
        assert child.peek(a) == 2 and p.peek(a) == 1

    run1(program)


def test_fork_with_event_fork_keeps_the_uffd_wp_bit() -> None:
    def program() -> Any:
        s = System(cpus=2)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        uffd = p.userfaultfd(UFFD_FEATURE_EVENT_FORK)
        uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_WP)
        uffd.writeprotect(a, PAGE_SIZE, True)
        kids: list[Any] = []

        p.thread(lambda t: kids.append(t.fork()), cpu=0)
        s.process().thread(lambda t: uffd.read(), cpu=1)

        def check() -> None:
            require(pte_uffd_wp(peek_pte(kids[0].mm, a)), "the child lost the uffd-wp bit")

        return check

    exhaust(program)


@pytest.mark.parametrize("feature", [UFFD_FEATURE_EVENT_REMAP, 0])
def test_remap_prep_and_complete(feature: int) -> None:
    """mremap's two calls around a move (simulated here: mremap itself is
    issue 13): with EVENT_REMAP, fill ioctls get EAGAIN from the prep until
    the monitor read the REMAP event; without it the VMA is unregistered."""
    def program() -> Any:
        s = System(cpus=2)
        p = s.process()
        a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        uffd = p.userfaultfd(feature)
        uffd.register(a, 2 * PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        vma = next(for_each_vma(p.mm))
        uf = VmUserfaultfdCtx()
        mmap_write_lock(p.mm)
        mremap_userfaultfd_prep(vma, uf)
        mmap_write_unlock(p.mm)
        got: list[Any] = []
        if not feature:
            assert uf.ctx is None and vma.raw("vm_userfaultfd_ctx") is None
            return None
        try:
            uffd.copy(a, 1, PAGE_SIZE)
        except OSError as e:
            got.append(e.errno)

        def mremap_rest(t: Thread) -> None:
            mremap_userfaultfd_complete(uf, a, a + PAGE_SIZE, PAGE_SIZE)

        def monitor(t: Thread) -> None:
            got.append(uffd.read())
            settled(uffd.ctx)
            got.append(uffd.copy(a, 1, PAGE_SIZE))

        p.thread(mremap_rest, cpu=0)
        s.process().thread(monitor, cpu=1)

        def check() -> None:
            require(got[0] == errno.EAGAIN, "copy went through between prep and complete")
            msg = got[1]
            require(msg.event == UFFD_EVENT_REMAP and (msg.from_, msg.to, msg.len)
                    == (a, a + PAGE_SIZE, PAGE_SIZE), f"read {msg}")
            require(got[2] == PAGE_SIZE, "copy refused after the event was read")

        return check

    exhaust(program)


def test_close_releases_an_event_waiter() -> None:
    def program() -> Any:
        s = System(cpus=2)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        uffd = p.userfaultfd(UFFD_FEATURE_EVENT_REMOVE)
        uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        done: list[bool] = []

        def process(t: Thread) -> None:
            t.madvise(a, PAGE_SIZE, MADV_DONTNEED)
            done.append(True)

        def monitor(t: Thread) -> None:
            uffd.close()

        p.thread(process, cpu=0)
        s.process().thread(monitor, cpu=1)

        def check() -> None:
            require(done == [True], "MADV_DONTNEED still waits")
            require(mmap_changing_value(uffd.ctx) == 0, "mmap_changing left raised")

        return check

    exhaust(program)


# --- which lock each era takes -------------------------------------------------------------


@pytest.mark.parametrize("release, mmap_lock, rwsem", [
    ("6.8", True, False),   # mmap_lock for read, counter read under it
    ("6.9", False, True),   # the VMA lock, map_changing_lock for read
    (None, False, True),
    ("4.18", True, False),
    ("4.17", True, False),  # no counter to read at all
])
def test_copy_locks_by_era(release: str | None, mmap_lock: bool, rwsem: bool) -> None:
    names: list[str] = []

    def program() -> None:
        s = System(kernel=release)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        p.madvise(a, PAGE_SIZE, MADV_DONTNEED)  # an anon_vma, no page
        uffd = p.userfaultfd()
        uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)

        def monitor(t: Thread) -> None:
            n0 = len(current_execution().events)
            uffd.copy(a, 1, PAGE_SIZE)
            # A reader's down_read writes its own slot and reads the lock:
            # the lock's name is in the operation's footprint, not its object.
            names.extend(obj.name for ev in current_execution().events[n0:]
                         for obj, _kind in ev.accesses())

        p.thread(monitor, cpu=0)

    run1(program)
    assert any(n.endswith(".mmap_lock") for n in names) == mmap_lock
    assert any(n.endswith(".map_changing_lock") for n in names) == rwsem
    assert any(n.endswith(".mmap_changing") for n in names) == (release != "4.17")


# --- the uffd-view oracle, single-threaded monitor -----------------------------------------


def single_monitor(kernel: dict[str, Any], copy_first: bool) -> Callable[[], None]:
    def program() -> None:
        s = System(cpus=2, **kernel)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        uffd = p.userfaultfd(UFFD_FEATURE_EVENT_REMOVE)
        uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        uffd.expect_consistent_view()

        def monitor(t: Thread) -> None:
            if copy_first:
                try:
                    uffd.copy(a, 7, PAGE_SIZE)
                except OSError as e:
                    require(e.errno == errno.EAGAIN, str(e))
                uffd.read()
            else:
                uffd.read()
                try:
                    uffd.copy(a, 7, PAGE_SIZE)  # issued after reading: never a crossing
                except OSError as e:  # unless MADV_DONTNEED has not lowered the count yet
                    require(e.errno == errno.EAGAIN, str(e))

        p.thread(lambda t: t.madvise(a, PAGE_SIZE, MADV_DONTNEED), cpu=0, name="process")
        s.process().thread(monitor, cpu=1, name="monitor")

    return program


@pytest.mark.parametrize("kernel, crosses", [
    ({}, False),
    ({"kernel": "6.8"}, True),
    ({"kernel": "6.8", "with_": ["uffd-remove-increment-only"]}, True),
    ({"kernel": "6.8", "with_": ["uffd-map-changing-lock"]}, False),
])
def test_single_threaded_monitor_and_the_remove_lock(kernel: dict[str, Any],
                                                     crosses: bool) -> None:
    """Even a monitor that copies and reads on one thread sees its copy take
    effect while the REMOVE event is pending unless userfaultfd_remove
    takes map_changing_lock for write (MADV_DONTNEED zaps only after the
    read, so its data survive no longer than the kernel promises)."""
    r = explore(single_monitor(kernel, True), max_seconds=50)
    assert r.complete or r.violation is not None
    got = r.violation.kind if r.violation else "clean"
    assert got == ("uffd-view" if crosses else "clean"), r.violation and r.violation.message


@pytest.mark.parametrize("kernel", [{}, {"kernel": "6.8"}, {"kernel": "4.17"}])
def test_a_copy_after_reading_the_event_is_no_crossing(kernel: dict[str, Any]) -> None:
    exhaust(single_monitor(kernel, False))


def test_the_view_oracle_can_be_switched_off_by_name() -> None:
    """``System(oracles_off=("uffd-view",))``: expect_consistent_view() then
    does nothing (no markers, no report); the crossing runs clean."""
    def program() -> None:
        p = System(oracles_off=("uffd-view",)).process()
        uffd = p.userfaultfd()
        uffd.expect_consistent_view()
        assert not uffd.ctx.view_expected

    run1(program)
    r = explore(single_monitor({"kernel": "6.8", "oracles_off": ("uffd-view",)}, True),
                max_seconds=50)
    assert r.complete and r.violation is None, r.violation and r.violation.message


# --- GUP-fast ---------------------------------------------------------------------------------


def test_gup_fast_only_and_longterm_pins() -> None:
    """What the uffd-move-pin pinner uses: ``FOLL_FAST_ONLY`` takes only what
    the lockless walk finds (nothing for an unmapped page), ``FOLL_LONGTERM``
    pins an anonymous page like any pin."""
    def program() -> None:
        p = System().process()
        a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        pages = p.gup_fast(a, 1, write=True, longterm=True, fast_only=True)
        assert len(pages) == 1 and pages[0]._refcount == 1 + 1024
        p.unpin(pages)
        assert p.gup_fast(a + PAGE_SIZE, 1, fast_only=True) == []  # not mapped
        pages = p.gup_fast(a, 2, write=True, longterm=True)  # the second by the slow path
        assert len(pages) == 2 and pages[1]._refcount == 1 + 1024
        p.unpin(pages)
        check_accounting([p])

    run1(program)


# --- the seed's consequence: a copied page outlives MADV_DONTNEED ------------------------------


def survives_program(kernel: dict[str, Any], two_threads: bool) -> Callable[[], Any]:
    """The seed-001 situation without the oracle: the process drops an empty
    registered page; the monitor copies into it and reads the REMOVE event
    (on two threads, or one). The final check fails if the page is there at
    the end although the copy passed its mmap_changing check before the
    REMOVE event was raised: it survived the MADV_DONTNEED whose event came
    after it started (the marker operations of ``ctx.view`` date both)."""
    def program() -> Any:
        s = System(cpus=3, **kernel)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        uffd = p.userfaultfd(UFFD_FEATURE_EVENT_REMOVE)
        uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        uffd.ctx.view_expected = True  # the markers, not the oracle
        m = s.process()

        def copy(t: Thread) -> None:
            try:
                uffd.copy(a, 7, PAGE_SIZE)
            except OSError as e:
                require(e.errno == errno.EAGAIN, str(e))

        p.thread(lambda t: t.madvise(a, PAGE_SIZE, MADV_DONTNEED), cpu=0, name="process")
        if two_threads:
            m.thread(copy, cpu=1, name="copier")
            m.thread(lambda t: uffd.read(), cpu=2, name="reader")
        else:
            m.thread(lambda t: (copy(t), uffd.read()), cpu=1, name="monitor")

        def check() -> None:
            events = current_execution().events
            began = [i for i, ev in enumerate(events) if ev.label == "uffd-ioctl-begin"]
            raised = [i for i, ev in enumerate(events) if ev.label == "uffd-event-raise"]
            if pte_present(peek_pte(p.mm, a)) and began and raised and began[-1] < raised[0]:
                from mmrace.oracles.memory import wrong_data

                raise wrong_data("the page copied by an ioctl that started before the REMOVE "
                                 "event survived MADV_DONTNEED")

        return check

    return program


@pytest.mark.parametrize("kernel, two_threads, survives", [
    ({"kernel": "6.8", "with_": ["uffd-remove-increment-only"]}, True, True),
    ({"kernel": "6.8"}, True, True),
    ({"kernel": "6.8", "with_": ["uffd-remove-increment-only"]}, False, False),
    ({}, True, False),
])
def test_a_copied_page_outlives_madv_dontneed(kernel: dict[str, Any], two_threads: bool,
                                              survives: bool) -> None:
    """Mike Rapoport's point, run: with the bare increment (the proposal, or
    6.8's read-mode raise) a monitor that copies on one thread and reads
    events on another can have its copy land after MADV_DONTNEED zapped the
    range; a single-threaded monitor cannot (the zap waits for its read,
    which follows its copy); the write lock (today) rules it out for both."""
    r = explore(survives_program({**kernel, "oracles_off": ("uffd-view",)}, two_threads),
                strategy="bounded", preemption_bound=3, max_seconds=100)
    got = r.violation.kind if r.violation else ("clean" if r.complete else "incomplete")
    assert got == ("wrong-data" if survives else "clean"), r.violation and r.violation.message

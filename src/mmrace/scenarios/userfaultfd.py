"""userfaultfd's non-cooperative events against its fill and move ioctls,
through the eras of ``mmap_changing`` (seed 001: "[PATCH v2 2/3]
userfaultfd: protect mmap_changing with rw_sem in userfaulfd_ctx"), and a
``UFFDIO_MOVE`` race with GUP-fast.

The event entries state the monitor's promise with
``uffd.expect_consistent_view()``: an ioctl that takes effect after an
event was raised, having started before the monitor read it, is a
``uffd-view`` violation (:mod:`mmrace.oracles.userfaultfd`). Each is cut to
one page and one ioctl; the monitor runs in a process of its own, as a
non-cooperative monitor (CRIU's lazy-pages daemon) does.
"""

from __future__ import annotations

import errno
from typing import Any

from mmrace.mm.mm_types import PAGE_SIZE
from mmrace.mm.mman import MADV_DONTNEED, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from mmrace.oracles.rmap import rmap_mismatch
from mmrace.scenarios.api import Explore, Kernel, scenario
from mmrace.user import (
    UFFD_FEATURE_EVENT_FORK,
    UFFD_FEATURE_EVENT_REMOVE,
    UFFDIO_REGISTER_MODE_MISSING,
    Thread,
    Userfaultfd,
)

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
K3 = Explore(strategy="bounded", preemption_bound=3)
K2 = Explore(strategy="bounded", preemption_bound=2)
SEED = ("Re: [PATCH v2 2/3] userfaultfd: protect mmap_changing with rw_sem in "
        "userfaulfd_ctx (linux-mm, 2024-01-30; seed 001)")
MMAP_CHANGING = ("df2cc96e7701 userfaultfd: prevent non-cooperative events vs mcopy_atomic "
                 "races (4.18)")
ATOMIC = "a759a909d42d userfaultfd: change mmap_changing to atomic (5.15)"
RWSEM = "5e4c24a57b0c userfaultfd: protect mmap_changing with rw_sem in userfaulfd_ctx (6.9)"
PER_VMA = "867a43a34ff8 userfaultfd: use per-vma locks in userfaultfd operations (6.9)"


def _copy_or_eagain(uffd: Userfaultfd, addr: int, value: int) -> None:
    """A monitor's ``UFFDIO_COPY`` that takes ``EAGAIN`` (an event is
    pending: read it first) as an answer."""
    try:
        uffd.copy(addr, value, PAGE_SIZE)
    except OSError as e:
        if e.errno != errno.EAGAIN:
            raise


@scenario(
    name="uffd-fork-copy",
    summary="a monitor's UFFDIO_COPY races fork: before 4.18 it can land in the parent after "
    "fork copied the page tables, and the monitor cannot tell whether the child has it",
    references=(
        MMAP_CHANGING,
        "its description: fork() running in parallel with userfaultfd_copy()",
    ),
    base=Kernel(release="4.17"),
    fixes=("uffd-mmap-changing",),
    expect={
        "current": "clean",
        "base": "uffd-view",
        "base+uffd-mmap-changing": "clean",
        "current-uffd-mmap-changing": "uffd-view",
    },
    notes={
        "base": "the copy takes mmap_lock after fork dropped it and fills the parent while "
        "the FORK event is unread",
        "base+uffd-mmap-changing": "dup_userfaultfd raises mmap_changing under fork's mmap "
        "write lock: the later copy fails with EAGAIN",
        "current-uffd-mmap-changing": "today's per-VMA locks do not help: nothing tells the "
        "copy that a fork is pending",
    },
    explore=K3,
)
def uffd_fork_copy(kernel: Kernel) -> Any:
    """The process forks; the monitor copies a page into the registered
    range, then reads its next message (the FORK event)."""
    s = kernel.system(cpus=2)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    uffd = p.userfaultfd(UFFD_FEATURE_EVENT_FORK)
    uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
    uffd.expect_consistent_view()
    m = s.process()

    def process(t: Thread) -> None:
        t.fork()

    def monitor(t: Thread) -> None:
        _copy_or_eagain(uffd, a, 7)
        uffd.read()  # the FORK event: fork waits for it

    p.thread(process, cpu=0, name="process")
    m.thread(monitor, cpu=1, name="monitor")
    return None


@scenario(
    name="uffd-remove-copy",
    summary="MADV_DONTNEED's REMOVE event against a UFFDIO_COPY started before it, with a "
    "monitor that copies on one thread and reads events on another: the seed-001 debate",
    references=(
        SEED,
        RWSEM,
        PER_VMA,
        "Mike Rapoport in the thread: read mode forced non-cooperative monitors to be "
        "single threaded",
    ),
    base=Kernel(release="6.8"),
    fixes=("uffd-map-changing-lock", "uffd-per-vma-locks"),
    proposals=("uffd-remove-increment-only",),
    expect={
        "current": "clean",
        "base": "uffd-view",
        "base+uffd-map-changing-lock": "clean",
        "base+uffd-per-vma-locks": "uffd-view",
        "base+fixes": "clean",
        "current-uffd-map-changing-lock": "uffd-view",
        "current-uffd-per-vma-locks": "clean",
        "base+uffd-remove-increment-only": "uffd-view",
    },
    notes={
        "base": "6.8: userfaultfd_remove raises mmap_changing holding mmap_lock only for "
        "read, concurrently with the copy between its check and its PTE",
        "base+uffd-map-changing-lock": "the REMOVE raise waits (down_write) for the copy "
        "to finish: it lands before the event, and MADV_DONTNEED then zaps it",
        "base+uffd-per-vma-locks": "per-VMA locks without the rwsem: nothing orders the "
        "raise against the copy",
        "current-uffd-per-vma-locks": "the rwsem alone suffices, under mmap_lock too",
        "base+uffd-remove-increment-only": "the proposal: a bare increment is what 6.8 did "
        "under mmap_lock for read -- the copy crosses the event",
    },
    explore=K3,
    ci=("current", "base", "base+uffd-remove-increment-only", "current-uffd-per-vma-locks",
        "base+uffd-per-vma-locks"),
)
def uffd_remove_copy(kernel: Kernel) -> Any:
    """The process drops an empty registered page (``MADV_DONTNEED``); the
    monitor's copier thread fills it, its reader thread reads the REMOVE
    event (``MADV_DONTNEED`` waits for that read, then zaps)."""
    s = kernel.system(cpus=3)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    uffd = p.userfaultfd(UFFD_FEATURE_EVENT_REMOVE)
    uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
    uffd.expect_consistent_view()
    m = s.process()

    def process(t: Thread) -> None:
        t.madvise(a, PAGE_SIZE, MADV_DONTNEED)

    def copier(t: Thread) -> None:
        _copy_or_eagain(uffd, a, 7)

    def reader(t: Thread) -> None:
        uffd.read()

    p.thread(process, cpu=0, name="process")
    m.thread(copier, cpu=1, name="copier")
    m.thread(reader, cpu=2, name="reader")
    return None


@scenario(
    name="uffd-remove-remove-copy",
    summary="two MADV_DONTNEEDs raise the bool mmap_changing; reading the first event clears "
    "it while the second is unread, and a copy into the second range goes through",
    references=(
        ATOMIC,
        "its description: concurrent madvise(MADV_DONTNEED) calls might leave "
        "mmap_changing false although the remove event was not read",
        MMAP_CHANGING,
    ),
    base=Kernel(release="5.14"),
    fixes=("uffd-mmap-changing-atomic",),
    expect={
        "current": "clean",
        "base": "uffd-view",
        "base+uffd-mmap-changing-atomic": "clean",
        "current-uffd-mmap-changing-atomic": "uffd-view",
    },
    notes={
        "base": "the first event's waiter writes false over the second event's true",
        "base+uffd-mmap-changing-atomic": "the counter stays at 1 until the second event "
        "is read: the copy gets EAGAIN",
        "current-uffd-mmap-changing-atomic": "map_changing_lock orders each raise against "
        "the copy, not one event's clear against another's raise",
    },
    # One preemption shows the lost raise (the copy waits for both events
    # by itself); K=2 proves the clean variants in ~15 s where K=3 takes
    # ~100,000 executions (3-4 minutes).
    explore=K2,
    ci=("base", "current-uffd-mmap-changing-atomic"),
)
def uffd_remove_remove_copy(kernel: Kernel) -> Any:
    """Two threads drop one page each; the monitor reads one REMOVE event,
    polls until the other is queued, and copies into the other range."""
    s = kernel.system(cpus=3)
    p = s.process()
    a = p.mmap(0, 2 * PAGE_SIZE, RW, ANON)
    b = a + PAGE_SIZE
    uffd = p.userfaultfd(UFFD_FEATURE_EVENT_REMOVE)
    uffd.register(a, 2 * PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
    uffd.expect_consistent_view()
    m = s.process()

    def dontneed(addr: int) -> Any:
        def run(t: Thread) -> None:
            t.madvise(addr, PAGE_SIZE, MADV_DONTNEED)
        return run

    def monitor(t: Thread) -> None:
        first = uffd.read()
        uffd.poll()  # the other REMOVE is queued: both were raised
        _copy_or_eagain(uffd, b if first.start == a else a, 7)
        uffd.read()

    p.thread(dontneed(a), cpu=0, name="dontneed-a")
    p.thread(dontneed(b), cpu=1, name="dontneed-b")
    m.thread(monitor, cpu=2, name="monitor")
    return None


@scenario(
    name="uffd-move-pin",
    summary="GUP-fast pins the page UFFDIO_MOVE is moving; the move backs off with EBUSY but, "
    "before 6.9, leaves the page's rmap pointing at the destination",
    references=(
        "d7a08838ab74 mm: userfaultfd: fix unexpected change to src_folio when UFFDIO_MOVE "
        "fails (6.9; in 6.8.y stable)",
        "adef440691ba userfaultfd: UFFDIO_MOVE uABI (6.8)",
        "c0205eaf3af9 userfaultfd: change src_folio after ensuring it's unpinned in "
        "UFFDIO_MOVE (the huge-PMD half)",
    ),
    base=Kernel(release="6.8"),
    fixes=("uffd-move-src-folio-unpinned",),
    expect={
        "current": "clean",
        "base": "invariant",
        "base+uffd-move-src-folio-unpinned": "clean",
        "current-uffd-move-src-folio-unpinned": "invariant",
    },
    notes={
        "base": "folio_move_anon_rmap before the clear; the recheck finds the pin, the PTE "
        "goes back, the rmap does not",
        "base+uffd-move-src-folio-unpinned": "the rmap moves only once the page is known "
        "unpinned with its PTE cleared",
    },
    explore=K3,
)
def uffd_move_pin(kernel: Kernel) -> Any:
    """A thread moves an exclusive anonymous page into a registered range
    (``UFFDIO_MOVE``, a heap compactor's step); another pins it for DMA
    with GUP-fast (``FOLL_FAST_ONLY``: the half of ``pin_user_pages_fast``
    that takes no lock; it walks with interrupts off, so the move's TLB
    flush waits for it). At the end, a page mapped at either address must
    be where its rmap says."""
    s = kernel.system(cpus=2)
    p = s.process()
    src = p.mmap(0, PAGE_SIZE, RW, ANON)
    dst = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.poke(src, 1)
    uffd = p.userfaultfd()
    uffd.register(dst, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)

    def mover(t: Thread) -> None:
        try:
            uffd.move(dst, src, PAGE_SIZE)
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise

    def pinner(t: Thread) -> None:
        t.gup_fast(src, 1, write=True, longterm=True, fast_only=True)  # kept pinned

    p.thread(mover, cpu=0, name="mover")
    p.thread(pinner, cpu=1, name="pinner")

    def check() -> None:
        for addr in (src, dst):
            v = rmap_mismatch(p.mm, addr)
            if v is not None:
                raise v

    return check


CATALOG = [uffd_fork_copy, uffd_remove_copy, uffd_remove_remove_copy, uffd_move_pin]

__all__ = ["CATALOG"]

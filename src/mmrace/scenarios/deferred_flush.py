"""The deferred-TLB-flush races of the seed-002 thread, and the pinned-page
COW concern raised in it.

Thread: "[RFC PATCH v2 0/2] mm: fix races due to deferred TLB flushes"
(Nadav Amit, linux-mm, 2020-12-25). userfaultfd write-protect and soft-dirty
``clear_refs`` write-protected PTEs under the mmap *read* lock and deferred
the TLB flush; a concurrent write fault could copy the page (``wp_page_copy``)
while another CPU kept writing to the old page through its stale, writable
TLB entry: the write is lost.

Every scenario here is cut to the fewest threads, pages and stores that show
the race: one page, each thread one or two accesses. The page is pinned in
set-up (a long-lived extra reference, as an io_uring-registered buffer or
the C reproducer's mlock/munlock loop gives), so the 5.9-5.18 ``page_count``
COW policy copies instead of reusing.
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import WAIT, visible
from mmrace.mm.mm_types import PAGE_SIZE
from mmrace.mm.mman import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from mmrace.mm.page_alloc import folio_read_word
from mmrace.mm.pgtable import lookup_pte, pte_uffd_wp
from mmrace.oracles.memory import wrong_data
from mmrace.scenarios.api import Explore, Kernel, scenario
from mmrace.user import CLEAR_REFS_SOFT_DIRTY, UFFDIO_REGISTER_MODE_WP, Thread

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
WORD = 8  # the second word of the page: the fault's store, apart from the writer's

THREAD = "[RFC PATCH v2 0/2] mm: fix races due to deferred TLB flushes (linux-mm, 2020-12-25)"
BASE = Kernel(release="5.10")  # "Both of the races ... were produced on v5.10."
K3 = Explore(strategy="bounded", preemption_bound=3)
# The uffd-wp fix that landed, and the alternatives argued in the thread.
UFFD_WP_FIXES = ("uffd-wp-flush-pending",)
UFFD_WP_PROPOSALS = (
    "uffd-wp-mmap-write-lock",
    "uffd-wp-resolve-preserve-write",
    "uffd-wp-resolve-skip",
    "wp-fault-flush-pending",
)


@scenario(
    name="uffd-wp-unprotect-cow",
    summary="uffd write-unprotect clears the RW bit with a deferred flush; a write fault "
    "copies the page while a third CPU writes through its stale TLB entry",
    references=(
        THREAD,
        "[RFC PATCH v2 1/2] mm/userfaultfd: fix memory corruption due to writeprotect "
        "(first scenario of the description)",
        "6ce64428d620 mm/userfaultfd: fix memory corruption due to writeprotect (5.12)",
        "09854ba94c6a mm: do_wp_page() simplification (5.9: COW on page_count > 1)",
    ),
    base=BASE,
    fixes=UFFD_WP_FIXES,
    proposals=UFFD_WP_PROPOSALS,
    expect={
        "current": "clean",
        "base": "lost-write",
        "base+uffd-wp-flush-pending": "clean",
        "current-uffd-wp-flush-pending": "clean",
        "base+uffd-wp-mmap-write-lock": "lost-write",
        "base+uffd-wp-resolve-preserve-write": "clean",
        "base+uffd-wp-resolve-skip": "clean",
        "base+wp-fault-flush-pending": "clean",
    },
    notes={
        "current": "the page is PageAnonExclusive: the fault reuses it, nothing is copied",
        "current-uffd-wp-flush-pending": "still clean: the anon_exclusive policy reuses the "
        "pinned page and TRY_CHANGE_WRITABLE keeps RW on unprotect",
        "base+uffd-wp-mmap-write-lock": "the write lock is taken only to protect; "
        "unprotect keeps the read lock",
        "base+uffd-wp-resolve-preserve-write": "unprotect no longer clears a set RW bit: "
        "no stale entry is ever made",
        "base+uffd-wp-resolve-skip": "unprotect leaves the PTE alone",
    },
    explore=K3,
    ci=("current", "base", "current-uffd-wp-flush-pending", "base+uffd-wp-mmap-write-lock",
        "base+uffd-wp-resolve-preserve-write", "base+uffd-wp-resolve-skip"),
)
def uffd_wp_unprotect_cow(kernel: Kernel) -> Any:
    """cpu2 caches the writable PTE and writes again later; cpu0 write-
    *unprotects* the (never protected) page, which on 5.10 clears the RW bit
    and defers the flush; cpu1's write fault copies the page in between."""
    s = kernel.system(cpus=3)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.poke(a, 1)
    p.pin(a)
    uffd = p.userfaultfd()
    uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_WP)

    def unprotect(t: Thread) -> None:
        uffd.writeprotect(a, PAGE_SIZE, False)

    def fault(t: Thread) -> None:
        t.store(a + WORD, 9)

    def writer(t: Thread) -> None:
        t.store(a, 2)  # caches the writable PTE
        t.store(a, 3)

    # Spawned writer first: the depth-first search then reaches the race early.
    p.thread(writer, cpu=2, name="cpu2")
    p.thread(unprotect, cpu=0, name="cpu0")
    p.thread(fault, cpu=1, name="cpu1")
    return None


@scenario(
    name="uffd-wp-protect-unprotect",
    summary="uffd write-protect then write-unprotect, both deferring the flush; a write "
    "fault copies the page while a fourth CPU writes through its stale TLB entry",
    references=(
        THREAD,
        "[RFC PATCH v2 1/2] mm/userfaultfd: fix memory corruption due to writeprotect "
        "(second, four-CPU scenario)",
        "6ce64428d620 mm/userfaultfd: fix memory corruption due to writeprotect (5.12)",
    ),
    base=BASE,
    fixes=UFFD_WP_FIXES,
    proposals=UFFD_WP_PROPOSALS,
    expect={
        "current": "clean",
        "base": "lost-write",
        "base+uffd-wp-flush-pending": "clean",
        "current-uffd-wp-flush-pending": "clean",
        "base+uffd-wp-mmap-write-lock": "clean",
        "base+uffd-wp-resolve-preserve-write": "lost-write",
        "base+uffd-wp-resolve-skip": "lost-write",
        "base+wp-fault-flush-pending": "clean",
    },
    notes={
        "current": "the page is PageAnonExclusive: the fault reuses it, nothing is copied",
        "base+uffd-wp-mmap-write-lock": "protect holds the mmap lock for write until its "
        "flush is done: unprotect and the fault start after it",
        "base+uffd-wp-resolve-preserve-write": "protect already cleared RW; unprotect "
        "preserving it changes nothing: the protect's flush is still pending",
        "base+uffd-wp-resolve-skip": "likewise: the stale entry comes from the protect",
    },
    # Three preemptions: protect and unprotect each stopped before their
    # flush, the fault stopped between the copy and its own flush. The
    # writer's first store is set-up (p.touch), as in the diagram.
    explore=K3,
    ci=("current",),
)
def uffd_wp_protect_unprotect(kernel: Kernel) -> Any:
    """cpu3 has the writable PTE cached (set-up); cpu0 write-protects
    (deferred flush), cpu1 write-unprotects (deferred flush), cpu2's write
    fault copies the page, cpu3 writes through its stale entry."""
    s = kernel.system(cpus=4)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.poke(a, 1)
    p.pin(a)
    uffd = p.userfaultfd()
    uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_WP)

    pte = lookup_pte(p.mm, a)
    assert pte is not None
    table, index = pte

    def protect(t: Thread) -> None:
        uffd.writeprotect(a, PAGE_SIZE, True)

    def unprotect(t: Thread) -> None:
        # The monitor unprotects once it sees the page protected (as after
        # reading a fault message): else a fault would wait for ever.
        visible(table.slot(index), WAIT, "wait for uffd-wp",
                guard=lambda: pte_uffd_wp(table.entries.get(index, 0)))
        uffd.writeprotect(a, PAGE_SIZE, False)

    seen = [False]

    def unprotected() -> bool:
        # monotone: the PTE was uffd-wp and no longer is
        if pte_uffd_wp(table.entries.get(index, 0)):
            seen[0] = True
            return False
        return seen[0]

    def fault(t: Thread) -> None:
        # The page fault of the diagram comes after the unprotect changed the PTE.
        visible(table.slot(index), WAIT, "wait for unprotect", guard=unprotected)
        t.store(a + WORD, 9)

    # "[ Writable PTE cached in TLB ]": cpu3 wrote the page before the race.
    p.touch(a, cpu=3, write=True)

    def writer(t: Thread) -> None:
        t.store(a, 3)

    # The writer spawned last: the depth-first search runs it last, as in
    # the diagram, and reaches the race early.
    p.thread(protect, cpu=0, name="cpu0")
    p.thread(unprotect, cpu=1, name="cpu1")
    p.thread(fault, cpu=2, name="cpu2")
    p.thread(writer, cpu=3, name="cpu3")
    return None


@scenario(
    name="softdirty-clear-refs-cow",
    summary="clear_refs (soft-dirty) write-protects under the mmap read lock without a "
    "flush; a write fault copies the page while another CPU's atomic increment goes "
    "through its stale TLB entry: the counter loses increments",
    references=(
        THREAD,
        "[RFC PATCH v2 2/2] fs/task_mmu: acquire mmap_lock for write on soft-dirty "
        "cleanup (the C reproducer)",
        "912efa17e512 mm: proc: Invalidate TLB after clearing soft-dirty page state (5.12)",
        "29a951dfb3c3 mm: fix clear_refs_write locking (5.11)",
        "0758cd830494 asm-generic/tlb: avoid potential double flush (elides the flush)",
    ),
    base=BASE,
    fixes=("clear-refs-mmap-write-lock", "soft-dirty-tlb-flush"),
    proposals=("wp-fault-flush-pending",),
    expect={
        "current": "clean",
        "base": "lost-write",
        "base+clear-refs-mmap-write-lock": "lost-write",
        "base+soft-dirty-tlb-flush": "lost-write",
        "base+fixes": "clean",
        "current-clear-refs-mmap-write-lock": "clean",
        "current-soft-dirty-tlb-flush": "clean",
        "base+wp-fault-flush-pending": "lost-write",
    },
    notes={
        "base+clear-refs-mmap-write-lock": "5.11: the write lock, but tlb_finish_mmu elides "
        "the flush (nothing gathered): the stale entry outlives clear_refs",
        "base+soft-dirty-tlb-flush": "the flush, but under the read lock a fault copies "
        "while it is pending",
        "base+wp-fault-flush-pending": "no flush is pending once clear_refs returned, and "
        "none is ever made",
        "current": "the page is PageAnonExclusive: the fault reuses it",
    },
    explore=K3,
    ci=("current", "base", "base+clear-refs-mmap-write-lock", "base+soft-dirty-tlb-flush",
        "current-soft-dirty-tlb-flush", "base+wp-fault-flush-pending"),
)
def softdirty_clear_refs_cow(kernel: Kernel) -> Any:
    """The C reproducer with ITERATIONS=1 and N_THREADS=2 writer threads of one
    and two increments; the mlock/munlock thread is replaced by a pin taken in
    set-up (the reproducer's comment: "Raising the page-count is possible in
    better ways, e.g., registering io_uring buffers")."""
    s = kernel.system(cpus=3)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.poke(a, 0)
    p.pin(a)
    done = {"n": 0}

    def writer0(t: Thread) -> None:
        # First thread only accesses the page to have it cached in the TLB.
        t.atomic_add(a, 1)
        done["n"] += 1
        t.atomic_add(a, 1)
        done["n"] += 1

    def writer1(t: Thread) -> None:
        # The other takes a write fault once clear_refs write-protected the PTE.
        t.atomic_add(a, 1)
        done["n"] += 1

    def clear_refs(t: Thread) -> None:
        t.clear_refs(CLEAR_REFS_SOFT_DIRTY)

    p.thread(writer0, cpu=0, name="writer0")
    p.thread(writer1, cpu=1, name="writer1")
    p.thread(clear_refs, cpu=2, name="clear_refs")

    def check() -> None:
        got = p.peek(a)
        if got != done["n"]:
            raise wrong_data(f"failed: expected={done['n']} actual={got}")

    return check


@scenario(
    name="wp-pinned-page-cow",
    summary="write-protecting a GUP-pinned page (clear_refs) makes the next write fault "
    "copy it away from the pin: the pin holder and the process stop sharing data",
    references=(
        THREAD,
        "concern raised in the thread: COW of pinned pages after write-protection",
        "09854ba94c6a mm: do_wp_page() simplification (5.9: page_count policy)",
        "6c287605fd56 mm: remember exclusively mapped anonymous pages with "
        "PG_anon_exclusive (5.19)",
    ),
    base=BASE,
    policies=(("cow-reuse", "mapcount"), ("cow-reuse", "page_count"),
              ("cow-reuse", "anon_exclusive")),
    expect={
        "current": "clean",
        "base": "wrong-data",
        "cow-reuse=mapcount": "clean",
        "cow-reuse=page_count": "wrong-data",
        "cow-reuse=anon_exclusive": "clean",
    },
    notes={
        "cow-reuse=mapcount": "pre-5.9 reuses a page mapped once, pinned or not",
        "cow-reuse=page_count": "the pin's reference forces a copy: the pin keeps the old page",
        "cow-reuse=anon_exclusive": "the pinned page is PageAnonExclusive: reused",
    },
    explore=K3,
)
def wp_pinned_page_cow(kernel: Kernel) -> Any:
    """A page pinned for write (O_DIRECT / RDMA buffer), then soft-dirty
    clear_refs write-protects it while a thread writes to it; at the end the
    pinned page and the process's page must be the same page."""
    s = kernel.system(cpus=2)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.poke(a, 1)
    pinned = p.pin(a, write=True)

    def clear_refs(t: Thread) -> None:
        t.clear_refs(CLEAR_REFS_SOFT_DIRTY)

    def writer(t: Thread) -> None:
        t.store(a, 2)

    p.thread(clear_refs, cpu=0, name="clear_refs")
    p.thread(writer, cpu=1, name="writer")

    def check() -> None:
        seen = p.peek(a)
        dma = folio_read_word(pinned[0], 0, 0)
        if seen != dma:
            raise wrong_data(f"the process reads {seen} but the pinned page holds {dma}: "
                             "the write fault copied the page away from the pin")

    return check


CATALOG = (
    uffd_wp_unprotect_cow,
    uffd_wp_protect_unprotect,
    softdirty_clear_refs_cow,
    wp_pinned_page_cow,
)

__all__ = ["CATALOG"]

"""GUP and COW through the eras: page references and pins that lose track of
the page the process maps (``tools/testing/selftests/mm/cow.c`` and
``gup_longterm.c`` cases the model can express, cut to one page).

Each entry sets the page up, then lets the explorer order the racing steps
(the write that may copy or reuse the page, and the step that takes or reads
the reference); the final check compares what the reference sees with what
the process maps. The ``Explore`` budget is the catalog's usual K=3.
"""

from __future__ import annotations

from typing import Any

from mmrace.mm.mm_types import PAGE_SIZE
from mmrace.mm.mman import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from mmrace.mm.page_alloc import WORD_SIZE
from mmrace.oracles.memory import wrong_data
from mmrace.scenarios.api import Explore, Kernel, scenario
from mmrace.user import Thread

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
WORD = WORD_SIZE  # one naturally aligned 8-byte word of user memory
K3 = Explore(strategy="bounded", preemption_bound=3)
COW_C = "tools/testing/selftests/mm/cow.c"
BREAK_READS = '17839856fd58 gup: document and work around "COW can break either way" issue (5.8)'
REMOVE_ENFORCED = "a308c71bf1e6 mm/gup: Remove enfornced COW mechanism (5.9)"
SIMPLIFICATION = "09854ba94c6a mm: do_wp_page() simplification (5.9: page_count reuse)"
ANON_EXCLUSIVE = ("6c287605fd56 mm: remember exclusively mapped anonymous pages with "
                  "PG_anon_exclusive (5.19)")
ALL_REUSE = (("cow-reuse", "mapcount"), ("cow-reuse", "page_count"),
             ("cow-reuse", "anon_exclusive"))


def _pin_must_see_mapping(p: Any, a: int, pinned: list[Any], what: str) -> Any:
    """The final check of the pin scenarios: the pinned page holds what the
    process reads at *a* (a pin that lost track of the mapping does not)."""

    def check() -> None:
        if not pinned:
            return
        seen = p.peek(a)
        dma = p.read_page(pinned[0])
        if seen != dma:
            raise wrong_data(f"the process reads {seen} but the {what} holds {dma}: "
                             "the write went to a copy, away from the pinned page")

    return check


@scenario(
    name="vmsplice-child-leak",
    summary="a child vmsplices a page it shares with its parent, then unmaps it; the "
    "parent's next write reuses the page and leaks into the child's pipe",
    references=(
        "CVE-2020-29374",
        BREAK_READS,
        REMOVE_ENFORCED,
        SIMPLIFICATION,
        f"{COW_C}: vmsplice() + unmap in child",
    ),
    base=Kernel(release="5.7"),
    fixes=("gup-cow-break-reads", "gup-remove-enforced-cow"),
    policies=ALL_REUSE,
    expect={
        "current": "clean",
        "base": "wrong-data",
        "base+gup-cow-break-reads": "clean",
        "base+gup-remove-enforced-cow": "wrong-data",
        "base+fixes": "wrong-data",
        "current-gup-cow-break-reads": "clean",
        "current-gup-remove-enforced-cow": "clean",
        "cow-reuse=mapcount": "wrong-data",
        "cow-reuse=page_count": "clean",
        "cow-reuse=anon_exclusive": "clean",
    },
    notes={
        "base": "5.7: the vmsplice reference is on the shared page; after the child's "
        "munmap the parent maps it once (mapcount 1) and reuses it",
        "base+gup-cow-break-reads": "5.8: the vmsplice breaks COW: the pipe holds the "
        "child's own copy",
        "base+gup-remove-enforced-cow": "nothing to remove on 5.7: the leak stays",
        "base+fixes": "5.8's COW break removed again, but 5.7's mapcount reuse kept: the "
        "removal was safe only with the page_count policy",
        "current-gup-remove-enforced-cow": "today's kernel breaking COW for reads again",
        "cow-reuse=page_count": "5.9's reuse rule: the pipe's reference forces a copy",
        "cow-reuse=anon_exclusive": "the page is not exclusive after fork and has an extra "
        "reference: copied",
    },
    explore=K3,
)
def vmsplice_child_leak(kernel: Kernel) -> Any:
    """cow.c's "vmsplice() + unmap in child": the child's pipe must still
    hold the old contents after the parent wrote."""
    s = kernel.system(cpus=2)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.poke(a, 1)
    c = p.fork()
    rfd, wfd = c.pipe()
    c.vmsplice(wfd, a, WORD)  # a reference to the page, not a copy
    c.munmap(a, PAGE_SIZE)
    got: list[int] = []

    def parent(t: Thread) -> None:
        t.store(a, 2)

    def child(t: Thread) -> None:
        got.extend(t.read(rfd))

    p.thread(parent, cpu=0, name="parent")
    c.thread(child, cpu=1, name="child")

    def check() -> None:
        if got != [1]:
            raise wrong_data(f"the child read {got} through its pipe instead of [1]: the "
                             "parent's later write leaked into it (COW broke the wrong way)")

    return check


@scenario(
    name="ro-longterm-pin-zero-page",
    summary="a read-only long-term pin of the shared zero page stays on it; the next write "
    "maps a fresh page and the pin holder never sees the write",
    references=(
        "84209e87c696 mm/gup: reliable R/O long-term pinning in COW mappings (6.2)",
        "mm: extend FAULT_FLAG_UNSHARE support to anything in a COW mapping (6.2, same "
        "series)",
        f"{COW_C}: R/O longterm GUP pin ... with shared zeropage",
    ),
    base=Kernel(release="6.1"),
    fixes=("gup-longterm-unshare-cow",),
    expect={
        "current": "clean",
        "base": "wrong-data",
        "base+gup-longterm-unshare-cow": "clean",
        "current-gup-longterm-unshare-cow": "wrong-data",
    },
    notes={
        "base": "6.1 unshares only anonymous pages: the pin stays on the zero page",
        "current": "the pin unshares first: an exclusive anonymous page, mapped read-only, "
        "which the write then reuses",
    },
    explore=K3,
)
def ro_longterm_pin_zero_page(kernel: Kernel) -> Any:
    """A read (the zero page is mapped), then a read-only long-term pin (a
    VFIO-style DMA buffer) racing the process's first write."""
    s = kernel.system(cpus=2)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.peek(a)  # maps the shared zero page
    pinned: list[Any] = []

    def pinner(t: Thread) -> None:
        pinned.extend(t.pin_user_pages(a, 1, longterm=True))

    def writer(t: Thread) -> None:
        t.store(a, 7)

    p.thread(pinner, cpu=0, name="pinner")
    p.thread(writer, cpu=1, name="writer")
    return _pin_must_see_mapping(p, a, pinned, "long-term pinned page")


@scenario(
    name="ro-pin-previously-shared",
    summary="a read-only pin of a page that was shared before fork's child exited; the "
    "process's next write copies it away from the pin",
    references=(
        "a7f226604170 mm/gup: trigger FAULT_FLAG_UNSHARE when R/O-pinning a possibly "
        "shared anonymous page (5.19)",
        ANON_EXCLUSIVE,
        SIMPLIFICATION,
        f"{COW_C}: R/O GUP pin on R/O-mapped previously-shared page",
    ),
    base=Kernel(release="5.18"),
    fixes=("gup-unshare-anon-ro-pin",),
    policies=ALL_REUSE,
    expect={
        "current": "clean",
        "base": "wrong-data",
        "base+gup-unshare-anon-ro-pin": "livelock",
        "current-gup-unshare-anon-ro-pin": "wrong-data",
        "cow-reuse=mapcount": "clean",
        "cow-reuse=page_count": "wrong-data",
        "cow-reuse=anon_exclusive": "wrong-data",
    },
    notes={
        "base": "5.18's page_count reuse: the pin's references make the write copy",
        "base+gup-unshare-anon-ro-pin": "the unshare rule without PageAnonExclusive: the "
        "reused page is never marked exclusive, GUP retries for ever",
        "current-gup-unshare-anon-ro-pin": "the page is not exclusive after fork; without "
        "unsharing, the pin's references make the write copy",
        "cow-reuse=mapcount": "before 5.9 a page mapped once is reused, pinned or not",
    },
    explore=K3,
)
def ro_pin_previously_shared(kernel: Kernel) -> Any:
    """cow.c's R/O pin test on a previously shared page: the page stays
    mapped read-only in the parent after its child exits; a read-only
    long-term pin (the gup_test ioctl's) races the parent's write."""
    s = kernel.system(cpus=2)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.poke(a, 1)
    child = p.fork()
    child.exit()
    pinned: list[Any] = []

    def pinner(t: Thread) -> None:
        pinned.extend(t.pin_user_pages(a, 1, longterm=True))

    def writer(t: Thread) -> None:
        t.store(a, 0xFF)

    p.thread(pinner, cpu=0, name="pinner")
    p.thread(writer, cpu=1, name="writer")
    return _pin_must_see_mapping(p, a, pinned, "pinned page")


@scenario(
    name="fork-write-pinned-page",
    summary="fork of a process holding a write pin (an io_uring fixed buffer) shares the "
    "pinned page; the parent's next write copies it away from the pin",
    references=(
        "70e806e4e645 mm: Do early cow for pinned pages during fork() for ptes (5.9)",
        f"{COW_C}: fork() with an iouring fixed buffer",
    ),
    base=Kernel(release="5.8"),
    fixes=("fork-copy-pinned",),
    expect={
        "current": "clean",
        "base": "wrong-data",
        "base+fork-copy-pinned": "clean",
        "current-fork-copy-pinned": "wrong-data",
    },
    notes={
        "base": "fork write-protects the pinned page in both; the parent's write copies",
        "base+fork-copy-pinned": "fork gives the child a copy; the parent keeps the "
        "pinned page writable",
    },
    explore=K3,
)
def fork_write_pinned_page(kernel: Kernel) -> Any:
    """A write long-term pin (io_uring register_buffers), then a fork
    racing a write by the parent: the pinned page must stay the parent's."""
    s = kernel.system(cpus=2)
    p = s.process()
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.poke(a, 1)
    pinned = p.pin_user_pages(a, 1, write=True, longterm=True)

    def forker(t: Thread) -> None:
        t.fork()

    def writer(t: Thread) -> None:
        t.store(a, 2)

    p.thread(forker, cpu=0, name="fork")
    p.thread(writer, cpu=1, name="writer")
    return _pin_must_see_mapping(p, a, pinned, "pinned page")


CATALOG = (
    vmsplice_child_leak,
    ro_longterm_pin_zero_page,
    ro_pin_previously_shared,
    fork_write_pinned_page,
)

__all__ = ["CATALOG"]

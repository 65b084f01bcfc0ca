"""For each GUP/COW era switch, the single-threaded outcome a user of that
release saw (the cases of tools/testing/selftests/mm/cow.c and
gup_longterm.c that one small page can express), and the livelock the
unshare rule causes without PageAnonExclusive, reported within its bound."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from mmkit import ANON, RW, folio_at, run1

import mmrace.mm.gup as gup
from mmrace.engine import explore
from mmrace.mm.gup import (
    FOLL_COW,
    FOLL_FORCE,
    FOLL_WRITE,
    GUP_SOLO_RETRY_LIMIT,
    can_follow_write_pte,
)
from mmrace.mm.memory import FAULT_FLAG_UNSHARE, handle_mm_fault
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.mm.page_alloc import WORD_SIZE, pfn_folio
from mmrace.mm.pgtable import (
    peek_pte,
    pte_dirty,
    pte_mkdirty,
    pte_pfn,
    pte_special,
    pte_write,
)
from mmrace.mm.vma import find_vma
from mmrace.user import (
    CLEAR_REFS_SOFT_DIRTY,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_READ,
    Process,
    System,
)

WORD = WORD_SIZE  # one naturally aligned 8-byte word of user memory


def _outcome(fn: Callable[[], Any]) -> Any:
    out: list[Any] = []
    run1(lambda: out.append(fn()))
    return out[0]


def _system(kernel: str | None, with_: tuple[str, ...] = (), without: tuple[str, ...] = (),
            policies: dict[str, str] | None = None) -> System:
    return System(kernel=kernel, with_=with_, without=without, policies=policies)


# --- the vmsplice leak (CVE-2020-29374) and its eras --------------------------------


def _vmsplice(how: str, kernel: str | None, **kw: Any) -> bool:
    """cow.c's three vmsplice tests; True if the pipe still reads the old
    contents (the test passes)."""

    def fn() -> bool:
        p = _system(kernel, **kw).process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        if how == "unmap in child":  # the child splices, unmaps; the parent writes
            c = p.fork()
            r, w = c.pipe()
            c.vmsplice(w, a, WORD)
            c.munmap(a, PAGE_SIZE)
            p.poke(a, 2)
            return c.read(r) == [1]
        r, w = p.pipe()
        if how == "before fork":
            p.vmsplice(w, a, WORD)
        c = p.fork()
        if how == "after fork":
            p.vmsplice(w, a, WORD)
        p.munmap(a, PAGE_SIZE)  # the parent unmaps; the child writes
        c.poke(a, 2)
        return p.read(r) == [1]

    return bool(_outcome(fn))


VMSPLICE_ERAS: list[tuple[str, dict[str, Any], dict[str, bool]]] = [
    ("5.7", {}, {"unmap in child": False, "after fork": False, "before fork": False}),
    ("5.8", {}, {"unmap in child": True, "after fork": True, "before fork": False}),
    ("5.9", {}, {"unmap in child": True, "after fork": True, "before fork": True}),
    ("5.18", {}, {"unmap in child": True, "after fork": True, "before fork": True}),
    ("current", {}, {"unmap in child": True, "after fork": True, "before fork": True}),
    # 5.8's COW break removed without 5.9's page_count reuse: the leak is back.
    ("5.8", {"with_": ("gup-remove-enforced-cow",)},
     {"unmap in child": False, "after fork": False, "before fork": False}),
    # today's kernel with the COW break for reads put back: still no leak.
    ("current", {"without": ("gup-remove-enforced-cow",)},
     {"unmap in child": True, "after fork": True, "before fork": True}),
]


@pytest.mark.parametrize("kernel, kw, expect", VMSPLICE_ERAS,
                         ids=[f"{k}{'+' if kw else ''}{'-'.join(map(str, kw.values()))}"
                              for k, kw, _ in VMSPLICE_ERAS])
def test_vmsplice_leak_by_era(kernel: str, kw: dict[str, Any], expect: dict[str, bool]) -> None:
    release = None if kernel == "current" else kernel
    got = {how: _vmsplice(how, release, **kw) for how in expect}
    assert got == expect


def test_5_8_breaks_cow_for_a_read_only_get() -> None:
    def fn(kernel: str) -> tuple[bool, bool]:
        def inner() -> tuple[bool, bool]:
            p = _system(kernel).process()
            a = p.mmap(0, PAGE_SIZE, RW, ANON)
            p.poke(a, 1)
            c = p.fork()
            shared = folio_at(p, a)
            page = c.get_user_pages(a)[0]
            out = (page is shared, folio_at(c, a) is page)
            c.put_page(page)
            return out

        return tuple(_outcome(inner))  # type: ignore[return-value]

    assert fn("5.7") == (True, True)  # the shared page itself
    assert fn("5.8") == (False, True)  # the child's own copy, mapped in its place
    assert fn("5.9") == (True, True)


# --- read-only pins: unsharing (5.19) ---------------------------------------------------


def _ro_pin(case: str, kernel: str | None, longterm: bool = True, **kw: Any) -> bool:
    """cow.c's R/O pin tests: True if the pin sees the process's later write."""

    def fn() -> bool:
        p = _system(kernel, **kw).process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        if case in ("shared", "previously shared"):
            c = p.fork()
            if case == "previously shared":
                c.exit()
        elif case == "R/O exclusive":
            p.mprotect(a, PAGE_SIZE, PROT_READ)
            p.clear_refs(CLEAR_REFS_SOFT_DIRTY)
            p.mprotect(a, PAGE_SIZE, RW)
            assert not pte_write(peek_pte(p.mm, a))
        pins = p.pin_user_pages(a, 1, longterm=longterm)
        p.poke(a, 0xFF)
        ok = p.read_page(pins[0]) == 0xFF
        p.unpin(pins)
        return ok

    return bool(_outcome(fn))


RO_PIN_ERAS = [
    ("5.7", {"shared": False, "previously shared": True, "R/O exclusive": True}),
    # 5.8's COW break makes every pin a write fault: the pin gets a writable page
    ("5.8", {"shared": True, "previously shared": True, "R/O exclusive": True}),
    ("5.18", {"shared": False, "previously shared": False, "R/O exclusive": False}),
    ("5.19", {"shared": True, "previously shared": True, "R/O exclusive": True}),
    ("current", {"shared": True, "previously shared": True, "R/O exclusive": True}),
]


@pytest.mark.parametrize("kernel, expect", RO_PIN_ERAS, ids=[k for k, _ in RO_PIN_ERAS])
def test_read_only_pin_reliability_by_era(kernel: str, expect: dict[str, bool]) -> None:
    release = None if kernel == "current" else kernel
    assert {case: _ro_pin(case, release) for case in expect} == expect


def test_read_only_get_never_unshares() -> None:
    def fn() -> bool:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        p.fork()
        shared = folio_at(p, a)
        page = p.get_user_pages(a)[0]
        p.put_page(page)
        return page is shared and folio_at(p, a) is shared

    assert _outcome(fn)


# --- read-only long-term pins of non-anonymous pages (6.2) ------------------------------


def _longterm(backing: str, kernel: str | None, longterm: bool = True) -> int:
    """What a read-only pin of the zero page or a private file page reads
    after the process wrote 7 there."""

    def fn() -> int:
        s = System(kernel=kernel)
        p = s.process()
        if backing == "zero page":
            a = p.mmap(0, PAGE_SIZE, RW, ANON)
        else:
            a = p.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE, s.open_file("data"))
        p.peek(a)
        pins = p.pin_user_pages(a, 1, longterm=longterm)
        p.poke(a, 7)
        got = p.read_page(pins[0])
        p.unpin(pins)
        return got

    return int(_outcome(fn))


@pytest.mark.parametrize("backing", ["zero page", "page cache"])
def test_read_only_longterm_pin_of_a_shared_page_by_era(backing: str) -> None:
    assert _longterm(backing, "5.7") == 0
    assert _longterm(backing, "5.8") == 7  # the forced COW break maps a page of its own
    assert _longterm(backing, "6.1") == 0  # the pin stayed on the shared page
    assert _longterm(backing, "6.2") == 7  # unshared first: the pin is the mapped page
    assert _longterm(backing, None) == 7
    assert _longterm(backing, None, longterm=False) == 0  # short-term: snapshot semantics


@pytest.mark.parametrize("kernel, unshared", [("6.1", False), ("6.2", True)])
def test_unsharing_fault_on_the_zero_page(kernel: str, unshared: bool) -> None:
    """5.19-6.1: ``FAULT_FLAG_UNSHARE`` leaves a page that is not anonymous
    alone; 6.2: copies it into an exclusive anonymous page, read-only."""

    def fn() -> None:
        p = System(kernel=kernel).process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.peek(a)
        mmap_read_lock(p.mm)
        vma = find_vma(p.mm, a)
        assert vma is not None
        handle_mm_fault(vma, a, FAULT_FLAG_UNSHARE)
        mmap_read_unlock(p.mm)
        pte = peek_pte(p.mm, a)
        assert not pte_write(pte)
        assert pte_special(pte) != unshared
        if unshared:
            f = pfn_folio(pte_pfn(pte))
            assert f.anon and f.anon_exclusive[0]

    run1(fn)


# --- FOLL_FORCE through /proc/PID/mem (FOLL_COW until 6.0) ------------------------------


def _proc_mem(kernel: str | None, setup: str) -> tuple[int, int, int]:
    """(faults taken, the process's value, the page cache's value) after a
    /proc/PID/mem write of 5 into a read-only private mapping."""
    faults: list[int] = []
    real = gup.faultin_page

    def counting(*args: Any) -> Any:
        faults.append(1)
        return real(*args)

    def fn() -> tuple[int, int, int]:
        s = System(kernel=kernel)
        p = s.process()
        if setup == "file":
            fd = s.open_file("data")
            a = p.mmap(0, PAGE_SIZE, PROT_READ, MAP_PRIVATE, fd)
            p.peek(a)
        else:
            a = p.mmap(0, PAGE_SIZE, PROT_READ, ANON)
            if setup == "zero page":
                p.peek(a)
        gup.faultin_page = counting  # type: ignore[assignment]
        try:
            p.proc_mem_write(a, 5)
        finally:
            gup.faultin_page = real  # type: ignore[assignment]
        cache = s.files["data"].f_mapping.i_pages[0] if setup == "file" else None
        return len(faults), p.peek(a), cache.contents.get(0, 0) if cache else 0

    return _outcome(fn)  # type: ignore[no-any-return]


@pytest.mark.parametrize("setup, foll_cow_faults", [("untouched", 2), ("zero page", 1),
                                                    ("file", 1)])
def test_foll_force_write_by_era(setup: str, foll_cow_faults: int) -> None:
    """Both eras write the private copy and never the page cache; the
    FOLL_COW era needs a second write fault on a page it allocated
    read-only and clean (to get VM_FAULT_WRITE and a dirty PTE)."""
    for kernel in ("5.19", "5.8"):
        assert _proc_mem(kernel, setup) == (foll_cow_faults, 5, 0)
    assert _proc_mem("6.0", setup) == (1, 5, 0)
    assert _proc_mem(None, setup) == (1, 5, 0)


@pytest.mark.parametrize("kernel, followed", [("5.19", True), ("6.0", False)])
def test_foll_cow_followed_any_dirty_read_only_pte(kernel: str, followed: bool) -> None:
    """The CVE-2022-2590 mechanism: with FOLL_COW set, a dirty read-only PTE
    of a page-cache page (what UFFDIO_CONTINUE could install on shmem) was
    followed for writing; since 6.0 only an exclusive anon page is."""

    def fn() -> bool:
        s = System(kernel=kernel)
        p = s.process()
        a = p.mmap(0, PAGE_SIZE, PROT_READ, MAP_PRIVATE, s.open_file("data"))
        p.peek(a)
        pte = pte_mkdirty(peek_pte(p.mm, a))
        assert pte_dirty(pte) and not pte_write(pte)
        folio = pfn_folio(pte_pfn(pte))
        mmap_read_lock(p.mm)
        vma = find_vma(p.mm, a)
        assert vma is not None
        ok = can_follow_write_pte(pte, folio, vma, FOLL_WRITE | FOLL_FORCE | FOLL_COW)
        mmap_read_unlock(p.mm)
        return ok

    assert _outcome(fn) == followed


# --- fork of a process holding a write pin ------------------------------------------------


def _fork_pinned(kernel: str | None, previously_shared: bool = False) -> bool:
    """True if the write-pinned page is still the parent's after fork and a
    write by the parent (cow.c's "fork() with an iouring fixed buffer")."""

    def fn() -> bool:
        p = System(kernel=kernel).process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(a, 1)
        if previously_shared:
            p.fork().exit()  # the page is reused later, never marked exclusive pre-5.19
        pins = p.pin_user_pages(a, 1, write=True, longterm=True)
        c = p.fork()
        p.poke(a, 2)
        ok = p.read_page(pins[0]) == 2 and folio_at(p, a) is pins[0] and c.peek(a) == 1
        p.unpin(pins)
        return ok

    return bool(_outcome(fn))


@pytest.mark.parametrize("kernel, reliable", [("5.7", False), ("5.8", False), ("5.9", True),
                                              ("5.18", True), ("5.19", True), (None, True)])
def test_fork_with_a_write_pin_by_era(kernel: str | None, reliable: bool) -> None:
    assert _fork_pinned(kernel) == reliable
    assert _fork_pinned(kernel, previously_shared=True) == reliable


# --- the livelock ------------------------------------------------------------------------


def _previously_shared_pin(p: Process) -> int:
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    p.poke(a, 1)
    p.fork().exit()
    return a


def test_unshare_without_anon_exclusive_is_a_livelock_in_set_up() -> None:
    faults: list[int] = []
    real = gup.faultin_page

    def counting(*args: Any) -> Any:
        faults.append(1)
        return real(*args)

    def program() -> None:
        p = System(policies={"cow-reuse": "page_count"}).process()
        a = _previously_shared_pin(p)
        gup.faultin_page = counting  # type: ignore[assignment]
        try:
            p.pin_user_pages(a, 1)
        finally:
            gup.faultin_page = real  # type: ignore[assignment]

    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is not None and r.violation.kind == "livelock"
    assert "__get_user_pages" in r.violation.title and "retry loop" in r.violation.title
    assert "PageAnonExclusive" in r.violation.message
    assert len(faults) == GUP_SOLO_RETRY_LIMIT


def test_livelock_in_a_thread_is_reported_once_it_runs_alone() -> None:
    def program() -> None:
        s = System(kernel="5.18", with_=("gup-unshare-anon-ro-pin",))
        p = s.process()
        q = s.process()
        a = _previously_shared_pin(p)
        b = q.mmap(0, PAGE_SIZE, RW, ANON)
        p.thread(lambda t: t.pin_user_pages(a, 1), cpu=0, name="pinner")
        q.thread(lambda t: [t.store(b, i) for i in range(3)], cpu=1, name="busy")

    r = explore(program, strategy="bounded", preemption_bound=1, max_executions=50)
    assert r.violation is not None and r.violation.kind == "livelock"
    assert r.executions == 1


def test_a_pin_racing_faults_is_not_a_livelock() -> None:
    """Retries caused by other threads (a store racing the unsharing pin)
    never count towards the bound."""

    def program() -> None:
        p = System().process()
        a = _previously_shared_pin(p)
        p.thread(lambda t: t.unpin(t.pin_user_pages(a, 1)), cpu=0, name="pinner")
        p.thread(lambda t: t.store(a, 2), cpu=1, name="writer")

    r = explore(program, strategy="bounded", preemption_bound=2)
    assert r.violation is None and r.complete, r.violation and r.violation.message

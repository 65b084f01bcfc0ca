"""GUP flag combinations on the current kernel: which page each lookup
grabs, and what it does to refcounts, pin counts and MMF_HAS_PINNED; the
errors GUP returns for ranges it cannot take."""

from __future__ import annotations

import errno

import pytest
from mmkit import ANON, RW, check_accounting, folio_at, run1

from mmrace.mm.gup import (
    FOLL_FORCE,
    FOLL_GET,
    FOLL_LONGTERM,
    FOLL_PIN,
    FOLL_WRITE,
    get_user_pages_unlocked,
    gup_put_folio,
    pin_user_pages_unlocked,
    try_grab_folio,
)
from mmrace.mm.mm_types import VM_IO, VM_PFNMAP
from mmrace.mm.page_alloc import (
    GUP_PIN_COUNTING_BIAS,
    Folio,
    folio_alloc,
    folio_maybe_dma_pinned,
    mem_state,
)
from mmrace.mm.pgtable import peek_pte, pte_write
from mmrace.user import (
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE_SIZE,
    PROT_NONE,
    PROT_READ,
    Process,
    System,
)

GET, PIN = FOLL_GET, FOLL_PIN

# state -> flags -> (grabbed page is the one mapped before?, refcount added to
# the grabbed page, mapped read-only and exclusive anon afterwards?)
EXPECT: dict[str, dict[int, tuple[bool, int, bool]]] = {
    "exclusive": {
        GET: (True, 1, False),
        GET | FOLL_WRITE: (True, 1, False),
        PIN: (True, GUP_PIN_COUNTING_BIAS, False),
        PIN | FOLL_WRITE: (True, GUP_PIN_COUNTING_BIAS, False),
        PIN | FOLL_LONGTERM: (True, GUP_PIN_COUNTING_BIAS, False),
    },
    "shared": {  # after fork: write-protected in parent and child
        GET: (True, 1, False),  # a reference never unshares
        GET | FOLL_WRITE: (False, 1, False),  # COW: the parent's own copy
        PIN: (False, GUP_PIN_COUNTING_BIAS, True),  # unshared: a R/O exclusive copy
        PIN | FOLL_LONGTERM: (False, GUP_PIN_COUNTING_BIAS, True),
        PIN | FOLL_WRITE: (False, GUP_PIN_COUNTING_BIAS, False),
    },
    "zero": {  # a read mapped the shared zero page
        GET: (True, 0, False),  # the zero page is not refcounted in the model
        PIN: (True, 0, False),  # a short-term R/O pin may stay on it
        PIN | FOLL_LONGTERM: (False, GUP_PIN_COUNTING_BIAS, True),
        GET | FOLL_WRITE: (False, 1, False),
    },
    "pagecache": {  # a read of a private file mapping
        GET: (True, 1, False),
        PIN: (True, GUP_PIN_COUNTING_BIAS, False),
        PIN | FOLL_LONGTERM: (False, GUP_PIN_COUNTING_BIAS, True),
        PIN | FOLL_WRITE: (False, GUP_PIN_COUNTING_BIAS, False),
    },
}


def _setup(state: str) -> tuple[Process, int, list[Process]]:
    """The process, the address, and every process mapping the page."""
    s = System()
    p = s.process()
    if state == "pagecache":
        fd = s.open_file("data")
        a = p.mmap(0, PAGE_SIZE, RW, MAP_PRIVATE, fd)
        p.peek(a)
        return p, a, [p]
    a = p.mmap(0, PAGE_SIZE, RW, ANON)
    if state == "zero":
        p.peek(a)
    else:
        p.poke(a, 1)
    if state == "shared":
        return p, a, [p, p.fork()]
    return p, a, [p]


def _cases() -> list[tuple[str, int]]:
    return [(state, flags) for state, table in EXPECT.items() for flags in table]


@pytest.mark.parametrize("state, flags", _cases())
def test_gup_flag_effects(state: str, flags: int) -> None:
    same, added, unshared = EXPECT[state][flags]

    def program() -> None:
        p, a, procs = _setup(state)
        mm = p.mm
        before = folio_at(p, a) or mem_state().zero
        assert before is not None
        refs = before._refcount
        gup = pin_user_pages_unlocked if flags & PIN else get_user_pages_unlocked
        pages = gup(mm, a, 1, flags & ~(PIN | GET))
        page = pages[0]
        assert (page is before) == same
        base = refs if same else (0 if page.is_zero else 1)  # a new page has its mapping's
        assert page._refcount - base == added
        assert folio_maybe_dma_pinned(page) == bool(added >= GUP_PIN_COUNTING_BIAS)
        assert bool(mm.has_pinned.value) == bool(flags & PIN)
        mapped = folio_at(p, a)
        assert mapped is (None if page.is_zero else page)
        if unshared:
            assert page.anon and page.anon_exclusive[0]
            assert not pte_write(peek_pte(mm, a))  # unsharing does not make it writable
        gup_put_folio(page, 1, flags)
        check_accounting(procs)

    run1(program)


def test_large_folio_pin_counts_in_pincount() -> None:
    def program() -> None:
        System().process()
        f: Folio = folio_alloc(9)
        try_grab_folio(f, FOLL_PIN)
        assert (f._refcount, f._pincount) == (2, 1) and folio_maybe_dma_pinned(f)
        try_grab_folio(f, FOLL_GET)
        assert (f._refcount, f._pincount) == (3, 1)
        gup_put_folio(f, 1, FOLL_GET)
        gup_put_folio(f, 1, FOLL_PIN)
        assert (f._refcount, f._pincount) == (1, 0) and not folio_maybe_dma_pinned(f)

    run1(program)


def test_short_count_at_the_end_of_a_mapping() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0x10000000, 2 * PAGE_SIZE, RW, ANON | 0x10)  # MAP_FIXED
        pages = p.get_user_pages(a, 4)
        assert len(pages) == 2
        p.put_page(pages)
        check_accounting([p])

    run1(program)


def _gup_errno(prot: int, special: int = 0, flags: int = 0, shared: bool = False,
               addr_off: int = 0) -> int | None:
    out: list[int | None] = []

    def program() -> None:
        s = System()
        p = s.process()
        if special:
            s.create_file("dev", special=special)
            fd = p.open("dev")
            a = p.mmap(0, PAGE_SIZE, prot, MAP_SHARED, fd)
        elif shared:
            fd = s.open_file("f")
            a = p.mmap(0, PAGE_SIZE, prot, MAP_SHARED, fd)
        else:
            a = p.mmap(0, PAGE_SIZE, prot, ANON)
        try:
            get_user_pages_unlocked(p.mm, a + addr_off, 1, flags)
            out.append(None)
        except OSError as e:
            out.append(e.errno)

    run1(program)
    return out[0]


def test_gup_refuses_what_the_kernel_refuses() -> None:
    assert _gup_errno(RW, addr_off=PAGE_SIZE) == errno.EFAULT  # unmapped
    assert _gup_errno(PROT_NONE) == errno.EFAULT
    assert _gup_errno(PROT_NONE, flags=FOLL_FORCE) is None  # VM_MAYREAD: ptrace may read
    assert _gup_errno(PROT_READ, flags=FOLL_WRITE) == errno.EFAULT
    assert _gup_errno(PROT_READ, flags=FOLL_WRITE | FOLL_FORCE) is None  # COW mapping
    assert _gup_errno(PROT_READ, flags=FOLL_WRITE | FOLL_FORCE, shared=True) == errno.EFAULT
    assert _gup_errno(RW, special=VM_IO | VM_PFNMAP) == errno.EFAULT


def test_get_and_pin_together_or_longterm_get_are_invalid() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        for flags in (FOLL_PIN, FOLL_LONGTERM):
            with pytest.raises(OSError) as e:
                get_user_pages_unlocked(p.mm, a, 1, flags)
            assert e.value.errno == errno.EINVAL

    run1(program)


def test_gup_must_unshare_without_a_vma_sends_long_term_pins_to_the_slow_path() -> None:
    """GUP-fast has no VMA: a R/O long-term pin of a page that is not
    anonymous must fall back (6.2), a short-term one need not."""
    from mmrace.mm.gup import gup_must_unshare

    def program() -> None:
        p = System().process()
        p.peek(p.mmap(0, PAGE_SIZE, RW, ANON))  # maps the zero page
        zero = mem_state().zero
        assert zero is not None
        assert gup_must_unshare(None, FOLL_PIN | FOLL_LONGTERM, zero, mm=p.mm)
        assert not gup_must_unshare(None, FOLL_PIN, zero, mm=p.mm)
        old = System(kernel="6.1").process()
        assert not gup_must_unshare(None, FOLL_PIN | FOLL_LONGTERM, zero, mm=old.mm)

    run1(program)

"""Random mmap/munmap/mprotect/mlock/mremap sequences against a
page-granular reference model of the address space.

With no faults (so no anon_vmas), the kernel's merge rules make adjacent
compatible VMAs always merge: the VMA layout must be exactly the maximal runs
of pages with equal flags and continuous pgoff. An unfaulted anonymous VMA
that mremap moves takes the pgoff of its new address, so a page's pgoff is
always its page number here.
"""

from __future__ import annotations

from typing import Any

import greenlet
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mmrace.engine import explore
from mmrace.mm.mm_types import (
    VM_ACCESS_FLAGS,
    VM_ACCOUNT,
    VM_DONTCOPY,
    VM_LOCKED,
    VM_LOCKONFAULT,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYWRITE,
    VM_SOFTDIRTY,
    VM_WRITE,
)
from mmrace.user import (
    MADV_DOFORK,
    MADV_DONTFORK,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MLOCK_ONFAULT,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_SIZE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    System,
    for_each_vma,
)

BASE = 0x10000000
WINDOW = 24  # pages


class Session:
    """Keeps one execution's set-up code alive across Hypothesis steps: the
    program runs in its own greenlet and executes the callables it is sent."""

    def __init__(self) -> None:
        self.main = greenlet.getcurrent()
        self.glet = greenlet.greenlet(self._explore)
        self.glet.switch()

    def _explore(self) -> None:
        explore(self._program, max_executions=1, shrink=False)

    def _program(self) -> None:
        msg = self.main.switch(None)
        while msg is not None:
            try:
                res: tuple[str, Any] = ("ok", msg())
            except BaseException as exc:  # returned to the test
                res = ("err", exc)
            msg = self.main.switch(res)

    def call(self, fn: Any) -> Any:
        kind, value = self.glet.switch(fn)
        if kind == "err":
            raise value
        return value

    def close(self) -> None:
        if not self.glet.dead:
            self.glet.switch(None)


def _errno(fn: Any) -> int:
    try:
        fn()
    except OSError as e:
        return int(e.errno or -1)
    return 0


class AddressSpace(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = Session()
        self.proc = self.s.call(lambda: System().process())
        self.pages: dict[int, tuple[int, int]] = {}  # page number -> (vm_flags, pgoff)

    def teardown(self) -> None:
        self.s.close()

    # -- reference semantics ---------------------------------------------------

    def _ref_map(self, addr: int, npages: int, prot: int) -> None:
        flags = (prot & 7) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
        if flags & VM_WRITE:
            flags |= VM_ACCOUNT
        first = addr // PAGE_SIZE
        for i in range(npages):
            self.pages[first + i] = (flags, first + i)

    def _ref_range(self, start: int, npages: int, change: Any) -> int:
        """Apply *change* page by page until a hole: ENOMEM at a hole."""
        first = start // PAGE_SIZE
        for p in range(first, first + npages):
            if p not in self.pages:
                return 12
            flags, pgoff = self.pages[p]
            self.pages[p] = (change(flags), pgoff)
        return 0

    # -- rules -------------------------------------------------------------------

    pages_st = st.integers(0, WINDOW - 1)
    len_st = st.integers(1, 8)
    prot_st = st.sampled_from([PROT_READ, PROT_READ | PROT_WRITE, PROT_READ | PROT_EXEC, 0])

    @rule(page=pages_st, npages=len_st, prot=prot_st)
    def mmap_fixed(self, page: int, npages: int, prot: int) -> None:
        addr = BASE + page * PAGE_SIZE
        got = self.s.call(lambda: self.proc.mmap(
            addr, npages * PAGE_SIZE, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED))
        assert got == addr
        self._ref_map(addr, npages, prot)

    @rule(npages=len_st, prot=prot_st)
    def mmap_anywhere(self, npages: int, prot: int) -> None:
        got = self.s.call(lambda: self.proc.mmap(
            0, npages * PAGE_SIZE, prot, MAP_PRIVATE | MAP_ANONYMOUS))
        first = got // PAGE_SIZE
        assert all(first + i not in self.pages for i in range(npages))
        self._ref_map(got, npages, prot)

    @rule(page=pages_st, npages=len_st)
    def munmap(self, page: int, npages: int) -> None:
        addr = BASE + page * PAGE_SIZE
        self.s.call(lambda: self.proc.munmap(addr, npages * PAGE_SIZE))
        for p in range(addr // PAGE_SIZE, addr // PAGE_SIZE + npages):
            self.pages.pop(p, None)

    @rule(page=pages_st, npages=len_st, prot=prot_st)
    def mprotect(self, page: int, npages: int, prot: int) -> None:
        addr = BASE + page * PAGE_SIZE
        err = self.s.call(lambda: _errno(
            lambda: self.proc.mprotect(addr, npages * PAGE_SIZE, prot)))

        def change(old: int) -> int:
            new = (prot & 7) | (old & ~VM_ACCESS_FLAGS)
            if new == old:
                return old
            if new & VM_WRITE:
                if not old & (VM_ACCOUNT | VM_WRITE):
                    new |= VM_ACCOUNT
            elif old & VM_ACCOUNT:
                new &= ~VM_ACCOUNT  # anonymous, no anon_vma yet
            return new

        assert err == self._ref_range(addr, npages, change)

    @rule(page=pages_st, npages=len_st, lock=st.booleans())
    def mlock(self, page: int, npages: int, lock: bool) -> None:
        # MLOCK_ONFAULT: plain mlock populates the range, and a write fault
        # gives the VMA an anon_vma, which this fault-free reference model
        # deliberately leaves out (the page-level state machine covers it).
        addr = BASE + page * PAGE_SIZE
        length = npages * PAGE_SIZE
        if lock:
            err = self.s.call(lambda: _errno(
                lambda: self.proc.mlock2(addr, length, MLOCK_ONFAULT)))
        else:
            err = self.s.call(lambda: _errno(lambda: self.proc.munlock(addr, length)))
        locked = VM_LOCKED | VM_LOCKONFAULT
        expected = self._ref_range(
            addr, npages, (lambda f: f | locked) if lock else (lambda f: f & ~locked))
        assert err == expected

    @rule(page=pages_st, npages=len_st, dontfork=st.booleans())
    def madvise_fork(self, page: int, npages: int, dontfork: bool) -> None:
        addr = BASE + page * PAGE_SIZE
        advice = MADV_DONTFORK if dontfork else MADV_DOFORK
        err = self.s.call(lambda: _errno(
            lambda: self.proc.madvise(addr, npages * PAGE_SIZE, advice)))
        # madvise goes on past holes and reports ENOMEM at the end
        expected = 0
        for p in range(addr // PAGE_SIZE, addr // PAGE_SIZE + npages):
            if p not in self.pages:
                expected = 12
                continue
            flags, pgoff = self.pages[p]
            flags = flags | VM_DONTCOPY if dontfork else flags & ~VM_DONTCOPY
            self.pages[p] = (flags, pgoff)
        assert err == expected

    def _run(self, first: int) -> tuple[int, int]:
        """The VMA containing page *first*: its maximal run of pages."""
        flags, _ = self.pages[first]

        def same(p: int) -> bool:
            return p in self.pages and (self.pages[p][0] ^ flags) & ~VM_SOFTDIRTY == 0

        lo = first
        while same(lo - 1):
            lo -= 1
        hi = first + 1
        while same(hi):
            hi += 1
        return lo, hi

    def _ref_mremap(self, first: int, old_n: int, new_n: int, flags: int,
                    dest: int) -> tuple[int, Any]:
        """mremap on the reference, in the kernel's order of checks. Returns
        ``(errno, None)`` or ``(0, place)`` where *place* is the page the
        mapping ends at, None when the kernel chooses it (then
        :meth:`_ref_move` finishes the job with the address it returned)."""
        implies = flags & (MREMAP_FIXED | MREMAP_DONTUNMAP)
        if new_n == 0:
            return 22, None
        if implies and (not flags & MREMAP_MAYMOVE
                        or (flags & MREMAP_DONTUNMAP and old_n != new_n)):
            return 22, None
        if first not in self.pages:
            return 14, None
        if not implies:
            if new_n == old_n:
                return 0, first
            if new_n < old_n:
                for p in range(first + new_n, first + old_n):
                    self.pages.pop(p, None)
                return 0, first
            if old_n == 0:
                return 22, None  # a private mapping cannot be duplicated
            _lo, hi = self._run(first)
            if old_n > hi - first:
                return 14, None
            grow = range(hi, hi + new_n - old_n)
            if hi - first == old_n and not any(p in self.pages for p in grow):
                flags_, _ = self.pages[first]
                for p in grow:
                    self.pages[p] = (flags_, p)
                return 0, first
            if not flags & MREMAP_MAYMOVE:
                return 12, None
            return 0, None
        if dest < first + old_n and first < dest + new_n:
            return 22, None
        if flags & MREMAP_FIXED:
            for p in range(dest, dest + new_n):
                self.pages.pop(p, None)
        if new_n < old_n:
            for p in range(first + new_n, first + old_n):
                self.pages.pop(p, None)
            old_n = new_n
        if old_n == 0:
            return 22, None  # a private mapping cannot be duplicated
        _lo, hi = self._run(first)
        if old_n > hi - first:
            return 14, None
        if flags & MREMAP_FIXED:
            return 0, dest
        return 0, None

    def _ref_move(self, first: int, old_n: int, new_n: int, dontunmap: bool,
                  dest: int) -> None:
        """The move itself: the new pages take the source VMA's flags (and
        their own page number as pgoff); the source pages go, or stay (with
        MREMAP_DONTUNMAP, which must not change the source's flags here)."""
        flags_, _ = self.pages[first]
        assert not any(p in self.pages for p in range(dest, dest + new_n)), "not free"
        if not dontunmap:
            for p in range(first, first + old_n):
                self.pages.pop(p)
        for p in range(dest, dest + new_n):
            self.pages[p] = (flags_, p)

    @rule(page=pages_st, old_n=st.integers(0, 6), new_n=st.integers(0, 8),
          mode=st.sampled_from([0, MREMAP_MAYMOVE, MREMAP_MAYMOVE | MREMAP_FIXED,
                                MREMAP_MAYMOVE | MREMAP_DONTUNMAP,
                                MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP,
                                MREMAP_FIXED]),
          dest=pages_st, mapped=st.booleans(), fit=st.booleans())
    @precondition(lambda self: bool(self.pages))
    def mremap(self, page: int, old_n: int, new_n: int, mode: int, dest: int,
               mapped: bool, fit: bool) -> None:
        first = BASE // PAGE_SIZE + page
        if mapped:
            # mostly a mapped page, and a range within its VMA: else almost
            # every call is EFAULT
            keys = sorted(self.pages)
            first = keys[page % len(keys)]
            if fit:
                old_n = min(old_n, self._run(first)[1] - first)
                if mode & MREMAP_DONTUNMAP:
                    new_n = old_n
        dest_first = BASE // PAGE_SIZE + dest
        if mode & MREMAP_DONTUNMAP and first in self.pages:
            lo, _ = self._run(first)
            if self.pages[lo][0] & (VM_LOCKED | VM_LOCKONFAULT | VM_ACCOUNT):
                # DONTUNMAP clears these flags on the whole old VMA without
                # merging it again: a layout the maximal-run reference
                # cannot describe (tests/mm/test_mremap.py covers it).
                return
        expected, place = self._ref_mremap(first, old_n, new_n, mode, dest_first)

        def call() -> tuple[int, int]:
            try:
                return 0, self.proc.mremap(first * PAGE_SIZE, old_n * PAGE_SIZE,
                                           new_n * PAGE_SIZE, mode, dest_first * PAGE_SIZE)
            except OSError as e:
                return int(e.errno or -1), 0

        err, got = self.s.call(call)
        assert err == expected, (err, expected)
        if err:
            return  # (the invariant checks that nothing else changed)
        if place is not None and place == first and not mode & MREMAP_FIXED:
            assert got == first * PAGE_SIZE
            return
        if place is not None:
            assert got == place * PAGE_SIZE
        got_first = got // PAGE_SIZE
        src_n = min(old_n, new_n)
        self._ref_move(first, src_n, new_n, bool(mode & MREMAP_DONTUNMAP), got_first)

    # -- the check -------------------------------------------------------------------

    def _expected(self) -> list[tuple[int, int, int, int]]:
        out: list[list[int]] = []
        for p in sorted(self.pages):
            flags, pgoff = self.pages[p]
            if out:
                last = out[-1]
                if (last[1] == p * PAGE_SIZE
                        and (last[2] ^ flags) & ~VM_SOFTDIRTY == 0
                        and last[3] + (last[1] - last[0]) // PAGE_SIZE == pgoff):
                    last[1] += PAGE_SIZE
                    continue
            out.append([p * PAGE_SIZE, (p + 1) * PAGE_SIZE, flags, pgoff])
        return [(a, b, c, d) for a, b, c, d in out]

    @invariant()
    def layout_matches(self) -> None:
        mm = self.proc.mm
        # VM_SOFTDIRTY (set on every new mapping) is not part of the layout.
        got = [(v.raw("vm_start"), v.raw("vm_end"), v.raw("vm_flags") & ~VM_SOFTDIRTY,
                v.raw("vm_pgoff"))
               for v in for_each_vma(mm)]
        assert got == self._expected()
        assert mm.map_count == len(got)
        for start, end, vma in mm.mm_mt.entries():
            assert (start, end) == (vma.raw("vm_start"), vma.raw("vm_end"))


TestAddressSpace = AddressSpace.TestCase
TestAddressSpace.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)

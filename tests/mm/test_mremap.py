"""mremap, single-threaded: shrinking, growing in place, moving (PTE by PTE,
a whole PTE table, a whole PMD table), MREMAP_FIXED and MREMAP_DONTUNMAP,
every errno, and that a failed call leaves the address space as it was."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from mmkit import check_accounting, folio_at, run1
from thpkit import check_accounting as thp_accounting

from mmrace.engine import current_execution, explore, spawn
from mmrace.mm import mremap as mremap_mod
from mmrace.mm.mm_types import VM_ACCOUNT, VM_LOCKED, VM_UFFD_WP
from mmrace.mm.mmap_lock import mmap_write_lock, mmap_write_unlock
from mmrace.mm.pgtable import (
    PMD_SIZE,
    PUD_SIZE,
    all_tables,
    lookup_pte,
    peek_pte,
    pmd_trans_huge,
    pte_present,
    pte_soft_dirty,
    pte_uffd_wp,
    walk_to_pmd,
)
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_LOCKED,
    MAP_PRIVATE,
    MAP_SHARED,
    MREMAP_DONTUNMAP,
    MREMAP_FIXED,
    MREMAP_MAYMOVE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    UFFDIO_REGISTER_MODE_WP,
    Process,
    System,
    for_each_vma,
    vma_find,
)

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
MOVE = MREMAP_MAYMOVE | MREMAP_FIXED
BASE = 0x30000000
OLD = 0x7E0000000000  # PMD aligned
NEW = 0x7E0000400000


def err(fn: Any, *args: Any) -> int:
    with pytest.raises(OSError) as info:
        fn(*args)
    return int(info.value.errno or 0)


def segv(proc: Process, addr: int) -> bool:
    """Whether an access to *addr* kills the program (SIGSEGV/SIGBUS)."""
    from mmrace.mm.memory import do_user_addr_fault

    try:
        do_user_addr_fault(proc.mm, addr, False)
    except OSError:
        return True
    return False


def snapshot(proc: Process) -> Any:
    """The address space as the reference compares it: every VMA's fields,
    every PTE by address, and the counters."""
    mm = proc.mm
    vmas = [(v.raw("vm_start"), v.raw("vm_end"), v.raw("vm_flags"), v.raw("vm_pgoff"),
             v.raw("vm_file"), v.raw("anon_vma"), v.raw("vm_userfaultfd_ctx"))
            for v in for_each_vma(mm)]
    ptes = {t.addr_of(i): e for t in all_tables(mm) if t.level == 1
            for i, e in t.entries.items()}
    return vmas, ptes, mm.map_count, mm.total_vm, mm.locked_vm


def fill(proc: Process, addr: int, npages: int, first: int = 100) -> None:
    for i in range(npages):
        proc.poke(addr + i * P, first + i)


def values(proc: Process, addr: int, npages: int) -> list[int]:
    return [proc.peek(addr + i * P) for i in range(npages)]


# --- semantics --------------------------------------------------------------------------


def test_shrink_unmaps_the_tail_and_same_size_is_a_no_op() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(BASE, 4 * P, RW, ANON | MAP_FIXED)
        fill(p, a, 4)
        assert p.mremap(a, 4 * P, 4 * P, 0) == a
        assert p.mremap(a, 4 * P, 2 * P + 1, 0) == a  # lengths are page aligned
        assert [(m.start, m.end) for m in p.maps()] == [(a, a + 3 * P)]
        assert values(p, a, 3) == [100, 101, 102]
        assert segv(p, a + 3 * P)
        check_accounting([p])

    run1(program)


def test_grow_in_place_merges_with_the_next_vma() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(BASE, 2 * P, RW, ANON | MAP_FIXED)
        p.mmap(BASE + 3 * P, P, RW, ANON | MAP_FIXED)
        fill(p, a, 2)
        assert p.mm.map_count == 2
        assert p.mremap(a, 2 * P, 3 * P, 0) == a
        assert [(m.start, m.end) for m in p.maps()] == [(a, a + 4 * P)]
        assert p.mm.map_count == 1
        vma = vma_find(p.mm, a)
        assert vma.raw("vm_pgoff") == a // P
        assert values(p, a, 2) == [100, 101]
        p.poke(a + 2 * P, 7)  # the grown page faults in
        check_accounting([p])

    run1(program)


def test_grow_blocked_needs_maymove_and_then_the_data_follows() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(BASE, 3 * P, RW, ANON | MAP_FIXED)
        p.mmap(BASE + 3 * P, P, PROT_READ, ANON | MAP_FIXED)
        fill(p, a, 3)
        before = snapshot(p)
        assert err(p.mremap, a, 3 * P, 5 * P, 0) == errno.ENOMEM
        assert snapshot(p) == before
        b = p.mremap(a, 3 * P, 5 * P, MREMAP_MAYMOVE)
        assert b != a
        assert values(p, b, 3) == [100, 101, 102]
        assert segv(p, a)
        assert [(m.start, m.end) for m in p.maps()] == [(BASE + 3 * P, BASE + 4 * P),
                                                        (b, b + 5 * P)]
        vma = vma_find(p.mm, b)
        # a faulted anonymous VMA keeps its pgoff (the pages' index) when it moves
        assert vma.raw("vm_pgoff") == a // P
        assert vma.raw("anon_vma") is not None
        for i in range(3):
            folio = folio_at(p, b + i * P)
            assert folio is not None and folio.mapping is vma.raw("anon_vma")
            assert b + (folio.index - vma.raw("vm_pgoff")) * P == b + i * P  # vma_address
            assert pte_soft_dirty(peek_pte(p.mm, b + i * P))
        check_accounting([p])

    run1(program)


def test_fixed_move_replaces_what_is_at_the_destination() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(BASE, 2 * P, RW, ANON | MAP_FIXED)
        d = p.mmap(BASE + 16 * P, 4 * P, PROT_READ, ANON | MAP_FIXED)
        fill(p, a, 2)
        assert p.mremap(a, 2 * P, 2 * P, MOVE, d + P) == d + P
        assert [(m.start, m.end, m.perms) for m in p.maps()] == [
            (d, d + P, "r--p"), (d + P, d + 3 * P, "rw-p"), (d + 3 * P, d + 4 * P, "r--p")]
        assert values(p, d + P, 2) == [100, 101]
        check_accounting([p])

    run1(program)


def test_move_part_of_a_vma_splits_it_and_keeps_vm_account() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(BASE, 6 * P, RW, ANON | MAP_FIXED)
        fill(p, a, 6)
        b = p.mremap(a + 2 * P, 2 * P, 2 * P, MOVE, BASE + 32 * P)
        assert [(m.start, m.end) for m in p.maps()] == [
            (a, a + 2 * P), (a + 4 * P, a + 6 * P), (b, b + 2 * P)]
        for v in for_each_vma(p.mm):
            assert v.raw("vm_flags") & VM_ACCOUNT
        assert values(p, a, 2) + values(p, b, 2) + values(p, a + 4 * P, 2) == [
            100, 101, 102, 103, 104, 105]
        assert p.mm.total_vm == 6
        check_accounting([p])

    run1(program)


def test_dontunmap_keeps_the_old_vma_empty() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(BASE, 2 * P, RW, ANON | MAP_FIXED | MAP_LOCKED)
        fill(p, a, 2)
        old = vma_find(p.mm, a)
        av = old.raw("anon_vma")
        b = p.mremap(a, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, BASE + 64 * P)
        assert b == BASE + 64 * P  # the hint was free
        assert values(p, b, 2) == [100, 101]
        assert vma_find(p.mm, a) is old
        assert not old.raw("vm_flags") & (VM_LOCKED | VM_ACCOUNT)
        assert vma_find(p.mm, b).raw("vm_flags") & VM_LOCKED
        # the old VMA lost its anon_vma chain: a fault there prepares a new one
        assert old.raw("anon_vma") is None and old.raw("anon_vma_chain") == []
        assert not pte_present(peek_pte(p.mm, a))
        assert values(p, a, 2) == [0, 0]
        p.poke(a, 5)
        assert old.raw("anon_vma") not in (None, av)
        assert folio_at(p, a).mapping is old.raw("anon_vma")
        check_accounting([p])

    run1(program)


def test_file_mapping_moves_with_its_pgoff_and_rmap() -> None:
    def program() -> None:
        s = System()
        p = s.process()
        fd = s.open_file("/data", 16 * P)
        a = p.mmap(BASE, 4 * P, RW, MAP_SHARED | MAP_FIXED, fd, 2 * P)
        fill(p, a, 4)
        b = p.mremap(a + P, 2 * P, 2 * P, MOVE, BASE + 64 * P)
        assert [(m.start, m.pgoff) for m in p.maps()] == [(a, 2 * P), (a + 3 * P, 5 * P),
                                                         (b, 3 * P)]
        assert values(p, b, 2) == [101, 102]
        mapping = s.files["/data"].f_mapping
        assert sorted(v.raw("vm_start") for v in mapping.i_mmap.values()) == [a, a + 3 * P, b]
        check_accounting([p])
        p.ftruncate(fd, 0)  # the rmap finds the moved pages at their new place
        assert not pte_present(peek_pte(p.mm, b))
        check_accounting([p])

    run1(program)


def test_shared_mapping_duplicated_with_zero_old_len() -> None:
    def program() -> None:
        s = System()
        p = s.process()
        fd = s.open_file("/data", 4 * P)
        a = p.mmap(BASE, 2 * P, RW, MAP_SHARED | MAP_FIXED, fd, 0)
        p.poke(a, 9)
        b = p.mremap(a, 0, 2 * P, MREMAP_MAYMOVE)
        assert b != a and len(p.maps()) == 2
        assert p.peek(b) == 9
        p.poke(b + P, 4)
        assert p.peek(a + P) == 4
        check_accounting([p])

    run1(program)


def test_pmd_aligned_move_moves_the_pte_table() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(OLD, PMD_SIZE, RW, ANON | MAP_FIXED)
        p.poke(a, 1)
        p.poke(a + 9 * P, 2)
        table = lookup_pte(p.mm, a)[0]
        assert p.mremap(a, PMD_SIZE, PMD_SIZE, MOVE, NEW) == NEW
        assert lookup_pte(p.mm, NEW)[0] is table and table.base == NEW
        assert walk_to_pmd(p.mm, OLD)[0].entries.get(walk_to_pmd(p.mm, OLD)[1], 0) == 0
        assert [p.peek(NEW), p.peek(NEW + 9 * P)] == [1, 2]
        check_accounting([p])

    run1(program)


def test_pud_aligned_move_moves_the_pmd_table() -> None:
    def program() -> None:
        p = System().process()
        x, y = 0x600000000000, 0x640000000000
        p.mmap(x, PUD_SIZE, RW, ANON | MAP_FIXED)
        p.poke(x + 3 * PMD_SIZE + 5 * P, 77)
        pmd = walk_to_pmd(p.mm, x)[0]
        assert p.mremap(x, PUD_SIZE, PUD_SIZE, MOVE, y) == y
        assert walk_to_pmd(p.mm, y)[0] is pmd and pmd.base == y
        assert lookup_pte(p.mm, y + 3 * PMD_SIZE)[0].base == y + 3 * PMD_SIZE
        assert p.peek(y + 3 * PMD_SIZE + 5 * P) == 77
        check_accounting([p])

    run1(program)


def test_misaligned_move_is_realigned_to_move_the_table() -> None:
    """try_realign_addr: a VMA starting 16 pages into a PMD, with nothing
    below it, moved to an address equally misaligned: the PTE table moves
    whole."""
    def program() -> None:
        p = System().process()
        a = p.mmap(OLD + 16 * P, PMD_SIZE - 16 * P, RW, ANON | MAP_FIXED)
        p.poke(a, 3)
        table = lookup_pte(p.mm, a)[0]
        b = p.mremap(a, PMD_SIZE - 16 * P, PMD_SIZE - 16 * P, MOVE, NEW + 16 * P)
        assert lookup_pte(p.mm, b)[0] is table
        assert p.peek(b) == 3
        check_accounting([p])

    run1(program)


def test_uffd_context_is_dropped_and_uffd_wp_bits_cleared() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(OLD, PMD_SIZE, RW, ANON | MAP_FIXED)
        p.poke(a, 1)
        uffd = p.userfaultfd()
        uffd.register(a, PMD_SIZE, UFFDIO_REGISTER_MODE_WP)
        uffd.writeprotect(a, P, True)
        assert pte_uffd_wp(peek_pte(p.mm, a))
        table = lookup_pte(p.mm, a)[0]
        assert p.mremap(a, PMD_SIZE, PMD_SIZE, MOVE, NEW) == NEW
        vma = vma_find(p.mm, NEW)
        assert vma.raw("vm_userfaultfd_ctx") is None
        assert not vma.raw("vm_flags") & VM_UFFD_WP
        # no whole-table move for such a VMA: the entries moved one by one
        assert lookup_pte(p.mm, NEW)[0] is not table
        assert not pte_uffd_wp(peek_pte(p.mm, NEW))
        assert p.peek(NEW) == 1

    run1(program)


def test_locked_vma_grown_in_place_is_populated() -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(BASE, P, RW, ANON | MAP_FIXED | MAP_LOCKED)
        assert p.mremap(a, P, 3 * P, 0) == a
        assert all(pte_present(peek_pte(p.mm, a + i * P)) for i in range(3))
        assert p.mm.locked_vm == 3

    run1(program)


# --- errors -----------------------------------------------------------------------------


def test_errnos_and_a_failed_call_changes_nothing() -> None:
    def program() -> None:
        s = System()
        p = s.process()
        pfn = s.create_file("/dev/pfn", 4 * P, special=0x400)  # VM_PFNMAP
        io = s.create_file("/dev/io", 4 * P, special=0x4000)  # VM_IO
        a = p.mmap(BASE, 4 * P, RW, ANON | MAP_FIXED)
        fill(p, a, 4)
        p.mmap(BASE + 4 * P, P, PROT_READ, ANON | MAP_FIXED)
        pf = p.mmap(BASE + 16 * P, P, PROT_READ, MAP_SHARED | MAP_FIXED, p.open("/dev/pfn"))
        iom = p.mmap(BASE + 24 * P, P, PROT_READ, MAP_SHARED | MAP_FIXED, p.open("/dev/io"))
        assert pfn and io
        free = BASE + 64 * P
        cases = [
            (errno.EINVAL, (a, P, P, 8)),  # unknown flag
            (errno.EINVAL, (a + 1, P, P, 0)),  # unaligned address
            (errno.EINVAL, (a, P, 0, 0)),  # no new length
            (errno.EINVAL, (a, P, (1 << 64) - 1, 0)),  # wraps to 0 when aligned
            (errno.EINVAL, (a, P, P, MREMAP_FIXED, free)),  # FIXED needs MAYMOVE
            (errno.EINVAL, (a, P, P, MREMAP_DONTUNMAP, free)),
            (errno.EINVAL, (a, P, P, MOVE, free + 1)),  # unaligned new address
            (errno.EINVAL, (a, P, 2 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, free)),
            (errno.EINVAL, (a, P, P, MOVE, (1 << 47) - P // 2)),  # beyond TASK_SIZE
            (errno.EINVAL, (a, 2 * P, 2 * P, MOVE, a + P)),  # overlapping
            (errno.EINVAL, (a, 0, P, MREMAP_MAYMOVE)),  # duplicate of a private mapping
            (errno.EINVAL, (pf, P, P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, free)),
            (errno.EFAULT, (BASE + 40 * P, P, P, 0)),  # nothing mapped
            (errno.EFAULT, (a, 5 * P, 6 * P, MREMAP_MAYMOVE)),  # beyond the VMA
            (errno.EFAULT, (pf, P, 2 * P, MREMAP_MAYMOVE)),  # PFNMAP cannot grow
            (errno.ENOMEM, (a, 4 * P, 5 * P, 0)),  # cannot grow in place
            (errno.ENOMEM, (iom, P, 2 * P, MREMAP_MAYMOVE)),  # VM_IO never merges
            (errno.ENOMEM, (a, 4 * P, (1 << 47) - 2 * P, MREMAP_MAYMOVE)),  # no room
            (errno.EPERM, (a, P, P, MOVE, 0x1000)),  # below mmap_min_addr
        ]
        for expected, args in cases:
            before = snapshot(p)
            assert err(p.mremap, *args) == expected, (args, expected)
            assert snapshot(p) == before, args
        assert values(p, a, 4) == [100, 101, 102, 103]

    run1(program)


def test_map_count_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    def program() -> None:
        p = System().process()
        a = p.mmap(BASE, 4 * P, RW, ANON | MAP_FIXED)
        monkeypatch.setattr(mremap_mod, "sysctl_max_map_count", p.mm.map_count + 3)
        before = snapshot(p)
        assert err(p.mremap, a, P, P, MOVE, BASE + 64 * P) == errno.ENOMEM
        assert err(p.mremap, a + P, P, 2 * P, MREMAP_MAYMOVE) == errno.ENOMEM
        assert snapshot(p) == before

    run1(program)


def test_failed_page_table_move_is_undone(monkeypatch: pytest.MonkeyPatch) -> None:
    """An allocation failure in the middle of move_page_tables: what moved is
    moved back, the new VMA unmapped, ENOMEM returned; nothing changed."""
    calls = {"n": 0}
    real = mremap_mod.pte_alloc

    def failing(mm: Any, pmd: Any, mi: int) -> int:
        calls["n"] += 1
        return -errno.ENOMEM if calls["n"] == 2 else real(mm, pmd, mi)

    monkeypatch.setattr(mremap_mod, "pte_alloc", failing)

    def program() -> None:
        p = System().process()
        a = p.mmap(OLD + PMD_SIZE - 2 * P, 4 * P, RW, ANON | MAP_FIXED)  # spans two PMDs
        fill(p, a, 4)
        before = snapshot(p)
        assert err(p.mremap, a, 4 * P, 4 * P, MOVE, NEW + 8 * P) == errno.ENOMEM
        assert calls["n"] == 3  # the second failed; the third is the move back
        assert snapshot(p) == before
        assert values(p, a, 4) == [100, 101, 102, 103]
        check_accounting([p])

    run1(program)


def test_fixed_unmaps_the_destination_before_later_checks() -> None:
    """As in the kernel: MREMAP_FIXED unmaps the destination first, so a
    call that then fails (here: the old range runs past its VMA) has already
    unmapped it."""
    def program() -> None:
        p = System().process()
        a = p.mmap(BASE, 2 * P, RW, ANON | MAP_FIXED)
        d = p.mmap(BASE + 32 * P, 2 * P, RW, ANON | MAP_FIXED)
        assert err(p.mremap, a, 3 * P, 3 * P, MOVE, d) == errno.EFAULT
        assert vma_find(p.mm, d) is None and vma_find(p.mm, a) is not None

    run1(program)


# --- the rule and the switches --------------------------------------------------------------


def _move_file_tables(kernel: dict[str, Any], size: int) -> Any:
    def program() -> None:
        s = System(**kernel)
        p = s.process()
        fd = s.open_file("/data", size)
        x = 0x600000000000
        p.mmap(x, size, RW, MAP_SHARED | MAP_FIXED, fd, 0)
        p.poke(x, 1)
        p.mremap(x, size, size, MOVE, x + 0x40000000 * 4)

    return explore(program, max_executions=1, shrink=False)


@pytest.mark.parametrize("size", [PMD_SIZE, PUD_SIZE])
def test_moving_tables_needs_the_rmap_locks(size: int) -> None:
    """The ``table`` alternative of the pmd / pud rules for moving tables
    (``mm/rules.py``: mmap W + VMA W + rmap W, since 5.14) is enforced by the
    move itself: with the 5.14 fix removed, the first
    whole-table move of a file mapping (need_rmap_locks is false for a new
    VMA) breaks it; a 5.13 kernel is judged by its own rules."""
    assert _move_file_tables({}, size).violation is None
    r = _move_file_tables({"without": ["mremap-pgtable-move-rmap-lock"]}, size)
    assert r.violation is not None and r.violation.kind == "locking-rule"
    kind = "pud" if size == PUD_SIZE else "pmd"
    assert f"change of an entry pointing to a page table of {kind} entry" in r.violation.title
    assert _move_file_tables({"kernel": "5.13"}, size).violation is None


def test_should_take_rmap_locks_per_switch() -> None:
    from mmrace.mm.mremap import (
        HPAGE_PMD,
        NORMAL_PMD,
        NORMAL_PUD,
        PagetableMoveControl,
        should_take_rmap_locks,
    )

    def program() -> None:
        out = {}
        for rel in (None, "5.13", "3.14"):
            p = System(kernel=rel).process()
            a = p.mmap(BASE, P, RW, ANON | MAP_FIXED)
            vma = vma_find(p.mm, a)
            mmap_write_lock(p.mm)
            for need in (False, True):
                pmc = PagetableMoveControl(vma, vma, a, a, P, need)
                out[rel, need] = [should_take_rmap_locks(pmc, e)
                                  for e in (NORMAL_PMD, NORMAL_PUD, HPAGE_PMD)]
            mmap_write_unlock(p.mm)
        assert out[None, False] == [True, True, False]
        assert out[None, True] == [True, True, True]
        assert out["5.13", False] == [False, False, False]
        assert out["5.13", True] == [True, True, True]
        assert out["3.14", True] == [True, True, False]  # before the THP fix

    run1(program)


def test_need_rmap_locks_when_the_destination_merges_into_an_earlier_vma(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """copy_vma merges the moved range into the VMA before it: an rmap walk
    may visit it before the source, so move_ptes takes the rmap locks."""
    taken: list[str] = []
    real = mremap_mod.take_rmap_locks

    def spy(vma: Any) -> None:
        taken.append(vma.name)
        real(vma)

    monkeypatch.setattr(mremap_mod, "take_rmap_locks", spy)

    def program() -> None:
        s = System()
        p = s.process()
        fd = s.open_file("/data", 16 * P)
        p.mmap(BASE, 2 * P, RW, MAP_SHARED | MAP_FIXED, fd, 0)
        src = p.mmap(BASE + 32 * P, P, RW, MAP_SHARED | MAP_FIXED, fd, 2 * P)
        p.poke(src, 5)
        assert p.mremap(src, P, P, MOVE, BASE + 2 * P) == BASE + 2 * P
        assert [(m.start, m.end) for m in p.maps()] == [(BASE, BASE + 3 * P)]
        assert taken and p.peek(BASE + 2 * P) == 5
        taken.clear()
        new = p.mmap(BASE + 64 * P, P, RW, MAP_SHARED | MAP_FIXED, fd, 8 * P)
        p.poke(new, 6)
        p.mremap(new, P, P, MOVE, BASE + 96 * P)  # a new VMA: no rmap locks
        assert taken == []

    run1(program)


def _thp(p: Process) -> int:
    """A PMD-mapped anonymous THP at OLD, faulted in by a write."""
    a = p.mmap(OLD, PMD_SIZE, RW, ANON | MAP_FIXED)
    p.poke(a + 5 * P, 7)
    pmd, mi = walk_to_pmd(p.mm, a)
    assert pmd_trans_huge(pmd.entries[mi])
    return a


def test_move_huge_pmd() -> None:
    """A PMD-mapped THP moves whole (move_huge_pmd): one soft-dirty PMD leaf
    at the new place with its deposited table, nothing at the old one, the
    data and the accounting intact; it still splits and unmaps cleanly."""
    def program() -> None:
        p = System(thp="always").process()
        a = _thp(p)
        pmd, mi = walk_to_pmd(p.mm, a)
        assert p.mremap(a, PMD_SIZE, PMD_SIZE, MOVE, NEW) == NEW
        npmd, ni = walk_to_pmd(p.mm, NEW)
        entry = npmd.entries[ni]
        assert pmd_trans_huge(entry) and pte_soft_dirty(entry)
        assert pmd.entries.get(mi, 0) == 0 and npmd.deposited[ni].base == NEW
        assert mi not in pmd.deposited
        assert p.peek(NEW + 5 * P) == 7 and segv(p, a)
        thp_accounting([p])
        p.munmap(NEW + PMD_SIZE - P, P)  # splits the PMD
        assert p.peek(NEW + 5 * P) == 7
        thp_accounting([p])
        p.munmap(NEW, PMD_SIZE)
        thp_accounting([p])

    run1(program)


def test_move_part_of_a_thp_splits_its_pmd() -> None:
    """Moving only part of a THP splits the huge PMD first (split_huge_pmd in
    move_page_tables) and moves the PTEs: the data follow, the rest stays."""
    def program() -> None:
        p = System(thp="always").process()
        a = _thp(p)
        p.poke(a + 100 * P, 9)
        assert p.mremap(a, 8 * P, 8 * P, MOVE, NEW) == NEW
        pmd, mi = walk_to_pmd(p.mm, a)
        assert not pmd_trans_huge(pmd.entries[mi])
        assert p.peek(NEW + 5 * P) == 7 and p.peek(a + 100 * P) == 9
        assert segv(p, a + 5 * P)
        thp_accounting([p])

    run1(program)


# --- cost -------------------------------------------------------------------------------------


def _move_ptes_events(npages: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """Visible operations inside move_ptes for a move of *npages* present
    PTEs (the mover is the only thread, so every event in between is its)."""
    counted = {"n": 0}
    real = mremap_mod.move_ptes

    def counting(*args: Any) -> int:
        before = len(current_execution().events)
        ret = real(*args)
        counted["n"] += len(current_execution().events) - before
        return ret

    monkeypatch.setattr(mremap_mod, "move_ptes", counting)

    def program() -> None:
        p = System(cpus=1).process()
        a = p.mmap(OLD + P, npages * P, RW, ANON | MAP_FIXED)
        fill(p, a, npages)
        spawn(p.mremap, a, npages * P, npages * P, MOVE, NEW + 2 * P, name="mover")

    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation and r.violation.message
    return counted["n"]


def test_move_ptes_costs_three_visible_operations_per_present_pte(
        monkeypatch: pytest.MonkeyPatch) -> None:
    one = _move_ptes_events(1, monkeypatch)
    two = _move_ptes_events(2, monkeypatch)
    assert two - one == 3  # ptep_get, ptep_get_and_clear, set_pte_at
    assert one == 12  # one CPU: no shootdown IPI (one more per other CPU in mm_cpumask)


def test_a_swapped_out_page_moves_as_its_swap_entry() -> None:
    """move_ptes moves a swap entry like a present PTE (made soft-dirty, the
    swap-entry way: move_soft_dirty_pte); the page swaps back in at the new
    address with its data."""
    from mmrace.mm.swapops import is_swap_pte, pte_swp_soft_dirty

    def program() -> None:
        p = System().process()
        a = p.mmap(OLD + P, 2 * P, RW, ANON | MAP_FIXED)
        p.poke(a, 11)
        p.poke(a + P, 12)
        assert p.reclaim(a) == 1
        assert p.mremap(a, 2 * P, 2 * P, MOVE, NEW + 2 * P) == NEW + 2 * P
        moved = peek_pte(p.mm, NEW + 2 * P)
        assert is_swap_pte(moved) and pte_swp_soft_dirty(moved)
        assert p.peek(NEW + 2 * P) == 11 and p.peek(NEW + 3 * P) == 12
        assert segv(p, a)
        thp_accounting([p])  # counts the swap cache too

    run1(program)


def test_a_thp_inside_a_moved_pmd_table_moves_with_its_deposit() -> None:
    """A 1 GiB move of an anonymous mapping moves its whole PMD table
    (move_normal_pud), a PMD-mapped THP in it and the deposited table too:
    the THP still splits at its new address."""
    def program() -> None:
        p = System(thp="always").process()
        src, dst = 0x7E0000000000, 0x7E0000000000 + 4 * PUD_SIZE
        a = p.mmap(src, PUD_SIZE, RW, ANON | MAP_FIXED)
        p.poke(a + PMD_SIZE + 3 * P, 4)
        assert p.mremap(a, PUD_SIZE, PUD_SIZE, MOVE, dst) == dst
        pmd, mi = walk_to_pmd(p.mm, dst + PMD_SIZE)
        assert pmd_trans_huge(pmd.entries[mi]) and pmd.deposited[mi].base == dst + PMD_SIZE
        p.munmap(dst + PMD_SIZE, P)  # splits the huge PMD
        assert p.peek(dst + PMD_SIZE + 3 * P) == 4
        thp_accounting([p])

    run1(program)

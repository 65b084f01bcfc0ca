"""userfaultfd's fill, move and write-protect ioctls, one thread at a time:
what each does to the page tables, and the errno of each refusal (bad
ranges, modes, unregistered or populated destinations, pending events,
closed or foreign descriptors, releases without the ioctl)."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest
from mmkit import check_accounting, folio_at, run1

import mmrace.mm.userfaultfd as mm_uffd
from mmrace.engine import explore
from mmrace.mm.page_alloc import WORD_SIZE
from mmrace.mm.pgtable import peek_pte, pte_present, pte_special, pte_uffd_wp, pte_write
from mmrace.mm.userfaultfd_ioctl import UffdIoctlError, userfaultfd_writeprotect
from mmrace.mm.userfaultfd_k import mmap_changing_dec, mmap_changing_inc, mmap_changing_value
from mmrace.oracles.rmap import rmap_mismatch
from mmrace.user import (
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    MAP_SHARED,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    UFFD_FEATURE_MOVE,
    UFFDIO_COPY_MODE_WP,
    UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES,
    UFFDIO_REGISTER_MODE_MINOR,
    UFFDIO_REGISTER_MODE_MISSING,
    UFFDIO_REGISTER_MODE_WP,
    Process,
    System,
    UserBuffer,
    Userfaultfd,
)

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
WORD = WORD_SIZE  # one naturally aligned 8-byte word of user memory


def with_uffd(body: Callable[[Process, Userfaultfd, int], None], *, pages: int = 2,
              mode: int = UFFDIO_REGISTER_MODE_MISSING, features: int = 0,
              **system: Any) -> None:
    """Run *body(p, uffd, a)* as set-up code: *pages* anonymous pages at
    *a*, registered with *mode*."""

    def program() -> None:
        p = System(**system).process()
        a = p.mmap(0, pages * PAGE_SIZE, RW, ANON)
        uffd = p.userfaultfd(features)
        uffd.register(a, pages * PAGE_SIZE, mode)
        body(p, uffd, a)

    run1(program)


def errno_of(fn: Callable[[], Any]) -> int:
    with pytest.raises(OSError) as info:
        fn()
    return int(info.value.errno or 0)


# --- UFFDIO_COPY ---------------------------------------------------------------------------


def test_copy_fills_a_missing_page_with_a_value_or_words() -> None:
    def body(p: Process, uffd: Userfaultfd, a: int) -> None:
        assert uffd.copy(a, 7, PAGE_SIZE) == PAGE_SIZE
        assert [p.peek(a + i * WORD) for i in range(8)] == [7] * 8
        assert p.peek(a + PAGE_SIZE - WORD) == 7  # every word of the page
        assert uffd.copy(a + PAGE_SIZE, [1, 2, 3], PAGE_SIZE) == PAGE_SIZE
        assert [p.peek(a + PAGE_SIZE + i * WORD) for i in range(4)] == [1, 2, 3, 0]
        pte = peek_pte(p.mm, a)
        assert pte_present(pte) and pte_write(pte) and not pte_uffd_wp(pte)
        folio = folio_at(p, a)
        assert folio is not None and folio.anon and folio.anon_exclusive[0]
        check_accounting([p])

    with_uffd(body)


def test_copy_into_a_populated_page_is_eexist() -> None:
    def body(p: Process, uffd: Userfaultfd, a: int) -> None:
        uffd.copy(a, 7, PAGE_SIZE)
        assert errno_of(lambda: uffd.copy(a, 8, PAGE_SIZE)) == errno.EEXIST
        assert p.peek(a) == 7
        check_accounting([p])  # the refused page was freed

    with_uffd(body)


def test_copy_of_two_pages_stops_short_at_a_populated_one() -> None:
    def body(p: Process, uffd: Userfaultfd, a: int) -> None:
        uffd.copy(a + PAGE_SIZE, 9, PAGE_SIZE)
        with pytest.raises(UffdIoctlError) as info:
            uffd.copy(a, 7, 2 * PAGE_SIZE)
        assert info.value.errno == errno.EAGAIN and info.value.result == PAGE_SIZE
        assert (p.peek(a), p.peek(a + PAGE_SIZE)) == (7, 9)

    with_uffd(body)


def test_copy_mode_wp_maps_the_page_uffd_wp() -> None:
    def body(p: Process, uffd: Userfaultfd, a: int) -> None:
        uffd.copy(a, 7, PAGE_SIZE, UFFDIO_COPY_MODE_WP)
        pte = peek_pte(p.mm, a)
        assert pte_uffd_wp(pte) and not pte_write(pte)
        uffd.writeprotect(a, PAGE_SIZE, False)
        assert not pte_uffd_wp(peek_pte(p.mm, a))
        uffd.writeprotect(a, PAGE_SIZE, True)
        assert pte_uffd_wp(peek_pte(p.mm, a))

    with_uffd(body, mode=UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP)


def test_copy_mode_wp_needs_wp_registration() -> None:
    def body(p: Process, uffd: Userfaultfd, a: int) -> None:
        assert errno_of(lambda: uffd.copy(a, 7, PAGE_SIZE, UFFDIO_COPY_MODE_WP)) == errno.EINVAL

    with_uffd(body)


def test_copy_from_the_monitors_memory_retries_with_faults_allowed() -> None:
    """The source page is not mapped yet: the copy under the lock fails,
    the retry drops the locks, faults it in, relocks and installs."""
    def body(p: Process, uffd: Userfaultfd, a: int) -> None:
        m = p.system.process()
        buf = m.mmap(0, PAGE_SIZE, RW, ANON)  # never touched: not mapped
        assert not pte_present(peek_pte(m.mm, buf))
        assert uffd.copy(a, UserBuffer(m, buf), PAGE_SIZE) == PAGE_SIZE
        assert p.peek(a) == 0 and pte_present(peek_pte(m.mm, buf))
        m.poke(buf + WORD, 5)
        assert uffd.copy(a + PAGE_SIZE, UserBuffer(m, buf), PAGE_SIZE) == PAGE_SIZE
        assert p.peek(a + PAGE_SIZE + WORD) == 5
        check_accounting([p, m])

    with_uffd(body)


def test_the_copy_retry_rechecks_mmap_changing(monkeypatch: pytest.MonkeyPatch) -> None:
    """An event raised while the retry copied with the locks dropped makes
    the copy fail with EAGAIN (and free its page)."""
    real = mm_uffd.copy_from_user_page

    def body(p: Process, uffd: Userfaultfd, a: int) -> None:
        m = p.system.process()
        buf = m.mmap(0, PAGE_SIZE, RW, ANON)

        def raise_meanwhile(folio: Any, src: Any, offset: int, nofault: bool) -> bool:
            if not nofault:
                mmap_changing_inc(uffd.ctx)  # an event came while unlocked
            return real(folio, src, offset, nofault)

        monkeypatch.setattr(mm_uffd, "copy_from_user_page", raise_meanwhile)
        assert errno_of(lambda: uffd.copy(a, UserBuffer(m, buf), PAGE_SIZE)) == errno.EAGAIN
        assert not pte_present(peek_pte(p.mm, a))
        mmap_changing_dec(uffd.ctx)
        check_accounting([p, m])

    with_uffd(body)


def test_copy_from_unmapped_memory_is_efault() -> None:
    def body(p: Process, uffd: Userfaultfd, a: int) -> None:
        assert errno_of(lambda: uffd.copy(a, UserBuffer(p, 0x10000), PAGE_SIZE)) == errno.EFAULT
        check_accounting([p])

    with_uffd(body)


@pytest.mark.parametrize("release, slug", [(None, None), ("5.14", "bool"), ("4.17", "none")])
def test_copy_is_eagain_while_an_event_is_pending(release: str | None, slug: str | None) -> None:
    """mmap_changing raised (an event not yet read): EAGAIN from 4.18 on;
    before 4.18 there is no counter and the copy goes through."""
    def body(p: Process, uffd: Userfaultfd, a: int) -> None:
        mmap_changing_inc(uffd.ctx)
        if slug == "none":
            assert uffd.copy(a, 7, PAGE_SIZE) == PAGE_SIZE
            return
        for call in (lambda: uffd.copy(a, 7, PAGE_SIZE), lambda: uffd.zeropage(a, PAGE_SIZE),
                     lambda: uffd.writeprotect(a, PAGE_SIZE, True)):
            assert errno_of(call) == errno.EAGAIN
        mmap_changing_dec(uffd.ctx)
        assert uffd.copy(a, 7, PAGE_SIZE) == PAGE_SIZE

    with_uffd(body, mode=UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
              kernel=release)


@pytest.mark.parametrize("release, after_two_one", [("5.14", 0), ("5.15", 1), (None, 1)])
def test_mmap_changing_is_a_bool_until_5_15(release: str, after_two_one: int) -> None:
    def body(p: Process, uffd: Userfaultfd, a: int) -> None:
        mmap_changing_inc(uffd.ctx)
        mmap_changing_inc(uffd.ctx)
        mmap_changing_dec(uffd.ctx)
        assert mmap_changing_value(uffd.ctx) == after_two_one

    with_uffd(body, kernel=release)


# --- UFFDIO_ZEROPAGE ------------------------------------------------------------------------


def test_zeropage_maps_the_zero_page() -> None:
    def body(p: Process, uffd: Userfaultfd, a: int) -> None:
        assert uffd.zeropage(a, PAGE_SIZE) == PAGE_SIZE
        pte = peek_pte(p.mm, a)
        assert pte_present(pte) and pte_special(pte) and not pte_write(pte)
        assert p.peek(a) == 0
        assert errno_of(lambda: uffd.zeropage(a, PAGE_SIZE)) == errno.EEXIST
        p.poke(a, 3)  # a write fault copies the zero page
        assert p.peek(a) == 3

    with_uffd(body)


# --- bad input -----------------------------------------------------------------------------


def test_bad_arguments_get_the_kernels_errno() -> None:
    def body(p: Process, uffd: Userfaultfd, a: int) -> None:
        other = p.mmap(0, PAGE_SIZE, RW, ANON)  # not registered
        cases = {
            "unaligned dst": (lambda: uffd.copy(a + 8, 1, PAGE_SIZE), errno.EINVAL),
            "unaligned len": (lambda: uffd.copy(a, 1, 100), errno.EINVAL),
            "zero len": (lambda: uffd.copy(a, 1, 0), errno.EINVAL),
            "bad copy mode": (lambda: uffd.copy(a, 1, PAGE_SIZE, 1 << 5), errno.EINVAL),
            "bad zeropage mode": (lambda: uffd.zeropage(a, PAGE_SIZE, 2), errno.EINVAL),
            "beyond the task": (lambda: uffd.copy(1 << 47, 1, PAGE_SIZE), errno.EINVAL),
            "not registered": (lambda: uffd.copy(other, 1, PAGE_SIZE), errno.ENOENT),
            "unmapped": (lambda: uffd.copy(0x10000, 1, PAGE_SIZE), errno.ENOENT),
            "leaves the VMA": (lambda: uffd.copy(a, 1, 3 * PAGE_SIZE), errno.ENOENT),
            "bad wp mode": (lambda: userfaultfd_writeprotect(uffd.ctx, a, PAGE_SIZE, 4),
                            errno.EINVAL),
            "wake unaligned": (lambda: uffd.wake(a + 1, PAGE_SIZE), errno.EINVAL),
            "register MINOR on anon": (
                lambda: uffd.register(other, PAGE_SIZE, UFFDIO_REGISTER_MODE_MINOR),
                errno.EINVAL),
            "register no mode": (lambda: uffd.register(other, PAGE_SIZE, 0), errno.EINVAL),
            "register a hole": (lambda: uffd.register(0x10000, PAGE_SIZE, 1), errno.EINVAL),
        }
        for name, (call, expected) in cases.items():
            assert errno_of(call) == expected, name
        check_accounting([p])

    with_uffd(body)


def test_register_with_another_context_is_ebusy() -> None:
    def body(p: Process, uffd: Userfaultfd, a: int) -> None:
        other = p.userfaultfd()
        assert errno_of(lambda: other.register(a, PAGE_SIZE, 1)) == errno.EBUSY

    with_uffd(body)


def test_a_closed_descriptor_is_ebadf_and_unregisters() -> None:
    def body(p: Process, uffd: Userfaultfd, a: int) -> None:
        uffd.close()
        for call in (lambda: uffd.copy(a, 1, PAGE_SIZE), lambda: uffd.zeropage(a, PAGE_SIZE),
                     lambda: uffd.move(a, a + PAGE_SIZE, PAGE_SIZE), uffd.read, uffd.close,
                     lambda: uffd.register(a, PAGE_SIZE, 1)):
            assert errno_of(call) == errno.EBADF
        assert p.maps()[0].start == a
        p.poke(a, 4)  # an ordinary fault now
        assert p.peek(a) == 4

    with_uffd(body)


def test_unknown_or_unmodelled_features() -> None:
    def program() -> None:
        p = System().process()
        assert errno_of(lambda: p.userfaultfd(1 << 30)) == errno.EINVAL
        with pytest.raises(NotImplementedError):
            p.userfaultfd(1 << 7)  # UFFD_FEATURE_SIGBUS: real, not modelled
        assert errno_of(lambda: System(kernel="6.7").process().userfaultfd(UFFD_FEATURE_MOVE)
                        ) == errno.EINVAL

    run1(program)


# --- UFFDIO_MOVE ----------------------------------------------------------------------------


def move_setup(body: Callable[[Process, Userfaultfd, int, int], None], **system: Any) -> None:
    def program() -> None:
        p = System(**system).process()
        src = p.mmap(0, PAGE_SIZE, RW, ANON)
        dst = p.mmap(0, PAGE_SIZE, RW, ANON)
        uffd = p.userfaultfd()
        uffd.register(dst, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        body(p, uffd, src, dst)

    run1(program)


def test_move_of_an_exclusive_anonymous_page() -> None:
    def body(p: Process, uffd: Userfaultfd, src: int, dst: int) -> None:
        p.poke(src, 11)
        folio = folio_at(p, src)
        assert uffd.move(dst, src, PAGE_SIZE) == PAGE_SIZE
        assert not pte_present(peek_pte(p.mm, src))
        assert folio_at(p, dst) is folio and p.peek(dst) == 11
        assert rmap_mismatch(p.mm, dst) is None
        check_accounting([p])

    move_setup(body)


def test_move_refuses_a_page_shared_with_a_child() -> None:
    def body(p: Process, uffd: Userfaultfd, src: int, dst: int) -> None:
        p.poke(src, 11)
        child = p.fork()
        assert errno_of(lambda: uffd.move(dst, src, PAGE_SIZE)) == errno.EBUSY
        assert p.peek(src) == 11 and not pte_present(peek_pte(p.mm, dst))
        check_accounting([p, child])

    move_setup(body)


def test_move_errors() -> None:
    def body(p: Process, uffd: Userfaultfd, src: int, dst: int) -> None:
        assert errno_of(lambda: uffd.move(dst, src, PAGE_SIZE)) == errno.ENOENT  # a hole
        assert uffd.move(dst, src, PAGE_SIZE, UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES) == PAGE_SIZE
        p.poke(src, 1)
        uffd.copy(dst, 2, PAGE_SIZE)  # (a fault on dst would wait for the monitor)
        assert errno_of(lambda: uffd.move(dst, src, PAGE_SIZE)) == errno.EEXIST
        assert errno_of(lambda: uffd.move(dst, src, PAGE_SIZE, 1 << 4)) == errno.EINVAL
        # the source need not be registered; the destination must be, here
        other = p.mmap(0, PAGE_SIZE, RW, ANON)
        assert errno_of(lambda: uffd.move(other, src, PAGE_SIZE)) == errno.EINVAL
        ro = p.mmap(0, PAGE_SIZE, PROT_READ, ANON)
        assert errno_of(lambda: uffd.move(dst, ro, PAGE_SIZE)) == errno.EINVAL

    move_setup(body)


def test_move_from_another_process_is_einval() -> None:
    def program() -> None:
        s = System()
        p = s.process()
        src = p.mmap(0, PAGE_SIZE, RW, ANON)
        dst = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.poke(src, 1)
        uffd = p.userfaultfd()
        uffd.register(dst, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        m = s.process()
        got: list[int] = []

        def monitor(t: Any) -> None:
            got.append(errno_of(lambda: uffd.move(dst, src, PAGE_SIZE)))

        m.thread(monitor, cpu=0)

        def check() -> None:
            assert got == [errno.EINVAL]

        return check  # type: ignore[return-value]

    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation and r.violation.message


@pytest.mark.parametrize("release, works", [("6.7", False), ("6.8", True)])
def test_uffdio_move_exists_from_6_8(release: str, works: bool) -> None:
    def body(p: Process, uffd: Userfaultfd, src: int, dst: int) -> None:
        p.poke(src, 1)
        if works:
            assert uffd.move(dst, src, PAGE_SIZE) == PAGE_SIZE
        else:
            assert errno_of(lambda: uffd.move(dst, src, PAGE_SIZE)) == errno.EINVAL

    move_setup(body, kernel=release)


# --- minor faults and UFFDIO_CONTINUE -------------------------------------------------------


def test_continue_maps_what_the_page_cache_has() -> None:
    def program() -> None:
        s = System()
        p = s.process()
        fd = s.memfd_create("guest", 2 * PAGE_SIZE)
        a = p.mmap(0, 2 * PAGE_SIZE, RW, MAP_SHARED, fd)
        alias = p.mmap(0, 2 * PAGE_SIZE, RW, MAP_SHARED, fd)
        p.poke(alias, 42)  # the page cache has page 0, not page 1
        uffd = p.userfaultfd()
        uffd.register(a, 2 * PAGE_SIZE, UFFDIO_REGISTER_MODE_MINOR)
        assert uffd.continue_(a, PAGE_SIZE) == PAGE_SIZE
        assert p.peek(a) == 42 and folio_at(p, a) is folio_at(p, alias)
        assert pte_write(peek_pte(p.mm, a))  # shared mapping: writable
        assert errno_of(lambda: uffd.continue_(a, PAGE_SIZE)) == errno.EEXIST
        assert errno_of(lambda: uffd.continue_(a + PAGE_SIZE, PAGE_SIZE)) == errno.EFAULT
        check_accounting([p])

    run1(program)


@pytest.mark.parametrize("release, works", [("5.13", False), ("5.14", True)])
def test_minor_registration_exists_from_5_14(release: str, works: bool) -> None:
    def program() -> None:
        s = System(kernel=release)
        p = s.process()
        fd = s.memfd_create("m", PAGE_SIZE)
        a = p.mmap(0, PAGE_SIZE, RW, MAP_SHARED, fd)
        uffd = p.userfaultfd()
        if works:
            uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MINOR)
        else:
            assert errno_of(lambda: uffd.register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MINOR)
                            ) == errno.EINVAL
            assert errno_of(lambda: uffd.continue_(a, PAGE_SIZE)) == errno.EINVAL

    run1(program)


def test_shmem_missing_registration_is_not_modelled() -> None:
    def program() -> None:
        s = System()
        p = s.process()
        fd = s.memfd_create("m", PAGE_SIZE)
        a = p.mmap(0, PAGE_SIZE, RW, MAP_SHARED, fd)
        with pytest.raises(NotImplementedError):
            p.userfaultfd().register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)

    run1(program)

"""The typed VMA API's run-time checks: every method verifies the lock its
handle stands for, flag changes on a new VMA follow the allowlist, misuse
is a violation, a TypeError or an OSError with the kernel's errno."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from kapikit import DRV_OPS, clean, driver, mixedmap_hook, violation

from mmrace.kapi import Mm, MmWithUser, VmaMixedMap, VmaNew, VmaRef, f_op_mmap
from mmrace.kapi.vma import Lease
from mmrace.mm.memory import vm_insert_page, zap_page_range_single
from mmrace.mm.mm_types import (
    PAGE_SIZE,
    VM_DONTCOPY,
    VM_DONTDUMP,
    VM_HUGETLB,
    VM_IO,
    VM_MAYWRITE,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_WRITE,
    File,
)
from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from mmrace.mm.page_alloc import folio_alloc
from mmrace.mm.pgtable import peek_pte, pte_present
from mmrace.mm.vma import vma_lookup
from mmrace.sync import Completion, complete, wait_for_completion
from mmrace.user import MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE, System, Thread


def _mapped(hook: Any = mixedmap_hook, **kw: Any) -> tuple[System, Any, int]:
    s = System()
    p = s.process()
    return s, p, driver(s, p, hook, **kw)


# --- handles used after their lock ------------------------------------------------------


def test_vmaref_after_mmap_read_unlock_is_a_locking_rule_violation() -> None:
    def program() -> None:
        _s, p, a = _mapped()
        mm = MmWithUser.from_raw(p.mm)
        guard = mm.mmap_read_lock()
        vma = guard.vma_lookup(a)
        assert vma is not None and vma.start() == a and vma.flags() & VM_MIXEDMAP
        guard.drop()
        vma.flags()

    v = violation(program)
    assert v.kind == "locking-rule"
    assert v.title == "locking rule: VmaRef.flags() on vma1 without mm1.mmap_lock (read) " \
                      "(its guard was released)"
    assert "VmaRef.flags()" in v.message and "mm1.mmap_lock (read)" in v.message


def test_vma_read_guard_and_its_mixedmap_end_with_vma_end_read() -> None:
    def program() -> None:
        _s, p, a = _mapped()
        mm = MmWithUser.from_raw(p.mm)
        with mm.mmap_read_lock() as g:  # the guard is a context manager
            assert g.vma_lookup(a) is not None
        guard = mm.lock_vma_under_rcu(a)
        assert guard is not None
        mixed = guard.as_mixedmap_vma()
        assert isinstance(mixed, VmaMixedMap)
        guard.drop()
        mixed.vm_insert_page(a, folio_alloc(0))

    v = violation(program)
    assert v.kind == "locking-rule"
    assert "VmaMixedMap.vm_insert_page() on vma1 without the VMA read lock of vma1" in v.title


def test_a_handle_from_another_thread_does_not_carry_the_lock() -> None:
    def program() -> None:
        _s, p, a = _mapped()
        handles: list[VmaRef] = []
        handed = Completion("handed")

        def locker(t: Thread) -> None:
            g = MmWithUser.from_raw(p.mm).mmap_read_lock()
            vma = g.vma_lookup(a)
            assert vma is not None
            handles.append(vma)
            complete(handed)
            g.drop()

        def user(t: Thread) -> None:
            wait_for_completion(handed)
            handles[0].end()  # the lock is the other thread's (a Rust guard is !Send)

        p.thread(locker, cpu=0)
        p.thread(user, cpu=1)

    v = violation(program, max_executions=50)
    assert v.kind == "locking-rule" and "VmaRef.end()" in v.title


def test_vmanew_after_mmap_returned_is_a_locking_rule_violation() -> None:
    kept: list[VmaNew] = []

    def hook(file: File, vma: VmaNew) -> None:
        mixedmap_hook(file, vma)
        kept.append(vma)

    def program() -> None:
        _mapped(hook)
        kept[0].set_dontcopy()

    v = violation(program)
    assert v.kind == "locking-rule"
    assert "VmaNew.set_dontcopy() on vma1" in v.title and "f_op->mmap" in v.title


def test_vmamut_needs_and_takes_the_vma_write_lock() -> None:
    def program() -> None:
        _s, p, a = _mapped()
        g = MmWithUser.from_raw(p.mm).mmap_write_lock()
        vma = g.vma_lookup_mut(a)
        assert vma is not None
        vma.set_flags(VM_DONTCOPY | VM_DONTDUMP)
        assert vma.flags() & VM_DONTCOPY
        with pytest.raises(OSError) as e:
            vma.set_flags(VM_IO)
        assert e.value.errno == errno.EINVAL
        g.drop()
        vma.set_flags(VM_DONTCOPY)

    v = violation(program)
    assert v.kind == "locking-rule" and "VmaMut.set_flags()" in v.title


def test_guard_use_after_drop_is_a_violation() -> None:
    def program() -> None:
        _s, p, a = _mapped()
        g = MmWithUser.from_raw(p.mm).mmap_read_lock()
        g.drop()
        g.vma_lookup(a)

    v = violation(program)
    assert v.kind == "locking-rule"
    assert v.title == "locking rule: MmapReadGuard.vma_lookup() after the guard was dropped"


# --- flag changes on a new VMA ----------------------------------------------------------


def _mmap_errno(hook: Any, prot: int = PROT_READ, flags: int = MAP_SHARED) -> int:
    """The errno mmap fails with when the driver's hook is *hook*."""
    out: list[int] = []

    def program() -> None:
        s = System()
        p = s.process()
        try:
            driver(s, p, hook, prot=prot, flags=flags)
            out.append(0)
        except OSError as e:
            out.append(e.errno or -1)

    clean(program)
    return out[0]


@pytest.mark.parametrize("set_, clear, why", [
    (VM_HUGETLB, 0, "VM_HUGETLB"),
    (VM_PFNMAP | VM_MIXEDMAP, 0, "VM_PFNMAP and VM_MIXEDMAP"),
    (VM_WRITE, 0, "may not set"),
    (VM_MAYWRITE, 0, "may not set"),
    (0, VM_MIXEDMAP, "may not clear"),
    (VM_DONTCOPY, VM_DONTCOPY, "both set and cleared"),
])
def test_set_flags_refuses_forbidden_changes(set_: int, clear: int, why: str) -> None:
    seen: list[str] = []

    def hook(file: File, vma: VmaNew) -> None:
        try:
            vma.set_flags(set_, clear)
        except OSError as e:
            seen.append(str(e))
            raise

    assert _mmap_errno(hook) == errno.EINVAL
    assert why in seen[0]


def test_mixedmap_then_pfnmap_and_pfnmap_then_mixedmap_are_refused() -> None:
    def mixed_then_pfn(file: File, vma: VmaNew) -> None:
        vma.set_mixedmap()
        vma.set_flags(VM_PFNMAP)

    def pfn_then_mixed(file: File, vma: VmaNew) -> None:
        vma.set_flags(VM_PFNMAP)
        vma.set_mixedmap()

    assert _mmap_errno(mixed_then_pfn) == errno.EINVAL
    assert _mmap_errno(pfn_then_mixed) == errno.EINVAL


def test_pfnmap_after_an_inserted_page_is_refused() -> None:
    def hook(file: File, vma: VmaNew) -> None:
        vma.set_mixedmap().vm_insert_page(vma.start(), folio_alloc(0))
        vma.set_flags(VM_PFNMAP)

    assert _mmap_errno(hook) == errno.EINVAL


def test_maywrite_is_cleared_only_while_write_is_clear() -> None:
    def hook(file: File, vma: VmaNew) -> None:
        assert vma.writable()
        vma.try_clear_maywrite()

    assert _mmap_errno(hook, prot=PROT_READ | PROT_WRITE) == errno.EINVAL

    def ok(file: File, vma: VmaNew) -> None:
        assert vma.readable() and not vma.writable() and not vma.executable()
        vma.try_clear_maywrite()
        vma.try_clear_mayexec()
        vma.set_io()
        vma.set_dontexpand()
        vma.set_dontcopy()
        vma.set_dontdump()
        assert not vma.flags() & VM_MAYWRITE

    assert _mmap_errno(ok) == 0


def test_a_readonly_mapping_cannot_be_made_writable_after_maywrite_is_cleared() -> None:
    def program() -> None:
        _s, p, a = _mapped()
        with pytest.raises(OSError) as e:
            p.mprotect(a, PAGE_SIZE, PROT_READ | PROT_WRITE)
        assert e.value.errno == errno.EACCES

    clean(program)


# --- vm_insert_page and zap through the raw and the typed API ------------------------------


def test_raw_vm_insert_page_on_a_non_mixedmap_vma_under_a_read_lock_is_a_bug() -> None:
    def hook(file: File, vma: VmaNew) -> None:
        vma.set_vm_ops(DRV_OPS)

    def program() -> None:
        _s, p, a = _mapped(hook)
        mmap_read_lock(p.mm)
        vma = vma_lookup(p.mm, a)
        assert vma is not None
        vm_insert_page(vma, a, folio_alloc(0))

    v = violation(program)
    assert v.kind == "bug"
    assert "BUG_ON(mmap_read_trylock(vma->vm_mm))" in v.message


def test_vmaref_has_no_mixedmap_without_the_flag() -> None:
    def hook(file: File, vma: VmaNew) -> None:
        vma.set_vm_ops(DRV_OPS)

    def program() -> None:
        _s, p, a = _mapped(hook)
        g = MmWithUser.from_raw(p.mm).mmap_read_lock()
        vma = g.vma_lookup(a)
        assert vma is not None and vma.as_mixedmap_vma() is None
        g.drop()

    clean(program)


def test_typed_vm_insert_page_maps_the_page_and_reports_errnos() -> None:
    def program() -> None:
        _s, p, a = _mapped(pages=2)
        page = folio_alloc(0)
        g = MmWithUser.from_raw(p.mm).mmap_read_lock()
        vma = g.vma_lookup(a)
        assert vma is not None
        mixed = vma.as_mixedmap_vma()
        assert mixed is not None
        mixed.vm_insert_page(a, page)
        assert pte_present(peek_pte(p.mm, a)) and page._refcount == 2 and page._mapcount == 1
        for addr, err in ((a, errno.EBUSY), (a + 2 * PAGE_SIZE, errno.EFAULT)):
            with pytest.raises(OSError) as e:
                mixed.vm_insert_page(addr, page)
            assert e.value.errno == err
        g.drop()
        assert p.peek(a) == 0
        p.munmap(a, 2 * PAGE_SIZE)
        assert page._refcount == 1 and page._mapcount == 0

    clean(program)


def test_zap_with_a_wrapping_size_bugs_raw_and_is_refused_typed() -> None:
    # From the third page, a size that wraps the end to the second page: the
    # end lands inside the VMA, below the start (Jann Horn's case).
    huge = (1 << 64) - PAGE_SIZE

    def typed() -> None:
        _s, p, a = _mapped(pages=3)
        g = MmWithUser.from_raw(p.mm).mmap_read_lock()
        vma = g.vma_lookup(a)
        assert vma is not None
        vma.zap_page_range_single(a + 2 * PAGE_SIZE, huge)  # refused silently, as upstream
        vma.zap_vma_range(a, 2 * PAGE_SIZE)
        g.drop()

    clean(typed)

    def raw() -> None:
        _s, p, a = _mapped(pages=3)
        mmap_read_lock(p.mm)
        vma = vma_lookup(p.mm, a)
        assert vma is not None
        zap_page_range_single(vma, a + 2 * PAGE_SIZE, huge)
        mmap_read_unlock(p.mm)

    v = violation(raw)
    assert v.kind == "bug" and v.title == "kernel BUG in unmap_page_range: addr >= end"


# --- bad input -------------------------------------------------------------------------------


def test_handles_are_not_constructed_directly() -> None:
    def program() -> None:
        _s, p, a = _mapped()
        vma = vma_lookup(p.mm, a)
        assert vma is not None
        with pytest.raises(TypeError, match="typed API"):
            VmaRef(vma, MmWithUser.from_raw(p.mm), Lease("mmap", "x"), object())
        with pytest.raises(TypeError, match="mmgrab"):
            Mm(p.mm, "grab", object())

    clean(program)


def test_mm_handles_after_drop_and_borrowed_drop() -> None:
    def program() -> None:
        p = System().process()
        mm = Mm.mmgrab(p.mm)
        user = mm.mmget_not_zero()
        assert user is not None
        with pytest.raises(TypeError, match="borrowed"):
            MmWithUser.from_raw(p.mm).drop()
        user.drop()
        mm.drop()
        mm.mmget_not_zero()

    v = violation(program)
    assert v.kind == "use-after-free" and "Mm.mmget_not_zero() on mm1 after drop" in v.title


def test_mmap_fails_with_the_hooks_errno() -> None:
    def hook(file: File, vma: VmaNew) -> None:
        raise OSError(errno.EPERM, "no")

    assert _mmap_errno(hook, flags=MAP_PRIVATE) == errno.EPERM

    def program() -> None:
        s = System()
        p = s.process()
        s.create_file("/dev/x", mmap=f_op_mmap(hook))
        with pytest.raises(PermissionError):
            p.mmap(0, PAGE_SIZE, PROT_READ, MAP_SHARED, p.open("/dev/x"))
        assert p.maps() == []

    clean(program)

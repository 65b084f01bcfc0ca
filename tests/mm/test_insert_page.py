"""Drivers mapping their own memory: vm_insert_page's two contracts and its
BUG_ONs, vmf_insert_pfn / vmf_insert_mixed from a fault handler, a driver
VMA without ->fault, and what each costs in visible operations."""

from __future__ import annotations

from typing import Any

from mmkit import ANON, RW, folio_at, run1

from mmrace.engine import current_execution, explore
from mmrace.mm.memory import (
    VM_FAULT_SIGBUS,
    VmFault,
    vm_insert_page,
    vmf_insert_mixed,
    vmf_insert_pfn,
)
from mmrace.mm.mm_types import (
    PAGE_SIZE,
    VM_MIXEDMAP,
    VM_PFNMAP,
    File,
    VmAreaStruct,
    VmOperations,
)
from mmrace.mm.mmap_lock import (
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_unlock,
)
from mmrace.mm.page_alloc import folio_alloc
from mmrace.mm.pgtable import peek_pte, pte_special
from mmrace.mm.vma import vm_flags_init, vma_lookup
from mmrace.user import (
    MAP_SHARED,
    PROT_READ,
    UFFDIO_REGISTER_MODE_MISSING,
    System,
    Thread,
)


def _device(flags: int, fault: Any = None) -> tuple[System, Any, int]:
    """A device whose raw f_op->mmap sets *flags* and vm_ops (with *fault*)."""
    ops = VmOperations("dev_ops", fault=fault)

    def mmap(file: File, vma: VmAreaStruct) -> int:
        vm_flags_init(vma, vma.raw("vm_flags") | flags)
        vma._f_vm_ops = ops
        return 0

    s = System()
    p = s.process()
    s.create_file("/dev/x", mmap=mmap)
    return s, p, p.mmap(0, 2 * PAGE_SIZE, PROT_READ, MAP_SHARED, p.open("/dev/x"))


def _violation(program: Any, n: int | None = 1) -> Any:
    r = explore(program, max_executions=n, shrink=False)
    assert r.violation is not None
    return r.violation


def test_vm_insert_page_under_the_write_lock_sets_mixedmap() -> None:
    def program() -> None:
        _s, p, a = _device(0)
        mmap_write_lock(p.mm)
        vma = vma_lookup(p.mm, a)
        assert vma is not None and not vma.vm_flags & VM_MIXEDMAP
        assert vm_insert_page(vma, a, folio_alloc(0)) == 0
        assert vma.vm_flags & VM_MIXEDMAP
        mmap_write_unlock(p.mm)
        assert not pte_special(peek_pte(p.mm, a))

    run1(program)


def test_vm_insert_page_bugs_on_pfnmap_and_flags_a_uffd_vma() -> None:
    def pfnmap() -> None:
        _s, p, a = _device(VM_PFNMAP)
        mmap_write_lock(p.mm)
        vma = vma_lookup(p.mm, a)
        assert vma is not None
        vm_insert_page(vma, a, folio_alloc(0))

    v = _violation(pfnmap)
    assert v.kind == "bug" and "BUG_ON(vma->vm_flags & VM_PFNMAP)" in v.message

    def uffd() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        p.userfaultfd().register(a, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        mmap_write_lock(p.mm)
        vma = vma_lookup(p.mm, a)
        assert vma is not None
        vm_insert_page(vma, a, folio_alloc(0))

    v = _violation(uffd)
    assert v.kind == "invariant" and "userfaultfd" in v.title


def test_vm_insert_page_refuses_anonymous_pages() -> None:
    def program() -> None:
        _s, p, a = _device(VM_MIXEDMAP)
        q = p.system.process()
        b = q.mmap(0, PAGE_SIZE, RW, ANON)
        q.poke(b, 1)
        anon = folio_at(q, b)
        assert anon is not None
        mmap_read_lock(p.mm)
        vma = vma_lookup(p.mm, a)
        assert vma is not None
        assert vm_insert_page(vma, a, anon) == -22

    run1(program)


def test_vmf_insert_pfn_bug_ons() -> None:
    for flags, what in ((0, "!(vm_flags & (VM_PFNMAP|VM_MIXEDMAP))"),
                        (VM_PFNMAP | VM_MIXEDMAP, "both set"),
                        (VM_MIXEDMAP, "pfn_valid")):
        def program(flags: int = flags) -> None:
            _s, p, a = _device(flags)
            mmap_read_lock(p.mm)
            vma = vma_lookup(p.mm, a)
            assert vma is not None
            vmf_insert_pfn(vma, a, folio_alloc(0).pfn)

        v = _violation(program)
        assert v.kind == "bug" and what in v.message, (flags, v.message)


def test_fault_handlers_map_lazily_and_a_driver_without_fault_gets_sigbus() -> None:
    page: list[Any] = []

    def fault(vmf: VmFault) -> tuple[int, None]:
        return vmf_insert_mixed(vmf.vma, vmf.address, page[0].pfn), None

    def pfn_fault(vmf: VmFault) -> tuple[int, None]:
        return vmf_insert_pfn(vmf.vma, vmf.address, 0x10), None

    def program() -> None:
        _s, p, a = _device(VM_MIXEDMAP, fault)
        page.append(folio_alloc(0))
        assert p.peek(a) == 0 and pte_special(peek_pte(p.mm, a))
        assert page[0]._refcount == 1 and page[0]._mapcount == 0  # no reference taken
        p.munmap(a, 2 * PAGE_SIZE)
        s2 = System()
        q = s2.process()
        s2.create_file("/dev/p", mmap=_raw_mmap(VM_PFNMAP, pfn_fault))
        b = q.mmap(0, PAGE_SIZE, PROT_READ, MAP_SHARED, q.open("/dev/p"))
        mmap_read_lock(q.mm)
        vma = vma_lookup(q.mm, b)
        assert vma is not None and vmf_insert_mixed(vma, b, 0x10) == VM_FAULT_SIGBUS

    run1(program)

    def no_fault() -> None:
        _s, p, a = _device(VM_MIXEDMAP)

        def reader(t: Thread) -> None:
            t.load(a)
            raise AssertionError("the load should have been killed by SIGBUS")

        th = p.thread(reader, cpu=0)

        def check() -> None:
            assert th.segfault is not None and "SIGBUS" in th.segfault.why

        return check  # type: ignore[return-value]

    r = explore(no_fault, max_executions=1)
    assert r.violation is None, r.violation.message if r.violation else ""


def _raw_mmap(flags: int, fault: Any) -> Any:
    ops = VmOperations("p_ops", fault=fault)

    def mmap(file: File, vma: VmAreaStruct) -> int:
        vm_flags_init(vma, vma.raw("vm_flags") | flags)
        vma._f_vm_ops = ops
        return 0

    return mmap


def test_visible_operations_of_an_insert() -> None:
    """vm_insert_page into a VMA whose page tables exist, and the
    vmf_insert_mixed a fault handler does: the costs the README quotes."""
    counts: dict[str, int] = {}

    def program() -> None:
        _s, p, a = _device(VM_MIXEDMAP)
        pages = [folio_alloc(0), folio_alloc(0)]
        mmap_read_lock(p.mm)
        vma = vma_lookup(p.mm, a)
        assert vma is not None
        assert vm_insert_page(vma, a, pages[0]) == 0  # allocates the tables (set-up)
        mmap_read_unlock(p.mm)

        def t(th: Thread) -> None:
            mmap_read_lock(p.mm)
            ev = current_execution().events
            n = len(ev)
            assert vm_insert_page(vma, a + PAGE_SIZE, pages[1]) == 0
            counts["vm_insert_page"] = len(ev) - n
            mmap_read_unlock(p.mm)

        p.thread(t, cpu=0)

    r = explore(program, max_executions=1)
    assert r.violation is None, r.violation.message if r.violation else ""
    assert counts == {"vm_insert_page": 14}

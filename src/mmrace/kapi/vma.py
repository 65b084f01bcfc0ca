"""Typed VMA handles: the Python mirror of rust/kernel/mm/virt.rs.

A driver never sees a bare ``vm_area_struct``: it gets a handle whose class
says which lock its holder has, and the class carries only the methods
that lock permits.

* :class:`VmaRef` -- the mmap read lock or the VMA read lock is held
  (``MmapReadGuard.vma_lookup``, ``MmWithUser.lock_vma_under_rcu``): read
  the flags and bounds, zap pages, check for ``VM_MIXEDMAP``.
* :class:`VmaMixedMap` -- a ``VmaRef`` whose ``VM_MIXEDMAP`` is set
  (``VmaRef.as_mixedmap_vma``, ``VmaNew.set_mixedmap``): ``vm_insert_page``
  under a read lock is allowed only then.
* :class:`VmaNew` -- the VMA is being set up inside the driver's
  ``f_op->mmap`` (``mmrace.kapi.file.f_op_mmap``) and nobody else can see
  it: set flags from an allowlist, ``vm_ops`` and private data.
* :class:`VmaMut` -- the mmap write lock *and* the VMA write lock
  (``vma_start_write``) are held (``MmapWriteGuard.vma_lookup_mut``); the
  seed's review asked for both before a driver mutates a live VMA. Upstream
  has no such type (drivers may not change flags of a live VMA at all).

Two checks. Statically, ``mypy --strict`` rejects a method on a handle that
lacks it (``VmaRef.set_flags``, ``VmaRef.vm_insert_page``). At run time
every method first verifies that the lock the handle stands for is still
held by the calling thread (a Rust borrow cannot outlive its guard; a
Python reference can): a handle used after its lock was dropped, or from
another thread, is a ``locking-rule`` violation naming the handle, the
method and the lock. Handles are made only by this package: constructing
one directly is a ``TypeError``; a refused flag change is an ``OSError``
with the kernel's errno (``EINVAL``), as the Rust methods return it.

Historical behaviour: with the never-merged ``rust-vmamut-set-flags``
switch (the v6 posting reviewed in seed 003), ``VmaMut`` is the posting's
``VmAreaMut``: obtainable with the mmap write lock alone, and its
``set_flags`` writes ``vm_flags`` directly, without ``vma_start_write`` or
an allowlist.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, TypeVar

from mmrace.engine import ViolationError
from mmrace.mm.internal import errno_error, held, kernel_config
from mmrace.mm.memory import ULONG_MAX, vm_insert_page, zap_page_range_single
from mmrace.mm.mm_types import (
    VM_DONTCOPY,
    VM_DONTDUMP,
    VM_DONTEXPAND,
    VM_EXEC,
    VM_HUGETLB,
    VM_IO,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYWRITE,
    VM_MIXEDMAP,
    VM_PFNMAP,
    VM_READ,
    VM_WRITE,
    VmAreaStruct,
    VmOperations,
    vm_flags_str,
)
from mmrace.mm.mmap_lock import vma_end_read
from mmrace.mm.page_alloc import Folio
from mmrace.mm.vma import vm_flags_init, vm_flags_mod

if TYPE_CHECKING:
    from mmrace.kapi.mm import MmWithUser

__all__ = [
    "LIVE_SETTABLE",
    "NEW_CLEARABLE",
    "NEW_SETTABLE",
    "RUST_VMAMUT_SET_FLAGS",
    "Lease",
    "VmaMixedMap",
    "VmaMut",
    "VmaNew",
    "VmaReadGuard",
    "VmaRef",
    "make_handle",
]

RUST_VMAMUT_SET_FLAGS = "rust-vmamut-set-flags"
"""The switch that restores the v6 posting's ``VmAreaMut`` (seed 003)."""

NEW_SETTABLE = VM_MIXEDMAP | VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTCOPY | VM_DONTDUMP
"""Flags a driver may set on a new VMA (Jann Horn's list in seed 003)."""
NEW_CLEARABLE = VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
"""Flags a driver may clear on a new VMA, each only while its access bit is clear."""
LIVE_SETTABLE = VM_DONTCOPY | VM_DONTDUMP
"""Flags ``VmaMut.set_flags`` may set on a live VMA (what madvise may set)."""

_ACCESS_OF = {VM_MAYREAD: VM_READ, VM_MAYWRITE: VM_WRITE, VM_MAYEXEC: VM_EXEC}
_CREATOR = object()  # only this package makes handles


class Lease:
    """Why a handle may be used: the lock its creator holds (``kind``:
    ``mmap`` read or write, ``vma`` read, ``mut`` = mmap write + VMA write,
    ``new`` = inside ``f_op->mmap``), named in messages by ``lock``, and
    whether the guard that holds it (*parent*, if another lease) has been
    released: the end of the Rust borrow."""

    __slots__ = ("kind", "lock", "parent", "_released")

    def __init__(self, kind: str, lock: str, parent: Lease | None = None) -> None:
        self.kind = kind
        self.lock = lock
        self.parent = parent
        self._released = False

    @property
    def released(self) -> bool:
        return self._released or (self.parent is not None and self.parent.released)

    def release(self) -> None:
        self._released = True


class VmaRef:
    """``kernel::mm::virt::VmaRef``: the caller holds the mmap read lock or
    the VMA read lock (or stronger). Methods usable whatever the flags."""

    __slots__ = ("_vma", "_mm", "_lease")

    def __init__(self, vma: VmAreaStruct, mm: MmWithUser, lease: Lease, creator: object) -> None:
        if creator is not _CREATOR:
            raise TypeError(f"{type(self).__name__} handles come from the typed API "
                            "(vma_lookup, lock_vma_under_rcu, f_op_mmap, ...), not from a "
                            "constructor")
        self._vma = vma
        self._mm = mm
        self._lease = lease

    # -- the run-time check ----------------------------------------------------

    def _missing(self) -> str | None:
        """What the handle's lease lacks now, or None if it holds."""
        lease, vma = self._lease, self._vma
        if lease.released:
            return f"{lease.lock} (its guard was released)"
        mm = vma.raw("vm_mm")
        mode = held().mmap.get(mm.serial)
        if lease.kind == "mmap":
            return None if mode is not None else lease.lock
        if lease.kind == "vma":
            return None if vma.serial in held().vma_read else lease.lock
        if lease.kind == "mut":
            if mode != "W":
                return lease.lock
            if kernel_config(mm).has(RUST_VMAMUT_SET_FLAGS):
                return None  # the v6 VmAreaMut: the mmap write lock alone
            locked = vma.vm_lock.vm_lock_seq == mm.mm_lock_seq.sequence
            return None if locked else lease.lock
        # "new": only while the driver's f_op->mmap runs, before publication
        return None if not vma.published else f"{lease.lock} (f_op->mmap has returned)"

    def _check(self, method: str) -> VmAreaStruct:
        missing = self._missing()
        if missing is None:
            return self._vma
        name = type(self).__name__
        vma = self._vma
        raise ViolationError(
            "locking-rule",
            f"locking rule: {name}.{method}() on {vma.name} without {missing}",
            f"{name}.{method}() on {vma!r} relies on {self._lease.lock}, which this thread no "
            f"longer holds ({missing}): the handle outlived its lock (in Rust the borrow "
            f"checker ends it with the guard); held: {held().describe()}",
        )

    # -- VmaRef methods (rust/kernel/mm/virt.rs) ------------------------------------

    def as_ptr(self) -> VmAreaStruct:
        """``VmaRef::as_ptr``: the raw VMA (field accesses through it are
        checked against the rule table like any C code's)."""
        return self._check("as_ptr")

    def mm(self) -> MmWithUser:
        """``VmaRef::mm``: the VMA's mm, as a borrowed ``MmWithUser`` (the
        lock held implies ``mm_users`` > 0 for the mm's own tasks and for a
        caller that took ``mmget_not_zero``)."""
        self._check("mm")
        return self._mm

    def flags(self) -> int:
        """``VmaRef::flags``: ``vm_flags``."""
        return int(self._check("flags").vm_flags)

    def start(self) -> int:
        """``VmaRef::start``: ``vm_start``."""
        return int(self._check("start").vm_start)

    def end(self) -> int:
        """``VmaRef::end``: ``vm_end``."""
        return int(self._check("end").vm_end)

    def vm_ops(self) -> VmOperations | None:
        """The VMA's ``vm_ops`` (Rust Binder reads it through ``as_ptr`` to
        check that a VMA is its own)."""
        return self._check("vm_ops").vm_ops  # type: ignore[no-any-return]

    def vm_private_data(self) -> Any:
        """The VMA's ``vm_private_data`` (read through ``as_ptr`` by Rust Binder)."""
        return self._check("vm_private_data").vm_private_data

    def zap_page_range_single(self, address: int, size: int) -> None:
        """``VmaRef::zap_page_range_single`` (``zap_vma_range`` upstream
        today): unmap ``[address, address + size)``. As merged after the
        seed's review, a range that wraps or leaves the VMA is refused
        silently (upstream: a TODO for ``WARN_ONCE``), so the Rust method
        cannot reach ``unmap_page_range``'s BUG_ON; the raw
        ``mm.memory.zap_page_range_single`` can."""
        vma = self._check("zap_page_range_single")
        end = address + size
        if end > ULONG_MAX or address < vma.vm_start or vma.vm_end < end:
            return
        zap_page_range_single(vma, address, size)

    zap_vma_range = zap_page_range_single

    def as_mixedmap_vma(self) -> VmaMixedMap | None:
        """``VmaRef::as_mixedmap_vma``: a ``VmaMixedMap`` if ``VM_MIXEDMAP``
        is set, else None."""
        vma = self._check("as_mixedmap_vma")
        if not vma.vm_flags & VM_MIXEDMAP:
            return None
        return VmaMixedMap(vma, self._mm, self._lease, _CREATOR)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._vma.name})"


class VmaReadGuard(VmaRef):
    """``kernel::mm::VmaReadGuard``: a VMA read lock (``lock_vma_under_rcu``)
    that derefs to a ``VmaRef``; ``unlock`` is its drop (``vma_end_read``)."""

    __slots__ = ()

    def drop(self) -> None:
        """Drop the guard: ``vma_end_read``. Handles made from it
        (``as_mixedmap_vma``) end with it."""
        vma = self._check("drop")
        self._lease.release()
        vma_end_read(vma)

    unlock = drop

    def __enter__(self) -> VmaReadGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._lease.released:
            self.drop()


class VmaMixedMap(VmaRef):
    """``kernel::mm::virt::VmaMixedMap``: a ``VmaRef`` with ``VM_MIXEDMAP``
    set, so ``vm_insert_page`` is allowed under a read lock (the kernel's
    contract 1 in seed 003)."""

    __slots__ = ()

    def vm_insert_page(self, address: int, page: Folio) -> None:
        """``VmaMixedMap::vm_insert_page``: map *page* (the driver keeps its
        own reference) at *address*; ``OSError`` with the errno on failure
        (``EFAULT`` outside the VMA, ``EBUSY`` if mapped, ``EINVAL`` for a
        bad page)."""
        vma = self._check("vm_insert_page")
        if not vma.vm_flags & VM_MIXEDMAP:  # core mm never clears it on a live VMA
            raise ViolationError("invariant", f"VmaMixedMap of {vma.name} without VM_MIXEDMAP",
                                 f"{vma!r} lost VM_MIXEDMAP while a VmaMixedMap exists")
        ret = vm_insert_page(vma, address, page)
        if ret:
            raise errno_error(-ret, f"vm_insert_page at {address:#x}")


def _refuse(what: str) -> OSError:
    return errno_error(errno.EINVAL, what)


class VmaNew(VmaRef):
    """``kernel::mm::virt::VmaNew``: the VMA is being set up in the
    driver's ``f_op->mmap`` and is not yet visible, so flags, ``vm_ops``
    and private data may be written without locks. Valid only until the
    hook returns."""

    __slots__ = ("_inserted",)

    def __init__(self, vma: VmAreaStruct, mm: MmWithUser, lease: Lease, creator: object) -> None:
        super().__init__(vma, mm, lease, creator)
        self._inserted = False

    def _update_flags(self, method: str, set_: int, clear: int) -> None:
        vma = self._check(method)
        vm_flags_init(vma, (vma.raw("vm_flags") | set_) & ~clear)

    def set_flags(self, set_: int, clear: int = 0) -> None:
        """Set *set_* and clear *clear* in ``vm_flags``, accepting only the
        changes the seed's review lists as safe for a driver, and refusing
        the rest with ``EINVAL``: set ``VM_MIXEDMAP`` (not with
        ``VM_PFNMAP``), ``VM_PFNMAP`` (not with ``VM_MIXEDMAP``, and not
        after a page was inserted), ``VM_IO``, ``VM_DONTEXPAND``,
        ``VM_DONTCOPY``, ``VM_DONTDUMP``; clear ``VM_MAYREAD``/``VM_MAYWRITE``/
        ``VM_MAYEXEC`` only while ``VM_READ``/``VM_WRITE``/``VM_EXEC`` is
        clear. Never ``VM_HUGETLB`` (``unmap_single_vma`` would take the VMA
        for hugetlb: a bad cast in ``hstate_vma``). Upstream offers the same
        through one method per change (below); this is the general form
        the issue asks for."""
        self._set_flags("set_flags", set_, clear)

    def _set_flags(self, method: str, set_: int, clear: int) -> None:
        vma = self._check(method)
        flags = vma.raw("vm_flags")
        if (set_ | clear) & VM_HUGETLB:
            raise _refuse("VM_HUGETLB may not be set or cleared by a driver: core mm would "
                          "treat the VMA as hugetlb (type confusion in hstate_vma)")
        if set_ & clear:
            raise _refuse(f"{vm_flags_str(set_ & clear)} both set and cleared")
        if set_ & ~NEW_SETTABLE:
            raise _refuse(f"a driver may not set {vm_flags_str(set_ & ~NEW_SETTABLE)}")
        if clear & ~NEW_CLEARABLE:
            raise _refuse(f"a driver may not clear {vm_flags_str(clear & ~NEW_CLEARABLE)}")
        for may, access in _ACCESS_OF.items():
            if clear & may and flags & access:
                raise _refuse(f"clear {vm_flags_str(may)} only after checking "
                              f"{vm_flags_str(access)} is clear")
        new = (flags | set_) & ~clear
        if new & VM_PFNMAP and new & VM_MIXEDMAP:
            raise _refuse("VM_PFNMAP and VM_MIXEDMAP together")
        if set_ & VM_PFNMAP and self._inserted:
            raise _refuse("VM_PFNMAP after a page was inserted")
        vm_flags_init(vma, new)

    def set_mixedmap(self) -> VmaMixedMap:
        """``VmaNew::set_mixedmap``: set ``VM_MIXEDMAP`` and return the
        handle that may ``vm_insert_page``. ``EINVAL`` if ``VM_PFNMAP`` is
        set (upstream cannot set ``VM_PFNMAP``, so it need not check)."""
        self._set_flags("set_mixedmap", VM_MIXEDMAP, 0)
        return _NewMixedMap(self._vma, self._mm, self._lease, _CREATOR, self)

    def set_io(self) -> None:
        """``VmaNew::set_io``: ``VM_IO``."""
        self._update_flags("set_io", VM_IO, 0)

    def set_dontexpand(self) -> None:
        """``VmaNew::set_dontexpand``: ``VM_DONTEXPAND``."""
        self._update_flags("set_dontexpand", VM_DONTEXPAND, 0)

    def set_dontcopy(self) -> None:
        """``VmaNew::set_dontcopy``: ``VM_DONTCOPY``."""
        self._update_flags("set_dontcopy", VM_DONTCOPY, 0)

    def set_dontdump(self) -> None:
        """``VmaNew::set_dontdump``: ``VM_DONTDUMP``."""
        self._update_flags("set_dontdump", VM_DONTDUMP, 0)

    def readable(self) -> bool:
        """``VmaNew::readable``: ``VM_READ`` is set."""
        return bool(self.flags() & VM_READ)

    def writable(self) -> bool:
        """``VmaNew::writable``: ``VM_WRITE`` is set."""
        return bool(self.flags() & VM_WRITE)

    def executable(self) -> bool:
        """``VmaNew::executable``: ``VM_EXEC`` is set."""
        return bool(self.flags() & VM_EXEC)

    def try_clear_mayread(self) -> None:
        """``VmaNew::try_clear_mayread``: ``EINVAL`` if ``VM_READ`` is set."""
        self._set_flags("try_clear_mayread", 0, VM_MAYREAD)

    def try_clear_maywrite(self) -> None:
        """``VmaNew::try_clear_maywrite``: ``EINVAL`` if ``VM_WRITE`` is set
        (the check a driver must not forget: a writable mapping could
        otherwise be made from a read-only one by mprotect)."""
        self._set_flags("try_clear_maywrite", 0, VM_MAYWRITE)

    def try_clear_mayexec(self) -> None:
        """``VmaNew::try_clear_mayexec``: ``EINVAL`` if ``VM_EXEC`` is set."""
        self._set_flags("try_clear_mayexec", 0, VM_MAYEXEC)

    def set_vm_ops(self, ops: VmOperations) -> None:
        """Install the driver's ``vm_ops`` (Rust Binder writes it through
        ``as_ptr``; only a new VMA may get one: the rule is "never" once
        visible)."""
        vma = self._check("set_vm_ops")
        vma._f_vm_ops = ops

    def set_private_data(self, data: Any) -> None:
        """Set ``vm_private_data`` (Rust Binder: its page range)."""
        vma = self._check("set_private_data")
        vma._f_vm_private_data = data


class _NewMixedMap(VmaMixedMap):
    """The ``VmaMixedMap`` ``VmaNew::set_mixedmap`` returns: inserting a
    page through it is remembered, so ``VM_PFNMAP`` cannot follow."""

    __slots__ = ("_new",)

    def __init__(self, vma: VmAreaStruct, mm: MmWithUser, lease: Lease, creator: object,
                 new: VmaNew) -> None:
        super().__init__(vma, mm, lease, creator)
        self._new = new

    def vm_insert_page(self, address: int, page: Folio) -> None:
        super().vm_insert_page(address, page)
        self._new._inserted = True


class VmaMut(VmaRef):
    """A live VMA with the mmap write lock *and* its VMA write lock held
    (``vma_start_write``), as the seed's review asks of any handle that
    mutates a VMA (``VmAreaMut`` in the v6 posting, which had only the mmap
    write lock). Made by ``MmapWriteGuard.vma_lookup_mut``."""

    __slots__ = ()

    def set_flags(self, set_: int, clear: int = 0) -> None:
        """Change flags of a live VMA: only ``VM_DONTCOPY``/``VM_DONTDUMP``
        may be set, and ``VM_MAYREAD``/``VM_MAYWRITE``/``VM_MAYEXEC`` cleared
        while the access bit is clear (what madvise and a driver's
        ``mmap`` may do); anything else is ``EINVAL``. Written with
        ``vm_flags_mod`` under the VMA write lock.

        With the ``rust-vmamut-set-flags`` switch: the v6 posting's
        ``VmAreaMut::set_flags``, a plain write of ``vm_flags`` under the
        mmap write lock alone (the rule table reports it)."""
        vma = self._check("set_flags")
        if kernel_config(vma.raw("vm_mm")).has(RUST_VMAMUT_SET_FLAGS):
            vma.vm_flags_ = (vma.vm_flags | set_) & ~clear
            return
        flags = vma.vm_flags
        if set_ & clear:
            raise _refuse(f"{vm_flags_str(set_ & clear)} both set and cleared")
        if set_ & ~LIVE_SETTABLE:
            raise _refuse(f"a driver may not set {vm_flags_str(set_ & ~LIVE_SETTABLE)} "
                          "on a live VMA")
        if clear & ~NEW_CLEARABLE:
            raise _refuse(f"a driver may not clear {vm_flags_str(clear & ~NEW_CLEARABLE)} "
                          "on a live VMA")
        for may, access in _ACCESS_OF.items():
            if clear & may and flags & access:
                raise _refuse(f"clear {vm_flags_str(may)} only after checking "
                              f"{vm_flags_str(access)} is clear")
        vm_flags_mod(vma, set_, clear)


H = TypeVar("H", VmaRef, VmaReadGuard, VmaNew, VmaMut)


def make_handle(cls: type[H], vma: VmAreaStruct, mm: MmWithUser, lease: Lease) -> H:
    """For ``mmrace.kapi.mm`` and ``mmrace.kapi.file``: a handle of *cls*."""
    return cls(vma, mm, lease, _CREATOR)

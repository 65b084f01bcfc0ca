"""Typed mm handles: the Python mirror of rust/kernel/mm.rs (and
rust/kernel/mm/mmput_async.rs).

* :class:`Mm` -- ``ARef<Mm>``: an ``mmgrab`` reference. The struct stays,
  the address space may be gone; the only thing to do with it is
  ``mmget_not_zero``. It has no lock methods, so a driver cannot touch a
  stashed mm's VMAs without first taking a user reference.
* :class:`MmWithUser` -- ``mm_users`` is known to be non-zero: an ``mmget``
  reference (``ARef<MmWithUser>``) or a borrowed handle (``VmaRef.mm``, or
  ``MmWithUser.from_raw``, which is ``unsafe`` in Rust: the caller promises
  the invariant). It may lock the address space: ``mmap_read_lock``,
  ``mmap_read_trylock``, ``lock_vma_under_rcu`` and, as the v6 posting in
  seed 003 had, ``mmap_write_lock`` (upstream today has no write guard).
* :class:`MmWithUserAsync` -- ``into_mmput_async``: dropping it is
  ``mmput_async``.
* :class:`MmapReadGuard`, :class:`MmapWriteGuard` -- the lock held; they
  hand out :mod:`mmrace.kapi.vma` handles that end with the guard.

``drop`` is Rust's ``Drop`` (``mmdrop``, ``mmput``, ``mmput_async``,
``mmap_read_unlock``...); guards are also context managers. A handle used
after its drop is a ``use-after-free`` (a reference no longer held) or a
``locking-rule`` violation (a lock no longer held), never a Python error.
"""

from __future__ import annotations

from mmrace.engine import ViolationError
from mmrace.kapi.vma import (
    RUST_VMAMUT_SET_FLAGS,
    Lease,
    VmaMut,
    VmaReadGuard,
    VmaRef,
    make_handle,
)
from mmrace.mm.fork import mmdrop, mmget_not_zero, mmgrab, mmput, mmput_async
from mmrace.mm.internal import held, kernel_config
from mmrace.mm.mm_types import MmStruct
from mmrace.mm.mmap_lock import (
    lock_vma_under_rcu,
    mmap_read_lock,
    mmap_read_trylock,
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_unlock,
    vma_start_write,
)
from mmrace.mm.vma import vma_lookup

__all__ = [
    "Mm",
    "MmWithUser",
    "MmWithUserAsync",
    "MmapReadGuard",
    "MmapWriteGuard",
]

_CREATOR = object()


class Mm:
    """``kernel::mm::Mm`` held through ``ARef<Mm>`` (an ``mmgrab``
    reference). Methods here are safe with ``mm_users`` zero."""

    __slots__ = ("_mm", "_ref")

    def __init__(self, mm: MmStruct, ref: str, creator: object) -> None:
        if creator is not _CREATOR:
            raise TypeError(f"{type(self).__name__} handles come from Mm.mmgrab, "
                            "mmget_not_zero or MmWithUser.from_raw, not from a constructor")
        self._mm = mm
        self._ref = ref  # "grab", "user", "borrowed", or "dropped"

    @classmethod
    def mmgrab(cls, mm: MmStruct) -> Mm:
        """``ARef::<Mm>::from(&mm)``: take an ``mmgrab`` reference (what
        Rust Binder stashes when its file is opened)."""
        mmgrab(mm)
        return Mm(mm, "grab", _CREATOR)

    def _alive(self, method: str) -> MmStruct:
        if self._ref == "dropped":
            name = type(self).__name__
            raise ViolationError(
                "use-after-free",
                f"use-after-free: {name}.{method}() on {self._mm.name} after drop",
                f"{name}.{method}() on {self._mm.name}: the handle's reference was dropped "
                "(in Rust the value is gone after drop); held: " + held().describe())
        return self._mm

    def as_raw(self) -> MmStruct:
        """``Mm::as_raw``: the ``mm_struct``."""
        return self._alive("as_raw")

    def mmget_not_zero(self) -> MmWithUser | None:
        """``Mm::mmget_not_zero``: an ``ARef<MmWithUser>`` unless the
        address space is already gone (``mm_users`` zero)."""
        mm = self._alive("mmget_not_zero")
        if not mmget_not_zero(mm):
            return None
        return MmWithUser(mm, "user", _CREATOR)

    def drop(self) -> None:
        """Drop the ``ARef``: ``mmdrop``."""
        mm = self._alive("drop")
        self._ref = "dropped"
        mmdrop(mm)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._mm.name}, {self._ref})"


class MmWithUser(Mm):
    """``kernel::mm::MmWithUser``: ``mm_users`` is non-zero while the handle
    lives, so the address space may be locked and looked at."""

    __slots__ = ()

    @classmethod
    def from_raw(cls, mm: MmStruct) -> MmWithUser:
        """``MmWithUser::from_raw`` (``unsafe``): a borrowed handle, no
        reference taken; the caller promises that ``mm_users`` stays
        non-zero while it uses it. Breaking the promise is caught where the
        address space is used (a ``use-after-free`` of the mm)."""
        return cls(mm, "borrowed", _CREATOR)

    def drop(self) -> None:
        """Drop the ``ARef<MmWithUser>``: ``mmput`` (a borrowed handle has
        nothing to drop: a ``TypeError``)."""
        mm = self._alive("drop")
        if self._ref == "borrowed":
            raise TypeError(f"{self!r} is borrowed: it holds no reference to drop")
        self._ref = "dropped"
        mmput(mm)

    def into_mmput_async(self) -> MmWithUserAsync:
        """``MmWithUser::into_mmput_async``: the same reference, dropped
        with ``mmput_async`` (Rust Binder: the last put may come from a
        remote process that must not run the teardown itself)."""
        mm = self._alive("into_mmput_async")
        if self._ref == "borrowed":
            raise TypeError(f"{self!r} is borrowed: it holds no reference to hand on")
        self._ref = "dropped"
        return MmWithUserAsync(mm, "user", _CREATOR)

    def mmap_read_lock(self) -> MmapReadGuard:
        """``MmWithUser::mmap_read_lock``."""
        mm = self._alive("mmap_read_lock")
        mmap_read_lock(mm)
        return MmapReadGuard(self, Lease("mmap", f"{mm.mmap_lock.name} (read)"), _CREATOR)

    def mmap_read_trylock(self) -> MmapReadGuard | None:
        """``MmWithUser::mmap_read_trylock``: None if it is contended."""
        mm = self._alive("mmap_read_trylock")
        if not mmap_read_trylock(mm):
            return None
        return MmapReadGuard(self, Lease("mmap", f"{mm.mmap_lock.name} (read)"), _CREATOR)

    def mmap_write_lock(self) -> MmapWriteGuard:
        """``mmap_write_lock``: the v6 posting's ``MmWithUser::mmap_write_lock``
        (upstream has none: drivers do not need the write lock)."""
        mm = self._alive("mmap_write_lock")
        mmap_write_lock(mm)
        return MmapWriteGuard(self, Lease("mmap", f"{mm.mmap_lock.name} (write)"), _CREATOR)

    def lock_vma_under_rcu(self, address: int) -> VmaReadGuard | None:
        """``MmWithUser::lock_vma_under_rcu``: the VMA covering *address*
        read-locked, or None (none there, or contended: fall back to
        ``mmap_read_lock``)."""
        mm = self._alive("lock_vma_under_rcu")
        vma = lock_vma_under_rcu(mm, address)
        if vma is None:
            return None
        lease = Lease("vma", f"the VMA read lock of {vma.name}")
        return make_handle(VmaReadGuard, vma, self, lease)


class MmWithUserAsync(MmWithUser):
    """``kernel::mm::MmWithUserAsync``: dropping it is ``mmput_async``."""

    __slots__ = ()

    def drop(self) -> None:
        """Drop: ``mmput_async``."""
        mm = self._alive("drop")
        self._ref = "dropped"
        mmput_async(mm)


class _Guard:
    """The part of the mmap lock guards both kinds share."""

    __slots__ = ("_mm", "_lease")

    def __init__(self, mm: MmWithUser, lease: Lease, creator: object) -> None:
        if creator is not _CREATOR:
            raise TypeError(f"{type(self).__name__} comes from MmWithUser's lock methods")
        self._mm = mm
        self._lease = lease

    def _held(self, method: str) -> MmStruct:
        if self._lease.released:
            name = type(self).__name__
            raise ViolationError(
                "locking-rule",
                f"locking rule: {name}.{method}() after the guard was dropped",
                f"{name}.{method}(): {self._lease.lock} was released when the guard was "
                f"dropped; held: {held().describe()}")
        return self._mm.as_raw()

    def vma_lookup(self, address: int) -> VmaRef | None:
        """``MmapReadGuard::vma_lookup``: the VMA containing *address* as a
        ``VmaRef`` that ends with this guard, or None."""
        mm = self._held("vma_lookup")
        vma = vma_lookup(mm, address)
        if vma is None:
            return None
        return make_handle(VmaRef, vma, self._mm, Lease("mmap", self._lease.lock, self._lease))


class MmapReadGuard(_Guard):
    """``kernel::mm::MmapReadGuard``: the mmap read lock."""

    __slots__ = ()

    def drop(self) -> None:
        """Drop the guard: ``mmap_read_unlock``; its VMA handles end."""
        mm = self._held("drop")
        self._lease.release()
        mmap_read_unlock(mm)

    unlock = drop

    def __enter__(self) -> MmapReadGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._lease.released:
            self.drop()


class MmapWriteGuard(_Guard):
    """The mmap write lock (the v6 posting's ``MmapWriteGuard``)."""

    __slots__ = ()

    def vma_lookup_mut(self, address: int) -> VmaMut | None:
        """The VMA containing *address* write-locked (``vma_start_write``)
        as a ``VmaMut``, or None. With the ``rust-vmamut-set-flags`` switch
        (the v6 posting): no ``vma_start_write``."""
        mm = self._held("vma_lookup_mut")
        vma = vma_lookup(mm, address)
        if vma is None:
            return None
        lock = self._lease.lock
        if not kernel_config(mm).has(RUST_VMAMUT_SET_FLAGS):
            vma_start_write(vma)
            lock += f" + the VMA write lock of {vma.name}"
        return make_handle(VmaMut, vma, self._mm, Lease("mut", lock, self._lease))

    def drop(self) -> None:
        """Drop the guard: ``mmap_write_unlock`` (which also ends every VMA
        write lock); its VMA handles end."""
        mm = self._held("drop")
        self._lease.release()
        mmap_write_unlock(mm)

    unlock = drop

    def __enter__(self) -> MmapWriteGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._lease.released:
            self.drop()

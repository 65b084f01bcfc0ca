"""A driver's ``f_op->mmap`` with a typed VMA (``MiscDevice::mmap`` of
rust/kernel/miscdevice.rs, which hands the driver a ``&VmaNew``).

``f_op_mmap(fn)`` turns ``fn(file, vma: VmaNew)`` into the raw hook that
``System.create_file(path, mmap=...)`` installs as the file's
``f_op->mmap``. The ``VmaNew`` is valid while ``fn`` runs (the VMA is not
yet in the mm's tree); an ``OSError`` it raises fails the ``mmap`` with that
errno, as a Rust ``Err`` return does.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from mmrace.kapi.mm import MmWithUser
from mmrace.kapi.vma import Lease, VmaNew, make_handle
from mmrace.mm.mm_types import File, MmapHook, VmAreaStruct

__all__ = ["DriverMmap", "f_op_mmap"]

DriverMmap = Callable[[File, VmaNew], None]


def f_op_mmap(fn: DriverMmap) -> MmapHook:
    """The raw ``f_op->mmap`` for the typed driver hook *fn*."""

    def mmap(file: File, vma: VmAreaStruct) -> int:
        # mmap runs in the mm's own task, which holds a user reference:
        # the borrowed MmWithUser is sound (VmaNew::mm in Rust).
        mm = MmWithUser.from_raw(vma.raw("vm_mm"))
        lease = Lease("new", f"the set-up of {vma.name} inside f_op->mmap")
        new = make_handle(VmaNew, vma, mm, lease)
        try:
            fn(file, new)
        except OSError as exc:
            return -(exc.errno or errno.EINVAL)
        finally:
            lease.release()
        return 0

    mmap.__name__ = getattr(fn, "__name__", "f_op_mmap")
    return mmap

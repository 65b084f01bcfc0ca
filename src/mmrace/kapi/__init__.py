"""The typed kernel API a driver sees: the Rust abstractions for
``mm_struct`` and ``vm_area_struct`` (rust/kernel/mm.rs, rust/kernel/mm/virt.rs)
as Python classes, checked at run time (every method verifies the lock its
handle stands for) and statically (``mypy --strict`` rejects a method the
handle's class lacks). A layer above ``mm``, beside ``user``."""

from mmrace.kapi.file import DriverMmap, f_op_mmap
from mmrace.kapi.mm import Mm, MmapReadGuard, MmapWriteGuard, MmWithUser, MmWithUserAsync
from mmrace.kapi.vma import VmaMixedMap, VmaMut, VmaNew, VmaReadGuard, VmaRef

__all__ = [
    "DriverMmap",
    "Mm",
    "MmWithUser",
    "MmWithUserAsync",
    "MmapReadGuard",
    "MmapWriteGuard",
    "VmaMixedMap",
    "VmaMut",
    "VmaNew",
    "VmaReadGuard",
    "VmaRef",
    "f_op_mmap",
]

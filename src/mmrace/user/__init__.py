"""What a scenario sees: ``System``, ``Process``, the syscall constants
(including the userfaultfd ones and ``CLEAR_REFS_SOFT_DIRTY``), and
drgn-named helpers for reading model state (``for_each_vma``, ``vma_find``)."""

from __future__ import annotations

from mmrace.mm.mman import *  # noqa: F403
from mmrace.mm.mman import __all__ as _mman_all
from mmrace.mm.task_mmu import CLEAR_REFS_SOFT_DIRTY
from mmrace.mm.userfaultfd_k import (
    UFFD_EVENT_FORK,
    UFFD_EVENT_PAGEFAULT,
    UFFD_EVENT_REMAP,
    UFFD_EVENT_REMOVE,
    UFFD_EVENT_UNMAP,
    UFFD_FEATURE_EVENT_FORK,
    UFFD_FEATURE_EVENT_REMAP,
    UFFD_FEATURE_EVENT_REMOVE,
    UFFD_FEATURE_EVENT_UNMAP,
    UFFD_FEATURE_MINOR_SHMEM,
    UFFD_FEATURE_MOVE,
    UFFD_FEATURE_PAGEFAULT_FLAG_WP,
    UFFD_PAGEFAULT_FLAG_MINOR,
    UFFD_PAGEFAULT_FLAG_WP,
    UFFD_PAGEFAULT_FLAG_WRITE,
    UFFDIO_CONTINUE_MODE_DONTWAKE,
    UFFDIO_CONTINUE_MODE_WP,
    UFFDIO_COPY_MODE_DONTWAKE,
    UFFDIO_COPY_MODE_WP,
    UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES,
    UFFDIO_MOVE_MODE_DONTWAKE,
    UFFDIO_REGISTER_MODE_MINOR,
    UFFDIO_REGISTER_MODE_MISSING,
    UFFDIO_REGISTER_MODE_WP,
    UFFDIO_ZEROPAGE_MODE_DONTWAKE,
)
from mmrace.user.process import (
    MapEntry,
    Process,
    System,
    for_each_vma,
    vma_find,
)
from mmrace.user.thread import SegmentationFault, Thread
from mmrace.user.userfaultfd import UserBuffer, Userfaultfd

__all__ = [
    "CLEAR_REFS_SOFT_DIRTY",
    "UFFDIO_CONTINUE_MODE_DONTWAKE",
    "UFFDIO_CONTINUE_MODE_WP",
    "UFFDIO_COPY_MODE_DONTWAKE",
    "UFFDIO_COPY_MODE_WP",
    "UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES",
    "UFFDIO_MOVE_MODE_DONTWAKE",
    "UFFDIO_REGISTER_MODE_MINOR",
    "UFFDIO_REGISTER_MODE_MISSING",
    "UFFDIO_REGISTER_MODE_WP",
    "UFFDIO_ZEROPAGE_MODE_DONTWAKE",
    "UFFD_EVENT_FORK",
    "UFFD_EVENT_PAGEFAULT",
    "UFFD_EVENT_REMAP",
    "UFFD_EVENT_REMOVE",
    "UFFD_EVENT_UNMAP",
    "UFFD_FEATURE_EVENT_FORK",
    "UFFD_FEATURE_EVENT_REMAP",
    "UFFD_FEATURE_EVENT_REMOVE",
    "UFFD_FEATURE_EVENT_UNMAP",
    "UFFD_FEATURE_MINOR_SHMEM",
    "UFFD_FEATURE_MOVE",
    "UFFD_FEATURE_PAGEFAULT_FLAG_WP",
    "UFFD_PAGEFAULT_FLAG_MINOR",
    "UFFD_PAGEFAULT_FLAG_WP",
    "UFFD_PAGEFAULT_FLAG_WRITE",
    "UserBuffer",
    "MapEntry",
    "Process",
    "SegmentationFault",
    "System",
    "Thread",
    "Userfaultfd",
    "for_each_vma",
    "vma_find",
    *_mman_all,
]

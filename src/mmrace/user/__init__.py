"""What a scenario sees: ``System``, ``Process``, the syscall constants
(including ``UFFDIO_REGISTER_MODE_*`` and ``CLEAR_REFS_SOFT_DIRTY``), and
drgn-named helpers for reading model state (``for_each_vma``, ``vma_find``)."""

from __future__ import annotations

from mmrace.mm.mman import *  # noqa: F403
from mmrace.mm.mman import __all__ as _mman_all
from mmrace.mm.task_mmu import CLEAR_REFS_SOFT_DIRTY
from mmrace.mm.userfaultfd import UFFDIO_REGISTER_MODE_MISSING, UFFDIO_REGISTER_MODE_WP
from mmrace.user.process import (
    MapEntry,
    Process,
    System,
    Userfaultfd,
    for_each_vma,
    vma_find,
)
from mmrace.user.thread import SegmentationFault, Thread

__all__ = [
    "CLEAR_REFS_SOFT_DIRTY",
    "UFFDIO_REGISTER_MODE_MISSING",
    "UFFDIO_REGISTER_MODE_WP",
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

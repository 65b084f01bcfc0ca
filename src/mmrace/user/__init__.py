"""What a scenario sees: ``System``, ``Process``, the syscall constants, and
drgn-named helpers for reading model state (``for_each_vma``, ``vma_find``)."""

from __future__ import annotations

from mmrace.mm.mman import *  # noqa: F403
from mmrace.mm.mman import __all__ as _mman_all
from mmrace.user.process import MapEntry, Process, System, for_each_vma, vma_find

__all__ = ["MapEntry", "Process", "System", "for_each_vma", "vma_find", *_mman_all]

"""The constants a scenario passes to syscalls (``PAGE_SIZE``, ``PROT_*``,
``MAP_*``, ``MADV_*``, ``MLOCK_*``), as in <sys/mman.h>."""

from __future__ import annotations

from mmrace.mm.mman import *  # noqa: F403
from mmrace.mm.mman import __all__ as _mman_all

__all__ = list(_mman_all)

"""Reverse-map locks (include/linux/rmap.h, include/linux/fs.h helpers).

Only the lock wrappers the VMA code needs so far; they record the held lock
for the rule checker. The anon_vma and i_mmap trees themselves land with
the rmap issue.
"""

from __future__ import annotations

from typing import Any

from mmrace.mm.internal import held, kfunc
from mmrace.mm.locks import down_read, down_write, up_read, up_write


def _took(sem: Any, mode: str) -> None:
    h = held()
    h.rwsem[sem.serial] = mode
    h.names[sem.serial] = sem.name


@kfunc
def i_mmap_lock_write(mapping: Any) -> None:
    """``i_mmap_lock_write``."""
    down_write(mapping.i_mmap_rwsem)
    _took(mapping.i_mmap_rwsem, "W")


@kfunc
def i_mmap_unlock_write(mapping: Any) -> None:
    """``i_mmap_unlock_write``."""
    held().rwsem.pop(mapping.i_mmap_rwsem.serial, None)
    up_write(mapping.i_mmap_rwsem)


@kfunc
def i_mmap_lock_read(mapping: Any) -> None:
    """``i_mmap_lock_read``."""
    down_read(mapping.i_mmap_rwsem)
    _took(mapping.i_mmap_rwsem, "R")


@kfunc
def i_mmap_unlock_read(mapping: Any) -> None:
    """``i_mmap_unlock_read``."""
    held().rwsem.pop(mapping.i_mmap_rwsem.serial, None)
    up_read(mapping.i_mmap_rwsem)


@kfunc
def anon_vma_lock_write(anon_vma: Any) -> None:
    """``anon_vma_lock_write`` (the model's anon_vma is its own root)."""
    down_write(anon_vma.rwsem)
    _took(anon_vma.rwsem, "W")


@kfunc
def anon_vma_unlock_write(anon_vma: Any) -> None:
    """``anon_vma_unlock_write``."""
    held().rwsem.pop(anon_vma.rwsem.serial, None)
    up_write(anon_vma.rwsem)


@kfunc
def anon_vma_lock_read(anon_vma: Any) -> None:
    """``anon_vma_lock_read``."""
    down_read(anon_vma.rwsem)
    _took(anon_vma.rwsem, "R")


@kfunc
def anon_vma_unlock_read(anon_vma: Any) -> None:
    """``anon_vma_unlock_read``."""
    held().rwsem.pop(anon_vma.rwsem.serial, None)
    up_read(anon_vma.rwsem)

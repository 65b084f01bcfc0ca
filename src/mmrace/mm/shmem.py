"""A minimal shmem (mm/shmem.c): the fault of a shmem (memfd) mapping, with
userfaultfd's minor faults, and the page-cache lookup ``UFFDIO_CONTINUE``
maps.

A file whose ``vm_ops`` is :data:`SHMEM_VM_OPS` (``System.memfd_create``)
faults through :func:`shmem_fault`: if the page is already in the page cache
and the VMA is registered ``UFFDIO_REGISTER_MODE_MINOR``, the fault goes to
the monitor (``handle_userfault(vmf, VM_UFFD_MINOR)``), which maps the cached
page with ``UFFDIO_CONTINUE``; otherwise it is the page cache's
``filemap_fault``.

Left out: swap, huge pages, ``shmem_mfill_atomic_pte`` (UFFDIO_COPY into
shmem: registering a shmem VMA for MISSING is refused as not modelled),
uffd-wp PTE markers (WP on shmem likewise), fallocate and holes, size
changes.
"""

from __future__ import annotations

from typing import Any

from mmrace.mm.filemap import filemap_fault, filemap_get_folio
from mmrace.mm.fs_userfaultfd import handle_userfault
from mmrace.mm.internal import kfunc
from mmrace.mm.mm_types import VM_UFFD_MINOR, AddressSpace, VmAreaStruct, VmOperations
from mmrace.mm.page_alloc import Folio, folio_lock, folio_put
from mmrace.mm.userfaultfd_k import userfaultfd_minor


@kfunc
def shmem_fault(vmf: Any) -> tuple[int, Folio | None]:
    """``shmem_fault`` -> ``shmem_get_folio_gfp(SGP_CACHE)``: a page the page
    cache already holds, in a VMA registered for minor faults, is handed to
    the monitor (the fault returns ``VM_FAULT_RETRY`` with the fault lock
    dropped); anything else is ``filemap_fault``."""
    vma = vmf.vma
    if userfaultfd_minor(vma):
        folio = filemap_get_folio(vma.vm_file.f_mapping, vmf.pgoff)
        if folio is not None:
            folio_put(folio)
            return handle_userfault(vmf, VM_UFFD_MINOR), None
    return filemap_fault(vmf)


SHMEM_VM_OPS = VmOperations("shmem_vm_ops", fault=shmem_fault)
"""``shmem_vm_ops``: what ``shmem_mmap`` installs."""


def vma_is_shmem(vma: VmAreaStruct) -> bool:
    """``vma_is_shmem``."""
    return vma.vm_ops is SHMEM_VM_OPS


@kfunc
def shmem_get_folio_noalloc(mapping: AddressSpace, index: int) -> Folio | None:
    """``shmem_get_folio(inode, pgoff, 0, &folio, SGP_NOALLOC)``: the cached
    folio at *index*, locked and referenced, or None (nothing is allocated:
    ``UFFDIO_CONTINUE`` maps only what the page cache has)."""
    folio = filemap_get_folio(mapping, index)
    if folio is not None:
        folio_lock(folio)
    return folio


__all__ = ["SHMEM_VM_OPS", "shmem_fault", "shmem_get_folio_noalloc", "vma_is_shmem"]

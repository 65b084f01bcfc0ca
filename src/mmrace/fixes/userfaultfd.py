"""userfaultfd through its eras: ``mmap_changing``, the fill and move ioctls
and their locks (fs/userfaultfd.c, mm/userfaultfd.c).

A non-cooperative monitor (CRIU's lazy restore, a heap compactor) gets
events -- fork, mremap, munmap, ``MADV_DONTNEED`` -- and fills or moves the
process's memory with ioctls. ``mmap_changing`` keeps the two apart: each
event raises it before it changes the address space and lowers it once the
monitor has read the event; the ioctls fail with ``-EAGAIN`` while it is
raised. The history, oldest first:

* 4.18 introduced the flag, checked under ``mmap_lock`` (held for read by
  the ioctls, for write by fork, mremap and munmap; ``MADV_DONTNEED`` raises
  it holding the lock only for read);
* 5.15 made it a counter: two concurrent events no longer clear each
  other's flag;
* 6.9 moved it under its own rwsem, ``map_changing_lock`` (raised with it
  held for write, read with it held for read), so that the same release
  could run the ioctls under per-VMA locks instead of ``mmap_lock``;
* the review of that patch (seed 001) asked whether ``userfaultfd_remove``
  needs the write lock at all: the ``uffd-remove-increment-only`` proposal;
* ``UFFDIO_MOVE`` (6.8) and its fix for a page pinned in the middle of a
  move (6.9).

Releases are the first mainline release containing the commit; where the
merge is inferred from the patch's date it says so. This module imports
nothing from ``mmrace`` beyond the registry it fills.
"""

from __future__ import annotations

from mmrace.fixes import Fix, register_fix

UFFD_MMAP_CHANGING = register_fix(
    Fix(
        "uffd-mmap-changing",
        "userfaultfd: prevent non-cooperative events vs mcopy_atomic races",
        "fork (dup_userfaultfd), mremap, munmap and MADV_DONTNEED set ctx->mmap_changing "
        "before changing the address space and clear it when the monitor has read their "
        "event; UFFDIO_COPY and UFFDIO_ZEROPAGE (and later every fill, move and write-protect "
        "ioctl) return -EAGAIN while it is set, checking it again after taking mmap_lock and "
        "after the copy-from-user retry. Before it a copy could land in the parent after "
        "fork copied the page tables, and the monitor could not tell whether the child has "
        "the page",
        release="4.18",
        commit="df2cc96e7701",
    )
)

UFFD_MMAP_CHANGING_ATOMIC = register_fix(
    Fix(
        "uffd-mmap-changing-atomic",
        "userfaultfd: change mmap_changing to atomic",
        "mmap_changing becomes an atomic_t counter (atomic_inc when an event is raised, "
        "atomic_dec when it is read) instead of a bool set and cleared without a lock: "
        "two concurrent events (two MADV_DONTNEEDs) no longer let the first one read clear "
        "the flag while the other is unread. Release inferred: posted 2021-08-08 (Nadav "
        "Amit, series 'userfaultfd: minor bug fixes'), merged for 5.15",
        release="5.15",
        commit="a759a909d42d",
    )
)

UFFD_MAP_CHANGING_LOCK = register_fix(
    Fix(
        "uffd-map-changing-lock",
        "userfaultfd: protect mmap_changing with rw_sem in userfaulfd_ctx",
        "mmap_changing is raised under ctx->map_changing_lock held for write and read under "
        "it held for read for the whole fill, move or write-protect operation, instead of "
        "relying on mmap_lock; userfaultfd_remove (MADV_DONTNEED, which holds mmap_lock only "
        "for read) takes it for write too, so it waits for every ioctl between its check "
        "and its last page. Preparatory for the per-VMA-lock ioctls of the same series",
        release="6.9",
        commit="5e4c24a57b0c",
    )
)

UFFD_PER_VMA_LOCKS = register_fix(
    Fix(
        "uffd-per-vma-locks",
        "userfaultfd: use per-vma locks in userfaultfd operations",
        "UFFDIO_COPY/ZEROPAGE/CONTINUE lock the destination VMA with its per-VMA lock "
        "(uffd_mfill_lock) and UFFDIO_MOVE both VMAs (uffd_move_lock), falling back to "
        "mmap_lock only to prepare an anon_vma or when lock_vma_under_rcu fails; "
        "UFFDIO_WRITEPROTECT keeps mmap_lock. Without map_changing_lock this would leave "
        "mmap_changing unprotected against events raised under mmap_lock",
        release="6.9",
        commit="867a43a34ff8",
    )
)

UFFDIO_MOVE = register_fix(
    Fix(
        "uffdio-move",
        "userfaultfd: UFFDIO_MOVE uABI",
        "a feature: the UFFDIO_MOVE ioctl (move_pages) and UFFD_FEATURE_MOVE; before it the "
        "ioctl is -EINVAL",
        release="6.8",
        commit="adef440691ba",
    )
)

UFFDIO_CONTINUE_SHMEM = register_fix(
    Fix(
        "uffdio-continue",
        "userfaultfd/shmem: support UFFDIO_CONTINUE for shmem",
        "a feature: minor faults (UFFDIO_REGISTER_MODE_MINOR, UFFD_FEATURE_MINOR_SHMEM) and "
        "UFFDIO_CONTINUE on shmem, which map a page the page cache already has; the ioctl "
        "itself came for hugetlbfs in 5.13 ('userfaultfd: add UFFDIO_CONTINUE ioctl'), "
        "which the model does not have",
        release="5.14",
        commit="153132571f02",
    )
)

UFFD_MOVE_SRC_FOLIO_UNPINNED = register_fix(
    Fix(
        "uffd-move-src-folio-unpinned",
        "mm: userfaultfd: fix unexpected change to src_folio when UFFDIO_MOVE fails",
        "move_present_pte sets the source folio's anon_vma and index to the destination "
        "(folio_move_anon_rmap) only after clearing the source PTE and finding the folio "
        "still unpinned; before it they were set first and not restored when a GUP-fast pin "
        "that came in meanwhile made the move fail with -EBUSY: the page stayed mapped at "
        "the source while rmap walks looked for it at the destination (swap-out and "
        "migration fail, possibly memory corruption). The huge-PMD half followed in "
        "c0205eaf3af9 'userfaultfd: change src_folio after ensuring it's unpinned in "
        "UFFDIO_MOVE'. Release inferred: both were backported to 6.8.y stable",
        release="6.9",
        commit="d7a08838ab74",
    )
)

# Proposed in the seed-001 thread, never merged (turn on with with_=).

UFFD_REMOVE_INCREMENT_ONLY = register_fix(
    Fix(
        "uffd-remove-increment-only",
        "Re: [PATCH v2 2/3] userfaultfd: protect mmap_changing with rw_sem in userfaulfd_ctx",
        "Liam R. Howlett, 2024-01-30, in review of the map_changing_lock patch: "
        "userfaultfd_remove, which runs with mmap_lock held only for read, should just "
        "atomic_inc(&ctx->mmap_changing) as a signal to new ioctls instead of taking "
        "map_changing_lock for write and waiting for the ones in progress. Turning it on "
        "selects the map_changing_lock of that patch (it is a variant of it) with this "
        "userfaultfd_remove; Mike Rapoport answered that the write lock lets the monitor "
        "handle events and ioctls on different threads",
        merged=False,
    )
)

__all__ = [
    "UFFDIO_CONTINUE_SHMEM",
    "UFFDIO_MOVE",
    "UFFD_MAP_CHANGING_LOCK",
    "UFFD_MMAP_CHANGING",
    "UFFD_MMAP_CHANGING_ATOMIC",
    "UFFD_MOVE_SRC_FOLIO_UNPINNED",
    "UFFD_PER_VMA_LOCKS",
    "UFFD_REMOVE_INCREMENT_ONLY",
]

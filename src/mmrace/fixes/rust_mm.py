"""Switches from seed 003, "[PATCH v6 1/2] rust: mm: add abstractions for
mm_struct and vm_area_struct" (Alice Ryhl, Jann Horn's review, Nov 2024):
the posting's API the review changed, a driver error the Rust types rule
out, and the reviewer's alternative design for Binder's allocator. None of
them was merged: turning one on (``with_``) gives the behaviour the thread
argues about. ``mmrace.kapi`` and ``mmrace.scenarios.binder`` ask for them.
"""

from __future__ import annotations

from mmrace.fixes import Fix, register_fix

_V6 = "[PATCH v6 1/2] rust: mm: add abstractions for mm_struct and vm_area_struct"

RUST_VMAMUT_SET_FLAGS = register_fix(
    Fix(
        "rust-vmamut-set-flags",
        _V6,
        "the v6 posting (Alice Ryhl, 2024-10-10): VmAreaMut needs only the mmap write lock "
        "and its set_flags writes vm_flags of a live VMA directly, without vma_start_write. "
        "Jann Horn's review (2024-11-08): a mutable VMA also needs the VMA write lock, and "
        "drivers should change flags only of a new VMA; set_flags moved to VmAreaNew (v7) "
        "and became VmaNew's per-flag setters upstream. Message-id of the posting not "
        "confirmed",
        merged=False,
    )
)

BINDER_NO_MMGET = register_fix(
    Fix(
        "binder-no-mmget",
        "(driver error, no upstream patch) use a stashed mm without mmget_not_zero",
        "Binder's page-install path (use_page_slow) uses the mm it stashed with mmgrab "
        "(ARef<Mm>) through the unsafe MmWithUser::from_raw instead of "
        "Mm::mmget_not_zero, so it locks and uses the address space while its process "
        "exits. Safe Rust cannot express this (Mm has no lock methods); C can. Binder has "
        "always taken the reference (C: get_task_mm, then mmget_not_zero since 'android: "
        "binder: Don't get mm from task', 4.15)",
        merged=False,
    )
)

BINDER_LAZY_FAULT = register_fix(
    Fix(
        "binder-lazy-fault",
        "(review suggestion) unmap_mapping_range from the shrinker, PTEs installed by "
        "vm_ops->fault",
        "Jann Horn, 2024-11-08, in reply to " + _V6 + ": instead of vma_lookup + "
        "vm_insert_page when a message arrives and vma_lookup + zap_page_range_single in "
        "the shrinker, keep the pages in Binder's array, let binder_vm_fault map them when "
        "the receiver reads (vmf_insert_mixed), and zap with unmap_mapping_range on the "
        "binder file's own mapping (one inode per binder file): the driver never takes mmap "
        "locks or mm references. Alice Ryhl asked whether faults could serve kernel-side "
        "writes; in this design the kernel writes the page through the array, and only the "
        "receiver's user-space read faults",
        merged=False,
    )
)

__all__ = ["BINDER_LAZY_FAULT", "BINDER_NO_MMGET", "RUST_VMAMUT_SET_FLAGS"]

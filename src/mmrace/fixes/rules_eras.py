"""Behaviour switches behind the eras of the locking rules (``mm/rules.py``).

A locking rule that changed with the kernel's behaviour names the switch
here, so the model's behaviour and the rule it is judged by change
together: ``System(kernel="6.1")`` has no per-VMA locks and grows stacks
under the mmap read lock, and the rules of 6.1 allow exactly that.
"""

from __future__ import annotations

from mmrace.fixes import Fix, register_fix

PER_VMA_LOCKS = register_fix(
    Fix(
        "per-vma-locks",
        "x86/mm: try VMA lock-based page fault handling first",
        "the per-VMA lock series (with 'mm: add per-VMA lock and helper functions to "
        "control it' and 'mm: introduce lock_vma_under_rcu to be used from "
        "arch-specific code'): do_user_addr_fault tries lock_vma_under_rcu before the "
        "mmap read lock, writers mark VMAs with vma_start_write, and VMAs are freed "
        "after an RCU grace period. Without it there is no VMA lock at all: faults take "
        "the mmap read lock, vma_start_write and the mm_lock_seq bookkeeping do not "
        "exist, and a VMA write needs only the mmap write lock",
        release="6.4",
        commit="0bff0aaea03e",
    )
)

STACK_EXPAND_WRITE_LOCKED = register_fix(
    Fix(
        "stack-expand-write-locked",
        "mm: always expand the stack with the mmap write lock held",
        "a fault below a VM_GROWSDOWN VMA drops the mmap read lock and takes the write "
        "lock to grow the stack (lock_mm_and_find_vma / expand_stack). Before it, "
        "expand_downwards ran under the mmap read lock, taking the anon_vma lock and "
        "mm->page_table_lock to write vm_start, vm_pgoff and the VMA tree (the StackRot "
        "bug, CVE-2023-3269, was a use-after-free of maple-tree nodes from this)",
        release="6.5",
        commit="8d7071af8907",
    )
)

VMA_SLAB_TYPESAFE_RCU = register_fix(
    Fix(
        "vma-slab-typesafe-rcu",
        "mm: make vma cache SLAB_TYPESAFE_BY_RCU",
        "VMAs are allocated from a SLAB_TYPESAFE_BY_RCU cache: a VMA found under RCU may "
        "have been freed and reused, so vma_start_read takes the mm from its caller and "
        "compares vma->vm_mm only once it holds the reference. Before it (6.4 to 6.14) "
        "VMAs were freed after a grace period and vma_start_read read vma->vm_mm under "
        "RCU alone",
        release="6.15",
    )
)

__all__ = ["PER_VMA_LOCKS", "STACK_EXPAND_WRITE_LOCKED", "VMA_SLAB_TYPESAFE_RCU"]

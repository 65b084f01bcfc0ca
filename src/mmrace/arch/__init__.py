"""The machine: CPUs, per-CPU TLBs, the hardware page walker (an interface
the mm layer implements), user memory accesses through the TLB, and TLB
shootdowns (arch/x86/mm/tlb.c).

This layer knows nothing of the kernel's data structures: an mm is any
object with ``serial``, ``name`` and ``mm_cpumask`` (a ``Var`` holding a
frozenset of CPU ids); page tables are reached only through the registered
:class:`~mmrace.arch.walker.PageWalker`.
"""

# Load order (the seam of the cpu <-> tlb cycle): tlb first, so that its
# bottom import of cpu finds tlb complete; cpu imports tlb's types at its top.
from mmrace.arch import tlb as _tlb  # noqa: F401
from mmrace.arch.cpu import (
    TLB_FLUSH_MODES,
    Cpu,
    Machine,
    PageFault,
    bind_cpu,
    local_irq_restore,
    local_irq_save,
    machine,
    send_ipi,
    setup_machine,
    smp_call_function_sync,
    this_cpu,
    user_access,
    wait_ipi,
)
from mmrace.arch.hooks import add_hook, emit
from mmrace.arch.tlb import (
    TLB_FLUSH_ALL,
    TlbEntry,
    flush_tlb_local,
    flush_tlb_mm_range,
    footprint,
    local_evict,
)
from mmrace.arch.walker import (
    FAULT_NOT_PRESENT,
    FAULT_PROT,
    Frame,
    PageWalker,
    page_walker,
    set_page_walker,
)

__all__ = [
    "FAULT_NOT_PRESENT",
    "FAULT_PROT",
    "TLB_FLUSH_ALL",
    "TLB_FLUSH_MODES",
    "Cpu",
    "Frame",
    "Machine",
    "PageFault",
    "PageWalker",
    "TlbEntry",
    "add_hook",
    "bind_cpu",
    "emit",
    "flush_tlb_local",
    "flush_tlb_mm_range",
    "footprint",
    "local_evict",
    "local_irq_restore",
    "local_irq_save",
    "machine",
    "page_walker",
    "send_ipi",
    "set_page_walker",
    "setup_machine",
    "smp_call_function_sync",
    "this_cpu",
    "user_access",
    "wait_ipi",
]

"""``struct mm_struct``, ``struct vm_area_struct`` and friends
(include/linux/mm_types.h, with the VM_* flags of include/linux/mm.h).

Every VMA field that the process_addrs field table lists is a checked
attribute: reading or writing it once the VMA is visible (stored in an mm's
VMA tree) is a visible operation on the VMA and is checked against the rule
table of ``mm/rules.py``. Before the VMA is visible (while it is being built)
fields are written freely, as in the kernel.

Left out: per-type rss counters, the mmu
notifier list, the exe file, and the layout of the real structs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.engine import SharedObject, Var, ViolationError, current_execution, current_thread
from mmrace.mm.locks import KObject, RwSemaphore, Slots, Spinlock
from mmrace.mm.maple_tree import MapleTree
from mmrace.mm.rules_check import (
    check_mm_field,
    check_vma_read,
    check_vma_write,
    install_lock_order,
    register_lock_level,
)
from mmrace.sync import SeqCount
from mmrace.sync.atomic import Atomic, atomic_dec, atomic_inc, atomic_read

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = ~(PAGE_SIZE - 1)

# --- VM_* flags (include/linux/mm.h, x86-64 values) ----------------------
VM_NONE = 0x0
VM_READ = 0x1
VM_WRITE = 0x2
VM_EXEC = 0x4
VM_SHARED = 0x8
VM_MAYREAD = 0x10
VM_MAYWRITE = 0x20
VM_MAYEXEC = 0x40
VM_MAYSHARE = 0x80
VM_GROWSDOWN = 0x100
VM_UFFD_MISSING = 0x200
VM_PFNMAP = 0x400
VM_UFFD_WP = 0x1000
VM_LOCKED = 0x2000
VM_IO = 0x4000
VM_SEQ_READ = 0x8000
VM_RAND_READ = 0x10000
VM_DONTCOPY = 0x20000
VM_DONTEXPAND = 0x40000
VM_LOCKONFAULT = 0x80000
VM_ACCOUNT = 0x100000
VM_NORESERVE = 0x200000
VM_HUGETLB = 0x400000
VM_SYNC = 0x800000
VM_WIPEONFORK = 0x2000000
VM_DONTDUMP = 0x4000000
VM_SOFTDIRTY = 0x8000000
VM_MIXEDMAP = 0x10000000
VM_HUGEPAGE = 0x20000000
VM_NOHUGEPAGE = 0x40000000
VM_MERGEABLE = 0x80000000
VM_UFFD_MINOR = 0x100000000
VM_GROWSUP = VM_NONE  # x86: stacks grow down only
VM_STACK = VM_GROWSDOWN
VM_SPECIAL = VM_IO | VM_DONTEXPAND | VM_PFNMAP | VM_MIXEDMAP
VM_LOCKED_MASK = VM_LOCKED | VM_LOCKONFAULT
VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC

VM_FLAG_NAMES: dict[int, str] = {
    value: name
    for name, value in sorted(globals().items())
    if name.startswith("VM_")
    and isinstance(value, int)
    and value
    and value & (value - 1) == 0
    and name not in ("VM_STACK",)
}


def vm_flags_str(flags: int) -> str:
    """``VM_READ|VM_WRITE|...`` for messages."""
    names = [name for bit, name in sorted(VM_FLAG_NAMES.items()) if flags & bit]
    return "|".join(names) or "0"


def vm_get_page_prot(flags: int) -> int:
    """vm_get_page_prot(): the model's pgprot is the protection_map index."""
    return flags & (VM_READ | VM_WRITE | VM_EXEC | VM_SHARED)


# --- fault flags and results (enum fault_flag, enum vm_fault_reason) ---------

FAULT_FLAG_WRITE = 1 << 0
FAULT_FLAG_MKWRITE = 1 << 1
FAULT_FLAG_ALLOW_RETRY = 1 << 2
FAULT_FLAG_RETRY_NOWAIT = 1 << 3
FAULT_FLAG_KILLABLE = 1 << 4
FAULT_FLAG_TRIED = 1 << 5
FAULT_FLAG_USER = 1 << 6
FAULT_FLAG_REMOTE = 1 << 7
FAULT_FLAG_INSTRUCTION = 1 << 8
FAULT_FLAG_INTERRUPTIBLE = 1 << 9
FAULT_FLAG_UNSHARE = 1 << 10
FAULT_FLAG_ORIG_PTE_VALID = 1 << 11
FAULT_FLAG_VMA_LOCK = 1 << 12
FAULT_FLAG_DEFAULT = FAULT_FLAG_ALLOW_RETRY | FAULT_FLAG_KILLABLE | FAULT_FLAG_INTERRUPTIBLE

VM_FAULT_OOM = 0x1
VM_FAULT_SIGBUS = 0x2
VM_FAULT_MAJOR = 0x4
VM_FAULT_WRITE = 0x8  # do_wp_page broke COW or reused the page (GUP's FOLL_COW, until 6.0)
VM_FAULT_SIGSEGV = 0x40
VM_FAULT_NOPAGE = 0x100
VM_FAULT_LOCKED = 0x200
VM_FAULT_RETRY = 0x400
VM_FAULT_FALLBACK = 0x800
VM_FAULT_COMPLETED = 0x4000
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV


# --- objects a VMA points to --------------------------------------------------


class VmOperations:
    """``struct vm_operations_struct``: the hooks the model calls.

    ``open(vma)`` runs when a VMA is duplicated by split; ``close(vma)`` when
    one is removed; ``may_split(vma, addr) -> int`` may veto a split with a
    negative errno; ``fault`` is for the fault issue."""

    def __init__(
        self,
        name: str = "vm_ops",
        *,
        open: Callable[[Any], None] | None = None,
        close: Callable[[Any], None] | None = None,
        fault: Callable[..., Any] | None = None,
        may_split: Callable[[Any, int], int] | None = None,
    ) -> None:
        self.name = name
        self.open = open
        self.close = close
        self.fault = fault
        self.may_split = may_split

    def __repr__(self) -> str:
        return self.name


class AddressSpace(SharedObject):
    """``struct address_space``: the i_mmap tree of a file and its rwsem.

    The interval tree is modelled as membership (``i_mmap`` keyed by VMA
    serial); ``i_mmap_rwsem`` guards it as in the kernel."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.i_mmap_rwsem = RwSemaphore(f"{name}.i_mmap_rwsem")
        register_lock_level(self.i_mmap_rwsem, "mapping->i_mmap_rwsem")
        self.i_mmap: dict[int, Any] = {}
        self.i_pages: dict[int, Any] = {}  # the page cache: index -> folio (mm/filemap.py)
        # the file's blocks: index -> the (sparse) words written back
        self.backing: dict[int, dict[int, int]] = {}
        self.host: Any = None  # the File


MmapHook = Callable[["File", Any], int]
"""``file->f_op->mmap(file, vma)``: 0 or a negative errno."""


class File(SharedObject):
    """``struct file`` of a regular file (or device) that can be mapped.

    ``f_op_mmap`` is the driver's ``f_op->mmap``: ``mmap_region`` calls it
    with the new VMA before the VMA is visible, so the hook may set its
    flags, ``vm_ops`` and ``vm_private_data`` without locks (``vm_flags_init``
    rules); a negative return fails the mmap with that errno. Without a hook,
    ``vm_ops`` and ``special`` are what a simple ->mmap would install."""

    can_mmap = True  # f_op->mmap exists (a pipe's does not)

    def __init__(self, path: str, size: int = 0, vm_ops: VmOperations | None = None,
                 f_op_mmap: MmapHook | None = None) -> None:
        super().__init__(f"file:{path}")
        self.path = path
        self.size = size
        self.f_mapping = AddressSpace(f"{path}.mapping")
        self.f_mapping.host = self
        self.vm_ops = vm_ops
        self.special = 0  # VM_* flags the file's ->mmap adds (VM_IO, VM_PFNMAP, ...)
        self.f_op_mmap = f_op_mmap


class AnonVma(KObject):
    """``struct anon_vma``: ``root`` (whose rwsem every anon_vma of a fork
    tree shares, as ``anon_vma->root->rwsem``), ``parent``, ``refcount``,
    ``num_children``, ``num_active_vmas`` and ``rb_root`` (the interval tree
    of anon_vma_chains, modelled as a dict keyed by VMA serial)."""

    def __init__(self, name: str = "", root: AnonVma | None = None) -> None:
        super().__init__(name)
        self.root: AnonVma = root if root is not None else self
        self.parent: AnonVma = self
        self.rwsem: RwSemaphore = (
            root.rwsem if root is not None else RwSemaphore(f"{self.name}.rwsem"))
        register_lock_level(self.rwsem, "anon_vma->rwsem")
        self.refcount = 1
        self.num_children = 0
        self.num_active_vmas = 0
        self.rb_root: dict[int, Any] = {}


class AnonVmaChain:
    """``struct anon_vma_chain``: links a VMA and an anon_vma."""

    __slots__ = ("vma", "anon_vma")

    def __init__(self, vma: Any, anon_vma: AnonVma) -> None:
        self.vma = vma
        self.anon_vma = anon_vma


class AnonVmaName:
    """``struct anon_vma_name``: a refcounted name, compared by content."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnonVmaName) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"[anon:{self.name}]"


class UserfaultfdCtx:
    """``struct vm_userfaultfd_ctx`` (identity only, for merge rules)."""

    def __init__(self, name: str = "uffd") -> None:
        self.name = name


# --- mm_struct ----------------------------------------------------------------


class MmLockSeq(SharedObject):
    """``mm->mm_lock_seq``: the seqcount whose value write-locks VMAs."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.sequence = 0


class MmStruct(KObject):
    """``struct mm_struct``: one address space.

    Two reference counts, as in the kernel: ``mm_users`` keeps the address
    space (VMAs, page tables) alive and ``mm_count`` the struct itself
    (``mmget``/``mmput`` and ``mmgrab``/``mmdrop`` in ``mm/fork.py``). The
    last ``mmput`` tears the address space down (``exit_mmap``); the last
    ``mmdrop`` frees the struct, after which any use is a KASAN-style
    use-after-free. ``users_gone`` records where ``mm_users`` reached zero,
    ``teardown_tid`` the thread running ``exit_mmap`` meanwhile (see
    :func:`mm_assert_users`)."""

    def __init__(self, name: str = "mm", task_size: int = 1 << 47) -> None:
        super().__init__(name)
        self.mm_mt = MapleTree(self, f"{name}.mm_mt")
        self.mmap_lock = RwSemaphore(f"{name}.mmap_lock")
        self.mm_lock_seq = MmLockSeq(f"{name}.mm_lock_seq")
        self.page_table_lock = Spinlock(f"{name}.page_table_lock")
        install_lock_order()  # lockdep checks this execution against mm/rmap.c's order
        register_lock_level(self.mmap_lock, "mm->mmap_lock")
        register_lock_level(self.page_table_lock, "mm->page_table_lock or pte_lock")
        self.ruleset: Any = None  # the compiled locking rules (mm/rules_check.py)
        self._map_count = 0  # map_count: checked, written under mmap W only
        self.mm_users = Var(1, f"{name}.mm_users")
        self.mm_count = Var(1, f"{name}.mm_count")
        self.users_gone: str | None = None  # where the last mmput happened
        self.teardown_tid: int | None = None  # the thread in __mmput (exit_mmap) now
        self.has_pinned = Var(0, f"{name}.has_pinned")
        # atomic_t: concurrent deferred flushes' increments and decrements
        # commute; every read orders against each (mmrace.sync.atomic).
        self.tlb_flush_pending = Atomic(0, f"{name}.tlb_flush_pending")
        self.write_protect_seq = SeqCount(f"{name}.write_protect_seq")
        self.mm_cpumask: Var[frozenset[int]] = Var(frozenset(), f"{name}.cpumask")
        self.task_size = task_size
        self.mmap_base = 0x7F0000000000 if task_size == 1 << 47 else task_size // 3 * 2
        self.mmap_min_addr = 0x10000
        self.start_brk = 0x555555600000 if task_size == 1 << 47 else task_size // 8
        self.brk = self.start_brk
        self.start_stack = 0
        self.total_vm = 0
        self.locked_vm = 0
        self.def_flags = 0
        self.vma_serial = 0  # names VMAs vma1, vma2, ... per mm, deterministically
        self.pgd: Any = None  # the top-level page table (mm/pgtable.py, allocated lazily)
        self.kernel: Any = None  # the KernelConfig of the system the mm belongs to
        self.oracles_off: frozenset[str] = frozenset()  # names its System switched off
        self.rss = 0  # pages mapped (MM_ANONPAGES + MM_FILEPAGES), debugger view
        self.pgtables_bytes = 0  # PTE tables (mm_inc/dec_nr_ptes), debugger view
        self.numa_next_scan = Var(0, f"{name}.numa_next_scan")  # task_numa_work's claim
        self.numa_scan_seq = 0

    @property
    def map_count(self) -> int:
        """``mm->map_count``, checked against the ``mm.map_count`` rule in
        simulated threads (set-up and final checks run alone: a read there
        races with nothing, and tests read it as a debugger would)."""
        if current_thread() is not None:
            check_mm_field(self, "mm.map_count", False)
        return self._map_count

    @map_count.setter
    def map_count(self, value: int) -> None:
        check_mm_field(self, "mm.map_count", True)
        self._map_count = value


def mm_assert_users(mm: MmStruct, what: str) -> None:
    """The caller is about to use *mm*'s address space (look a VMA up in its
    tree, install a page in its page tables). That needs ``mm_users`` > 0
    for as long as it lasts: the mm's own task holds a reference, anybody
    else takes one with ``mmget_not_zero`` (include/linux/sched/mm.h; the
    Rust ``MmWithUser`` type states the same invariant). A use after the
    last ``mmput`` is a ``use-after-free`` naming the mm, except by the
    thread running its ``exit_mmap``.

    The kernel would find an empty tree once ``exit_mmap`` is done, but in
    the window before (between its zap and ``free_pgtables``) the same
    access installs pages into page tables about to be freed; the model
    reports every use without a reference, as KASAN reports every access to
    freed memory, not only the harmful ones. Not a visible operation: it
    follows the caller's own visible access to the tree or the page table,
    which ``exit_mmap``'s accesses order (it empties the tree under the mmap
    write lock and zaps each table under its lock after the last ``mmput``
    in program order), so an exploration that moves the access after the
    teardown always reaches this check."""
    gone = mm.users_gone
    if gone is None:
        return
    th = current_thread()
    tid = th.tid if th is not None else -1
    if tid == mm.teardown_tid:
        return
    who = th.name if th is not None else "set-up code"
    calls = " < ".join(reversed(th.where[-3:])) if th is not None and th.where else what
    event = len(current_execution().events) - 1
    raise ViolationError(
        "use-after-free",
        f"use-after-free of {mm.name}'s address space",
        f"BUG: {what} by {who} ({calls}, event {event}) uses the address space of {mm.name} "
        f"after its last mmput: mm_users reached 0 {gone}, and exit_mmap tears the VMAs and "
        "page tables down; a user of another task's mm must hold mm_users "
        "(mmget_not_zero) for as long as it uses it",
    )


# --- vm_area_struct -----------------------------------------------------------


class _Field:
    """A checked VMA field (see ``mm/rules.py``): once the VMA is visible,
    every read and write is checked by ``mm/rules_check.py``."""

    __slots__ = ("name", "raw")

    def __init__(self, name: str) -> None:
        self.name = name
        self.raw = "_f_" + name.replace(".", "_")

    def __get__(self, vma: Any, owner: Any = None) -> Any:
        if vma is None:
            return self
        if vma.published:
            check_vma_read(vma, self.name)
        return getattr(vma, self.raw)

    def __set__(self, vma: Any, value: Any) -> None:
        if vma.published:
            check_vma_write(vma, self.name, value)
        setattr(vma, self.raw, value)


class VmAreaStruct(KObject):
    """``struct vm_area_struct``.

    ``vm_flags`` is read-only; change it with ``vm_flags_set``,
    ``vm_flags_clear``, ``vm_flags_mod`` or ``vm_flags_reset`` (``mm/vma.py``),
    which assert the VMA write lock. The VMA lock state is ``vm_refcnt`` and
    ``vm_lock_seq`` on :attr:`vm_lock` (its own shared object, so lock
    traffic and field accesses have separate footprints)."""

    vm_start = _Field("vm_start")
    vm_end = _Field("vm_end")
    vm_pgoff = _Field("vm_pgoff")
    vm_mm = _Field("vm_mm")
    vm_page_prot = _Field("vm_page_prot")
    vm_flags_ = _Field("vm_flags")  # access through the vm_flags property
    vm_file = _Field("vm_file")
    vm_ops = _Field("vm_ops")
    vm_private_data = _Field("vm_private_data")
    anon_name = _Field("anon_name")
    vm_policy = _Field("vm_policy")
    vm_userfaultfd_ctx = _Field("vm_userfaultfd_ctx")
    anon_vma = _Field("anon_vma")
    anon_vma_chain = _Field("anon_vma_chain")
    shared_rb = _Field("shared.rb")
    swap_readahead_info = _Field("swap_readahead_info")
    numab_state = _Field("numab_state")

    def __init__(self, mm: MmStruct) -> None:
        mm.vma_serial += 1
        super().__init__(f"vma{mm.vma_serial}")
        self.published = False
        self._f_vm_start = 0
        self._f_vm_end = 0
        self._f_vm_pgoff = 0
        self._f_vm_mm = mm
        self._f_vm_page_prot = 0
        self._f_vm_flags = 0
        self._f_vm_file: File | None = None
        self._f_vm_ops: VmOperations | None = None
        self._f_vm_private_data: Any = None
        self._f_anon_name: AnonVmaName | None = None
        self._f_vm_policy: Any = None
        self._f_vm_userfaultfd_ctx: UserfaultfdCtx | None = None
        self._f_anon_vma: AnonVma | None = None
        self._f_anon_vma_chain: list[Any] = []
        self._f_shared_rb = False  # in vm_file's i_mmap tree
        self._f_swap_readahead_info = 0  # atomic_long_t (mm/swap_state.py)
        self._f_numab_state: Any = None  # struct vma_numab_state * (mm/numa_balancing.py)
        self.vm_lock = VmaLock(self)

    @property
    def vm_flags(self) -> int:
        """``vma->vm_flags`` (the read-only alias of ``__vm_flags``)."""
        return self.vm_flags_  # type: ignore[no-any-return]

    def raw(self, field: str) -> Any:
        """A field's value without a check or a visible operation (for
        debugger-like helpers, the ``drgn`` view of ``mmrace.user``)."""
        return getattr(self, "_f_" + field.replace(".", "_"))

    def __repr__(self) -> str:
        return f"{self.name}[{self._f_vm_start:#x}-{self._f_vm_end:#x}]"


VMA_LOCK_OFFSET = 0x40000000
VMA_REF_LIMIT = VMA_LOCK_OFFSET - 1


class VmaLock(SharedObject):
    """The per-VMA lock state: ``vm_refcnt`` (0 detached, 1 attached, +1 per
    reader, +VMA_LOCK_OFFSET while a writer excludes readers) and
    ``vm_lock_seq`` (equal to ``mm->mm_lock_seq`` iff write-locked).

    ``vm_refcnt`` is kept in parts, because readers' references commute in
    the kernel (``refcount_inc_not_zero`` and ``refcount_dec`` by different
    faults): this object holds the attach reference (:attr:`attached`), the
    writer's offset (:attr:`excluding`) and ``vm_lock_seq``; each task's
    temporary reader references are in its own slot (:attr:`readers`,
    ``VMA.vm_refcnt.reader(TASK)``). :attr:`vm_refcnt` is their sum."""

    def __init__(self, vma: VmAreaStruct) -> None:
        super().__init__(f"{vma.name}.vm_refcnt")
        self.attached = 0
        self.excluding = False
        self.vm_lock_seq = -1
        self.readers = Slots(self, "reader")

    @property
    def vm_refcnt(self) -> int:
        """The kernel's ``vma->vm_refcnt`` (debugger view: no operation)."""
        offset = VMA_LOCK_OFFSET if self.excluding else 0
        return self.attached + self.readers.total() + offset

    def wait_info(self, thread: Any) -> str:
        state = "writer excluding readers, " if self.excluding else ""
        return f"vm_refcnt: {state}{self.readers.total()} reader(s)"


# --- deferred TLB flushes (include/linux/mm_types.h) ---------------------------


def inc_tlb_flush_pending(mm: MmStruct) -> None:
    """``inc_tlb_flush_pending``: announce that PTEs of *mm* are about to be
    changed with the TLB flush deferred (``atomic_inc`` of
    ``mm->tlb_flush_pending``: one visible write of this CPU's share, so
    two CPUs' increments commute; only the reads below order against it).
    Call it before changing any PTE, so that a fault that sees a changed
    PTE also sees the pending flush.

    Left out: before 4.13 the field was a bool that the first finisher of
    two nested deferred flushes could clear too early ("mm: migrate:
    prevent racy access to tlb_flush_pending"); the model keeps the
    counter for every release."""
    atomic_inc(mm.tlb_flush_pending)


def dec_tlb_flush_pending(mm: MmStruct) -> None:
    """``dec_tlb_flush_pending``: the deferred flush is done (call it after
    the flush); ``atomic_dec``, commuting like the increment."""
    atomic_dec(mm.tlb_flush_pending)


def mm_tlb_flush_pending(mm: MmStruct) -> bool:
    """``mm_tlb_flush_pending``: whether some thread changed PTEs of *mm*
    and has not flushed yet (one visible read). The kernel requires the PTL
    of the PTE in question to be held, so the read is ordered after the
    change it is about."""
    return atomic_read(mm.tlb_flush_pending) > 0


def mm_tlb_flush_nested(mm: MmStruct) -> bool:
    """``mm_tlb_flush_nested``: more than one deferred flush is pending, so
    another thread may have changed PTEs this one's flush must cover
    (``tlb_finish_mmu`` then forces a full flush)."""
    return atomic_read(mm.tlb_flush_pending) > 1


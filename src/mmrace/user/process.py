"""Processes and their syscalls, as a scenario sees them.

A :class:`Process` syscall runs the kernel model directly: from set-up code
its operations run at once, from a scenario thread each visible operation
is a scheduling point. Failures raise ``OSError`` with the kernel's errno,
like Python's ``os`` module.
"""

from __future__ import annotations

import errno as _errno
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mmrace.arch import TLB_FLUSH_MODES, PageFault, setup_machine, user_access
from mmrace.engine import current_thread
from mmrace.fixes import KernelConfig
from mmrace.mm.direct_io import blkdev_direct_io_read
from mmrace.mm.filemap import set_fault_around_bytes
from mmrace.mm.fork import dup_mmap, exit_mm
from mmrace.mm.fs_userfaultfd import new_userfaultfd, userfaultfd_api
from mmrace.mm.gup import (
    FOLL_FAST_ONLY,
    FOLL_LONGTERM,
    FOLL_WRITE,
    get_user_pages_fast,
    pin_user_pages_fast,
    pin_user_pages_unlocked,
    put_user_page,
    unpin_user_page,
)
from mmrace.mm.huge_memory import THP_ENABLED, set_transparent_hugepage
from mmrace.mm.khugepaged import khugepaged_add_pte_mapped_thp, khugepaged_scan_mm_slot
from mmrace.mm.madvise import do_madvise, madvise_pageout
from mmrace.mm.memory import do_user_addr_fault
from mmrace.mm.migrate import move_pages_one
from mmrace.mm.mlock import sys_mlock, sys_mlock2, sys_munlock
from mmrace.mm.mm_types import (
    PAGE_SHIFT,
    PAGE_SIZE,
    VM_EXEC,
    VM_GROWSDOWN,
    VM_MAYSHARE,
    VM_READ,
    VM_WRITE,
    File,
    MmapHook,
    MmStruct,
    VmAreaStruct,
    VmOperations,
)
from mmrace.mm.mman import MAP_ANONYMOUS
from mmrace.mm.mmap import ksys_mmap_pgoff, sys_brk, vm_munmap
from mmrace.mm.mprotect import do_mprotect_pkey
from mmrace.mm.mremap import sys_mremap
from mmrace.mm.page_alloc import WORD_SIZE, folio_read_word, folio_write_word, pfn_to_obj
from mmrace.mm.pgtable import peek_pte, pte_pfn, pte_present, pte_special, pte_write
from mmrace.mm.shmem import ShmemFile, shmem_fallocate, shmem_setattr_size
from mmrace.mm.task_mmu import clear_refs_write, pagemap_read
from mmrace.mm.truncate import truncate_pagecache
from mmrace.mm.vmscan import reclaim_folio
from mmrace.oracles import install_oracles, oracle_names
from mmrace.user.kthread import start_kthread
from mmrace.user.page_refs import PageRefCalls
from mmrace.user.thread import start_thread
from mmrace.user.userfaultfd import Userfaultfd


@dataclass(frozen=True)
class MapEntry:
    """One line of ``/proc/PID/maps``."""

    start: int
    end: int
    perms: str
    pgoff: int
    name: str = ""
    inode: int = 0

    def __str__(self) -> str:
        dev = "00:00"
        line = f"{self.start:08x}-{self.end:08x} {self.perms} {self.pgoff:08x} {dev} {self.inode}"
        if self.name:
            line = line.ljust(72) + " " + self.name
        return line


def for_each_vma(mm: MmStruct) -> Iterator[VmAreaStruct]:
    """drgn's ``for_each_vma(mm)``: the VMAs in address order, read like a
    debugger reads them (no locks, no visible operations)."""
    for _, _, vma in mm.mm_mt.entries():
        yield vma


def vma_find(mm: MmStruct, addr: int) -> VmAreaStruct | None:
    """drgn's ``vma_find(mm, addr)``: the VMA containing *addr*, or None
    (debugger view)."""
    for start, end, vma in mm.mm_mt.entries():
        if start <= addr < end:
            return vma  # type: ignore[no-any-return]
    return None


class System:
    """A machine and its kernel: ``System(cpus=N, without=())``. Build it inside
    a scenario (shared objects belong to one execution).

    The memory oracles (:mod:`mmrace.oracles`) are on for every process of
    the system; *oracles_off* names the ones to switch off (ValueError for
    an unknown name)."""

    def __init__(self, cpus: int = 2, without: Iterable[str] = (),
                 kernel: str | None = None, with_: Iterable[str] = (),
                 release: str | None = None,
                 policies: dict[str, str] | None = None, tlb_evictions: int = 0,
                 oracles_off: Iterable[str] = (), thp: str = "madvise",
                 fault_around_bytes: int | None = None, tlb_flush: str = "ipi") -> None:
        self.oracles_off = oracle_names(oracles_off)
        install_oracles()
        self.cpus = cpus
        # sysfs: transparent_hugepage/enabled; debugfs: fault_around_bytes
        if thp not in THP_ENABLED:
            raise ValueError(f"thp={thp!r}: choose from {', '.join(THP_ENABLED)}")
        # (per execution; at top level, in the standalone context)
        set_transparent_hugepage(thp)
        if fault_around_bytes is not None:
            set_fault_around_bytes(fault_around_bytes)
        self.tlb_evictions = tlb_evictions  # TLB evictions the chooser may make per execution
        # How remote TLB flushes reach other CPUs: "ipi" (x86) or "broadcast"
        # (arm64's TLBI, x86 INVLPGB or paravirt: no interrupt; mmrace.arch.tlb)
        if tlb_flush not in TLB_FLUSH_MODES:
            raise ValueError(f"tlb_flush={tlb_flush!r}: choose from {', '.join(TLB_FLUSH_MODES)}")
        self.tlb_flush = tlb_flush
        self.kernel = KernelConfig(release=kernel if kernel is not None else release,
                                   without=without, with_=with_, policies=policies)
        self.processes: list[Process] = []
        self.files: dict[str, File] = {}

    def has(self, slug: str) -> bool:
        """Whether fix *slug* is applied."""
        return bool(self.kernel.has(slug))

    def process(self) -> Process:
        """A new process with an empty address space."""
        proc = Process(self, len(self.processes) + 1)
        self.processes.append(proc)
        return proc

    def open_file(self, name: str, size: int = 1 << 20) -> int:
        """Create a regular file of *size* bytes (backed by the model's page
        cache) and open it in a new fd of the first process (creating one
        if needed). Returns the fd; other processes ``open(name)`` it."""
        if name not in self.files:
            self.create_file(name, size)
        proc = self.processes[0] if self.processes else self.process()
        return proc.open(name)

    def memfd_create(self, name: str, size: int = 1 << 20, huge: str = "never") -> int:
        """``memfd_create(2)`` + ``ftruncate``: a shmem file (a
        :class:`~mmrace.mm.shmem.ShmemFile`, ``huge=`` *huge*) of *size*
        bytes, open in a new fd of the first process (others ``open`` it
        as ``memfd:NAME``). Its mappings fault through ``shmem_fault``,
        which knows userfaultfd minor faults."""
        self.create_file(f"memfd:{name}", size, shmem=True, huge=huge)
        return self.open_file(f"memfd:{name}")

    def create_file(self, path: str, size: int = 1 << 20,
                    vm_ops: VmOperations | None = None, special: int = 0,
                    mmap: MmapHook | None = None, shmem: bool = False,
                    huge: str = "never") -> File:
        """A file that processes can ``open`` and map; *vm_ops* and *special*
        (VM_* flags) are what the file's ->mmap would install, or *mmap* is
        the ->mmap itself (``f_op->mmap(file, vma)``, see
        ``mmrace.kapi.vma.f_op_mmap`` for a typed one). With *shmem* it is a
        tmpfs file on a mount with ``huge=`` *huge* (``never``, ``always``,
        ``within_size``, ``advise``), whose page cache holds PMD-sized folios
        where that allows (``mmrace.mm.shmem``)."""
        if shmem:
            if mmap is not None or vm_ops is not None:
                raise ValueError("a shmem file has shmem's own ->mmap and vm_ops")
            sf = ShmemFile(path, size, huge)
            self.files[path] = sf
            return sf
        f = File(path, size, vm_ops, mmap)
        f.special = special
        self.files[path] = f
        return f


class Process(PageRefCalls):
    """A process: an mm, a file table, and the memory syscalls (GUP,
    pipes, vmsplice and /proc/PID/mem from :class:`PageRefCalls`)."""

    def __init__(self, system: System, pid: int) -> None:
        self.system = system
        self.pid = pid
        self.mm = MmStruct(f"mm{pid}")
        self.mm.kernel = system.kernel
        self.mm.oracles_off = system.oracles_off
        self.fds: dict[int, File] = {}
        self.exited = False

    # -- threads -------------------------------------------------------------

    def thread(self, fn: Any, cpu: int = 0, name: str | None = None) -> Any:
        """Spawn a thread of this process on CPU *cpu* running ``fn(t)``
        (see :mod:`mmrace.user.thread`); returns its handle."""
        return start_thread(self, fn, cpu, name)

    # -- files ---------------------------------------------------------------

    def open(self, path: str) -> int:
        """Open a file created with ``System.create_file``; returns an fd."""
        f = self.system.files.get(path)
        if f is None:
            raise OSError(_errno.ENOENT, "No such file or directory", path)
        fd = 3 + len(self.fds)
        self.fds[fd] = f
        return fd

    def _file(self, fd: int) -> File | None:
        if fd == -1:
            return None
        f = self.fds.get(fd)
        if f is None:
            raise OSError(_errno.EBADF, "Bad file descriptor")
        return f

    # -- syscalls --------------------------------------------------------------

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1,
             offset: int = 0) -> int:
        """``mmap(2)``: returns the address; addr 0 lets the kernel choose."""
        file = None if flags & MAP_ANONYMOUS else self._file(fd)
        return ksys_mmap_pgoff(self.mm, addr, length, prot, flags, file, offset)

    def munmap(self, addr: int, length: int) -> None:
        """``munmap(2)``."""
        vm_munmap(self.mm, addr, length)

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """``mprotect(2)``."""
        do_mprotect_pkey(self.mm, addr, length, prot)

    def mremap(self, old_addr: int, old_len: int, new_len: int, flags: int,
               new_addr: int = 0) -> int:
        """``mremap(2)`` with ``MREMAP_MAYMOVE``, ``MREMAP_FIXED`` and
        ``MREMAP_DONTUNMAP``: returns the mapping's (new) address."""
        return sys_mremap(self.mm, old_addr, old_len, new_len, flags, new_addr)

    def madvise(self, addr: int, length: int, advice: int) -> None:
        """``madvise(2)``."""
        do_madvise(self.mm, addr, length, advice)

    def mlock(self, addr: int, length: int) -> None:
        """``mlock(2)``."""
        sys_mlock(self.mm, addr, length)

    def mlock2(self, addr: int, length: int, flags: int = 0) -> None:
        """``mlock2(2)``: with ``MLOCK_ONFAULT`` the range is locked as it is
        faulted in, not populated now."""
        sys_mlock2(self.mm, addr, length, flags)

    def munlock(self, addr: int, length: int) -> None:
        """``munlock(2)``."""
        sys_munlock(self.mm, addr, length)

    def brk(self, addr: int) -> int:
        """The raw ``brk`` syscall: returns the new break (the old one when the
        request fails; ``brk(0)`` queries it)."""
        return sys_brk(self.mm, addr)

    def fork(self) -> Process:
        """``fork(2)``: a child process with a copy of this address space
        (``dup_mmap``); the file table is shared by copy."""
        child = Process(self.system, len(self.system.processes) + 1)
        self.system.processes.append(child)
        child.fds = dict(self.fds)
        dup_mmap(child.mm, self.mm)
        return child

    def exit(self) -> None:
        """Process exit (``do_exit`` -> ``exit_mm``): drop the process's
        reference to its mm (``mmput``); the last reference tears the
        address space down (``exit_mmap``). A second exit is a ValueError."""
        if self.exited:
            raise ValueError(f"process {self.pid} has already exited")
        self.exited = True
        exit_mm(self.mm)

    def ftruncate(self, fd: int, length: int) -> None:
        """``ftruncate(2)``: truncate the file, zapping its mappings under
        ``i_mmap_rwsem`` alone."""
        f = self._file(fd)
        assert f is not None
        if length < 0:
            raise OSError(_errno.EINVAL, "Invalid argument")
        if isinstance(f, ShmemFile):
            shmem_setattr_size(f, length)
        else:
            truncate_pagecache(f, length)

    def fallocate(self, fd: int, mode: int, offset: int, length: int) -> None:
        """``fallocate(2)``: ``FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`` on
        a tmpfs file (``shmem_fallocate``); anything else EOPNOTSUPP."""
        f = self._file(fd)
        if not isinstance(f, ShmemFile):
            raise OSError(_errno.EOPNOTSUPP, "Operation not supported")
        shmem_fallocate(f, mode, offset, length)

    # -- memory ----------------------------------------------------------------

    def _word(self, addr: int) -> tuple[int, int]:
        """(page address, word index) of the naturally aligned 8-byte word at
        *addr*; ValueError (one line) for a misaligned address. (x86 would
        split a misaligned access in two, possibly across pages; the model's
        user memory is addressed in whole words.)"""
        if addr % WORD_SIZE:
            raise ValueError(f"address {addr:#x} is not aligned to an 8-byte word "
                             "(user memory is addressed in naturally aligned words)")
        return addr & ~(PAGE_SIZE - 1), (addr % PAGE_SIZE) // WORD_SIZE

    def _user_range(self, addr: int) -> bool:
        """Whether *addr* is a user address (below ``TASK_SIZE``); anything
        else faults without reaching a VMA (a kernel or non-canonical
        address: SIGSEGV)."""
        return 0 <= addr < self.mm.task_size

    def _access(self, addr: int, write: bool) -> tuple[Any, int]:
        """Walk the page tables like the MMU (no locks: the program is single
        threaded here); fault and retry until the access is allowed. Returns
        (folio, page index)."""
        if not self._user_range(addr):
            raise OSError(_errno.EFAULT, f"Bad address {addr:#x} (not a user address)")
        for _ in range(8):
            pte = peek_pte(self.mm, addr)
            if pte_present(pte) and pte & 0x4 and (pte_write(pte) or not write):
                folio = pfn_to_obj(pte_pfn(pte))
                return folio, pte_pfn(pte) - folio.pfn
            do_user_addr_fault(self.mm, addr, write)
        raise RuntimeError(f"fault at {addr:#x} does not resolve")

    def poke(self, addr: int, value: int) -> None:
        """Store *value* in the word at *addr*, faulting as a program would."""
        _page, word = self._word(addr)
        folio, idx = self._access(addr, True)
        folio_write_word(folio, idx, word, value)

    def peek(self, addr: int) -> int:
        """Load the word at *addr*, faulting as a program would."""
        _page, word = self._word(addr)
        folio, idx = self._access(addr, False)
        return folio_read_word(folio, idx, word)

    def touch(self, addr: int, cpu: int, write: bool = False) -> None:
        """Set-up only: access *addr* from CPU *cpu* the way a thread of this
        process that ran there earlier did, so that CPU's TLB caches the
        translation (writable and dirty when *write*) -- the "[PTE cached in
        TLB]" starting point of the race diagrams, without spending a thread
        step and a preemption on it. A write adds 0: the word keeps its
        value. The CPU joins ``mm_cpumask`` (as ``switch_mm`` made it)."""
        if current_thread() is not None:
            raise RuntimeError("touch() is for set-up code; a thread uses t.load/t.store")
        m = setup_machine(self.system.cpus, getattr(self.system, "tlb_evictions", 0),
                          self.system.tlb_flush)
        if not 0 <= cpu < len(m.cpus):
            raise ValueError(f"cpu {cpu} does not exist (System(cpus={self.system.cpus}))")
        if cpu not in self.mm.mm_cpumask.value:
            self.mm.mm_cpumask.rmw(lambda s: s | {cpu})
        word = self._word(addr)[1]
        for _ in range(8):
            try:
                user_access(m.cpus[cpu], self.mm, addr, "add" if write else "load", word, 0)
                return
            except PageFault as pf:
                do_user_addr_fault(self.mm, addr, pf.write)
        raise RuntimeError(f"fault at {addr:#x} does not resolve")

    def pin(self, addr: int, npages: int = 1, write: bool = False) -> list[Any]:
        """``pin_user_pages_unlocked`` (e.g. an O_DIRECT or RDMA buffer): the
        pinned folios (release with :meth:`unpin`)."""
        return pin_user_pages_unlocked(self.mm, addr, npages, FOLL_WRITE if write else 0)

    def unpin(self, folios: list[Any]) -> None:
        """``unpin_user_pages``."""
        for f in folios:
            unpin_user_page(f)

    # -- GUP-fast, reclaim, migration (mm/gup.c, mm/vmscan.c, mm/migrate.c) --------

    def gup_fast(self, addr: int, npages: int = 1, write: bool = False,
                 pin: bool = True, longterm: bool = False,
                 fast_only: bool = False) -> list[Any]:
        """``pin_user_pages_fast`` (*pin*) or ``get_user_pages_fast``: the
        lockless walk with interrupts off on this thread's CPU, falling
        back to the slow path for what it cannot take -- unless *fast_only*
        (``FOLL_FAST_ONLY``: the lockless half alone, which may return
        fewer pages, none included). *longterm* adds ``FOLL_LONGTERM`` (an
        RDMA or io_uring buffer). Returns one folio per page (release with
        :meth:`unpin` or :meth:`put_pages`); raises ``OSError(EFAULT)`` if
        the slow path could not take even one page."""
        fn = pin_user_pages_fast if pin else get_user_pages_fast
        flags = ((FOLL_WRITE if write else 0) | (FOLL_LONGTERM if longterm else 0)
                 | (FOLL_FAST_ONLY if fast_only else 0))
        return fn(self.mm, addr, npages, flags)

    def put_pages(self, folios: list[Any]) -> None:
        """``put_page`` of each ``FOLL_GET`` reference."""
        for f in folios:
            put_user_page(f)

    def reclaim(self, target: Any) -> int:
        """A reclaim step on this thread's CPU. *target* is a folio (found in
        set-up, e.g. with :meth:`folio_at`): kswapd's path -- isolate it
        from the LRU, ``shrink_folio_list`` with its references checked.
        Or an address: MADV_PAGEOUT of that page (its accessed bit cleared,
        references ignored). Returns the pages reclaimed; an address in no
        VMA raises ``OSError(ENOMEM)``, like MADV_PAGEOUT."""
        if isinstance(target, int):
            start = target & ~(PAGE_SIZE - 1)
            return madvise_pageout(self.mm, start, start + PAGE_SIZE)
        return reclaim_folio(target)

    def migrate(self, addr: int) -> int:
        """``move_pages(2)`` of the page at *addr* (to the one node): its
        status, 0 when moved or ``-errno`` (EFAULT no VMA or the zero page,
        ENOENT nothing mapped, EACCES mapped by others, EBUSY a THP or not
        on the LRU, EAGAIN still referenced, e.g. pinned)."""
        return move_pages_one(self.mm, addr)

    def direct_io_read(self, addr: int, value: int) -> None:
        """An ``O_DIRECT`` ``read(2)`` of one block from a block device into
        the page at *addr* (``__blkdev_direct_IO_simple``): the buffer's
        page is taken with GUP-fast (``bio_iov_iter_get_pages``, FOLL_WRITE),
        the device writes *value* into the word at *addr* by DMA, then
        ``bio_release_pages`` marks the page dirty and drops the reference."""
        word = self._word(addr)[1]
        blkdev_direct_io_read(self.mm, addr & ~(PAGE_SIZE - 1), word, value)

    # -- khugepaged and MADV_COLLAPSE (mm/khugepaged.c) --------------------------------

    def khugepaged_scan(self, addr: int) -> int:
        """One pass of khugepaged over this process's PMD-aligned 2 MiB at
        *addr* (``khugepaged_scan_mm_slot``), run by the calling thread (or
        set-up code); returns the ``ScanResult``. An address that no VMA
        khugepaged may collapse covers: nothing happens."""
        return int(khugepaged_scan_mm_slot(self.mm, addr))

    def khugepaged(self, addr: int, cpu: int, passes: int = 1, name: str = "khugepaged") -> Any:
        """Start khugepaged as a kernel thread on CPU *cpu* (not in this
        process's ``mm_cpumask``: see ``mmrace.user.kthread``), making
        *passes* passes of :meth:`khugepaged_scan` over *addr*; returns its
        handle (``.result``: the results)."""
        if passes < 1:
            raise ValueError(f"passes={passes}: at least one")
        mm = self.mm
        return start_kthread(self, lambda: [int(khugepaged_scan_mm_slot(mm, addr))
                                            for _ in range(passes)], cpu, name)

    def khugepaged_add_pte_mapped_thp(self, addr: int) -> bool:
        """Set-up: what ``retract_page_tables`` does when it cannot take
        this process's mmap lock (before 6.6): queue *addr* for
        ``collapse_pte_mapped_thp`` on khugepaged's next pass. False on a
        kernel without the queue (6.6 on: khugepaged collapses a PTE-mapped
        THP when its scan finds one)."""
        return khugepaged_add_pte_mapped_thp(self.mm, addr)

    def folio_at(self, addr: int) -> Any:
        """Debugger view: the folio mapped at *addr* (None if nothing, or
        the zero page, is mapped there)."""
        pte = peek_pte(self.mm, addr)
        if not pte_present(pte) or pte_special(pte):
            return None
        folio = pfn_to_obj(pte_pfn(pte))
        return None if folio is None or folio.is_zero else folio

    # -- userfaultfd, clear_refs, pagemap ------------------------------------------

    def userfaultfd(self, features: int = 0) -> Userfaultfd:
        """``userfaultfd(2)`` followed by the ``UFFDIO_API`` handshake with
        *features* (``UFFD_FEATURE_*``): a handle with the ioctls,
        ``read``, ``poll`` and ``close`` (:mod:`mmrace.user.userfaultfd`)."""
        self._nr_uffd = getattr(self, "_nr_uffd", 0) + 1
        ctx = new_userfaultfd(self.mm, f"uffd{self.pid}.{self._nr_uffd}")
        userfaultfd_api(ctx, features=features)
        return Userfaultfd(ctx, self)

    def clear_refs(self, value: int) -> None:
        """A write of *value* to ``/proc/PID/clear_refs`` (4: clear
        soft-dirty)."""
        clear_refs_write(self.mm, value)

    def pagemap(self, addr: int) -> Any:
        """The ``/proc/PID/pagemap`` entry of *addr*: ``.present``,
        ``.soft_dirty``, ``.uffd_wp``, ``.pfn``."""
        return pagemap_read(self.mm, addr)

    # -- state -----------------------------------------------------------------

    def maps(self) -> list[MapEntry]:
        """``/proc/PID/maps`` (debugger view of the model state)."""
        out = []
        mm = self.mm
        for vma in for_each_vma(mm):
            flags = vma.raw("vm_flags")
            perms = ("r" if flags & VM_READ else "-") + ("w" if flags & VM_WRITE else "-")
            perms += ("x" if flags & VM_EXEC else "-") + ("s" if flags & VM_MAYSHARE else "p")
            f = vma.raw("vm_file")
            start, end = vma.raw("vm_start"), vma.raw("vm_end")
            name = ""
            pgoff = 0
            if f is not None:
                name = f.path
                pgoff = vma.raw("vm_pgoff") << PAGE_SHIFT
            elif start <= mm.brk and end >= mm.start_brk and mm.brk > mm.start_brk:
                name = "[heap]"
            elif flags & VM_GROWSDOWN:
                name = "[stack]"
            elif vma.raw("anon_name") is not None:
                name = f"[anon:{vma.raw('anon_name').name}]"
            out.append(MapEntry(start, end, perms, pgoff, name))
        return out

    def maps_text(self) -> str:
        """``/proc/PID/maps`` as text."""
        return "".join(f"{e}\n" for e in self.maps())

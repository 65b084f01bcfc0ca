"""Seed 003: the Rust mm abstractions and Binder's page allocator.

"[PATCH v6 1/2] rust: mm: add abstractions for mm_struct and vm_area_struct"
(Alice Ryhl; Jann Horn's review, 2024-11-08). Two catalog entries:

* ``driver-vma-flags-vs-fault`` -- a driver changes the flags of a live VMA
  while a user thread faults on it under the per-VMA lock. Through the v6
  posting's ``VmAreaMut::set_flags`` (the mmap write lock only) the write of
  ``vm_flags`` breaks the locking rule; the typed API's ``VmaMut`` takes the
  VMA write lock first (``vma_start_write``) and is clean.
* ``binder-page-install-vs-exit`` -- Rust Binder's ``ShrinkablePageRange``
  (drivers/android/binder/page_range.rs): a message arrival installs a page
  in the receiver's mapping (``mmget_not_zero`` on the stashed mm,
  ``lock_vma_under_rcu`` or ``mmap_read_lock`` + ``vma_lookup``, the
  ``VM_MIXEDMAP`` check, ``vm_insert_page``), the shrinker reclaims an unused
  page (``mmget_not_zero``, trylocks, ``vma_lookup``,
  ``zap_page_range_single``), and the receiver reads its message and exits
  meanwhile. Without ``mmget_not_zero`` the driver uses the address space
  after its last ``mmput``: a use-after-free of the mm. The reviewer's
  alternative (``binder-lazy-fault``: pages installed by ``vm_ops->fault``,
  the shrinker zapping with ``unmap_mapping_range``) needs no mm reference
  at all and is clean even without it.

The driver is written against ``mmrace.kapi`` as Rust Binder is written
against the Rust abstractions; its spinlocks, mutex and list_lru lock are
real model locks, so their operations are scheduling points. Left out of
Binder: transactions (a message arrival is ``use_range`` plus a kernel write
into the page), the range allocator, freezing, the file's release (the
page range outlives the process here, as it may until the file is closed).
"""

from __future__ import annotations

from collections.abc import Callable

from mmrace.engine import Var, require
from mmrace.fixes import KernelConfig
from mmrace.kapi import Mm, MmWithUser, VmaMixedMap, VmaNew, VmaRef, f_op_mmap
from mmrace.mm.internal import kfunc
from mmrace.mm.memory import VM_FAULT_SIGBUS, VmFault, vmf_insert_mixed
from mmrace.mm.mm_types import (
    PAGE_SHIFT,
    PAGE_SIZE,
    VM_DONTCOPY,
    VM_DONTDUMP,
    File,
    VmOperations,
)
from mmrace.mm.mman import MAP_PRIVATE, MAP_SHARED, PROT_READ
from mmrace.mm.page_alloc import (
    Folio,
    folio_alloc,
    folio_put,
    folio_read_word,
    folio_write_word,
)
from mmrace.mm.truncate import unmap_mapping_range
from mmrace.oracles.memory import wrong_data
from mmrace.scenarios.api import Explore, Kernel, scenario
from mmrace.sync import (
    Mutex,
    Spinlock,
    mutex_lock,
    mutex_trylock,
    mutex_unlock,
    spin_lock,
    spin_trylock,
    spin_unlock,
)
from mmrace.user import Process, System, Thread

SEED = ("[PATCH v6 1/2] rust: mm: add abstractions for mm_struct and vm_area_struct "
        "(Alice Ryhl, review by Jann Horn, linux-mm, 2024-11-08)")
MESSAGE = 0x5EED
ESRCH = 3


# --- Binder's page range (drivers/android/binder/page_range.rs) -----------------------


class ShrinkablePageRange:
    """``ShrinkablePageRange``: the pages of one process's binder mapping.

    ``pages[i]`` is the page at index *i* (None: not allocated), guarded by
    ``lock`` (the Rust ``SpinLock<Inner>``); ``on_lru[i]`` says the page is
    unused and the shrinker may take it, guarded by ``lru_lock`` (the
    list_lru's own lock, which ``list_lru_walk`` holds around the shrinker
    callback); ``mm_lock`` (a mutex) keeps page installs and zaps apart.
    Lock order: ``mm_lock``, mmap lock, ``lock``, ``lru_lock``; the shrinker
    takes them in another order and so only trylocks.

    Two designs: the eager one (Rust Binder today) and, with the
    ``binder-lazy-fault`` switch, the reviewer's: pages installed by
    ``vm_ops->fault``, zapped with ``unmap_mapping_range``, no mm handles.
    With ``binder-no-mmget`` the eager design's install path uses its
    stashed mm without a user reference (``MmWithUser::from_raw``)."""

    def __init__(self, kernel: KernelConfig, mm: Mm, file: File) -> None:
        self.lazy = bool(kernel.has("binder-lazy-fault"))
        self.unsafe_mm = bool(kernel.has("binder-no-mmget"))
        self.mm = mm  # ARef<Mm>: mmgrab when the binder file was opened
        self.file = file
        self.mm_lock = Mutex("binder.mm_lock")
        self.lock = Spinlock("binder.lock")
        self.lru_lock = Spinlock("binder.lru_lock")
        self.pages: list[Folio | None] = []
        self.on_lru: list[bool] = []
        self.vma_addr = 0
        fault = self.binder_vm_fault if self.lazy else None
        self.vm_ops = VmOperations("BINDER_VM_OPS", fault=fault)

    # -- mmap ------------------------------------------------------------------------

    def register_with_vma(self, vma: VmaNew) -> int:
        """``register_with_vma``: size the page array from the new VMA (at
        most 4 MiB) and mark the VMA as ours (``vm_ops``, private data)."""
        if vma.mm().as_raw() is not self.mm.as_raw():
            raise OSError(22, "binder: the mapping belongs to another mm")
        num_pages = min(vma.end() - vma.start(), 4 << 20) >> PAGE_SHIFT
        if num_pages == 0:
            raise OSError(22, "binder: empty mapping")
        self.pages = [None] * num_pages
        self.on_lru = [False] * num_pages
        self.vma_addr = vma.start()
        vma.set_private_data(self)
        vma.set_vm_ops(self.vm_ops)
        return num_pages

    @kfunc
    def binder_mmap(self, file: File, vma: VmaNew) -> None:
        """Rust Binder's ``mmap``: never writable (``try_clear_maywrite``
        refuses a ``VM_WRITE`` mapping: EPERM), not inherited by fork,
        ``VM_MIXEDMAP`` so pages can be inserted under a read lock."""
        if vma.start() == 0:
            raise OSError(22, "binder: mapping at 0")
        try:
            vma.try_clear_maywrite()
        except OSError:
            raise OSError(1, "binder: writable mapping") from None
        vma.set_dontcopy()
        vma.set_mixedmap()
        self.register_with_vma(vma)

    def _check_vma(self, vma: VmaRef | None) -> VmaMixedMap | None:
        """``check_vma``: our VMA (our ``vm_ops`` and private data) with
        ``VM_MIXEDMAP``, or None."""
        if vma is None or vma.vm_ops() is not self.vm_ops:
            return None
        if vma.vm_private_data() is not self:
            return None
        return vma.as_mixedmap_vma()

    def _user_mm(self, unsafe: bool = False) -> MmWithUser | None:
        """``self.mm.mmget_not_zero()`` as an ``MmWithUserAsync`` (None: the
        process is gone). *unsafe* (the install path with
        ``binder-no-mmget``): ``MmWithUser::from_raw`` on the stashed mm, no
        reference, a promise nothing keeps."""
        if unsafe:
            return MmWithUser.from_raw(self.mm.as_raw())
        mm = self.mm.mmget_not_zero()
        return None if mm is None else mm.into_mmput_async()

    @staticmethod
    def _put(mm: MmWithUser, unsafe: bool = False) -> None:
        """Drop the ``MmWithUserAsync`` (``mmput_async``); a borrowed one
        holds nothing."""
        if not unsafe:
            mm.drop()

    # -- pages in use ------------------------------------------------------------------

    def _lru_del(self, i: int) -> None:
        spin_lock(self.lru_lock)
        self.on_lru[i] = False
        spin_unlock(self.lru_lock)

    @kfunc
    def use_range(self, start: int, end: int) -> None:
        """``use_range``: make pages ``[start, end)`` present and in use
        (off the shrinker's list), allocating missing ones (``use_page_slow``)."""
        for i in range(start, end):
            spin_lock(self.lock)
            if self.pages[i] is not None:
                self._lru_del(i)
                spin_unlock(self.lock)
                continue
            spin_unlock(self.lock)
            self.use_page_slow(i)

    @kfunc
    def use_page_slow(self, i: int) -> None:
        """``use_page_slow``: allocate page *i* and (eager design) insert it
        in the receiver's mapping: ``mmget_not_zero``, the VMA read lock
        (``lock_vma_under_rcu``) or the mmap read lock with ``vma_lookup``,
        ``check_vma``, ``vm_insert_page``; the mm is dropped with
        ``mmput_async``. The lazy design only fills the array."""
        new_page = folio_alloc(0, f"binder.page{i}")
        if self.lazy:
            spin_lock(self.lock)
            installed = self.pages[i] is None
            if installed:
                self.pages[i] = new_page
            spin_unlock(self.lock)
            if not installed:
                folio_put(new_page)
            return
        mutex_lock(self.mm_lock)
        spin_lock(self.lock)
        if self.pages[i] is not None:
            self._lru_del(i)
            spin_unlock(self.lock)
            mutex_unlock(self.mm_lock)
            folio_put(new_page)
            return
        vma_addr = self.vma_addr
        spin_unlock(self.lock)
        user_page_addr = vma_addr + (i << PAGE_SHIFT)
        mm = self._user_mm(self.unsafe_mm)
        if mm is None:
            mutex_unlock(self.mm_lock)
            folio_put(new_page)
            raise OSError(ESRCH, "binder: the process is gone")
        inserted = False
        guard = mm.lock_vma_under_rcu(vma_addr)
        if guard is not None:
            vma = self._check_vma(guard)
            if vma is not None:
                vma.vm_insert_page(user_page_addr, new_page)
                inserted = True
            guard.drop()
        else:
            mmap_read = mm.mmap_read_lock()
            vma = self._check_vma(mmap_read.vma_lookup(vma_addr))
            if vma is not None:
                vma.vm_insert_page(user_page_addr, new_page)
                inserted = True
            mmap_read.drop()
        if inserted:
            spin_lock(self.lock)
            self.pages[i] = new_page
            spin_unlock(self.lock)
        mutex_unlock(self.mm_lock)
        self._put(mm, self.unsafe_mm)
        if not inserted:
            folio_put(new_page)
            raise OSError(ESRCH, "binder: no vma")

    def write(self, i: int, value: int) -> None:
        """The kernel writes a message word into page *i* through the array
        (the page is in use, so nobody takes it meanwhile)."""
        page = self.pages[i]
        assert page is not None
        folio_write_word(page, 0, 0, value)

    @kfunc
    def stop_using_range(self, start: int, end: int) -> None:
        """``stop_using_range``: the pages become available to the shrinker."""
        spin_lock(self.lock)
        for i in range(start, end):
            if self.pages[i] is not None:
                spin_lock(self.lru_lock)
                self.on_lru[i] = True
                spin_unlock(self.lru_lock)
        spin_unlock(self.lock)

    # -- the shrinker (rust_shrink_free_page) ---------------------------------------------

    @kfunc
    def shrink_free_page(self, i: int) -> bool:
        """``rust_shrink_free_page`` for page *i*, called by ``list_lru_walk``
        with ``lru_lock`` held: take the mm (``mmget_not_zero``), trylock
        ``mm_lock``, the mmap read lock and ``lock`` (any failure: skip),
        take the page off the list and out of the array, drop the list lock,
        then zap it from the VMA found by ``vma_lookup`` and free it. The
        lazy design zaps with ``unmap_mapping_range`` and needs no mm.
        Returns whether the page was reclaimed."""
        spin_lock(self.lru_lock)
        if not self.on_lru[i]:
            spin_unlock(self.lru_lock)
            return False
        if self.lazy:
            return self._shrink_lazy(i)
        mm = self._user_mm()
        if mm is None:
            spin_unlock(self.lru_lock)
            return False
        if not mutex_trylock(self.mm_lock):
            spin_unlock(self.lru_lock)
            self._put(mm)
            return False
        mmap_read = mm.mmap_read_trylock()
        if mmap_read is None:
            mutex_unlock(self.mm_lock)
            spin_unlock(self.lru_lock)
            self._put(mm)
            return False
        if not spin_trylock(self.lock):
            mmap_read.drop()
            mutex_unlock(self.mm_lock)
            spin_unlock(self.lru_lock)
            self._put(mm)
            return False
        self.on_lru[i] = False  # list_lru_isolate
        page = self.pages[i]
        self.pages[i] = None
        vma_addr = self.vma_addr
        spin_unlock(self.lock)
        spin_unlock(self.lru_lock)
        vma = self._check_vma(mmap_read.vma_lookup(vma_addr))
        if vma is not None:
            vma.zap_page_range_single(vma_addr + (i << PAGE_SHIFT), PAGE_SIZE)
        mmap_read.drop()
        mutex_unlock(self.mm_lock)
        self._put(mm)
        if page is not None:
            folio_put(page)
        return True

    @kfunc
    def _shrink_lazy(self, i: int) -> bool:
        if not mutex_trylock(self.mm_lock):
            spin_unlock(self.lru_lock)
            return False
        if not spin_trylock(self.lock):
            mutex_unlock(self.mm_lock)
            spin_unlock(self.lru_lock)
            return False
        self.on_lru[i] = False
        page = self.pages[i]
        self.pages[i] = None
        spin_unlock(self.lock)
        spin_unlock(self.lru_lock)
        # The binder file's own mapping: every VMA of it, under i_mmap_rwsem
        # alone (no mmap lock, no mm reference).
        unmap_mapping_range(self.file.f_mapping, i << PAGE_SHIFT, PAGE_SIZE, True)
        mutex_unlock(self.mm_lock)
        if page is not None:
            folio_put(page)
        return True

    # -- the lazy design's fault handler -------------------------------------------------

    @kfunc
    def binder_vm_fault(self, vmf: VmFault) -> tuple[int, None]:
        """``binder_vm_fault`` of the reviewer's design: under ``mm_lock``
        (so the shrinker cannot take the page meanwhile), map page
        ``vmf->pgoff`` with ``vmf_insert_mixed`` (a special PTE: Binder's
        array keeps the page's reference); ``VM_FAULT_SIGBUS`` if there is
        none."""
        i = vmf.pgoff
        mutex_lock(self.mm_lock)
        spin_lock(self.lock)
        page = self.pages[i] if i < len(self.pages) else None
        spin_unlock(self.lock)
        if page is None:
            ret = VM_FAULT_SIGBUS
        else:
            ret = vmf_insert_mixed(vmf.vma, vmf.address, page.pfn)
        mutex_unlock(self.mm_lock)
        return ret, None


# --- scenarios -----------------------------------------------------------------------------


def open_binder(kernel: Kernel, s: System, p: Process,
                pages: int) -> tuple[ShrinkablePageRange, int]:
    """The receiver opens its binder device and maps *pages* pages of it
    read-only (``PROT_READ``, ``MAP_PRIVATE``, as libbinder does); the page
    range stashes the receiver's mm (``mmgrab``). One file (and inode) per
    open, as the lazy design needs for ``unmap_mapping_range``."""
    holder: list[ShrinkablePageRange] = []

    def mmap(file: File, vma: VmaNew) -> None:
        holder[0].binder_mmap(file, vma)

    f = s.create_file(f"binder{p.pid}", size=pages * PAGE_SIZE, mmap=f_op_mmap(mmap))
    holder.append(ShrinkablePageRange(kernel.config(), Mm.mmgrab(p.mm), f))
    fd = p.open(f.path)
    addr = p.mmap(0, pages * PAGE_SIZE, PROT_READ, MAP_PRIVATE, fd)
    return holder[0], addr


@scenario(
    name="binder-page-install-vs-exit",
    summary="Binder installs a page for a message and its shrinker zaps another while the "
    "receiver reads and exits: the stashed mm needs mmget_not_zero",
    references=(
        SEED,
        "drivers/android/binder/page_range.rs (Rust Binder, 6.18): use_page_slow, "
        "rust_shrink_free_page",
        "rust/kernel/mm.rs: Mm has no lock methods; MmWithUser comes from mmget_not_zero",
    ),
    base=Kernel(with_=("binder-no-mmget",)),
    proposals=("binder-lazy-fault",),
    expect={
        "current": "clean",
        "base": "use-after-free",
        "base+binder-lazy-fault": "clean",
    },
    notes={
        "current": "the eager design: every use of the mm holds mm_users, so the last "
        "mmput may run exit_mmap in Binder's context, never under it",
        "base": "the driver locks and looks up the receiver's address space after its last "
        "mmput",
        "base+binder-lazy-fault": "the reviewer's design never touches the mm: the fault "
        "runs in the receiver's own context, the shrinker goes through the file's i_mmap",
    },
    # The race needs one preemption (the receiver's exit inside the
    # install); K=2 explores ~1,700 executions per clean variant, K=3 ~11,000
    # (tests/scenarios/test_binder_scenarios.py, marked slow).
    explore=Explore(strategy="bounded", preemption_bound=2),
)
def binder_page_install_vs_exit(kernel: Kernel) -> Callable[[], None]:
    """The receiver (cpu1) has page 1 of its binder mapping installed and
    unused (on the shrinker's list). A sender (cpu0) delivers a message:
    ``use_range`` installs page 0, the kernel writes the message into it,
    then marks it delivered. The shrinker (cpu2) reclaims page 1. The
    receiver reads the message if it has arrived, then exits."""
    s = kernel.system(cpus=3)
    receiver = s.process()
    sender = s.process()
    binder, base_addr = open_binder(kernel, s, receiver, 2)
    binder.use_range(1, 2)  # an earlier transaction's page, now unused
    binder.stop_using_range(1, 2)
    delivered = Var(0, "binder.delivered")

    def send(t: Thread) -> None:
        try:
            binder.use_range(0, 1)
        except OSError as exc:  # ESRCH: the receiver is gone (BR_DEAD_REPLY)
            require(exc.errno == ESRCH, f"use_range failed: {exc}")
            return
        binder.write(0, MESSAGE)
        delivered.store(1)

    def shrink(t: Thread) -> None:
        binder.shrink_free_page(1)

    def receive(t: Thread) -> None:
        if delivered.load():
            got = t.load(base_addr)
            require(got == MESSAGE, f"the receiver read {got:#x}, not the message")
        receiver.exit()

    sender.thread(send, cpu=0, name="sender")
    receiver.thread(receive, cpu=1, name="receiver")
    sender.thread(shrink, cpu=2, name="shrinker")

    def check() -> None:
        for i, page in enumerate(binder.pages):
            if page is not None and page._mapcount:
                raise wrong_data(f"binder page {i} is still mapped {page._mapcount} times "
                                 "after the receiver's address space was torn down")
        if binder.pages[0] is not None and folio_read_word(binder.pages[0], 0, 0) != MESSAGE:
            raise wrong_data("the message is not in page 0")

    return check


DRIVER_FLAGS = VM_DONTCOPY | VM_DONTDUMP


@scenario(
    name="driver-vma-flags-vs-fault",
    summary="a driver sets flags of a live VMA while a user thread faults on it under the "
    "per-VMA lock: the v6 VmAreaMut skips vma_start_write",
    references=(
        SEED,
        "Jann Horn: \"If you want to update the flags of existing VMAs, you need to call "
        "vma_start_write() first\"",
        "rust/kernel/mm/virt.rs: flags change only on VmaNew upstream",
    ),
    base=Kernel(with_=("rust-vmamut-set-flags",)),
    expect={"current": "clean", "base": "locking-rule"},
    notes={
        "current": "VmaMut comes from vma_start_write, which waits for the fault's VMA read "
        "lock and keeps new ones out while the flags change",
        "base": "vm_flags written under the mmap write lock alone: the VMA-locked fault may "
        "be reading them",
    },
    explore=Explore(strategy="bounded", preemption_bound=3),
)
def driver_vma_flags_vs_fault(kernel: Kernel) -> None:
    """A driver maps one page of its own memory lazily (``vm_ops->fault``
    with ``vmf_insert_mixed``). cpu0 reads the page (a fault under the VMA
    read lock); cpu1, in the same process, calls the driver's ioctl, which
    write-locks the mmap lock, looks the VMA up as a ``VmaMut`` and sets
    ``VM_DONTCOPY|VM_DONTDUMP``."""
    s = kernel.system(cpus=2)
    p = s.process()
    page = folio_alloc(0, "drv.page")
    folio_write_word(page, 0, 0, MESSAGE)

    def drv_fault(vmf: VmFault) -> tuple[int, None]:
        return vmf_insert_mixed(vmf.vma, vmf.address, page.pfn), None

    ops = VmOperations("drv_vm_ops", fault=drv_fault)

    def drv_mmap(file: File, vma: VmaNew) -> None:
        vma.try_clear_maywrite()
        vma.set_mixedmap()
        vma.set_vm_ops(ops)

    f = s.create_file("/dev/drv", size=PAGE_SIZE, mmap=f_op_mmap(drv_mmap))
    addr = p.mmap(0, PAGE_SIZE, PROT_READ, MAP_SHARED, p.open(f.path))

    def reader(t: Thread) -> None:
        got = t.load(addr)
        require(got == MESSAGE, f"read {got:#x} from the driver's page")

    def ioctl(t: Thread) -> None:
        # current->mm: the ioctl runs in the mm's own task.
        mm = MmWithUser.from_raw(p.mm)
        guard = mm.mmap_write_lock()
        vma = guard.vma_lookup_mut(addr)
        if vma is not None:
            vma.set_flags(DRIVER_FLAGS)
        guard.drop()

    p.thread(reader, cpu=0, name="cpu0")
    p.thread(ioctl, cpu=1, name="cpu1")


CATALOG = (binder_page_install_vs_exit, driver_vma_flags_vs_fault)

__all__ = ["CATALOG", "ShrinkablePageRange", "open_binder"]

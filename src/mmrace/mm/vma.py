"""VMA tree operations, merge, split, expand and shrink (mm/vma.c, plus the
VMA helpers of include/linux/mm.h).

The rules honoured (tools/testing/vma in the kernel checks the same):

* merging needs equal flags (ignoring VM_SOFTDIRTY), the same file,
  continuous pgoff, compatible anon_vmas, the same userfaultfd context,
  anon name and mempolicy; VM_SPECIAL VMAs never merge;
* a VMA whose ``vm_ops->close`` is set is never deleted by a merge (a
  three-way merge becomes two-way; a merge that would delete the middle VMA
  is abandoned);
* incompatible anon_vmas of prev and next reduce a three-way merge to two;
* every VMA a merge or split changes or deletes is write-locked first, and no
  other VMA is;
* ``mm->map_count`` is exact.

Left out: anon_vma_clone/anon_vma_merge bookkeeping beyond the anon_vma
pointer and chain (rmap issue), mempolicy refcounts, uprobes, khugepaged
hooks, and the -ENOMEM paths of allocation (allocations never fail).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mmrace.mm.fs_userfaultfd import userfaultfd_unmap_prep
from mmrace.mm.internal import errno_error, held, kfunc
from mmrace.mm.locks import kfree_rcu
from mmrace.mm.mm_types import (
    PAGE_SHIFT,
    VM_SHARED,
    VM_SOFTDIRTY,
    VM_SPECIAL,
    VM_UFFD_WP,
    VM_WRITE,
    MmStruct,
    VmAreaStruct,
    mm_assert_users,
    vm_get_page_prot,
)
from mmrace.mm.mmap_lock import (
    mmap_assert_locked,
    mmap_assert_write_locked,
    mmap_read_unlock,
    mmap_write_downgrade,
    vma_assert_write_locked,
    vma_mark_attached,
    vma_mark_detached,
    vma_start_write,
)
from mmrace.mm.rmap import (
    anon_vma_clone,
    anon_vma_lock_write,
    anon_vma_unlock_write,
    i_mmap_lock_write,
    i_mmap_unlock_write,
    unlink_anon_vmas,
)
from mmrace.mm.userfaultfd_k import UserfaultfdUnmapCtx

sysctl_max_map_count = 65530

ENOMEM = 12

# --- allocation ---------------------------------------------------------------


def vm_area_alloc(mm: MmStruct) -> VmAreaStruct:
    """``vm_area_alloc``: a new, unpublished VMA (fields are free to write)."""
    return VmAreaStruct(mm)


def vm_area_dup(orig: VmAreaStruct, mm: MmStruct | None = None) -> VmAreaStruct:
    """``vm_area_dup``: copy every field (the copy is not yet visible) except
    the anon_vma chain, which ``anon_vma_clone``/``anon_vma_fork`` build.
    *mm* names the copy in another mm's numbering (fork)."""
    new = VmAreaStruct(mm if mm is not None else orig.raw("vm_mm"))
    for field in ("vm_start", "vm_end", "vm_pgoff", "vm_page_prot", "vm_flags", "vm_file",
                  "vm_ops", "vm_private_data", "anon_name", "vm_policy",
                  "vm_userfaultfd_ctx", "anon_vma"):
        setattr(new, "_f_" + field, orig.raw(field))
    new._f_anon_vma_chain = []
    return new


def vm_area_free(vma: VmAreaStruct) -> None:
    """``vm_area_free``: freed after an RCU grace period (as kernels before the
    SLAB_TYPESAFE_BY_RCU VMA cache did; lookups under RCU stay safe)."""
    kfree_rcu(vma)


def vma_pages(vma: VmAreaStruct) -> int:
    """``vma_pages``."""
    return int((vma.vm_end - vma.vm_start) >> PAGE_SHIFT)


# --- flags --------------------------------------------------------------------


def vm_flags_init(vma: VmAreaStruct, flags: int) -> None:
    """``vm_flags_init``: only for a VMA that is not yet visible."""
    assert not vma.published, "vm_flags_init on a visible VMA"
    vma._f_vm_flags = flags


@kfunc
def vm_flags_reset(vma: VmAreaStruct, flags: int) -> None:
    """``vm_flags_reset``: the caller holds the VMA write lock (the field
    write is checked against the rule table)."""
    vma.vm_flags_ = flags


@kfunc
def vm_flags_set(vma: VmAreaStruct, flags: int) -> None:
    """``vm_flags_set``: write-lock the VMA, then set *flags*."""
    vma_start_write(vma)
    vma.vm_flags_ = vma.vm_flags | flags


@kfunc
def vm_flags_clear(vma: VmAreaStruct, flags: int) -> None:
    """``vm_flags_clear``: write-lock the VMA, then clear *flags*."""
    vma_start_write(vma)
    vma.vm_flags_ = vma.vm_flags & ~flags


@kfunc
def vm_flags_mod(vma: VmAreaStruct, set_: int, clear: int) -> None:
    """``vm_flags_mod``: write-lock the VMA, then set and clear flags."""
    vma_start_write(vma)
    vma.vm_flags_ = (vma.vm_flags | set_) & ~clear


def vma_wants_writenotify(vma: VmAreaStruct, vm_page_prot: int) -> bool:
    """``vma_wants_writenotify``: a shared writable mapping must take write
    faults while soft-dirty tracking is on (``VM_SOFTDIRTY`` clear) or while
    it is registered for userfaultfd write-protect. Left out: page_mkwrite,
    pfn_mkwrite and dirty accounting of file systems."""
    flags = vma.vm_flags
    if (flags & (VM_WRITE | VM_SHARED)) != (VM_WRITE | VM_SHARED):
        return False
    if flags & VM_UFFD_WP:
        return True
    return not flags & VM_SOFTDIRTY


@kfunc
def vma_set_page_prot(vma: VmAreaStruct) -> None:
    """``vma_set_page_prot``: the protection of *vma*'s flags; a mapping that
    wants write notification (:func:`vma_wants_writenotify`) gets the
    write-protected (private) protection, so writes fault."""
    flags = vma.vm_flags
    prot = vm_get_page_prot(flags)
    if vma_wants_writenotify(vma, prot):
        prot = vm_get_page_prot(flags & ~VM_SHARED)
    vma.vm_page_prot = prot


# --- lookups ------------------------------------------------------------------


@kfunc
def vma_lookup(mm: MmStruct, addr: int) -> VmAreaStruct | None:
    """``vma_lookup``: the VMA containing *addr*, or None. A lookup in an
    address space whose users are gone is a use-after-free
    (``mm_assert_users``)."""
    vma = mm.mm_mt.load(addr)
    mm_assert_users(mm, "vma_lookup")
    return vma  # type: ignore[no-any-return]


@kfunc
def find_vma(mm: MmStruct, addr: int) -> VmAreaStruct | None:
    """``find_vma``: the first VMA ending above *addr* (it may start above);
    checked like :func:`vma_lookup`."""
    found = mm.mm_mt.find_after(addr)
    mm_assert_users(mm, "find_vma")
    return None if found is None else found[2]


@kfunc
def find_vma_intersection(mm: MmStruct, start: int, end: int) -> VmAreaStruct | None:
    """``find_vma_intersection``: the first VMA overlapping ``[start, end)``."""
    found = mm.mm_mt.find_after(start, end)
    return None if found is None else found[2]


@kfunc
def find_vma_prev(mm: MmStruct, addr: int) -> tuple[VmAreaStruct | None, VmAreaStruct | None]:
    """``find_vma_prev``: ``(find_vma(addr), the VMA before it)``."""
    found = mm.mm_mt.find_after(addr)
    limit = found[0] if found is not None else 1 << 64
    before = mm.mm_mt.find_before(limit)
    return (None if found is None else found[2],
            None if before is None else before[2])


class VmaIterator:
    """``struct vma_iterator``: a cursor at address ``index``."""

    def __init__(self, mm: MmStruct, addr: int = 0) -> None:
        self.mm = mm
        self.index = addr
        self.last: VmAreaStruct | None = None


def vma_find(vmi: VmaIterator, max_: int) -> VmAreaStruct | None:
    """``vma_find``: the next VMA at or after the cursor starting below *max_*."""
    found = vmi.mm.mm_mt.find_after(vmi.index, max_)
    if found is None:
        return None
    vmi.index = found[1]
    vmi.last = found[2]
    return found[2]  # type: ignore[no-any-return]


def vma_next(vmi: VmaIterator) -> VmAreaStruct | None:
    """``vma_next``."""
    return vma_find(vmi, 1 << 64)


def vma_prev(vmi: VmaIterator) -> VmAreaStruct | None:
    """``vma_prev``: the VMA before the cursor's last one (or its address)."""
    at = vmi.last.raw("vm_start") if vmi.last is not None else vmi.index
    found = vmi.mm.mm_mt.find_before(at)
    if found is None:
        return None
    vmi.index = found[1]
    vmi.last = found[2]
    return found[2]  # type: ignore[no-any-return]


def for_each_vma(vmi: VmaIterator) -> Iterator[VmAreaStruct]:
    """``for_each_vma``: iterate from the cursor (one tree walk per step)."""
    while (vma := vma_next(vmi)) is not None:
        yield vma


def for_each_vma_range(vmi: VmaIterator, end: int) -> Iterator[VmAreaStruct]:
    """``for_each_vma_range``: VMAs starting below *end*."""
    while (vma := vma_find(vmi, end)) is not None:
        yield vma


# --- tree updates -------------------------------------------------------------


def vma_iter_store(mm: MmStruct, vma: VmAreaStruct) -> None:
    """``vma_iter_store_overwrite``: store *vma* over its range."""
    mm.mm_mt.mas_store_range(vma.raw("vm_start"), vma.raw("vm_end"), vma)
    vma.published = True


def vma_iter_clear(mm: MmStruct, start: int, end: int) -> None:
    """``vma_iter_clear``: erase ``[start, end)`` from the tree."""
    mm.mm_mt.mas_store_range(start, end, None)


def _link_file(vma: VmAreaStruct) -> None:
    f = vma.vm_file
    if f is not None:
        vma.shared_rb = True
        f.f_mapping.i_mmap[vma.serial] = vma


def _unlink_file(vma: VmAreaStruct) -> None:
    f = vma.vm_file
    if f is not None and vma.raw("shared.rb"):
        vma.shared_rb = False
        f.f_mapping.i_mmap.pop(vma.serial, None)


@kfunc
def vma_link(mm: MmStruct, vma: VmAreaStruct) -> None:
    """``vma_link``: insert a new VMA in the tree and the file's i_mmap tree."""
    mmap_assert_write_locked(mm)
    vma_start_write(vma)
    vma_mark_attached(vma)
    vma_iter_store(mm, vma)
    f = vma.vm_file
    if f is not None:
        i_mmap_lock_write(f.f_mapping)
        _link_file(vma)
        i_mmap_unlock_write(f.f_mapping)
    mm.map_count += 1


class _Prep:
    """``struct vma_prepare``: the rmap locks around a VMA rearrangement."""

    def __init__(self, vmas: list[VmAreaStruct]) -> None:
        self.vmas = vmas
        self.mapping: Any = None
        self.anon_vma: Any = None
        for v in vmas:
            f = v.raw("vm_file")
            if f is not None and self.mapping is None:
                self.mapping = f.f_mapping
            av = v.raw("anon_vma")
            if av is not None and self.anon_vma is None:
                self.anon_vma = av


def vma_prepare(vp: _Prep) -> None:
    """``vma_prepare``: take i_mmap and anon_vma write locks, take the file
    VMAs out of the i_mmap tree."""
    if vp.mapping is not None:
        i_mmap_lock_write(vp.mapping)
    if vp.anon_vma is not None:
        anon_vma_lock_write(vp.anon_vma)
    for v in vp.vmas:
        if v.published:
            _unlink_file(v)


def vma_complete(vp: _Prep, keep: list[VmAreaStruct]) -> None:
    """``vma_complete``: put the kept VMAs back in the i_mmap tree, unlock."""
    for v in keep:
        _link_file(v)
    if vp.anon_vma is not None:
        anon_vma_unlock_write(vp.anon_vma)
    if vp.mapping is not None:
        i_mmap_unlock_write(vp.mapping)


@kfunc
def __split_vma(mm: MmStruct, vma: VmAreaStruct, addr: int, new_below: bool) -> VmAreaStruct:
    """``__split_vma``: split *vma* at *addr*; the new VMA takes the part below
    *addr* if *new_below*, else the part above. Returns the new VMA. Raises
    OSError(ENOMEM) at the map count limit, or the errno ``may_split`` gives.

    Left out: anon_vma_clone failures, mempolicy duplication."""
    if mm.map_count >= sysctl_max_map_count:
        raise errno_error(ENOMEM, "map count limit")
    ops = vma.vm_ops
    if ops is not None and ops.may_split is not None:
        err = ops.may_split(vma, addr)
        if err:
            raise errno_error(-err, "may_split")
    new = vm_area_dup(vma)
    if vma.anon_vma is not None:
        anon_vma_clone(new, vma)
    if new_below:
        new._f_vm_end = addr
    else:
        new._f_vm_start = addr
        new._f_vm_pgoff = vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT)
    if ops is not None and ops.open is not None:
        ops.open(new)
    vma_start_write(vma)
    vma_start_write(new)
    vp = _Prep([vma])
    vma_prepare(vp)
    # A huge PMD straddling the new boundary is split first.
    huge_memory.vma_adjust_trans_huge(vma, vma.vm_start, addr)
    if new_below:
        vma.vm_pgoff = vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT)
        vma.vm_start = addr
    else:
        vma.vm_end = addr
    vma_mark_attached(new)
    vma_iter_store(mm, new)
    vma_complete(vp, [vma, new])
    mm.map_count += 1
    return new


def split_vma(mm: MmStruct, vma: VmAreaStruct, addr: int, new_below: bool) -> VmAreaStruct:
    """``split_vma``."""
    return __split_vma(mm, vma, addr, new_below)


# --- merging ------------------------------------------------------------------


class VmaMergeStruct:
    """``struct vma_merge_struct``: the proposed range and its attributes."""

    def __init__(self, mm: MmStruct, prev: VmAreaStruct | None, middle: VmAreaStruct | None,
                 next_: VmAreaStruct | None, start: int, end: int, pgoff: int, flags: int,
                 file: Any = None, anon_vma: Any = None, policy: Any = None,
                 uffd_ctx: Any = None, anon_name: Any = None) -> None:
        self.mm = mm
        self.prev = prev
        self.middle = middle
        self.next = next_
        self.start = start
        self.end = end
        self.pgoff = pgoff
        self.flags = flags
        self.file = file
        self.anon_vma = anon_vma
        self.policy = policy
        self.uffd_ctx = uffd_ctx
        self.anon_name = anon_name

    @classmethod
    def from_vma(cls, mm: MmStruct, prev: VmAreaStruct | None, vma: VmAreaStruct,
                 start: int, end: int) -> VmaMergeStruct:
        return cls(mm, prev, vma, None, start, end,
                   vma.vm_pgoff + ((start - vma.vm_start) >> PAGE_SHIFT), vma.vm_flags,
                   vma.vm_file, vma.anon_vma, vma.vm_policy, vma.vm_userfaultfd_ctx,
                   vma.anon_name)


def is_mergeable_vma(vmg: VmaMergeStruct, merge_next: bool) -> bool:
    """``is_mergeable_vma``: flags (but VM_SOFTDIRTY), file, uffd ctx, name."""
    tgt = vmg.next if merge_next else vmg.prev
    assert tgt is not None
    if (tgt.vm_flags ^ vmg.flags) & ~VM_SOFTDIRTY:
        return False
    if tgt.vm_file is not vmg.file:
        return False
    if tgt.vm_userfaultfd_ctx is not vmg.uffd_ctx:
        return False
    return bool(tgt.anon_name == vmg.anon_name) and tgt.vm_policy == vmg.policy


def is_mergeable_anon_vma(vmg: VmaMergeStruct, merge_next: bool) -> bool:
    """``is_mergeable_anon_vma``: equal anon_vmas, or one side has none (for an
    existing VMA, only if its anon_vma_chain is at most a single link)."""
    tgt = vmg.next if merge_next else vmg.prev
    assert tgt is not None
    a, b = vmg.anon_vma, tgt.anon_vma
    if a is b:
        return True
    if a is None or b is None:
        src = vmg.middle
        return src is None or len(src.anon_vma_chain) <= 1
    return False


def are_anon_vmas_compatible(a: VmAreaStruct, b: VmAreaStruct) -> bool:
    """``are_anon_vmas_compatible``: prev and next may share one anon_vma."""
    x, y = a.anon_vma, b.anon_vma
    return x is None or y is None or x is y


def can_vma_merge_left(vmg: VmaMergeStruct) -> bool:
    """``can_vma_merge_left``: the range can join the end of prev."""
    prev = vmg.prev
    if prev is None or prev.vm_end != vmg.start:
        return False
    return (is_mergeable_vma(vmg, False) and is_mergeable_anon_vma(vmg, False)
            and prev.vm_pgoff + vma_pages(prev) == vmg.pgoff)


def can_vma_merge_right(vmg: VmaMergeStruct, can_merge_left: bool) -> bool:
    """``can_vma_merge_right``: the range can join the start of next (and, for
    a three-way merge, prev's and next's anon_vmas are compatible)."""
    nxt = vmg.next
    if nxt is None or nxt.vm_start != vmg.end:
        return False
    if not (is_mergeable_vma(vmg, True) and is_mergeable_anon_vma(vmg, True)):
        return False
    if vmg.pgoff + ((vmg.end - vmg.start) >> PAGE_SHIFT) != nxt.vm_pgoff:
        return False
    if can_merge_left:
        assert vmg.prev is not None
        return are_anon_vmas_compatible(vmg.prev, nxt)
    return True


def can_merge_remove_vma(vma: VmAreaStruct) -> bool:
    """``can_merge_remove_vma``: a VMA with ``vm_ops->close`` is never deleted."""
    ops = vma.vm_ops
    return ops is None or ops.close is None


def _rearrange(mm: MmStruct, changes: list[tuple[VmAreaStruct, int, int, int]],
               remove: list[VmAreaStruct]) -> None:
    """Apply new ``(start, end, pgoff)`` to *changes* and delete *remove*, with
    the write locks, rmap locks and tree updates ``commit_merge`` does."""
    for vma, *_ in changes:
        vma_start_write(vma)
    for vma in remove:
        vma_start_write(vma)
    for vma in remove:
        if vma.anon_vma is not None:
            dup_anon_vma(changes[0][0], vma)
    vp = _Prep([c[0] for c in changes] + remove)
    vma_prepare(vp)
    for vma, start, end, _pgoff in changes:
        # Split huge PMDs that a moving boundary cuts (while the VMA still
        # has its old range).
        huge_memory.vma_adjust_trans_huge(vma, start, end)
    for vma, start, end, pgoff in changes:
        if vma.vm_start != start:
            vma.vm_start = start
        if vma.vm_end != end:
            vma.vm_end = end
        if vma.vm_pgoff != pgoff:
            vma.vm_pgoff = pgoff
    # Store the grown VMA first: it overwrites the removed ranges, so the tree
    # never has a hole where a VMA is.
    order = sorted(changes, key=lambda c: c[2] - c[1], reverse=True)
    for vma, *_ in order:
        vma_iter_store(mm, vma)
    for vma in remove:
        vma_mark_detached(vma)
    vma_complete(vp, [c[0] for c in changes])
    for vma in remove:
        mm.map_count -= 1
        unlink_anon_vmas(vma)  # anon_vma_merge
        vm_area_free(vma)


def dup_anon_vma(dst: VmAreaStruct, src: VmAreaStruct) -> None:
    """``dup_anon_vma``: *dst* takes over *src*'s anon_vma when it has none."""
    av = src.anon_vma
    if av is not None and dst.anon_vma is None:
        vma_start_write(dst)
        dst.anon_vma = av
        anon_vma_clone(dst, src)


@kfunc
def vma_merge_new_range(vmg: VmaMergeStruct) -> VmAreaStruct | None:
    """``vma_merge_new_range``: try to absorb the new range ``[start, end)``
    into prev and/or next. Returns the VMA that now covers it, or None."""
    mm = vmg.mm
    mmap_assert_write_locked(mm)
    prev, nxt = vmg.prev, vmg.next
    if vmg.flags & VM_SPECIAL or (prev is None and nxt is None):
        return None
    left = can_vma_merge_left(vmg)
    right = can_vma_merge_right(vmg, left)
    if right and left:
        assert nxt is not None and prev is not None
        if not can_merge_remove_vma(nxt):
            right = False
    if left:
        assert prev is not None
        if right:
            assert nxt is not None
            _rearrange(mm, [(prev, prev.vm_start, nxt.vm_end, prev.vm_pgoff)], [nxt])
        else:
            _rearrange(mm, [(prev, prev.vm_start, vmg.end, prev.vm_pgoff)], [])
        return prev
    if right:
        assert nxt is not None
        _rearrange(mm, [(nxt, vmg.start, nxt.vm_end, vmg.pgoff)], [])
        return nxt
    return None


@kfunc
def vma_merge_existing_range(vmg: VmaMergeStruct) -> VmAreaStruct | None:
    """``vma_merge_existing_range``: the part ``[start, end)`` of ``middle`` is
    about to take the attributes in *vmg*; merge it into prev and/or next if
    they are compatible. Returns the merged VMA, or None."""
    mm = vmg.mm
    middle = vmg.middle
    assert middle is not None
    left_side = vmg.start == middle.vm_start
    right_side = vmg.end == middle.vm_end
    if vmg.flags & VM_SPECIAL or (not left_side and not right_side):
        return None
    if right_side:
        vmi = VmaIterator(mm, middle.vm_end)
        vmg.next = vma_next(vmi)
        if vmg.next is not None and vmg.next.vm_start != middle.vm_end:
            vmg.next = None
    else:
        vmg.next = None
    if not left_side:
        vmg.prev = None
    merge_left = left_side and can_vma_merge_left(vmg)
    merge_right = right_side and can_vma_merge_right(vmg, merge_left)
    if not merge_left and not merge_right:
        return None
    delete_middle = left_side and right_side
    if delete_middle and not can_merge_remove_vma(middle):
        return None
    if merge_left and merge_right:
        assert vmg.next is not None
        if not can_merge_remove_vma(vmg.next):
            merge_right = False
    prev, nxt = vmg.prev, vmg.next
    if merge_left and merge_right:
        assert prev is not None and nxt is not None
        _rearrange(mm, [(prev, prev.vm_start, nxt.vm_end, prev.vm_pgoff)], [middle, nxt])
        return prev
    if merge_left:
        assert prev is not None
        if delete_middle:
            _rearrange(mm, [(prev, prev.vm_start, vmg.end, prev.vm_pgoff)], [middle])
        else:
            _rearrange(mm, [(prev, prev.vm_start, vmg.end, prev.vm_pgoff),
                            (middle, vmg.end, middle.vm_end,
                             middle.vm_pgoff + ((vmg.end - middle.vm_start) >> PAGE_SHIFT))],
                       [])
        return prev
    assert nxt is not None
    if delete_middle:
        _rearrange(mm, [(nxt, vmg.start, nxt.vm_end, vmg.pgoff)], [middle])
    else:
        _rearrange(mm, [(nxt, vmg.start, nxt.vm_end, vmg.pgoff),
                        (middle, middle.vm_start, vmg.start, middle.vm_pgoff)], [])
    return nxt


@kfunc
def vma_modify(vmg: VmaMergeStruct) -> VmAreaStruct:
    """``vma_modify``: merge ``[start, end)`` of ``middle`` with a neighbour if
    possible, else split ``middle`` so that a VMA covers exactly the range.
    Returns that VMA; the caller then changes its attributes."""
    merged = vma_merge_existing_range(vmg)
    if merged is not None:
        return merged
    vma = vmg.middle
    assert vma is not None
    mm = vmg.mm
    if vmg.start > vma.vm_start:
        split_vma(mm, vma, vmg.start, True)
    if vmg.end < vma.vm_end:
        split_vma(mm, vma, vmg.end, False)
    return vma


def vma_modify_flags(mm: MmStruct, prev: VmAreaStruct | None, vma: VmAreaStruct, start: int,
                     end: int, new_flags: int) -> VmAreaStruct:
    """``vma_modify_flags``."""
    vmg = VmaMergeStruct.from_vma(mm, prev, vma, start, end)
    vmg.flags = new_flags
    return vma_modify(vmg)


# --- expanding and removing -----------------------------------------------------


@kfunc
def vma_expand_to(mm: MmStruct, vma: VmAreaStruct, start: int, end: int) -> None:
    """``vma_expand`` (no VMA removed) / ``vma_shrink``: give *vma* the range
    ``[start, end)``, which must overlap its current one and no other VMA."""
    old_start, old_end = vma.vm_start, vma.vm_end
    pgoff = vma.vm_pgoff - ((old_start - start) >> PAGE_SHIFT)
    _rearrange(mm, [(vma, start, end, pgoff)], [])
    if start > old_start:
        vma_iter_clear(mm, old_start, start)
    if end < old_end:
        vma_iter_clear(mm, end, old_end)


@kfunc
def remove_vma(vma: VmAreaStruct) -> None:
    """``remove_vma``: ``vm_ops->close``, drop the file, free the VMA."""
    ops = vma.vm_ops
    if ops is not None and ops.close is not None:
        ops.close(vma)
    vm_area_free(vma)


@kfunc
def unlink_file_vma(vma: VmAreaStruct) -> None:
    """``unlink_file_vma``: take *vma* out of its file's i_mmap tree."""
    f = vma.raw("vm_file")
    if f is not None:
        i_mmap_lock_write(f.f_mapping)
        _unlink_file(vma)
        i_mmap_unlock_write(f.f_mapping)


@kfunc
def free_pgtables(mm: MmStruct, vmas: list[VmAreaStruct], tlb: Any = None,
                  floor: int = 0, ceiling: int = 0) -> None:
    """``free_pgtables``: unlink each (detached, already zapped) VMA from the
    anon_vma and file rmap trees, then free the page tables that only it
    covered (``free_pgd_range`` between *floor* and *ceiling*, the ends of
    the neighbouring VMAs; 0 for *ceiling* is the top of the address space).
    Once unlinked the VMA is unreachable, so upper entries are cleared
    without page-table locks, as the kernel does."""
    for vma in vmas:
        unlink_anon_vmas(vma)
        unlink_file_vma(vma)
    for i, vma in enumerate(vmas):
        lo = floor if i == 0 else vmas[i - 1].raw("vm_end")
        hi = ceiling if i == len(vmas) - 1 else vmas[i + 1].raw("vm_start")
        free_pgd_range(tlb, vma, vma.raw("vm_start"), vma.raw("vm_end"), lo, hi)


def _neighbours(mm: MmStruct, start: int, end: int) -> tuple[int, int]:
    """The end of the VMA below *start* and the start of the VMA above *end*
    (0 when none): ``free_pgtables``' floor and ceiling. Read under the mmap
    write lock, which excludes every tree writer."""
    floor = 0
    ceiling = 0
    for s, e, _v in mm.mm_mt.entries():
        if e <= start:
            floor = e
        elif s >= end and not ceiling:
            ceiling = s
    return floor, ceiling


@kfunc
def do_vmi_align_munmap(mm: MmStruct, start: int, end: int, unlock: bool,
                        uf: list[UserfaultfdUnmapCtx] | None = None) -> int:
    """``do_vmi_align_munmap``: split the VMAs at the edges, write-lock and
    detach every VMA in ``[start, end)`` under the mmap write lock, then (if
    *unlock*) downgrade and tear down under the read lock, as the kernel does.
    Returns 0; with *unlock* the mmap lock is released on return. With *uf*
    (munmap's list), each VMA registered with a userfaultfd that asked for
    ``UFFD_FEATURE_EVENT_UNMAP`` prepares an UNMAP event
    (``userfaultfd_unmap_prep``), sent once the lock is dropped.

    Left out: locked_vm accounting."""
    mmap_assert_write_locked(mm)
    vma = find_vma_intersection(mm, start, end)
    detach: list[VmAreaStruct] = []
    if vma is not None:
        if vma.vm_start < start:
            if end < vma.vm_end and mm.map_count >= sysctl_max_map_count:
                raise errno_error(ENOMEM, "map count limit")
            split_vma(mm, vma, start, True)
        vmi = VmaIterator(mm, start)
        for v in for_each_vma_range(vmi, end):
            if v.vm_end > end:
                split_vma(mm, v, end, False)
            vma_start_write(v)
            detach.append(v)
            if uf is not None:
                userfaultfd_unmap_prep(v, start, end, uf)
            vmi.index = v.vm_end
        vma_iter_clear(mm, start, end)
        for v in detach:
            vma_mark_detached(v)
            mm.map_count -= 1
            mm.total_vm -= vma_pages(v)
    floor, ceiling = _neighbours(mm, start, end)
    if unlock:
        mmap_write_downgrade(mm)
    if detach:
        # vms_clear_ptes: zap, then free the tables, in one mmu_gather batch.
        tlb = tlb_gather_mmu(mm)
        unmap_vmas(tlb, detach, start, end)
        free_pgtables(mm, detach, tlb, floor, ceiling)
        tlb_finish_mmu(tlb)
    for v in detach:
        remove_vma(v)
    if unlock:
        mmap_read_unlock(mm)
    return 0


# --- mremap's VMA operations ------------------------------------------------------


@kfunc
def vma_merge_extend(mm: MmStruct, vma: VmAreaStruct, delta: int) -> VmAreaStruct | None:
    """``vma_merge_extend``: grow *vma* by *delta* bytes at its end, as a new
    range ``[vm_end, vm_end + delta)`` merged into *vma* (and into the next
    VMA as well when the grown VMA then touches a compatible one). Returns
    the VMA that now covers the range, or None when no merge is possible
    (a ``VM_SPECIAL`` VMA): mremap then fails with ENOMEM."""
    end = vma.vm_end
    nxt = vma_next(VmaIterator(mm, end))  # vma_iter_next_rewind
    vmg = VmaMergeStruct(mm, vma, None, nxt, end, end + delta,
                         vma.vm_pgoff + vma_pages(vma), vma.vm_flags, vma.vm_file,
                         vma.anon_vma, vma.vm_policy, vma.vm_userfaultfd_ctx, vma.anon_name)
    return vma_merge_new_range(vmg)


@kfunc
def copy_vma(vma: VmAreaStruct, addr: int, len_: int,
             pgoff: int) -> tuple[VmAreaStruct | None, VmAreaStruct, bool]:
    """``copy_vma``: the VMA ``[addr, addr + len_)`` that mremap moves *vma*'s
    pages into: the range merged into a neighbour (``vma_merge_new_range``)
    or a new VMA (``vm_area_dup`` + ``anon_vma_clone`` + ``vma_link``, which
    write-locks it and puts it in the file's i_mmap tree). Returns
    ``(new_vma, vma, need_rmap_locks)``: *vma* is replaced by the merged VMA
    when the source itself was merged into it (only an unfaulted anonymous
    VMA, whose pgoff follows its address, can be). ``need_rmap_locks``
    says whether an rmap walk could visit the destination before the
    source (the kernel's test: the merged VMA's pgoff is not above the
    source's); a new VMA is always visited after it, so moving its entries
    needs no rmap lock.

    The model's rmap trees are visited in VMA-serial order, not by pgoff as
    the kernel's interval trees are; where a merged VMA is older than the
    source the two orders can disagree, so the model also takes the rmap
    locks then (more locking than the kernel, never less: it cannot hide a
    race the kernel has). A merge into a VMA without an anon_vma gives it
    the source's (``dup_anon_vma``, as 6.17's ``copied_from`` does), so the
    moved pages stay reachable by rmap.

    Left out: mempolicy duplication, uprobes, hugetlb reservations,
    allocation failures (the kernel's NULL return)."""
    mm: MmStruct = vma.vm_mm
    vma_start = vma.vm_start
    if vma.vm_file is None and vma.vm_ops is None and vma.anon_vma is None:
        # An unfaulted anonymous VMA takes the pgoff of its new place, so
        # that it can merge there.
        pgoff = addr >> PAGE_SHIFT
    nxt, prev = find_vma_prev(mm, addr)
    if nxt is not None and nxt.vm_start < addr + len_:
        return None, vma, False  # the destination was unmapped first: cannot happen
    vmg = VmaMergeStruct(mm, prev, None, nxt, addr, addr + len_, pgoff, vma.vm_flags,
                         vma.vm_file, vma.anon_vma, vma.vm_policy, vma.vm_userfaultfd_ctx,
                         vma.anon_name)
    new_vma = vma_merge_new_range(vmg)
    if new_vma is not None:
        if new_vma.vm_start <= vma_start < new_vma.vm_end:
            vma = new_vma  # the source was merged into the destination
        if vma.anon_vma is not None and new_vma.anon_vma is None:
            dup_anon_vma(new_vma, vma)
        need_rmap_locks = (new_vma.vm_pgoff <= vma.vm_pgoff
                           or new_vma.serial < vma.serial)  # model walk order, see above
        return new_vma, vma, need_rmap_locks
    new_vma = vm_area_dup(vma)
    new_vma._f_vm_start = addr
    new_vma._f_vm_end = addr + len_
    new_vma._f_vm_pgoff = pgoff
    if vma.anon_vma is not None:
        anon_vma_clone(new_vma, vma)
    ops = new_vma.raw("vm_ops")
    if ops is not None and ops.open is not None:
        ops.open(new_vma)
    vma_link(mm, new_vma)
    return new_vma, vma, False


def vma_assert_stable(vma: VmAreaStruct) -> None:
    """The caller keeps *vma* stable (mmap lock, VMA lock or rmap lock)."""
    h = held()
    if vma.serial in h.vma_read:
        return
    mmap_assert_locked(vma.raw("vm_mm"))


__all__ = [
    "VmaIterator",
    "VmaMergeStruct",
    "find_vma",
    "find_vma_intersection",
    "find_vma_prev",
    "for_each_vma",
    "for_each_vma_range",
    "split_vma",
    "vm_flags_clear",
    "vm_flags_mod",
    "vm_flags_reset",
    "vm_flags_set",
    "vma_assert_write_locked",
    "vma_link",
    "vma_lookup",
    "vma_merge_existing_range",
    "vma_merge_new_range",
    "vma_modify",
    "vma_modify_flags",
    "vma_next",
    "vma_prev",
]

# THP splitting on boundary changes (mm/huge_memory.py) calls back into the
# fault and rmap code that imports this module: imported last (the seam).
from mmrace.mm import huge_memory  # noqa: E402

# munmap's teardown (unmap_vmas, the gather, free_pgd_range) lives in modules
# that import this one: imported once this module is complete (the seam).
from mmrace.mm.memory import unmap_vmas  # noqa: E402
from mmrace.mm.mmu_gather import tlb_finish_mmu, tlb_gather_mmu  # noqa: E402
from mmrace.mm.pgtable import free_pgd_range  # noqa: E402

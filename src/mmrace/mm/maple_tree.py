"""The VMA tree: the concurrency-relevant shape of lib/maple_tree.c.

Not the maple tree's encoding: a tree is a pointer to a root node, the root
lists its leaves (with each leaf's lowest start and highest end), and a leaf
holds up to :data:`MAPLE_RANGE64_SLOTS` ranges ``[start, end) -> entry``,
sorted. What matters for concurrency is kept:

* a write never changes a reachable node: it builds replacement nodes (the
  root and the leaves it changes), publishes the new root with one visible
  write to the tree (``rcu_assign_pointer``), then frees the replaced nodes
  with ``kfree_rcu``;
* a walk reads the root pointer and each node it visits as visible
  operations, so a walker that is neither in an RCU read section nor excluded
  from writers (by the mmap lock) can touch a freed node, reported as a
  use-after-free.

Writers must hold the tree's external lock (``mm->mmap_lock`` for write) and
walkers the mmap lock or RCU: the ``mm.mm_mt`` rule of ``mm/rules.py``,
checked on every store and walk. Lookups cost O(log n) (bisection in the root and a leaf).
Left out: gaps tracking, the node encoding, and in-place (RCU-safe) slot
stores the real tree uses for some writes.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from mmrace.engine import READ, WRITE, SharedObject, current_thread, visible
from mmrace.mm.internal import kfunc
from mmrace.mm.locks import KObject, call_rcu, kfree, kobject_access
from mmrace.mm.rules_check import check_mm_tree

MAPLE_RANGE64_SLOTS = 16


class MapleLeaf(KObject):
    """A leaf: parallel sorted lists of starts, ends and entries."""

    def __init__(self, tree: MapleTree, starts: list[int], ends: list[int],
                 entries: list[Any]) -> None:
        tree.nodes_made += 1
        super().__init__(f"{tree.name}.leaf{tree.nodes_made}")
        self.starts = starts
        self.ends = ends
        self.entries = entries
        # The largest gap between two ranges of this leaf (the real tree keeps
        # gap sizes in its nodes so that gap searches are logarithmic).
        self.gap = max((s - e for s, e in zip(starts[1:], ends, strict=False)), default=0)


class MapleRoot(KObject):
    """The root: the leaves in order, with each one's first start and last end."""

    def __init__(self, tree: MapleTree, leaves: list[MapleLeaf]) -> None:
        tree.nodes_made += 1
        super().__init__(f"{tree.name}.root{tree.nodes_made}")
        self.leaves = leaves
        self.mins = [leaf.starts[0] for leaf in leaves]
        self.maxes = [leaf.ends[-1] for leaf in leaves]


class MapleTree(SharedObject):
    """``struct maple_tree`` with an external lock (the owner's mmap_lock)."""

    def __init__(self, owner: Any, name: str) -> None:
        super().__init__(name)
        self.owner = owner  # the mm whose mmap_lock is the external lock
        self.nodes_made = 0
        self.ma_root: MapleRoot | None = None

    # -- reading ---------------------------------------------------------

    def _root(self) -> MapleRoot | None:
        mm = self.owner
        if mm is not None and current_thread() is not None:
            # The mm.mm_mt read rule (mmap lock, or RCU since 6.1). Set-up
            # and final checks run alone and are not checked.
            check_mm_tree(mm, False)
        visible(self, READ, "rcu_dereference(ma_root)")
        return self.ma_root

    def _read(self, node: Any) -> None:
        kobject_access(node, READ, "mas_walk node")

    def find_after(self, addr: int, limit: int | None = None) -> tuple[int, int, Any] | None:
        """The first range with ``end > addr`` (and ``start < limit``), or None."""
        root = self._root()
        if root is None:
            return None
        self._read(root)
        i = bisect_right(root.maxes, addr)
        if i >= len(root.leaves):
            return None
        leaf = root.leaves[i]
        self._read(leaf)
        j = bisect_right(leaf.ends, addr)
        start = leaf.starts[j]
        if limit is not None and start >= limit:
            return None
        return start, leaf.ends[j], leaf.entries[j]

    def find_before(self, addr: int) -> tuple[int, int, Any] | None:
        """The last range with ``start < addr``, or None."""
        root = self._root()
        if root is None:
            return None
        self._read(root)
        i = bisect_left(root.mins, addr) - 1
        if i < 0:
            return None
        leaf = root.leaves[i]
        self._read(leaf)
        j = bisect_left(leaf.starts, addr) - 1
        return leaf.starts[j], leaf.ends[j], leaf.entries[j]

    def load(self, addr: int) -> Any:
        """``mtree_load``: the entry whose range contains *addr*, or None."""
        found = self.find_after(addr)
        if found is None or found[0] > addr:
            return None
        return found[2]

    def empty_area_rev(self, low: int, high: int, size: int) -> int | None:
        """``mas_empty_area_rev``: the highest ``a`` with ``[a, a + size)`` free
        and inside ``[low, high)``, or None."""
        if high - low < size:
            return None
        root = self._root()
        if root is None:
            return high - size
        self._read(root)
        upper = high
        i = bisect_left(root.mins, high) - 1
        while i >= 0:
            top = root.maxes[i]
            if top < upper and upper - max(top, low) >= size:
                return upper - size
            if root.leaves[i].gap >= size or top > upper:
                leaf = root.leaves[i]
                self._read(leaf)
                j = bisect_left(leaf.starts, upper) - 1
                while j >= 0:
                    e = leaf.ends[j]
                    if e < upper and upper - max(e, low) >= size:
                        return upper - size
                    upper = min(upper, leaf.starts[j])
                    if upper - low < size:
                        return None
                    j -= 1
            upper = min(upper, root.mins[i])
            if upper - low < size:
                return None
            i -= 1
        return upper - size

    def entries(self) -> list[tuple[int, int, Any]]:
        """All ranges, without visible operations (debugger view)."""
        out: list[tuple[int, int, Any]] = []
        root = self.ma_root
        if root is None:
            return out
        for leaf in root.leaves:
            out.extend(zip(leaf.starts, leaf.ends, leaf.entries, strict=True))
        return out

    def __len__(self) -> int:
        root = self.ma_root
        return 0 if root is None else sum(len(leaf.starts) for leaf in root.leaves)

    # -- writing ---------------------------------------------------------

    def _assert_writer(self) -> None:
        """The mm.mm_mt write rule of ``mm/rules.py`` (the mmap write lock;
        before 6.5 a stack expansion also stored under the read lock and
        mm->page_table_lock)."""
        mm = self.owner
        if mm is not None:
            check_mm_tree(mm, True)

    @kfunc
    def mas_store_range(self, start: int, end: int, entry: Any) -> None:
        """Store *entry* over ``[start, end)`` (None erases), trimming any
        ranges it overlaps. Builds new nodes, publishes, frees old ones by RCU."""
        if start >= end:
            raise ValueError(f"empty range [{start:#x}, {end:#x})")
        self._assert_writer()
        # The writer reads the current nodes without visible operations: other
        # writers are excluded by the external lock and readers only read, so
        # these reads commute with everything that can run concurrently.
        root = self.ma_root
        leaves = root.leaves if root is not None else []
        if root is not None:
            lo = bisect_right(root.maxes, start)
            hi = bisect_left(root.mins, end)
            if lo >= hi:
                # No leaf overlaps: put the range in a neighbouring leaf.
                if lo >= len(leaves):
                    lo = len(leaves) - 1
                hi = lo + 1
        else:
            lo = hi = 0
        starts: list[int] = []
        ends: list[int] = []
        ents: list[Any] = []
        for leaf in leaves[lo:hi]:
            for s, e, x in zip(leaf.starts, leaf.ends, leaf.entries, strict=True):
                if e <= start or s >= end:
                    starts.append(s)
                    ends.append(e)
                    ents.append(x)
                    continue
                if s < start:
                    starts.append(s)
                    ends.append(start)
                    ents.append(x)
                if e > end:
                    starts.append(end)
                    ends.append(e)
                    ents.append(x)
        if entry is not None:
            k = bisect_left(starts, start)
            starts.insert(k, start)
            ends.insert(k, end)
            ents.insert(k, entry)
        new_leaves: list[MapleLeaf] = []
        n = len(starts)
        if n:
            pieces = -(-n // MAPLE_RANGE64_SLOTS)
            size = -(-n // pieces)
            for i in range(0, n, size):
                new_leaves.append(
                    MapleLeaf(self, starts[i:i + size], ends[i:i + size], ents[i:i + size])
                )
        all_leaves = leaves[:lo] + new_leaves + leaves[hi:]
        new_root = MapleRoot(self, all_leaves) if all_leaves else None
        visible(self, WRITE, "rcu_assign_pointer(ma_root)")
        self.ma_root = new_root
        if root is not None:
            # One RCU callback frees all the replaced nodes (the kernel's
            # mas_destroy/ma_free_rcu batching), so one call_rcu per write.
            call_rcu([root, *leaves[lo:hi]], _free_nodes)


def _free_nodes(nodes: list[Any]) -> None:
    """The RCU callback of a tree write: free the replaced nodes."""
    for node in nodes:
        kfree(node)

"""The locking rules, as data: the only copy the model has.

This is Documentation/mm/process_addrs.rst's content paraphrased into tables
the model checks: for every VMA field, every ``mm_struct`` field the model
checks and every kind of page-table entry, what a reader must hold and what a
writer must hold (each as alternatives, each alternative a set of lock
tokens that must all be held, optionally for one kind of change only and
for a span of kernel releases); the lock-state table; the mmap lock's
read/downgraded/write exclusivity; the lock order of mm/rmap.c and
mm/filemap.c; and the documented exceptions.

Nothing here checks anything: ``mm/rules_check.py`` compiles these tables
for one kernel (a ``KernelConfig``) and enforces them on every access;
``mmrace rules`` prints them and ``mmrace doc`` (``mm/rules_doc.py``) renders
them as the locking document. A row can hold from a release on (``since``)
or until one (``until``); where the model's *behaviour* also changed at that
point, the row names the switch of ``mmrace.fixes`` (``since_fix`` /
``until_fix``) and follows it, so ``System(kernel="6.1")`` and
``System(without=[...])`` are both judged by the rules their behaviour
follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmrace.fixes import KernelConfig, parse_release

# --- lock tokens ------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """A lock (or lock-like fact) a rule can demand. *since_fix*: the token
    exists only with that switch (the per-VMA lock before 6.4 did not)."""

    meaning: str
    since: str | None = None
    since_fix: str | None = None


TOKENS: dict[str, Token] = {
    "mmap R": Token("mm->mmap_lock held by this task for read, downgraded or write"),
    "mmap W": Token("mm->mmap_lock held by this task for write"),
    "VMA R": Token("this VMA read-locked by this task (lock_vma_under_rcu / vma_start_read)",
                   since="6.4", since_fix="per-vma-locks"),
    "VMA W": Token("this VMA write-locked (vma_start_write in the current mmap write "
                   "section; implies mmap W)", since="6.4", since_fix="per-vma-locks"),
    "rmap R": Token("an rmap lock the VMA is reachable through (its file's i_mmap_rwsem or "
                    "its anon_vma's), held for read or write"),
    "rmap W": Token("every rmap lock the VMA is reachable through, held for write (vacuous "
                    "for a VMA in no rmap tree)"),
    "i_mmap W": Token("vm_file->f_mapping->i_mmap_rwsem held for write (vacuous without a "
                      "file)"),
    "anon_vma W": Token("vma->anon_vma's (root's) rwsem held for write"),
    "page_table_lock": Token("mm->page_table_lock held"),
    "pte ptl": Token("the split lock of the PTE table holding the entry "
                     "(pte_offset_map_lock); for a PMD entry, the lock of the PTE table it "
                     "points to"),
    "pmd ptl": Token("the split lock of the PMD table holding the entry (pmd_lock)"),
    "RCU": Token("inside rcu_read_lock() (lookups and lockless walks only: what is found is "
                 "not stable and must be rechecked under a lock)"),
    "IRQs off": Token("interrupts disabled on this CPU (local_irq_save), as GUP-fast walks: "
                      "a page-table page is freed only after a TLB-flush IPI or "
                      "tlb_remove_table_sync_one reached every CPU, or after an RCU grace "
                      "period, and the section holds off both"),
    "detached": Token("the VMA is detached: no longer in the mm's VMA tree"),
    "unreachable": Token("the VMA is detached and unlinked from every rmap tree "
                         "(free_pgtables unlinks it before freeing its tables)"),
    "rcu free": Token("the page-table page is freed after an RCU grace period "
                      "(pte_free_defer / tlb_remove_table)"),
    "atomic": Token("the access is an atomic operation on the field (atomic_long_*)"),
    "numab": Token("this task won the mm's NUMA-scan claim (task_numa_work's cmpxchg of "
                   "mm->numa_next_scan); at most one task per mm holds it"),
    "never": Token("set once while the VMA is built; never written once it is visible"),
    "driver": Token("the owner of the mapping decides (not checked)"),
}

# --- conditions: which kind of change an alternative covers ---------------------------

CONDITIONS: dict[str, str] = {
    "": "any write",
    "set": "NULL -> non-NULL",
    "clear": "non-NULL -> NULL",
    "fill": "an empty entry filled (a leaf or a page table installed)",
    "change": "a present leaf entry changed or cleared (zap)",
    "table": "an entry pointing to a page table changed or cleared (retract, move, free)",
    "free_pgtables": "page tables freed by free_pgtables",
    "retract": "a single PTE table freed after it was unlinked (khugepaged retraction)",
}

# --- alternatives and rules -----------------------------------------------------------------


@dataclass(frozen=True)
class Alt:
    """One way to satisfy a rule: every token in *locks* held, for changes of
    kind *when* (a key of CONDITIONS), in releases ``[since, until)``. With
    *since_fix* / *until_fix* the span follows that switch instead (the
    release bounds then name the switch's release, for the document)."""

    locks: tuple[str, ...]
    when: str = ""
    since: str | None = None
    until: str | None = None
    since_fix: str | None = None
    until_fix: str | None = None
    via: str = ""  # the kernel path that relies on this alternative

    def in_kernel(self, cfg: KernelConfig) -> bool:
        """Whether the alternative holds in the kernel *cfg* models."""
        return in_span(cfg, self.since, self.until, self.since_fix, self.until_fix)

    def in_release(self, release: str | None) -> bool:
        """Whether it holds as of *release* (None: the current kernel)."""
        return in_span(KernelConfig(release=release), self.since, self.until,
                       self.since_fix, self.until_fix)

    def span(self) -> str:
        """``since 6.4``, ``until 6.5`` or ``6.1 to 6.6`` (empty: always)."""
        if self.since and self.until:
            return f"{self.since} to {self.until}"
        if self.since:
            return f"since {self.since}"
        if self.until:
            return f"before {self.until}"
        return ""


def in_span(cfg: KernelConfig, since: str | None, until: str | None,
            since_fix: str | None, until_fix: str | None) -> bool:
    """The era test shared by alternatives, tokens and lock-state rows."""
    if since_fix is not None:
        if not cfg.has(since_fix):
            return False
    elif (since is not None and cfg.release is not None
          and parse_release(cfg.release) < parse_release(since)):
        return False
    if until_fix is not None:
        return not cfg.has(until_fix)
    return until is None or (
        cfg.release is not None and parse_release(cfg.release) < parse_release(until))


def A(*locks: str, when: str = "", since: str | None = None, until: str | None = None,
      since_fix: str | None = None, until_fix: str | None = None, via: str = "") -> Alt:
    """Shorthand for an :class:`Alt` in the tables below."""
    return Alt(tuple(locks), when, since, until, since_fix, until_fix, via)


@dataclass(frozen=True)
class Rule:
    """The read and write rule of one field or object.

    *section* groups rows as the document does (``layout``, ``core``,
    ``config``, ``rmap``, ``mm``, ``pgtable``); *kernel_name* is the field's
    name in today's kernel when it differs; *enforced_by* names the model
    code that checks every access; *scenario* a catalog entry whose pre-fix
    variant breaks the rule, where one exists."""

    name: str
    section: str
    read: tuple[Alt, ...]
    write: tuple[Alt, ...]
    note: str
    config: str = ""
    kernel_name: str = ""
    enforced_by: str = ""
    scenario: str = ""
    eras: tuple[str, ...] = field(default=())  # prose on how the rule changed


STABLE = (A("mmap R"), A("VMA R"), A("rmap R"))
"""Any one of these keeps a VMA stable and lets its fields be read."""

LAYOUT_WRITE = A("mmap W", "VMA W", "rmap W")
MOST_WRITE = (A("mmap W", "VMA W"),)
NEVER = (A("never"),)
FIELD_CHECK = "mmrace.mm.mm_types._Field"

STACK_EXPANSION = A(
    "mmap R", "anon_vma W", "page_table_lock", until="6.5",
    until_fix="stack-expand-write-locked",
    via="expand_downwards under the mmap read lock (stack growth in a page fault); "
        "page_table_lock serialises concurrent expansions")
RCU_FREED_VMA = A(
    "RCU", since="6.4", until="6.15", since_fix="per-vma-locks",
    until_fix="vma-slab-typesafe-rcu",
    via="vma_start_read reads vma->vm_mm under RCU alone: VMAs are freed after a grace "
        "period, so the read is safe, and it is rechecked once the VMA is locked")

PGTABLE_READ = (
    A("mmap R"), A("VMA R"), A("rmap R"),
    A("RCU", since="6.5", since_fix="pte-map-revalidate",
      via="pte_offset_map takes the RCU read lock: page tables are "
      "freed after a grace period, so a walk under RCU alone is safe but must revalidate "
      "what it found under the page-table lock"),
    A("IRQs off", via="GUP-fast (lockless_pages_from_mm) reads every level with "
      "interrupts off and no lock: what it finds is not stable, so it takes a speculative "
      "reference and rechecks the PMD and the PTE before keeping the page"),
)

RULES: dict[str, Rule] = {}


def _add(rule: Rule) -> None:
    RULES[rule.name] = rule


# Virtual layout fields: they place the VMA in the rmap interval trees, so
# writers hide it from the rmap too.
_add(Rule("vm_start", "layout", (*STABLE,), (LAYOUT_WRITE, STACK_EXPANSION),
          "inclusive start address of the range the VMA maps",
          enforced_by=FIELD_CHECK,
          eras=("Before 6.5 a page fault grew a stack VMA downwards under the mmap read "
                "lock, writing vm_start and vm_pgoff under the anon_vma lock and "
                "mm->page_table_lock; 6.5 takes the mmap write lock for that.",)))
_add(Rule("vm_end", "layout", (*STABLE,), (LAYOUT_WRITE,),
          "exclusive end address of the range the VMA maps (expand_upwards, which wrote it "
          "under the read lock before 6.5, exists only where stacks grow up; not on x86)",
          enforced_by=FIELD_CHECK))
_add(Rule("vm_pgoff", "layout", (*STABLE,), (LAYOUT_WRITE, STACK_EXPANSION),
          "page offset into the file; for anonymous memory the page index the range had "
          "when first mapped (kept across mremap)",
          enforced_by=FIELD_CHECK))
# Core fields.
_add(Rule("vm_mm", "core", (*STABLE, RCU_FREED_VMA), NEVER,
          "the mm the VMA belongs to, set when the VMA is created",
          enforced_by=FIELD_CHECK,
          eras=("From 6.4 to 6.14 VMAs were freed after an RCU grace period, so "
                "vma_start_read could read vm_mm under RCU alone; since 6.15 the VMA slab "
                "is SLAB_TYPESAFE_BY_RCU (a VMA found under RCU may already be another "
                "one), the caller passes the mm and vm_mm is compared only once the VMA "
                "is locked.",)))
_add(Rule("vm_page_prot", "core", (*STABLE,), MOST_WRITE,
          "architecture page protection bits derived from vm_flags",
          enforced_by=FIELD_CHECK))
_add(Rule("vm_flags", "core", (*STABLE,), MOST_WRITE,
          "the VMA's flags; written only through vm_flags_set / vm_flags_clear / "
          "vm_flags_mod / vm_flags_reset, which assert the VMA write lock (vm_flags "
          "itself is a read-only alias)", kernel_name="__vm_flags",
          enforced_by=FIELD_CHECK))
_add(Rule("vm_file", "core", (*STABLE,), NEVER,
          "the mapped file (NULL for anonymous memory), set at mmap time",
          enforced_by=FIELD_CHECK))
_add(Rule("vm_ops", "core", (*STABLE,), NEVER,
          "the driver's or file system's operations, set by its ->mmap()",
          enforced_by=FIELD_CHECK))
_add(Rule("vm_private_data", "core", (*STABLE,), (A("driver"),),
          "driver-private data: the driver decides how it is locked",
          enforced_by=FIELD_CHECK))
# Fields that exist with a configuration option.
_add(Rule("anon_name", "config", (*STABLE,), MOST_WRITE,
          "a refcounted name shared by VMAs (prctl PR_SET_VMA_ANON_NAME)",
          config="CONFIG_ANON_VMA_NAME", enforced_by=FIELD_CHECK))
_add(Rule("swap_readahead_info", "config", (*STABLE,),
          (A("mmap R", "atomic", via="swap-in readahead under the mmap read lock"),
           A("VMA R", "atomic", since="6.6", via="swap-in faults under the per-VMA lock")),
          "swap readahead window of the VMA, updated with atomic operations by the "
          "swap-in path", config="CONFIG_SWAP",
          enforced_by="mmrace.mm.swap_state.swap_update_readahead, " + FIELD_CHECK))
_add(Rule("vm_policy", "config", (*STABLE,), MOST_WRITE,
          "the refcounted NUMA mempolicy of the range", config="CONFIG_NUMA",
          enforced_by=FIELD_CHECK))
_add(Rule("numab_state", "config", (*STABLE,), (A("mmap R", "numab", via="task_numa_work"),),
          "NUMA-balancing scan state, written under the mmap read lock by task_numa_work, "
          "which only the task that won the mm's scan claim runs",
          config="CONFIG_NUMA_BALANCING",
          enforced_by="mmrace.mm.numa_balancing.task_numa_work, " + FIELD_CHECK))
_add(Rule("vm_userfaultfd_ctx", "config", (*STABLE,), MOST_WRITE,
          "the userfaultfd context (renamed vm_uffd_state in newer kernels)",
          config="CONFIG_USERFAULTFD", kernel_name="vm_userfaultfd_ctx / vm_uffd_state",
          enforced_by=FIELD_CHECK))
# Reverse-mapping fields.
_add(Rule("shared.rb", "rmap", (*STABLE,),
          (A("mmap W", "VMA W", "i_mmap W"),
           A("i_mmap W", "detached", via="free_pgtables unlinks a detached VMA (the "
             "document describes it in prose)")),
          "the VMA's node in its file's i_mmap interval tree (shared.rb and "
          "shared.rb_subtree_last)", kernel_name="shared.rb, shared.rb_subtree_last",
          enforced_by=FIELD_CHECK))
_add(Rule("anon_vma_chain", "rmap", (*STABLE,), (A("mmap R", "anon_vma W"),),
          "the list of anon_vma_chain links to the anon_vmas of forked and CoW'd "
          "ancestors and to the VMA's own", enforced_by=FIELD_CHECK))
_add(Rule("anon_vma", "rmap", (*STABLE,),
          (A("mmap R", "page_table_lock", when="set", via="__anon_vma_prepare on the "
             "first fault"),
           A("mmap W", "VMA W", when="set", via="merge, split and dup copy it (the "
             "document's table does not list this case)"),
           A("mmap W", "VMA W", "anon_vma W", when="clear")),
          "the anon_vma that anonymous folios mapped only by this VMA go to; set on the "
          "first fault under just the mmap read lock and page_table_lock, so it can "
          "change under a reader that holds the mmap read lock or a VMA read lock",
          enforced_by=FIELD_CHECK))
# mm_struct fields the model checks.
_add(Rule("mm.mm_mt", "mm",
          (A("mmap R"), A("RCU", since="6.1", via="maple-tree walks under RCU "
             "(lock_vma_under_rcu); the VMA found is not stable")),
          (A("mmap W"),
           A("mmap R", "page_table_lock", until="6.5", until_fix="stack-expand-write-locked",
             via="expand_downwards stored the grown VMA under the mmap read lock "
                 "(the StackRot use-after-free, CVE-2023-3269, came from this)")),
          "the VMA tree (a maple tree since 6.1, an rbtree before)",
          enforced_by="mmrace.mm.maple_tree.MapleTree"))
_add(Rule("mm.map_count", "mm", (A("mmap R"),), (A("mmap W"),), "the number of VMAs",
          enforced_by="mmrace.mm.mm_types.MmStruct.map_count"))
# Page-table entries.
_PGTABLE_CHECK = "mmrace.mm.pgtable.check_entry_write, mmrace.mm.pgtable.check_entry_read"
_add(Rule("pte", "pgtable", PGTABLE_READ,
          (A("pte ptl", "mmap R", when="fill"),
           A("pte ptl", "VMA R", when="fill"),
           A("pte ptl", when="change", via="zap (truncate, MADV_DONTNEED), COW, mprotect, "
             "reclaim: any lock that keeps the VMA stable, rmap locks included")),
          "a PTE. Filling an empty entry needs the mmap or VMA lock; rmap locks alone are "
          "not enough: a fill could land between munmap's zap and free_pgtables and be "
          "freed unzapped. Clearing or changing one needs only a stable VMA and the PTL",
          enforced_by=_PGTABLE_CHECK))
_add(Rule("pmd", "pgtable", PGTABLE_READ,
          (A("pmd ptl", "mmap R", when="fill", via="pmd_install (__pte_alloc), THP faults"),
           A("pmd ptl", "VMA R", when="fill"),
           A("pmd ptl", when="change", via="a huge (leaf) PMD changed or zapped"),
           A("pmd ptl", "mmap W", when="table", until="6.1",
             until_fix="khugepaged-retract-locks",
             via="khugepaged's retract_page_tables / collapse_pte_mapped_thp before "
                 "'mm/khugepaged: Take the right locks for page table retraction'"),
           A("pmd ptl", "mmap W", "VMA W", when="table", until="5.14",
             via="mremap's move_normal_pmd before 'mm/mremap: hold the rmap lock in write "
                 "mode when moving page table entries.': the rmap locks only when "
                 "need_rmap_locks"),
           A("pmd ptl", "mmap W", "VMA W", "rmap W", when="table",
             via="mremap's move_normal_pmd (take_rmap_locks); khugepaged's anonymous "
                 "collapse_huge_page (pmdp_collapse_flush)"),
           A("mmap W", "VMA W", "rmap W", when="table", since="6.1", until="6.6",
             since_fix="khugepaged-retract-locks", until_fix="retract-pgtable-rcu",
             via="collapse_and_free_pmd from 'mm/khugepaged: Take the right locks for page "
                 "table retraction' to 6.5: every high-level lock held for write, so no "
                 "PMD lock (\"trying to take the page table spinlocks would be useless\")"),
           A("pmd ptl", "pte ptl", "rmap R", when="table", since="6.6",
             since_fix="retract-pgtable-rcu",
             via="retract_page_tables under i_mmap_rwsem for read, the table freed by RCU"),
           A("pmd ptl", "pte ptl", "mmap R", when="table", since="6.6",
             since_fix="retract-pgtable-rcu",
             via="collapse_pte_mapped_thp under the mmap read lock"),
           A("unreachable", when="table", via="free_pgtables: nobody can reach the range")),
          "a PMD entry. One that points to a PTE table is changed only with the PTE "
          "table's lock too (since 6.6; pte_offset_map_lock rechecks the PMD under that "
          "lock), or with every higher-level lock held exclusively",
          enforced_by=_PGTABLE_CHECK,
          eras=("Before 6.1 khugepaged replaced a PMD pointing to a PTE table under the "
                "mmap write lock and the PMD lock alone, while rmap walkers (holding only "
                "an rmap lock) could be inside that table.",
                "From 6.1 to 6.5 retraction took every high-level lock exclusively (mmap, "
                "i_mmap and anon_vma write locks); readers could assume a PMD that "
                "points to a table stays put.",
                "Since 6.6 retraction holds only i_mmap_rwsem for read plus the PMD and "
                "PTE locks and frees the table by RCU; readers revalidate the PMD "
                "(pte_offset_map_lock's pmd_same recheck).",
                "Before 5.14 mremap moved a whole PTE table (move_normal_pmd; from 5.11 "
                "also a PMD table, move_normal_pud) under the mmap write lock and the "
                "PMD lock, taking the rmap locks only when need_rmap_locks: a walker "
                "holding only an rmap lock could be inside the table as it moved.")))
_add(Rule("pud", "pgtable", PGTABLE_READ,
          (A("page_table_lock", "mmap R", when="fill",
             via="__pud_alloc / __pmd_alloc (check, allocate, lock, recheck)"),
           A("page_table_lock", "VMA R", when="fill"),
           A("page_table_lock", "mmap W", "VMA W", "rmap W", when="table",
             via="moving page tables above the PMD level (mremap's move_normal_pud, "
                 "take_rmap_locks)"),
           A("page_table_lock", "mmap W", "VMA W", when="table", until="5.14",
             via="mremap's move_normal_pud (5.11 to 5.13) took the rmap locks only when "
                 "need_rmap_locks"),
           A("unreachable", when="table", via="free_pgtables")),
          "a PGD or PUD entry (P4D is folded): installed under mm->page_table_lock; "
          "moving tables above the PMD level needs every lock (mmap, VMA and rmap)",
          enforced_by=_PGTABLE_CHECK))
_add(Rule("pgtables", "pgtable", (),
          (A("mmap R", "unreachable", when="free_pgtables",
             via="munmap and exit: the VMA is detached and unlinked from the rmap first"),
           A("mmap W", "pmd ptl", when="retract", until="6.1",
             until_fix="khugepaged-retract-locks",
             via="khugepaged freed a retracted PTE table at once under the mmap write "
                 "lock and the PMD lock"),
           A("mmap W", "VMA W", "rmap W", when="retract", since="6.1", until="6.6",
             since_fix="khugepaged-retract-locks", until_fix="retract-pgtable-rcu",
             via="khugepaged freed a retracted PTE table at once, with every high-level "
                 "lock held for write (collapse_and_free_pmd)"),
           A("pmd ptl", "pte ptl", "rcu free", when="retract", since="6.6",
             since_fix="retract-pgtable-rcu",
             via="retract_page_tables frees the table with pte_free_defer")),
          "freeing page-table pages. A truncate can zap under i_mmap_rwsem alone, so no "
          "VMA still reachable through an rmap tree may lose its page tables; "
          "free_pgtables assumes the range is zapped and clears upper entries without "
          "page-table locks",
          enforced_by="mmrace.mm.pgtable.free_pgd_range, "
                      "mmrace.mm.pgtable.check_retract_free"))

# --- atomicity of page-table entries (for lockless readers) -------------------------------


@dataclass(frozen=True)
class AtomicityRule:
    """An atomicity requirement of entry accesses, and how the model keeps it."""

    name: str
    rule: str
    model: str
    enforced_by: str


ATOMICITY: list[AtomicityRule] = [
    AtomicityRule(
        "read-once", "an entry that decides what happens next is read exactly once "
        "(pXXp_get, READ_ONCE)",
        "every accessor (ptep_get, pmdp_get, ...) is one visible read; a decision made on "
        "it is revalidated under the lock (pte_same, pmd_same)",
        "mmrace.mm.pgtable.ptep_get"),
    AtomicityRule(
        "atomic-rmw", "changing an entry whose old value matters uses a hardware atomic "
        "(ptep_get_and_clear, ptep_set_wrprotect, ptep_test_and_clear_young): the MMU "
        "sets accessed and dirty bits concurrently, even while the PTL is held",
        "those accessors are one visible read-modify-write each; a plain store "
        "(set_pte_at, set_pmd_at) over a present leaf that drops an accessed or dirty bit "
        "the entry has is reported (the hardware's update would be lost)",
        "mmrace.mm.pgtable.check_entry_write"),
    AtomicityRule(
        "lockless-walkers", "lockless walkers (the hardware, GUP-fast) see every store "
        "whole (set_pXX, pXX_clear)",
        "the hardware walker reads each level in one visible operation inside an RCU "
        "read section; GUP-fast reads each level once (pXXp_get_lockless) with interrupts "
        "off, and every writer stores an entry in one visible operation",
        "mmrace.mm.pgtable.X86PageWalker, mmrace.mm.gup.gup_fast"),
]

# --- the lock-state table -----------------------------------------------------------------

LOCK_STATE_COLUMNS = ("mmap", "VMA", "rmap", "stable", "read", "write most", "write all")


@dataclass(frozen=True)
class LockState:
    """A row of the lock-state table: which lock states (of one VMA, by one
    task) are valid and what each permits. ``-`` none, ``R`` read, ``W``
    write; ``R/W`` means either."""

    mmap: str
    vma: str
    rmap: str
    stable: bool
    read: bool
    write_most: bool
    write_all: bool

    def matches(self, mmap: str, vma: str, rmap: str) -> bool:
        return (mmap in self.mmap.split("/") and vma in self.vma.split("/")
                and rmap in self.rmap.split("/"))

    def cells(self) -> list[str]:
        yn = {True: "Y", False: "N"}
        return [self.mmap, self.vma, self.rmap, yn[self.stable], yn[self.read],
                yn[self.write_most], yn[self.write_all]]


LOCK_STATES: list[LockState] = [
    LockState("-", "-", "-", False, False, False, False),
    LockState("-", "R", "-", True, True, False, False),
    LockState("-", "-", "R/W", True, True, False, False),
    LockState("R/W", "-/R", "-/R/W", True, True, False, False),
    LockState("W", "W", "-/R", True, True, True, False),
    LockState("W", "W", "W", True, True, True, True),
]
"""The valid lock states of one VMA (mmap lock, its VMA lock, its rmap
locks); a downgraded mmap lock counts as R. Any other state is a
``lock-state`` violation at the transition that makes it, unless an
exception below covers it."""

MMAP_LOCK_MODES = ("R", "D", "W")
MMAP_LOCK_EXCLUSION: dict[str, dict[str, bool]] = {
    "R": {"R": False, "D": False, "W": True},
    "D": {"R": False, "D": True, "W": True},
    "W": {"R": True, "D": True, "W": True},
}
"""Whether two tasks' mmap lock modes exclude each other: read (R),
downgraded write (D), write (W). Two downgraded holders exclude each other
because each had to hold the write lock first."""


# --- lock ordering --------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderLevel:
    """A line of mm/rmap.c's lock hierarchy: taken before every line nested
    under it (*depth* is the nesting). *classes* says which model locks
    belong to it: a lock name suffix (``.mmap_lock``), a lockdep class
    (``ptlock``), or a pseudo-lock the model checks at that point
    (``vma_start_write``, ``folio_lock``). Empty: the model has no such lock."""

    depth: int
    name: str
    where: str = ""
    classes: tuple[str, ...] = ()


LOCK_ORDER: list[OrderLevel] = [
    OrderLevel(0, "inode->i_rwsem", "while writing or truncating, not reading or faulting"),
    OrderLevel(1, "mm->mmap_lock", "", (".mmap_lock",)),
    OrderLevel(2, "mapping->invalidate_lock", "in filemap_fault"),
    OrderLevel(3, "folio_lock", "", ("folio_lock",)),
    OrderLevel(4, "hugetlbfs_i_mmap_rwsem_key", "in huge_pmd_share"),
    OrderLevel(5, "vma_start_write", "the VMA write lock", ("vma_start_write",)),
    OrderLevel(6, "mapping->i_mmap_rwsem", "", (".i_mmap_rwsem",)),
    OrderLevel(7, "anon_vma->rwsem", "", ("anon_vma_rwsem",)),
    OrderLevel(8, "mm->page_table_lock or pte_lock", "",
               (".page_table_lock", "ptlock", "pmd_ptlock")),
    OrderLevel(9, "swap_lock", "in swap_duplicate, swap_info_get"),
    OrderLevel(10, "mmlist_lock", "in mmput, drain_mmlist and others"),
    OrderLevel(10, "mapping->private_lock", "in block_dirty_folio"),
    OrderLevel(12, "i_pages lock", "widely used"),
    OrderLevel(13, "lruvec->lru_lock", "in folio_lruvec_lock_irq"),
    OrderLevel(10, "inode->i_lock", "in set_page_dirty's __mark_inode_dirty"),
    OrderLevel(10, "bdi.wb->list_lock", "in set_page_dirty's __mark_inode_dirty"),
    OrderLevel(11, "sb_lock", "within inode_lock in fs/fs-writeback.c"),
    OrderLevel(11, "i_pages lock", "in set_page_dirty, flush_dcache_mmap_lock, "
               "__sync_single_inode"),
]
"""mm/rmap.c's hierarchy, in its order (the i_pages lock appears twice, as
there)."""

LOCK_ORDER_EDGES: list[tuple[str, str, str]] = [
    ("mapping->i_mmap_rwsem", "mapping->private_lock", "truncate_pagecache"),
    ("mapping->private_lock", "swap_lock", "__free_pte -> block_dirty_folio"),
    ("swap_lock", "i_pages lock", "exclusive_swap_page and others"),
    ("inode->i_rwsem", "mapping->invalidate_lock", "the file system's truncate"),
    ("mapping->invalidate_lock", "mapping->i_mmap_rwsem", "truncate -> unmap_mapping_range"),
    ("mm->mmap_lock", "mapping->i_mmap_rwsem", "memory.c"),
    ("mapping->i_mmap_rwsem", "mm->page_table_lock or pte_lock", "memory.c"),
    ("mm->mmap_lock", "mapping->invalidate_lock", "filemap_fault"),
    ("mapping->invalidate_lock", "folio_lock", "filemap_fault, access_process_vm"),
    ("inode->i_rwsem", "mm->mmap_lock", "generic_perform_write faulting in its buffer"),
    ("bdi.wb->list_lock", "sb_lock", "fs/fs-writeback.c"),
    ("bdi.wb->list_lock", "i_pages lock", "__sync_single_inode"),
    ("mapping->i_mmap_rwsem", "anon_vma->rwsem", "vma_merge"),
    ("anon_vma->rwsem", "mm->page_table_lock or pte_lock", "anon_vma_prepare and others"),
    ("mm->page_table_lock or pte_lock", "swap_lock", "try_to_unmap_one"),
    ("mm->page_table_lock or pte_lock", "mapping->private_lock", "try_to_unmap_one, "
     "zap_pte_range, folio_remove_rmap_pte"),
    ("mm->page_table_lock or pte_lock", "i_pages lock", "try_to_unmap_one, "
     "folio_remove_rmap_pte, flush_dcache_mmap_lock"),
    ("mm->page_table_lock or pte_lock", "lruvec->lru_lock", "mark_page_accessed, "
     "folio_isolate_lru"),
    ("mm->page_table_lock or pte_lock", "bdi.wb->list_lock", "set_page_dirty"),
    ("mm->page_table_lock or pte_lock", "inode->i_lock", "set_page_dirty"),
]
"""mm/filemap.c's pairwise orderings: (taken first, taken second, where)."""



def lock_order_closure() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """For each level, the levels it must be taken before (mm/rmap.c's
    hierarchy, then mm/filemap.c's pairs, transitively), and the pairs of
    mm/filemap.c that contradict the hierarchy (the two comments disagree on
    swap_lock and private_lock): those are rendered but not checked."""
    names: list[str] = []
    for lv in LOCK_ORDER:
        if lv.name not in names:
            names.append(lv.name)
    before: dict[str, set[str]] = {n: set() for n in names}
    for i, lv in enumerate(LOCK_ORDER):
        for later in LOCK_ORDER[i + 1:]:
            if later.depth <= lv.depth:
                break
            before[lv.name].add(later.name)

    def close() -> None:
        changed = True
        while changed:
            changed = False
            for n in names:
                extra = set().union(*(before[m] for m in before[n])) - before[n]
                if extra:
                    before[n] |= extra
                    changed = True

    close()
    contradictions = []
    for first, then, _ in LOCK_ORDER_EDGES:
        if first in before[then]:
            contradictions.append((first, then))
            continue
        before[first].add(then)
        close()
    return before, contradictions


FORBIDDEN_NESTING: list[tuple[str, str, str]] = [
    ("a VMA read lock", "mm->mmap_lock",
     "a task holding the mmap write lock may be waiting in vma_start_write for the VMA "
     "read lock to be dropped: take the mmap lock first, or use a trylock"),
]
"""Nestings that are wrong even though neither lock is in the hierarchy
above: (held, then taken, why). Trylocks are exempt."""


# --- exceptions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentedException:
    """A documented exception to the rules above; *modelled* says whether the
    model has the code path (and *enforced_by* what checks it). *states*
    are the (mmap, VMA, rmap) lock states, outside the lock-state table,
    that a task inside the code path (``rules_check.exception_path_enter``
    with *name*) may be in; *switch* the fix that brings the code path to
    a release (empty: every release that has it)."""

    name: str
    text: str
    modelled: bool
    enforced_by: str = ""
    states: tuple[tuple[str, str, str], ...] = ()
    switch: str = ""


EXCEPTIONS: list[DocumentedException] = [
    DocumentedException("uffd_move_lock",
               "UFFDIO_MOVE locks two VMAs: the destination with lock_vma_under_rcu and "
               "the source with a second, nested VMA read lock "
               "(vma_start_read_locked_nested under the mmap read lock on the fallback "
               "path), then takes the source's anon_vma lock for write while holding "
               "only VMA read locks -- a state outside the lock-state table (mmap -, "
               "VMA R, rmap W), allowed only inside move_pages",
               modelled=True, enforced_by="mmrace.mm.rules_check.check_lock_state",
               states=(("-", "R", "W"),), switch="uffd-per-vma-locks"),
    DocumentedException("non-VMA walks",
               "walk_kernel_page_table_range walks kernel page tables under init_mm's "
               "mmap lock (read at least); walk_page_range_debug (ptdump) walks user "
               "ranges no VMA covers and needs the mmap write lock, because munmap "
               "frees page tables under a downgraded lock after detaching the VMAs",
               modelled=False),
    DocumentedException("gate VMA",
               "the vsyscall gate VMA is a global static object that belongs to no mm; "
               "get_gate_page may see vm_mm == NULL", modelled=False),
    DocumentedException("free_pgtables",
               "page-table entries above the PTE level are cleared without page-table "
               "locks when nobody can reach the range (the 'unreachable' token)",
               modelled=True, enforced_by="mmrace.mm.pgtable.free_pgd_range"),
]


# --- plain-text and JSON renderings (``mmrace rules``) -------------------------------------


def alt_text(alt: Alt, *, show_when: bool = True, release: str | None = None) -> str:
    """``mmap W + VMA W (NULL -> non-NULL)``. For a release before the
    per-VMA lock, ``VMA W`` is dropped (implied by mmap W)."""
    locks = [t for t in alt.locks if token_in_release(t, release) or t != "VMA W"]
    text = " + ".join(locks) if locks else "none"
    if show_when and alt.when:
        text += f" ({CONDITIONS[alt.when]})"
    return text


def token_in_release(token: str, release: str | None) -> bool:
    tok = TOKENS[token]
    return in_span(KernelConfig(release=release), tok.since, None, tok.since_fix, None)


def alts_in_release(alts: tuple[Alt, ...], release: str | None) -> list[Alt]:
    """The alternatives that hold as of *release*, without those that need a
    lock the release does not have (a VMA read lock before 6.4)."""
    out = []
    for alt in alts:
        if not alt.in_release(release):
            continue
        if "VMA R" in alt.locks and not token_in_release("VMA R", release):
            continue
        out.append(alt)
    return out


def _alts_text(alts: list[Alt], release: str | None) -> str:
    return " | ".join(alt_text(a, release=release) for a in alts) if alts else "none"


def rules_table(release: str | None = None) -> list[dict[str, str]]:
    """The rule table as of *release* (None: the current kernel), for
    ``mmrace rules --json``: ``{field, read, write, note}``."""
    return [
        {"field": name, "read": _alts_text(alts_in_release(rule.read, release), release),
         "write": _alts_text(alts_in_release(rule.write, release), release),
         "note": rule.note}
        for name, rule in RULES.items()
    ]


def render_rules(field: str | None = None, release: str | None = None) -> str:
    """Plain text for ``mmrace rules [FIELD] [--kernel R]``; raises KeyError
    for an unknown field."""
    rows = rules_table(release)
    if field is not None:
        if field not in RULES:
            raise KeyError(field)
        rows = [r for r in rows if r["field"] == field]
    width = max(len(r["field"]) for r in rows)
    lines = []
    if release is not None:
        lines.append(f"(as of Linux {release})")
    for r in rows:
        lines.append(f"{r['field']:<{width}}  read:  {r['read']}")
        lines.append(f"{'':<{width}}  write: {r['write']}")
        lines.append(f"{'':<{width}}  {r['note']}")
        for era in RULES[r["field"]].eras if field is not None else ():
            lines.append(f"{'':<{width}}  history: {era}")
    return "\n".join(lines)


def rule_id(name: str, side: str, index: int) -> str:
    """The identity of one alternative (``vm_start.write.1``), used by the
    checker's consultation record and the document."""
    return f"{name}.{side}.{index}"

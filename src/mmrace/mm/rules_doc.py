"""The locking document (``mmrace doc``): Documentation/mm/process_addrs.rst's
subject, written for mmrace, with every table generated from ``mm/rules.py``.

The prose is this project's own; the tables are the data the checkers
(``mm/rules_check.py``) enforce, as of one kernel release, so the document
cannot drift from what is checked. :func:`build` returns the document as
blocks; :func:`render_markdown` and :func:`render_rst` write them out (the
reStructuredText can be compared with the kernel's file side by side).
Every rule the document states appears in its last section, the rule index,
under the identity the checker records when it consults the rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mmrace.fixes import FIXES, KernelConfig, parse_release
from mmrace.mm.rules import (
    ATOMICITY,
    CONDITIONS,
    EXCEPTIONS,
    FORBIDDEN_NESTING,
    LOCK_ORDER,
    LOCK_ORDER_EDGES,
    LOCK_STATE_COLUMNS,
    LOCK_STATES,
    MMAP_LOCK_EXCLUSION,
    MMAP_LOCK_MODES,
    RULES,
    TOKENS,
    Alt,
    Rule,
    alt_text,
    alts_in_release,
    lock_order_closure,
    rule_id,
    token_in_release,
)

# --- the document as blocks ---------------------------------------------------------------


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Bullets:
    items: list[str]
    numbered: bool = False


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Code:
    text: str


@dataclass
class Note:
    text: str
    kind: str = "note"  # note | warning


Block = Heading | Para | Bullets | Table | Code | Note


@dataclass
class Document:
    release: str | None
    blocks: list[Block] = field(default_factory=list)
    index: list[tuple[str, str, str]] = field(default_factory=list)  # (id, rule, enforced by)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


NOT_MODELLED = "not modelled"


def _locks(alt: Alt, release: str | None) -> str:
    return " + ".join(f"`{t}`" for t in alt_text(alt, show_when=False, release=release)
                      .split(" + ")) if alt.locks else "none"


def _alt_cell(alt: Alt, release: str | None, *, with_when: bool = True) -> str:
    text = _locks(alt, release)
    extra = []
    if with_when and alt.when:
        extra.append(CONDITIONS[alt.when])
    if alt.span():
        extra.append(alt.span())
    if alt.via:
        extra.append(alt.via)
    return text + (f" ({'; '.join(extra)})" if extra else "")


def _alts_cell(alts: list[Alt], release: str | None) -> str:
    return " **or** ".join(_alt_cell(a, release) for a in alts) if alts else "none"


def _release_name(release: str | None) -> str:
    return f"Linux {release}" if release else "the current kernel"


def _has(release: str | None, slug: str) -> bool:
    return bool(KernelConfig(release=release).has(slug))


# --- sections ---------------------------------------------------------------------------------


def _intro(doc: Document) -> None:
    r = doc.release
    doc.add(
        Heading(1, f"Process address-space locking ({_release_name(r)})"),
        Para("This document states the rules for locking a process's address space -- its "
             "`mm_struct`, its VMAs and the page tables that map them -- as the mmrace model "
             "enforces them. Every table below is generated from `mmrace/mm/rules.py`, the "
             "only copy of the rules the model has; the checkers in "
             "`mmrace/mm/rules_check.py` read that data and judge every access of a "
             "simulated thread by it, so what is written here is what is checked. The "
             "subject is the kernel's `Documentation/mm/process_addrs.rst`; the words are "
             "this project's."),
        Para(f"The rules are those of {_release_name(r)}: where a rule changed, the table "
             "shows the form that holds in this release and the history says what it was "
             "before (`mmrace doc --kernel RELEASE` renders another release). A rule is a "
             "list of alternatives; **or** separates them and `+` joins locks that must all "
             "be held. The tokens are explained in the section on lock tokens. Each rule "
             "names the model code that enforces it; the rule index at the end lists every "
             "rule under the identity the checker records."),
    )


def _terminology(doc: Document) -> None:
    r = doc.release
    per_vma = _has(r, "per-vma-locks")
    doc.add(
        Heading(2, "Terminology"),
        Para("A **VMA** (`struct vm_area_struct`) describes one virtually contiguous range "
             "of a process's addresses, `[vm_start, vm_end)`, mapped with the same "
             "attributes throughout. Every VMA belongs to exactly one **mm** "
             "(`struct mm_struct`), the address space that all threads of a process share. "
             "The mm keeps its VMAs in a tree keyed by address (a maple tree since 6.1). An "
             "access to an address no VMA covers fails, except that a stack VMA may grow "
             "down to cover it."),
        Note("Some architectures also have a *gate* VMA (the vsyscall page): a single "
             "global object that belongs to no mm. The model has none."),
        Para("Three families of locks protect VMA *metadata* (not the memory a VMA maps, "
             "and not the page tables that map it):"),
        Bullets([
            "the **mmap lock** (`mm->mmap_lock`), a read/write semaphore for the whole "
            "address space: `mmap_read_lock`, `mmap_write_lock` and their variants;",
            ("the **VMA lock**, one per VMA, which behaves like a read/write semaphore: read "
             "locks are taken optimistically with `lock_vma_under_rcu` and dropped with "
             "`vma_end_read`; write locks are taken with `vma_start_write`, only while the "
             "mmap lock is held for write, and all of them are dropped together when the "
             "mmap write lock is released or downgraded;" if per_vma else
             "there is **no VMA lock** in this release (it arrived in 6.4): every VMA "
             "write is covered by the mmap write lock, and every fault takes the mmap read "
             "lock;"),
            "the **rmap locks**, taken by code that reaches a VMA from a page rather than "
            "from an address: `anon_vma_lock_read/write` for anonymous memory and "
            "`i_mmap_lock_read/write` for file memory.",
        ]),
        Para("Holding any one of them **stabilises** a VMA: it cannot be freed and, apart "
             "from the few fields named below, cannot change. A stable VMA also keeps its "
             "mm alive. There are three ways to reach a VMA, and each is stabilised by its "
             "own lock:"),
        Table(["path", "how the VMA is found", "lock that keeps it stable"], [
            ["the mm's tree", "a lookup by address (`find_vma`, `vma_lookup`, a walk of the "
             "tree)", "the mmap lock (read or write)" + (
                 ", or the VMA read lock `lock_vma_under_rcu` takes (it looks the address up "
                 "under RCU itself)" if per_vma else "")],
            ["the anonymous rmap", "folio -> `anon_vma` -> interval tree of "
             "`anon_vma_chain` links -> VMA", "the anon_vma lock (read or write)"],
            ["the file rmap", "folio -> `address_space` -> `i_mmap` interval tree -> VMA",
             "the i_mmap lock (read or write)"],
        ], "Three ways to reach a VMA"),
        Para("A private file mapping can be in both rmap trees at once. That is why holding "
             "the mmap and VMA write locks is not enough to change everything about a VMA: "
             "an rmap walker may be looking at it. Page tables have locks of their own, "
             "described with them below."),
    )


def _tokens(doc: Document) -> None:
    r = doc.release
    rows = [[f"`{name}`", tok.meaning + ("" if tok.since is None else
                                          f" (since {tok.since})")]
            for name, tok in TOKENS.items() if token_in_release(name, r)]
    doc.add(Heading(2, "Lock tokens"),
            Para("The rules are written with these tokens. \"Held\" always means held by the "
                 "task making the access."),
            Table(["token", "meaning"], rows, "Lock tokens"))


def _lock_usage(doc: Document) -> None:
    r = doc.release
    per_vma = _has(r, "per-vma-locks")
    items = [
        "To **read** a VMA's fields, or just keep it stable: hold the mmap lock (any "
        "mode)" + (", or get a VMA read lock with `lock_vma_under_rcu` (a trylock: when it "
                   "returns NULL, fall back to the mmap read lock)" if per_vma else "")
        + ", or take an rmap lock before walking the interval tree that leads to it.",
        "To **write most fields**: hold the mmap write lock" + (
            " and write-lock each VMA you change with `vma_start_write`." if per_vma else "."),
        "To **write any field**, including those that place the VMA in the rmap trees: also "
        "hide the VMA from the rmap by taking the rmap locks for write.",
    ]
    doc.add(Heading(2, "Lock usage"), Bullets(items))
    if per_vma:
        doc.add(Para("A VMA write lock can only be taken with the mmap write lock held; a "
                     "VMA read lock needs no other lock. Writers of one VMA therefore leave "
                     "readers of other VMAs alone -- and since page faults are the main VMA "
                     "readers, code that does not write-lock a VMA runs concurrently with "
                     "faults on it."))
    cols = list(LOCK_STATE_COLUMNS)
    rows = []
    for row in LOCK_STATES:
        cells = row.cells()
        if not per_vma:
            # Without a VMA lock the mmap write lock is the VMA write lock:
            # the checker counts a VMA under mmap W as write-locked.
            if row.vma == "R":
                continue
            mmap = "R" if row.vma == "-/R" else cells[0]
            cells = [mmap, *cells[2:]]
        rows.append(cells)
    if not per_vma:
        cols = [cols[0], *cols[2:]]
    doc.add(Para("The valid lock states of one VMA (for one task), and what each allows. A "
                 "downgraded mmap lock counts as read. The checker looks up the state of "
                 "every VMA a lock transition changes (`check_lock_state`); a state missing "
                 "from this table is reported."),
            Table(cols, rows, "Lock states"))
    for held, taken, why in FORBIDDEN_NESTING:
        if "VMA" in held and not per_vma:
            continue
        doc.add(Note(f"Taking {taken} while holding {held} is wrong: {why}. The model reports "
                     "it as a `lock-order` violation at the blocking acquisition "
                     "(`check_mmap_lock_nesting`).", "warning"))


_SECTION_TITLES = [
    ("layout", "Virtual layout fields",
     "These fields place the VMA in the rmap interval trees, so a writer also hides the "
     "VMA from the rmap."),
    ("core", "Core fields", "What the VMA is and whom it belongs to."),
    ("config", "Fields that depend on the configuration",
     "Present only with the configuration option named."),
    ("rmap", "Reverse-mapping fields",
     "How the VMA is found from a page. A private file mapping uses all of them at once."),
]


def _field_row(rule: Rule, r: str | None) -> list[str]:
    name = f"`{rule.name}`"
    if rule.kernel_name:
        name += f" (kernel: `{rule.kernel_name}`)"
    if rule.config:
        name += f", {rule.config}"
    read = _alts_cell(alts_in_release(rule.read, r), r)
    write = _alts_cell(alts_in_release(rule.write, r), r)
    return [name, read, write, rule.note, rule.enforced_by]


def _fields(doc: Document) -> None:
    r = doc.release
    doc.add(Heading(2, "VMA fields"),
            Para("For each field: what a reader must hold and what a writer must hold. "
                 "Once a VMA is visible (in its mm's tree), every read and every write of "
                 "these fields by model code is checked (`mmrace.mm.mm_types._Field`): a "
                 "read must hold one of the read alternatives too. Fields private to the "
                 "VMA lock (`vm_refcnt`, `vm_lock_seq`) are left to the section on VMA lock "
                 "internals."))
    header = ["field", "read needs", "write needs", "what it is", "enforced by"]
    for section, title, text in _SECTION_TITLES:
        rows = [_field_row(rule, r) for rule in RULES.values() if rule.section == section]
        doc.add(Heading(3, title), Para(text), Table(header, rows, title))
    doc.add(Heading(3, "mm_struct fields"),
            Table(header, [_field_row(rule, r) for rule in RULES.values()
                           if rule.section == "mm"], "mm_struct fields"))
    _history(doc, [rule for rule in RULES.values() if rule.section != "pgtable"])


def _history(doc: Document, rules: list[Rule]) -> None:
    items = []
    for rule in rules:
        for era in rule.eras:
            items.append(f"`{rule.name}`: {era}")
        for side, alts in (("read", rule.read), ("write", rule.write)):
            for alt in alts:
                if alt.span() and not alt.in_release(doc.release):
                    items.append(f"`{rule.name}` ({side}): {_alt_cell(alt, doc.release)} -- "
                                 "does not hold in this release.")
    if items:
        doc.add(Para("History (rules of other releases):"), Bullets(items))


def _page_tables(doc: Document) -> None:
    r = doc.release
    pgt = {name: rule for name, rule in RULES.items() if rule.section == "pgtable"}
    doc.add(
        Heading(2, "Page tables"),
        Para("Page tables translate virtual addresses to physical ones through several "
             "levels (PGD, P4D, PUD, PMD, PTE; the model has four, P4D being folded). Each "
             "entry of an upper level points to the next table; a leaf entry maps a page. "
             "Four things are done to them:"),
        Bullets([
            "**traversing** them (reading entries): the VMA only has to be stable, so any "
            "of the three lock families will do; lockless walkers (the MMU, GUP-fast) are "
            "the exception and need care of their own;",
            "**installing** entries (a new mapping, or one that maps something else now): "
            "the mmap or VMA lock must keep the VMA stable -- an rmap lock is not enough;",
            "**zapping** leaf entries (truncate, `MADV_DONTNEED`, `unmap_mapping_range`): "
            "any lock that keeps the VMA stable, rmap locks included; reclaim and migration "
            "change entries under the rmap lock for the same reason;",
            "**freeing** the tables themselves (`free_pgtables`): only once nothing can "
            "reach the range any more.",
        ], numbered=True),
        Para("Beyond the lock that keeps the VMA stable, changing an entry needs that "
             "table's own lock: `mm->page_table_lock` for the PGD, P4D and PUD levels, the "
             "split lock of the PMD table (`pmd_lock`) and of the PTE table "
             "(`pte_offset_map_lock`) below. The rules, per kind of change:"),
    )
    rows = []
    for name, rule in pgt.items():
        if name == "pgtables":
            continue
        for cond in ("fill", "change", "table"):
            alts = [a for a in alts_in_release(rule.write, r) if a.when == cond]
            if alts:
                rows.append([f"`{name}`", CONDITIONS[cond],
                             " **or** ".join(_alt_cell(a, r, with_when=False) for a in alts)])
    doc.add(Table(["entry", "change", "needs"], rows, "Page-table entry writes"))
    read_rows = [[f"`{name}`", _alts_cell(alts_in_release(rule.read, r), r)]
                 for name, rule in pgt.items() if rule.read]
    doc.add(Para("Reading an entry (traversal):"),
            Table(["entry", "read needs"], read_rows, "Page-table entry reads"),
            Para("Entry writes are checked by `mmrace.mm.pgtable.check_entry_write` and "
                 "reads by `mmrace.mm.pgtable.check_entry_read`, on every access by a "
                 "simulated thread. " + " ".join(f"`{n}`: {rule.note}." for n, rule in
                                                  pgt.items() if n != "pgtables")))
    doc.add(Note("Filling an empty entry under rmap locks alone would be a bug: munmap "
                 "zaps a range (`unmap_vmas`) and frees its tables (`free_pgtables`) later, "
                 "while the VMA is still in the rmap trees; `free_pgtables` assumes the range "
                 "is empty and frees tables without looking, so an entry installed in "
                 "between leaks what it maps.", "warning"))
    _pte_level(doc)
    _atomicity(doc)
    _installation(doc)
    _freeing(doc, pgt["pgtables"])
    _moving(doc)
    _history(doc, list(pgt.values()))


def _pte_level(doc: Document) -> None:
    r = doc.release
    rcu = r is None or parse_release(r) >= (6, 5)
    doc.add(Heading(3, "PTE tables and pte_offset_map_lock"))
    if rcu:
        doc.add(Para("PTE tables are special: an empty one can be unlinked from its PMD and "
                     "freed after an RCU grace period while holding only a lock that keeps "
                     "the VMA stable plus the PMD and PTE locks (khugepaged's "
                     "`retract_page_tables` does this). So every access to a PTE table "
                     "happens at least under `rcu_read_lock`, and what a reader finds may "
                     "already be detached: a writer takes the PTE lock and then checks that "
                     "the PMD still points to the same table (or takes the PMD lock and "
                     "rechecks the PMD). `pte_offset_map_lock` "
                     "(`mmrace.mm.pgtable.pte_offset_map_lock`) does it in a loop:"),
                Bullets(["read the PMD entry without a lock and check that it points to a "
                         "PTE table;",
                         "map the table, inside an RCU read section;",
                         "take the table's PTE lock;",
                         "read the PMD entry again: if it changed (the table was retracted "
                         "or replaced meanwhile), drop the lock and the mapping and start "
                         "over; if it is now empty or a huge leaf, give up."], numbered=True),
                Para("This works because whoever replaces a PMD that points to a PTE table "
                     "holds both the PMD lock and that table's PTE lock. Callers that know "
                     "the table cannot go away use `pte_offset_map_rw_nolock` "
                     "(`mmrace.mm.pgtable.pte_offset_map_nolock`) and recheck themselves."))
    else:
        doc.add(Para("In this release a PMD entry that points to a PTE table does not change "
                     "under a reader that keeps the VMA stable: it is replaced only with "
                     "every higher-level lock held exclusively (see the history of the "
                     "`pmd` rule), so walkers read it once and use it. "
                     "`pte_offset_map_lock` maps the table and takes its lock without "
                     "rechecking the PMD; the recheck and the RCU freeing of PTE tables "
                     "came in 6.5 and 6.6."))


def _atomicity(doc: Document) -> None:
    doc.add(Heading(3, "Lockless readers and atomicity"),
            Para("The MMU updates accessed and dirty bits while software holds the "
                 "page-table lock, and lockless walkers (the MMU itself, GUP-fast) read "
                 "entries at any time. So a lock never gives exclusive access to an entry, "
                 "and every access has to be of the right width and kind:"),
            Table(["requirement", "how the model keeps it", "enforced by"],
                  [[a.rule, a.model, f"`{a.enforced_by}`"] for a in ATOMICITY],
                  "Atomicity of entry accesses"))


def _installation(doc: Document) -> None:
    doc.add(Heading(3, "Installing tables"),
            Para("Upper tables are installed with a check, allocate, lock, recheck "
                 "pattern: look at the entry above without the lock; if it is empty, "
                 "allocate a table, take the lock (`mm->page_table_lock` for a PUD or PMD "
                 "table, the PMD lock for a PTE table) and look again; if someone else "
                 "installed one meanwhile, free ours. "
                 "(`mmrace.mm.pgtable.__pxx_alloc`, `mmrace.mm.pgtable.__pte_alloc`.) The "
                 "table under construction is private to its builder, so writing its "
                 "entries needs no lock until it is installed."))


def _freeing(doc: Document, rule: Rule) -> None:
    r = doc.release
    alts = alts_in_release(rule.write, r)
    doc.add(Heading(3, "Freeing tables"),
            Para("Holding the mmap write lock and the VMA write lock is not enough to free "
                 "page tables: a file can be truncated under its `i_mmap_rwsem` alone, and "
                 "truncation walks the page tables of every VMA in the file's rmap. So no "
                 "VMA that an rmap walker can still find may lose its tables. "
                 "`free_pgtables` first unlinks the VMAs from both rmap trees, then frees "
                 "every table of the range, clearing upper entries without page-table locks "
                 "-- it assumes the range was zapped and that nothing can install a new "
                 "entry any more."),
            Table(["case", "needs"], [[CONDITIONS[a.when], _alt_cell(a, r, with_when=False)]
                                      for a in alts], "Freeing page tables"),
            Para(f"The rule: {rule.note}. A leaf table can also be freed on its own, by "
                 "khugepaged's retraction, under the rules in this table. Enforced by "
                 f"{rule.enforced_by}."))


def _moving(doc: Document) -> None:
    doc.add(Heading(3, "Moving tables"),
            Para("`mremap` can move whole tables rather than entries: a PMD entry pointing "
                 "to a PTE table, or an entry above the PMD level. Moving a table above the "
                 "PMD level needs every lock: the mmap lock, the VMA lock and the rmap locks "
                 "(`take_rmap_locks` in `move_page_tables`) -- the `table` alternatives of "
                 "the `pud` and `pmd` rules above, which the entry-write checker applies to "
                 "every such change."))


def _lock_order(doc: Document) -> None:
    lines = []
    for lv in LOCK_ORDER:
        mark = "" if lv.classes else f"   [{NOT_MODELLED}]"
        where = f" ({lv.where})" if lv.where else ""
        lines.append("  " * lv.depth + lv.name + where + mark)
    modelled = {lv.name for lv in LOCK_ORDER if lv.classes}
    _before, contradictions = lock_order_closure()
    edge_rows = [[a, b, where, _edge_status(a, b, modelled, contradictions)]
                 for a, b, where in LOCK_ORDER_EDGES]
    doc.add(Heading(2, "Lock ordering"),
            Para("Locks that are nested must always be taken in the same order, or two "
                 "tasks taking them in opposite orders can deadlock. mm/rmap.c's hierarchy: "
                 "each lock is taken before every lock indented under it."),
            Code("\n".join(lines)),
            Para("Further orderings from mm/filemap.c (the first lock is taken before the "
                 "second):"),
            Table(["first", "then", "where", "model"], edge_rows, "Pairwise lock orderings"),
            Para("The two comments disagree on `swap_lock` and `mapping->private_lock`; "
                 "the hierarchy of mm/rmap.c wins, and pairs marked "
                 f"\"{CONTRADICTS}\" are not checked (neither lock is in the model)."),
            Para("Lockdep checks every blocking acquisition against these orders "
                 "(`mmrace.mm.rules_check.MmLockOrder`, installed when an mm is created): "
                 "taking a lock that the hierarchy puts before one already held is a "
                 "`lock-order` violation at once, naming both levels, before any cycle has "
                 "closed. The VMA write lock and the folio lock are checked where the model "
                 "takes them (`vma_start_write`, `folio_lock`). Levels marked "
                 f"\"{NOT_MODELLED}\" have no lock in the model."))


CONTRADICTS = "contradicts mm/rmap.c"


def _edge_status(a: str, b: str, modelled: set[str],
                 contradictions: list[tuple[str, str]]) -> str:
    if (a, b) in contradictions:
        return CONTRADICTS
    return "" if a in modelled and b in modelled else NOT_MODELLED


def _vma_lock(doc: Document) -> None:
    r = doc.release
    if not _has(r, "per-vma-locks"):
        doc.add(Heading(2, "VMA lock internals"),
                Para("There is no per-VMA lock before 6.4 (`per-vma-locks`, \"x86/mm: try "
                     "VMA lock-based page fault handling first\"); page faults hold the "
                     "mmap read lock."))
        return
    typesafe = _has(r, "vma-slab-typesafe-rcu")
    doc.add(
        Heading(2, "VMA lock internals"),
        Para("Reading is optimistic: `lock_vma_under_rcu` (`mmrace.mm.mmap_lock`) enters an "
             "RCU read section, looks the address up in the tree, tries `vma_start_read` "
             "and, with the read lock taken, checks that the VMA still belongs to the mm "
             "and still covers the address, then leaves the RCU section. Any failure -- "
             "the VMA is being written, is detached, or changed -- returns NULL and the "
             "caller takes the mmap read lock instead. Code that already holds the mmap "
             "read lock uses `vma_start_read_locked`, which can fail only on the "
             "reference count, since the mmap lock keeps writers out (userfaultfd's "
             "`uffd_lock_vma` and `uffd_move_lock` fall back to it)."),
        Para("Writing is pessimistic and needs the mmap write lock: `vma_start_write` marks "
             "readers out, waits for the current ones to leave and records the VMA as "
             "write-locked. There is no `vma_end_write`: releasing or downgrading the mmap "
             "write lock ends every VMA write lock of the mm at once."),
        Para("The state lives in two sequence numbers and a count. A VMA is write-locked "
             "exactly when its `vm_lock_seq` equals the mm's `mm_lock_seq`; "
             "`mmap_write_unlock` and `mmap_write_downgrade` advance `mm_lock_seq` "
             "(`vma_end_write_all`), which unlocks them all. `vm_refcnt` is 0 while the VMA "
             "is detached, 1 while attached, and one more per reader; a writer adds a "
             "large offset readers cannot get past, waits until only it and the attach "
             "reference remain, sets `vm_lock_seq` and removes the offset. Readers take a "
             "reference only while the count is non-zero and below the offset, then check "
             "that the sequence numbers differ."),
        Para("Since 6.15 VMAs come from a `SLAB_TYPESAFE_BY_RCU` cache, so the VMA a reader "
             "finds under RCU may already be a different one: the mm is passed in and "
             "`vm_mm` is compared only once the reference is held." if typesafe else
             "In this release VMAs are freed after an RCU grace period, so `vma_start_read` "
             "may read `vma->vm_mm` under RCU alone (the `vm_mm` rule's RCU alternative)."),
    )


def _downgrade(doc: Document) -> None:
    rows = [[m, *("Y" if MMAP_LOCK_EXCLUSION[m][o] else "N" for o in MMAP_LOCK_MODES)]
            for m in MMAP_LOCK_MODES]
    doc.add(
        Heading(2, "Downgrading the mmap write lock"),
        Para("`mmap_write_downgrade` turns a write lock into a read lock without letting go: "
             "the address space stays stable throughout" + (
                 ", and, like `mmap_write_unlock`, it ends every VMA write lock."
                 if _has(doc.release, "per-vma-locks") else ".")
             + " A downgraded lock excludes another downgraded lock, since each holder "
               "had to hold the write lock first. Which modes exclude which (read R, "
               "downgraded D, write W; Y: they exclude each other):"),
        Table(["", *MMAP_LOCK_MODES], rows, "mmap lock exclusivity"),
        Para("The checker verifies the table at every acquisition and downgrade of the mmap "
             "lock against the modes other tasks hold (`check_mmap_exclusion`)."),
    )


def _stack(doc: Document) -> None:
    fix = FIXES["stack-expand-write-locked"]
    if _has(doc.release, "stack-expand-write-locked"):
        text = ("A fault below a stack VMA may grow it. Since 6.5 (\"" + fix.title + "\") "
                "the fault drops the mmap read lock, takes the write lock and write-locks "
                "the VMA before moving `vm_start` (`expand_stack`, `expand_downwards`), so "
                "no fault can run on the VMA meanwhile.")
    else:
        text = ("A fault below a stack VMA grows it under the mmap read lock it already "
                "holds (`expand_downwards`): the anon_vma lock for write and "
                "`mm->page_table_lock` serialise concurrent expansions while `vm_start`, "
                "`vm_pgoff` and the VMA tree are written -- the `until 6.5` alternatives of "
                "those rules. 6.5 (\"" + fix.title + "\") takes the write lock instead.")
    doc.add(Heading(2, "Stack expansion"), Para(text))


def _exceptions(doc: Document) -> None:
    rows = [[e.name, e.text, e.enforced_by if e.modelled else NOT_MODELLED]
            for e in EXCEPTIONS]
    doc.add(Heading(2, "Exceptions"), Table(["case", "what", "model"], rows, "Exceptions"))


def _index(doc: Document) -> None:
    r = doc.release
    cfg = KernelConfig(release=r)
    for name, rule in RULES.items():
        for side, alts in (("read", rule.read), ("write", rule.write)):
            for i, alt in enumerate(alts):
                if alt in alts_in_release(alts, r):
                    doc.index.append((rule_id(name, side, i),
                                      f"{name} {side}: {_alt_cell(alt, r)}", rule.enforced_by))
    states = [i for i, row in enumerate(LOCK_STATES)
              if cfg.has("per-vma-locks") or row.vma != "R"]
    for i in states:
        row = LOCK_STATES[i]
        doc.index.append((f"lock-state.{i}", f"lock state {row.mmap}/{row.vma}/{row.rmap}",
                          "mmrace.mm.rules_check.check_lock_state"))
    for m in MMAP_LOCK_MODES:
        doc.index.append((f"mmap-exclusion.{m}", f"mmap lock mode {m} exclusivity",
                          "mmrace.mm.rules_check.check_mmap_exclusion"))
    seen = set()
    for lv in LOCK_ORDER:
        if lv.name in seen:
            continue
        seen.add(lv.name)
        doc.index.append((f"lock-order.{lv.name}", f"lock order level {lv.name}",
                          "mmrace.mm.rules_check.MmLockOrder" if lv.classes else NOT_MODELLED))
    modelled = {lv.name for lv in LOCK_ORDER if lv.classes}
    _before, contradictions = lock_order_closure()
    for a, b, _ in LOCK_ORDER_EDGES:
        status = _edge_status(a, b, modelled, contradictions)
        doc.index.append((f"lock-order.{a}>{b}", f"{a} before {b}",
                          status or "mmrace.mm.rules_check.MmLockOrder"))
    if cfg.has("per-vma-locks"):
        doc.index.append(("forbidden-nesting.0", f"no {FORBIDDEN_NESTING[0][1]} under "
                          f"{FORBIDDEN_NESTING[0][0]}",
                          "mmrace.mm.rules_check.check_mmap_lock_nesting"))
    doc.index.append(("atomicity.atomic-rmw", "no plain store over a present entry drops "
                      "accessed/dirty bits", "mmrace.mm.pgtable.check_entry_write"))
    for e in EXCEPTIONS:
        if e.modelled and e.states and (not e.switch or cfg.has(e.switch)):
            shown = ", ".join("/".join(st) for st in e.states)
            doc.index.append((f"exception.{e.name}",
                              f"documented exception {e.name}: lock state {shown} "
                              "inside its code path", e.enforced_by))
    doc.add(Heading(2, "Rule index"),
            Para("Every rule this document states, under the identity the checker records "
                 "when it consults it (`mmrace.mm.rules_check.consulted`), with the code "
                 "that enforces it. No catalog scenario's pre-fix variant breaks a locking "
                 "rule yet (the catalog's races are data races the rules allow); the "
                 "tests in `tests/mm/test_rules*.py` break each one."),
            Table(["id", "rule", "enforced by"], [list(t) for t in doc.index], "Rule index"))


def build(release: str | None = None) -> Document:
    """The whole document as of *release* (None: the current kernel)."""
    doc = Document(release)
    _intro(doc)
    _terminology(doc)
    _tokens(doc)
    _lock_usage(doc)
    _fields(doc)
    _page_tables(doc)
    _lock_order(doc)
    _vma_lock(doc)
    _downgrade(doc)
    _stack(doc)
    _exceptions(doc)
    _index(doc)
    return doc


# --- renderers --------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(release: str | None = None) -> str:
    """The document as Markdown."""
    out: list[str] = []
    for b in build(release).blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Note):
            label = "Warning" if b.kind == "warning" else "Note"
            out += [f"> **{label}:** {b.text}", ""]
        elif isinstance(b, Bullets):
            out += [(f"{i + 1}. " if b.numbered else "- ") + item
                    for i, item in enumerate(b.items)] + [""]
        elif isinstance(b, Code):
            out += ["```", b.text, "```", ""]
        else:
            out.append("| " + " | ".join(_md_cell(h) or " " for h in b.header) + " |")
            out.append("| " + " | ".join("---" for _ in b.header) + " |")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
    return "\n".join(out)


_RST_UNDERLINE = {1: "=", 2: "-", 3: "^"}


def _rst_inline(text: str) -> str:
    """Markdown's `code` to reStructuredText's ``code``; outside literals,
    escape what reStructuredText would read as markup (a lone ``*``, a word
    ending in ``_``, which would be a reference)."""
    parts = re.split(r"(?<![`\w])`([^`]+)`(?![`\w])", text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"``{part}``")
        else:
            part = re.sub(r"(?<!\*)\*(?!\*)", r"\\*", part)
            out.append(re.sub(r"(\w)_(?=\W|$)", r"\1\\_", part))
    return "".join(out)


def render_rst(release: str | None = None) -> str:
    """The document as reStructuredText (for comparison with the kernel's
    Documentation/mm/process_addrs.rst)."""
    out: list[str] = []
    for b in build(release).blocks:
        if isinstance(b, Heading):
            text = _rst_inline(b.text)
            bar = _RST_UNDERLINE[b.level] * len(text)
            out += ([bar, text, bar, ""] if b.level == 1 else [text, bar, ""])
        elif isinstance(b, Para):
            out += [_rst_inline(b.text), ""]
        elif isinstance(b, Note):
            out += [f".. {b.kind}:: {_rst_inline(b.text)}", ""]
        elif isinstance(b, Bullets):
            out += [("#. " if b.numbered else "* ") + _rst_inline(item) for item in b.items]
            out.append("")
        elif isinstance(b, Code):
            out += ["::", ""] + ["  " + line for line in b.text.splitlines()] + [""]
        else:
            out += [f".. list-table:: {b.caption}", "   :header-rows: 1", ""]
            for row in [b.header, *b.rows]:
                first = True
                for cell in row:
                    out.append(("   * - " if first else "     - ") + (_rst_inline(cell) or " "))
                    first = False
            out.append("")
    return "\n".join(out)


def render(release: str | None = None, fmt: str = "md") -> str:
    """*fmt*: ``md`` or ``rst``."""
    return render_rst(release) if fmt == "rst" else render_markdown(release)


def rendered_ids(text: str) -> list[str]:
    """The rule ids in a rendered document's rule index (Markdown or
    reStructuredText), in order."""
    section = re.split(r"^Rule index$|^## Rule index$", text, flags=re.M)[-1]
    ids = re.findall(r"^\| ([a-z_.>A-Z0-9 /&-]+?) \| ", section, flags=re.M)
    ids += re.findall(r"^   \* - (?!id$)([^\s]+(?: [^\s]+)*?)$", section, flags=re.M)
    return [i for i in ids if i not in ("id", "---")]

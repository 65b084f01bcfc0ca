"""The locking rule table, as data, and the checker that enforces it.

For every VMA field (and the mm fields the model checks): what a reader must
hold and what a writer must hold, each as a list of alternatives, each
alternative a list of lock tokens that must all be held. This is
Documentation/mm/process_addrs.rst's field table (and its lock-state table),
paraphrased; ``mmrace rules`` prints it and ``mmrace doc`` renders it.

Every checked VMA field access (see ``mm_types._Field``) is one visible
operation on the VMA, followed by the check; a breach raises a
``locking-rule`` violation naming the field, the rule and the held locks.
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import READ, WRITE, ViolationError
from mmrace.fixes import parse_release
from mmrace.mm.internal import Held, held, kernel_config
from mmrace.mm.locks import kobject_access

# Lock tokens and what they mean (rendered in the documentation).
TOKENS: dict[str, str] = {
    "mmap R": "mm->mmap_lock held for read, write or downgraded",
    "mmap W": "mm->mmap_lock held for write",
    "VMA R": "this VMA read-locked (lock_vma_under_rcu / vma_start_read)",
    "VMA W": "this VMA write-locked (vma_start_write; implies mmap W)",
    "rmap R": "an rmap lock the VMA is reachable through (i_mmap_rwsem or anon_vma), "
    "read or write",
    "rmap W": "every rmap lock the VMA is reachable through, for write "
    "(vacuous for a VMA in no rmap tree)",
    "i_mmap W": "vm_file->f_mapping->i_mmap_rwsem held for write (vacuous without a file)",
    "anon_vma W": "vma->anon_vma's rwsem held for write",
    "page_table_lock": "mm->page_table_lock held",
    "detached": "the VMA is detached (vm_refcnt 0): unreachable through the mm's tree",
    "never": "set once while the VMA is built, never written once it is visible",
    "driver": "the owner of the mapping decides (not checked)",
    "atomic": "accessed with atomic operations only (the VMA lock's own state)",
}

STABLE: list[list[str]] = [["mmap R"], ["VMA R"], ["rmap R"]]
"""Any one of these keeps a VMA stable and lets its fields be read."""

LAYOUT_WRITE = [{"locks": ["mmap W", "VMA W", "rmap W"], "when": ""}]
MOST_WRITE = [{"locks": ["mmap W", "VMA W"], "when": ""}]
NEVER = [{"locks": ["never"], "when": ""}]


def _rule(read: list[list[str]], write: list[dict[str, Any]], note: str) -> dict[str, Any]:
    return {"read": read, "write": write, "note": note}


RULES: dict[str, dict[str, Any]] = {
    "vm_start": _rule(STABLE, LAYOUT_WRITE, "inclusive start address; places the VMA in the "
                      "rmap interval trees, so writers also hide it from rmap"),
    "vm_end": _rule(STABLE, LAYOUT_WRITE, "exclusive end address; as vm_start"),
    "vm_pgoff": _rule(STABLE, LAYOUT_WRITE, "file page offset, or the original page index of "
                      "an anonymous mapping; as vm_start"),
    "vm_mm": _rule(STABLE, NEVER, "the owning mm, set when the VMA is created"),
    "vm_page_prot": _rule(STABLE, MOST_WRITE, "page protection derived from vm_flags"),
    "vm_flags": _rule(STABLE, MOST_WRITE, "__vm_flags; changed only through vm_flags_set / "
                      "vm_flags_clear / vm_flags_mod / vm_flags_reset, which assert the VMA "
                      "write lock"),
    "vm_file": _rule(STABLE, NEVER, "the mapped file (NULL for anonymous memory), set at "
                     "mmap time"),
    "vm_ops": _rule(STABLE, NEVER, "the driver's or filesystem's operations, set by its "
                    "->mmap()"),
    "vm_private_data": _rule(STABLE, [{"locks": ["driver"], "when": ""}],
                             "owned by the driver"),
    "anon_name": _rule(STABLE, MOST_WRITE, "refcounted name shared by VMAs (ANON_VMA_NAME)"),
    "vm_policy": _rule(STABLE, MOST_WRITE, "refcounted NUMA mempolicy (NUMA)"),
    "vm_userfaultfd_ctx": _rule(STABLE, MOST_WRITE, "userfaultfd context (USERFAULTFD)"),
    "anon_vma": _rule(
        STABLE,
        [
            {"locks": ["mmap R", "page_table_lock"], "when": "NULL -> non-NULL"},
            {"locks": ["mmap W", "VMA W"], "when": "NULL -> non-NULL"},
            {"locks": ["mmap W", "VMA W", "anon_vma W"], "when": "non-NULL -> NULL"},
        ],
        "set on first fault by anon_vma_prepare under only mmap R + page_table_lock, so it "
        "can change under a reader holding mmap R or a VMA read lock; merge and split copy it "
        "under mmap W + VMA W",
    ),
    "anon_vma_chain": _rule(STABLE, [{"locks": ["mmap R", "anon_vma W"], "when": ""}],
                            "list of anon_vma_chain links (forked / CoW'd anon_vmas and "
                            "the VMA's own)"),
    "shared.rb": _rule(STABLE, [{"locks": ["mmap W", "VMA W", "i_mmap W"], "when": ""},
                                {"locks": ["i_mmap W", "detached"],
                                 "when": "once detached (free_pgtables)"}],
                       "membership of the file's i_mmap interval tree"),
    "vm_refcnt": _rule([[]], [{"locks": ["atomic"], "when": ""}],
                       "VMA lock state: 0 detached, 1 attached, +1 per reader, "
                       "+VMA_LOCK_OFFSET while a writer excludes readers"),
    "vm_lock_seq": _rule([[]], [{"locks": ["mmap W"], "when": ""}],
                         "equals mm->mm_lock_seq iff the VMA is write-locked; read locklessly "
                         "by vma_start_read"),
    "mm.map_count": _rule([["mmap R"]], [{"locks": ["mmap W"], "when": ""}],
                          "number of VMAs"),
    "mm.mm_mt": _rule([["mmap R"], ["RCU"]], [{"locks": ["mmap W"], "when": ""}],
                      "the VMA tree (maple tree); RCU readers may find VMAs being detached"),
}

TOKENS["RCU"] = "inside rcu_read_lock() (lookups only; the VMA found is not stable)"
TOKENS["pte ptl"] = "the split lock of the PTE table holding the entry (pte_offset_map_lock)"
TOKENS["pmd ptl"] = "the split lock of the PMD table holding the entry (pmd_lock)"
TOKENS["unreachable"] = ("the VMA is detached and unlinked from every rmap tree "
                         "(free_pgtables unlinks it first)")

# Page-table entries (mm/pgtable.py enforces these on every entry write; reads
# are READ_ONCE and need only a stable VMA or RCU, revalidated under the lock).
RULES["pte"] = _rule(
    [["mmap R"], ["VMA R"], ["rmap R"], ["RCU"]],
    [{"locks": ["pte ptl", "mmap R"], "when": "none -> present (install)"},
     {"locks": ["pte ptl", "VMA R"], "when": "none -> present (install)"},
     {"locks": ["pte ptl"], "when": "change or zap of a present entry"}],
    "a PTE; filling an empty entry needs the mmap or VMA lock (rmap locks alone are not "
    "enough: free_pgtables would free it unzapped); zapping needs only a stable VMA")
RULES["pmd"] = _rule(
    [["mmap R"], ["VMA R"], ["rmap R"], ["RCU"]],
    [{"locks": ["pmd ptl", "mmap R"], "when": "none -> PTE table (pmd_install)"},
     {"locks": ["pmd ptl", "VMA R"], "when": "none -> PTE table (pmd_install)"},
     {"locks": ["pmd ptl", "pte ptl"], "when": "change of a PMD pointing to a PTE table"},
     {"locks": ["pmd ptl", "mmap W", "VMA W", "rmap W"],
      "when": "moving the PTE table (mremap's move_normal_pmd; the pgtables moving rule)"},
     {"locks": ["unreachable"], "when": "free_pgtables"}],
    "a PMD entry; pte_offset_map_lock rechecks it under the PTE lock, which is why "
    "replacing a PTE table needs both locks")
RULES["pud"] = _rule(
    [["mmap R"], ["VMA R"], ["rmap R"], ["RCU"]],
    [{"locks": ["page_table_lock"], "when": "install (__pud_alloc / __pmd_alloc)"},
     {"locks": ["page_table_lock", "mmap W", "VMA W", "rmap W"],
      "when": "moving the PMD table (mremap's move_normal_pud; the pgtables moving rule)"},
     {"locks": ["unreachable"], "when": "free_pgtables"}],
    "PGD and PUD entries (P4D is folded), installed with check / allocate / lock / recheck")
RULES["pgtables"] = _rule(
    [[]],
    [{"locks": ["mmap R", "unreachable"], "when": "free_pgtables"},
     {"locks": ["mmap W", "VMA W", "rmap W"], "when": "moving tables (mremap)",
      "since": "5.14"},
     {"locks": ["mmap W", "VMA W"],
      "when": "moving tables (mremap), before 5.14 (rmap locks only if need_rmap_locks)",
      "until": "5.14"}],
    "freeing or moving page-table pages: a truncate can zap under i_mmap_rwsem alone, so "
    "no VMA reachable through an rmap tree may lose its tables; a PMD or PUD entry "
    "pointing to a table is moved (mremap's move_normal_pmd / move_normal_pud) only "
    "with every VMA the entry maps write-locked and its rmap locks held for write "
    "(\"mm/mremap: hold the rmap lock in write mode when moving page table entries.\", "
    "5.14)")

LOCK_ORDER: list[str] = [
    "inode->i_rwsem",
    "mm->mmap_lock",
    "mapping->invalidate_lock",
    "folio_lock",
    "vma_start_write (VMA write lock)",
    "mapping->i_mmap_rwsem",
    "anon_vma->rwsem",
    "mm->page_table_lock or PTE lock",
]

LOCK_STATES: list[dict[str, str]] = [
    {"mmap": "-", "VMA": "-", "rmap": "-", "stable": "N", "read": "N", "write most": "N",
     "write all": "N"},
    {"mmap": "-", "VMA": "R", "rmap": "-", "stable": "Y", "read": "Y", "write most": "N",
     "write all": "N"},
    {"mmap": "-", "VMA": "-", "rmap": "R/W", "stable": "Y", "read": "Y", "write most": "N",
     "write all": "N"},
    {"mmap": "R/W", "VMA": "-/R", "rmap": "-/R/W", "stable": "Y", "read": "Y",
     "write most": "N", "write all": "N"},
    {"mmap": "W", "VMA": "W", "rmap": "-/R", "stable": "Y", "read": "Y", "write most": "Y",
     "write all": "N"},
    {"mmap": "W", "VMA": "W", "rmap": "W", "stable": "Y", "read": "Y", "write most": "Y",
     "write all": "Y"},
]


def _alt_text(alts: list[list[str]]) -> str:
    return " | ".join(" + ".join(a) if a else "none" for a in alts)


def _write_text(write: list[dict[str, Any]]) -> str:
    parts = []
    for w in write:
        text = " + ".join(w["locks"])
        if w["when"]:
            text += f" ({w['when']})"
        parts.append(text)
    return " | ".join(parts)


def rules_table() -> list[dict[str, str]]:
    """The rule table for ``mmrace rules --json``: ``{field, read, write, note}``."""
    return [
        {"field": field, "read": _alt_text(rule["read"]), "write": _write_text(rule["write"]),
         "note": rule["note"]}
        for field, rule in RULES.items()
    ]


def render_rules(field: str | None = None) -> str:
    """Plain-text table for ``mmrace rules [FIELD]``; raises KeyError for an
    unknown field."""
    rows = rules_table()
    if field is not None:
        if field not in RULES:
            raise KeyError(field)
        rows = [r for r in rows if r["field"] == field]
    width = max(len(r["field"]) for r in rows)
    lines = []
    for r in rows:
        lines.append(f"{r['field']:<{width}}  read:  {r['read']}")
        lines.append(f"{'':<{width}}  write: {r['write']}")
        lines.append(f"{'':<{width}}  {r['note']}")
    return "\n".join(lines)


# --- the checker --------------------------------------------------------------


def _holds(token: str, vma: Any, h: Held, old: Any, new: Any) -> bool:
    mm = vma._f_vm_mm
    if token == "mmap R":
        return mm.serial in h.mmap
    if token == "mmap W":
        return h.mmap.get(mm.serial) == "W"
    if token == "VMA W":
        return (
            h.mmap.get(mm.serial) == "W"
            and vma.vm_lock.vm_lock_seq == mm.mm_lock_seq.sequence
        )
    if token == "VMA R":
        return vma.serial in h.vma_read
    if token == "rmap R":
        return any(s.serial in h.rwsem for s in rmap_locks(vma))
    if token == "rmap W":
        return all(h.rwsem.get(s.serial) == "W" for s in rmap_locks(vma))
    if token == "i_mmap W":
        f = vma._f_vm_file
        return f is None or h.rwsem.get(f.f_mapping.i_mmap_rwsem.serial) == "W"
    if token == "anon_vma W":
        av = old if old is not None else vma._f_anon_vma
        return av is None or h.rwsem.get(av.rwsem.serial) == "W"
    if token == "page_table_lock":
        return mm.page_table_lock.serial in h.spin
    if token == "detached":
        return bool(vma.vm_lock.vm_refcnt == 0)
    if token == "driver":
        return True
    if token == "RCU":
        return h.rcu > 0
    return False  # "never", "atomic": not through a field accessor


def _in_era(alt: dict[str, Any], release: tuple[int, ...] | None) -> bool:
    """Whether a rule alternative applies to *release* (None: the current
    kernel): ``since`` is the first release it holds in, ``until`` the first
    it no longer does."""
    since, until = alt.get("since"), alt.get("until")
    if release is None:
        return until is None
    if since is not None and release < parse_release(since):
        return False
    return until is None or release < parse_release(until)


def may_move_tables(mm: Any, start: int, end: int) -> bool:
    """The ``pgtables`` rule for moving page tables (the alternatives whose
    ``when`` starts with "moving", of the mm's release): whether this thread
    may move the table entry mapping ``[start, end)`` of *mm*. ``mmap W`` is
    checked on the mm, every other token on every VMA the range overlaps
    (read from the tree without a visible operation: the mmap lock held
    for write excludes every tree writer, and without it the rule fails
    anyway)."""
    h = held()
    if h.mmap.get(mm.serial) != "W":
        return False
    rel = kernel_config(mm).release
    release = parse_release(rel) if rel is not None else None
    vmas = [v for s, e, v in mm.mm_mt.entries() if s < end and start < e]
    for alt in RULES["pgtables"]["write"]:
        if not alt["when"].startswith("moving") or not _in_era(alt, release):
            continue
        tokens = [t for t in alt["locks"] if t != "mmap W"]
        if all(_holds(t, v, h, None, None) for v in vmas for t in tokens):
            return True
    return False


def rmap_locks(vma: Any) -> list[Any]:
    """The rwsems of the rmap trees *vma* is in (file i_mmap, anon_vma)."""
    out = []
    if vma._f_shared_rb and vma._f_vm_file is not None:
        out.append(vma._f_vm_file.f_mapping.i_mmap_rwsem)
    av = vma._f_anon_vma
    if av is not None:
        out.append(av.rwsem)
    return out


def _disabled() -> bool:
    from mmrace.engine import current_execution

    return bool(current_execution().locals.get("mm.rules_off"))


def _excludes(token: str, vma: Any, h: Held) -> bool:
    """Whether a lock *h* holds excludes a writer that must hold *token*."""
    if token == "never":
        return True  # no write once visible: any such write is a violation
    if token in ("mmap W", "VMA W") and _holds("mmap R", vma, h, None, None):
        return True  # VMA W implies mmap W, which excludes any mmap holder
    if token == "VMA W":
        return _holds("VMA R", vma, h, None, None)  # vma_start_write waits readers out
    if token == "rmap W":
        return _holds("rmap R", vma, h, None, None)
    if token == "i_mmap W":
        f = vma._f_vm_file
        return f is not None and f.f_mapping.i_mmap_rwsem.serial in h.rwsem
    if token == "anon_vma W":
        av = vma._f_anon_vma
        return av is not None and av.rwsem.serial in h.rwsem
    if token == "page_table_lock":
        return _holds("page_table_lock", vma, h, None, None)
    return False  # "detached", "driver", "atomic", "unreachable": not excluded


def _read_excludes_writers(vma: Any, rule: dict[str, Any], h: Held) -> bool:
    """Whether every way of writing the field needs a lock that *h* holds
    against it (whatever the ``when`` condition: conservative)."""
    return all(any(_excludes(t, vma, h) for t in w["locks"]) for w in rule["write"])


def vma_access(vma: Any, field: str, write: bool, new: Any) -> None:
    """One checked access to a visible VMA's field (a visible operation,
    except a read that no rule-abiding write can race with)."""
    rule = RULES[field]
    h = held()
    if write or _disabled() or not _read_excludes_writers(vma, rule, h):
        kobject_access(vma, WRITE if write else READ, ("write " if write else "read ") + field)
    else:
        # A read under a lock that excludes every writer the rule table
        # allows needs no scheduling point: a rule-abiding write is ordered
        # against it by that lock's own (visible) operations, and a write
        # that breaks the rule is reported by this checker on the writer's
        # side, in every execution that reaches it -- moving this read to
        # the thread's previous visible operation (which is already inside
        # the locked section) cannot keep another thread from reaching it.
        # So no race is lost. Only with the checker on (not _disabled()),
        # and the read is still checked below; a freed VMA is still a
        # use-after-free (but the lock held keeps it alive anyway).
        if getattr(vma, "freed", False):
            kobject_access(vma, READ, "read " + field)
    if write:
        old = getattr(vma, "_f_" + field.replace(".", "_"))
        prior = old if field == "anon_vma" else None
        for w in rule["write"]:
            when = w["when"]
            if when == "NULL -> non-NULL" and not (old is None and new is not None):
                continue
            if when == "non-NULL -> NULL" and not (old is not None and new is None):
                continue
            if all(_holds(t, vma, h, prior, new) for t in w["locks"]):
                return
        if field == "anon_vma" and old is new:
            return
        text = _write_text(rule["write"])
    else:
        for alt in rule["read"]:
            if all(_holds(t, vma, h, None, None) for t in alt):
                return
        text = _alt_text(rule["read"])
    if _disabled():
        return
    verb = "write" if write else "read"
    raise ViolationError(
        "locking-rule",
        f"locking rule: {verb} of {vma.name}.{field} without the required locks",
        f"{verb} of {field} of {vma!r} needs {text}; held: {h.describe()}",
    )

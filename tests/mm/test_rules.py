"""The rule table as data, its plain-text rendering, and the checkers: a test
per row (each added row has a clean path and a breach), every breach
reported, and no rule written down anywhere but ``mm/rules.py``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from rules_witness import BREACHES, BUILDERS, CLEAN, RELEASES, Witness

from mmrace.engine import explore, spawn
from mmrace.fixes import FIXES
from mmrace.mm.mmap_lock import (
    lock_vma_under_rcu,
    mmap_read_lock,
    mmap_read_unlock,
    mmap_write_lock,
    mmap_write_unlock,
    vma_end_read,
)
from mmrace.mm.rmap import (
    anon_vma_lock_read,
    anon_vma_lock_write,
    anon_vma_unlock_read,
    anon_vma_unlock_write,
)
from mmrace.mm.rules import (
    CONDITIONS,
    LOCK_STATES,
    RULES,
    TOKENS,
    alt_text,
    render_rules,
    rules_table,
)
from mmrace.mm.vma import vma_start_write
from mmrace.user import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, System, vma_find

SRC = Path(__file__).resolve().parents[2] / "src" / "mmrace"

# The rows of Documentation/mm/process_addrs.rst's field tables (vm_flags
# stands for __vm_flags, shared.rb for shared.rb and shared.rb_subtree_last).
DOCUMENT_FIELDS = ["vm_start", "vm_end", "vm_pgoff", "vm_mm", "vm_page_prot", "vm_flags",
                   "vm_file", "vm_ops", "vm_private_data", "anon_name", "swap_readahead_info",
                   "vm_policy", "numab_state", "vm_userfaultfd_ctx", "shared.rb",
                   "anon_vma_chain", "anon_vma"]


def test_table_covers_the_documents_rows() -> None:
    table = rules_table()
    assert [r["field"] for r in table] == list(RULES)
    for name in DOCUMENT_FIELDS:
        assert name in RULES
    for name in ("pte", "pmd", "pud", "pgtables", "mm.mm_mt", "mm.map_count"):
        assert name in RULES
    for row in table:
        assert set(row) == {"field", "read", "write", "note"}
    json.dumps(table)
    rows = {r["field"]: r for r in table}
    assert "mmap R + page_table_lock (NULL -> non-NULL)" in rows["anon_vma"]["write"]
    assert rows["vm_start"]["write"] == "mmap W + VMA W + rmap W"
    assert rows["anon_vma_chain"]["write"] == "mmap R + anon_vma W"
    assert rows["swap_readahead_info"]["write"].startswith("mmap R + atomic")
    assert rows["numab_state"]["write"] == "mmap R + numab"


def test_every_token_and_condition_is_explained() -> None:
    for rule in RULES.values():
        for alt in (*rule.read, *rule.write):
            assert all(t in TOKENS for t in alt.locks), alt
            assert alt.when in CONDITIONS


def test_era_bounds_name_the_switch_release() -> None:
    """An alternative that follows a switch states that switch's release."""
    for rule in RULES.values():
        for alt in (*rule.read, *rule.write):
            if alt.since_fix:
                assert alt.since == FIXES[alt.since_fix].release, (rule.name, alt)
            if alt.until_fix:
                assert alt.until == FIXES[alt.until_fix].release, (rule.name, alt)
    for tok in TOKENS.values():
        if tok.since_fix:
            assert tok.since == FIXES[tok.since_fix].release


def test_render_rules_one_field_and_release() -> None:
    text = render_rules("vm_flags")
    assert text.startswith("vm_flags")
    assert "mmap W + VMA W" in text
    old = render_rules("vm_flags", "6.1")
    assert "(as of Linux 6.1)" in old and "write: mmap W\n" in old + "\n"
    assert "mmap R + anon_vma W + page_table_lock" in render_rules("vm_start", "6.1")
    assert "mmap R + anon_vma W + page_table_lock" not in render_rules("vm_start").split(
        "history")[0]
    with pytest.raises(KeyError):
        render_rules("vm_nonsense")


def test_unlocked_read_is_a_violation() -> None:
    def reader(mm: object, addr: int) -> None:
        vma = vma_find(mm, addr)  # debugger view: no check
        assert vma is not None
        vma.vm_flags  # noqa: B018 - a checked read without any lock

    def program() -> None:
        proc = System().process()
        addr = proc.mmap(0, PAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS)
        spawn(reader, proc.mm, addr, name="reader")

    r = explore(program)
    assert r.violation is not None
    assert r.violation.kind == "locking-rule"
    assert "vm_flags" in r.violation.title
    assert "mmap R | VMA R | rmap R" in r.violation.message
    assert "held: none" in r.violation.message


@pytest.mark.parametrize("name", CLEAN)
@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r or "current")
def test_kernel_paths_keep_the_rules(name: str, release: str | None) -> None:
    """The model's own paths (fault, munmap, file mappings and truncate,
    mprotect, fork, stack growth, NUMA scans, swap readahead, THP and
    khugepaged-style entry changes) break no rule of their release."""
    r = Witness(name, release, BUILDERS[name]).run()
    assert r.violation is None, r.violation.message if r.violation else ""


@pytest.mark.parametrize("w", BREACHES, ids=lambda w: w.name)
def test_every_breach_is_reported(w: Witness) -> None:
    r = w.run()
    assert r.violation is not None, w.name
    assert r.violation.kind == w.expect, r.violation.message


def _alternatives_named(message: str) -> list[str]:
    needs = message.split(" needs ", 1)[1]
    needs = re.split(r"; held: |\. Rule: ", needs)[0]
    return [a.strip() for a in needs.split(" | ")]


def test_violations_name_only_combinations_in_the_data() -> None:
    """Every lock combination a checker's report names is an alternative of
    the rule table: no checker carries its own copy of a rule."""
    known = {alt_text(a, show_when=s, release=rel)
             for rule in RULES.values() for a in (*rule.read, *rule.write)
             for s in (True, False) for rel in (None, "6.1")}
    seen = 0
    for w in BREACHES:
        r = w.run()
        assert r.violation is not None
        if r.violation.kind != "locking-rule" or " needs " not in r.violation.message:
            continue
        for alt in _alternatives_named(r.violation.message):
            assert alt in known, (w.name, alt)
            seen += 1
    assert seen >= 8


def test_no_rule_is_written_down_outside_the_table() -> None:
    """Only the checker module raises locking-rule violations (and
    mmap_lock.py's kernel assertions, vma_assert_write_locked and friends);
    pgtable.py and maple_tree.py hold no rule of their own."""
    raise_ = re.compile(r'ViolationError\(\s*"locking-rule"')
    raisers = sorted(p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")
                     if raise_.search(p.read_text()))
    # mmrace.kapi raises for a typed handle used after its guard was dropped
    # (the Rust borrow rule of the driver API), which is no rule of the table.
    assert raisers == ["kapi/mm.py", "kapi/vma.py", "mm/mmap_lock.py",
                       "mm/rules_check.py"], raisers
    for name in ("mm/pgtable.py", "mm/maple_tree.py", "mm/mm_types.py"):
        text = (SRC / name).read_text()
        assert "h.mmap.get" not in text and "held().mmap" not in text, name


# --- the lock-state table agrees with the field rules ----------------------------------


def _state_program(row: int, action: str) -> object:
    """Take the locks of LOCK_STATES[row] on an anonymous VMA with an
    anon_vma, then do *action*: ``read`` vm_start, ``most`` write vm_flags,
    ``all`` write vm_start."""
    st = LOCK_STATES[row]

    def program() -> None:
        p = System().process()
        a = p.mmap(0, 2 * PAGE_SIZE, PROT_READ | 2, MAP_PRIVATE | MAP_ANONYMOUS)
        p.poke(a, 1)
        mm = p.mm
        vma = vma_find(mm, a)

        def body() -> None:
            mmap = st.mmap.split("/")[-1]
            if mmap == "W":
                mmap_write_lock(mm)
            elif mmap == "R":
                mmap_read_lock(mm)
            vstate = st.vma.split("/")[-1]
            if vstate == "W":
                vma_start_write(vma)
            elif vstate == "R":
                assert lock_vma_under_rcu(mm, a) is vma
            rmap = st.rmap.split("/")[-1]
            if rmap == "W":
                anon_vma_lock_write(vma.raw("anon_vma"))
            elif rmap == "R":
                anon_vma_lock_read(vma.raw("anon_vma"))
            if action == "read":
                vma.vm_start  # noqa: B018
            elif action == "most":
                vma.vm_flags_ = vma.raw("vm_flags") | 0x8000
            else:
                vma.vm_start = vma.raw("vm_start")
            # release what it took (a thread may not return holding a lock)
            if rmap == "W":
                anon_vma_unlock_write(vma.raw("anon_vma"))
            elif rmap == "R":
                anon_vma_unlock_read(vma.raw("anon_vma"))
            if vstate == "R":
                vma_end_read(vma)
            if mmap == "W":
                mmap_write_unlock(mm)
            elif mmap == "R":
                mmap_read_unlock(mm)
        spawn(body, name="T")
    return program


@pytest.mark.parametrize("row", range(len(LOCK_STATES)))
def test_lock_state_columns_match_the_field_rules(row: int) -> None:
    st = LOCK_STATES[row]
    for action, allowed in (("read", st.read), ("most", st.write_most), ("all", st.write_all)):
        r = explore(_state_program(row, action), max_executions=1)  # type: ignore[arg-type]
        ok = r.violation is None
        assert ok == allowed, (row, action, r.violation and r.violation.message)

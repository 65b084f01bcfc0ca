"""The generated locking document: everything it renders is enforced (a
checker consulted it while the witness programs ran), in every release it
can be rendered for, in Markdown and in reStructuredText."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rules_witness import RELEASES, witnesses

from mmrace.mm.rules import (
    EXCEPTIONS,
    LOCK_ORDER,
    LOCK_ORDER_EDGES,
    RULES,
    alts_in_release,
    lock_order_closure,
)
from mmrace.mm.rules_check import consulted, reset_consulted
from mmrace.mm.rules_doc import (
    CONTRADICTS,
    NOT_MODELLED,
    build,
    render_markdown,
    render_rst,
    rendered_ids,
)

SECTIONS = ["Terminology", "Lock tokens", "Lock usage", "VMA fields", "Page tables",
            "PTE tables and pte_offset_map_lock", "Lockless readers and atomicity",
            "Installing tables", "Freeing tables", "Moving tables", "Lock ordering",
            "VMA lock internals", "Downgrading the mmap write lock", "Stack expansion",
            "Exceptions", "Rule index"]


@pytest.fixture(scope="module")
def consulted_by_witnesses() -> frozenset[str]:
    reset_consulted()
    for w in witnesses():
        r = w.run()
        assert (r.violation.kind if r.violation else None) == w.expect, w.name
    return consulted()


@pytest.mark.parametrize("release", RELEASES, ids=lambda r: r or "current")
def test_every_rendered_rule_is_consulted(release: str | None,
                                          consulted_by_witnesses: frozenset[str]) -> None:
    doc = build(release)
    index = {rid: enforced for rid, _rule, enforced in doc.index}
    for text in (render_markdown(release), render_rst(release)):
        assert rendered_ids(text) == list(index)
    missing = [rid for rid, enforced in index.items()
               if enforced not in (NOT_MODELLED, CONTRADICTS)
               and rid not in consulted_by_witnesses]
    assert not missing, f"rendered but never consulted by a checker: {missing}"


def test_the_index_covers_the_data() -> None:
    """Every alternative of the release, every lock state, order level and
    pairwise order is in the index; only locks the model lacks are marked
    not modelled."""
    for release in RELEASES:
        ids = [rid for rid, _r, _e in build(release).index]
        for name, rule in RULES.items():
            for side, alts in (("read", rule.read), ("write", rule.write)):
                n = sum(1 for a in alts_in_release(alts, release))
                assert sum(1 for i in ids if i.startswith(f"{name}.{side}.")) == n
    index = {rid: e for rid, _r, e in build().index}
    unmodelled = {lv.name for lv in LOCK_ORDER if not lv.classes}
    for lv in LOCK_ORDER:
        assert (index[f"lock-order.{lv.name}"] == NOT_MODELLED) == (lv.name in unmodelled)
    _before, contradictions = lock_order_closure()
    for a, b, _ in LOCK_ORDER_EDGES:
        status = index[f"lock-order.{a}>{b}"]
        if (a, b) in contradictions:
            assert status == CONTRADICTS and {a, b} <= unmodelled
        else:
            assert (status == NOT_MODELLED) == bool({a, b} & unmodelled)
    marked = [rid for rid, e in index.items() if e in (NOT_MODELLED, CONTRADICTS)]
    assert all(rid.startswith("lock-order.") for rid in marked)


def test_document_sections_and_tables() -> None:
    md = render_markdown()
    for section in SECTIONS:
        assert re.search(rf"^#+ {re.escape(section)}$", md, flags=re.M), section
    for name, rule in RULES.items():
        assert f"`{name}`" in md and rule.note.split(";")[0] in md
    for e in EXCEPTIONS:
        assert e.name in md
    assert md.count("\n| ") > 150
    rst = render_rst()
    for section in SECTIONS:
        assert re.search(rf"^{re.escape(section)}\n[-^=]+$", rst, flags=re.M), section
    assert rst.count(".. list-table::") == len(re.findall(r"^\| --- ", md, flags=re.M))
    assert "``mmap R``" in rst and "`mmap R`" not in rst.replace("``mmap R``", "")


def test_rst_list_tables_are_rectangular() -> None:
    rst = render_rst()
    for table in rst.split(".. list-table::")[1:]:
        body = table.split("\n\n", 2)[1]
        rows = body.split("   * - ")[1:]
        widths = {row.count("\n     - ") + 1 for row in rows}
        assert len(widths) == 1, table[:200]


def test_document_per_release() -> None:
    old = render_markdown("6.1")
    new = render_markdown()
    assert "Linux 6.1" in old and "no VMA lock" in old
    assert "| mmap | rmap | stable |" in old  # no VMA column before 6.4
    assert "| mmap | VMA | rmap |" in new
    assert "`mmap R` + `anon_vma W` + `page_table_lock`" in old.split("History")[0]
    assert "grows it under the mmap read lock" in old
    assert "Since 6.5" in new
    assert "6.6" in new and "pmd_same" in new
    assert "does not change under a reader" in old


def test_committed_documents_are_current() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    for name, text in (("locking.md", render_markdown()), ("locking.rst", render_rst())):
        assert (docs / name).read_text() == text, (
            f"docs/{name} is stale: run mmrace doc -o docs/{name}")

"""The rule table as data, its rendering, and the checker on field access."""

from __future__ import annotations

import json
import re

import pytest

from mmrace.engine import explore, spawn
from mmrace.mm.rules import RULES, TOKENS, render_rules, rules_table
from mmrace.mm.rules_doc import render_markdown
from mmrace.user import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, System, vma_find

ISSUE_FIELDS = ["vm_start", "vm_end", "vm_pgoff", "vm_mm", "vm_page_prot", "vm_flags",
                "vm_file", "vm_ops", "vm_private_data", "anon_name", "vm_policy",
                "vm_userfaultfd_ctx", "anon_vma", "anon_vma_chain", "shared.rb"]


def test_table_covers_the_field_table() -> None:
    table = rules_table()
    assert [r["field"] for r in table] == list(RULES)
    for field in ISSUE_FIELDS:
        assert field in RULES
    for row in table:
        assert set(row) == {"field", "read", "write", "note"}
    json.dumps(table)
    anon = next(r for r in table if r["field"] == "anon_vma")
    assert "mmap R + page_table_lock (NULL -> non-NULL)" in anon["write"]
    start = next(r for r in table if r["field"] == "vm_start")
    assert start["write"] == "mmap W + VMA W + rmap W"
    chain = next(r for r in table if r["field"] == "anon_vma_chain")
    assert chain["write"] == "mmap R + anon_vma W"


def test_every_token_is_explained() -> None:
    for rule in RULES.values():
        for alt in rule["read"]:
            assert all(t in TOKENS for t in alt)
        for w in rule["write"]:
            assert all(t in TOKENS for t in w["locks"])


def test_render_rules_one_field() -> None:
    text = render_rules("vm_flags")
    assert text.startswith("vm_flags")
    assert "mmap W + VMA W" in text
    with pytest.raises(KeyError):
        render_rules("vm_nonsense")


def test_document_matches_data() -> None:
    doc = render_markdown()
    rows = {r["field"]: r for r in rules_table()}
    # every rule appears in the document
    for field, row in rows.items():
        assert f"| `{field}` | " in doc
        assert row["note"] in doc
    # and nothing in the document's field table is missing from the data
    table = doc.split("## VMA and mm fields")[1].split("##")[0]
    in_doc = re.findall(r"^\| `([^`]+)` \|", table, flags=re.M)
    assert in_doc == list(rows)
    tokens = doc.split("## Lock tokens")[1].split("##")[0]
    assert sorted(re.findall(r"^\| ([^|]+?) \|", tokens, flags=re.M)[2:]) == sorted(TOKENS)
    assert "## Lock order" in doc and "## Lock states" in doc


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

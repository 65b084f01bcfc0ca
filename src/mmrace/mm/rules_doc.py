"""Markdown locking documentation generated from the rule data of
``mm/rules.py`` (``mmrace doc``): the field table, the lock tokens, the lock
order and the lock-state table."""

from __future__ import annotations

from mmrace.mm.rules import LOCK_ORDER, LOCK_STATES, RULES, TOKENS, rules_table


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown() -> str:
    """The whole document."""
    out: list[str] = []
    out.append("# mmrace: mm locking rules")
    out.append("")
    out.append("Generated from `mmrace/mm/rules.py`, the table the checker enforces on "
               "every VMA field access. Alternatives are separated by `|`; `+` joins "
               "locks that must all be held.")
    out.append("")
    out.append("## VMA and mm fields")
    out.append("")
    out.append("| field | read needs | write needs | note |")
    out.append("| --- | --- | --- | --- |")
    for row in rules_table():
        out.append(f"| `{row['field']}` | {_cell(row['read'])} | {_cell(row['write'])} | "
                   f"{_cell(row['note'])} |")
    out.append("")
    out.append("## Lock tokens")
    out.append("")
    out.append("| token | meaning |")
    out.append("| --- | --- |")
    for token, meaning in TOKENS.items():
        out.append(f"| {token} | {_cell(meaning)} |")
    out.append("")
    out.append("## Lock order")
    out.append("")
    out.append("Each lock is taken before the ones below it.")
    out.append("")
    for depth, lock in enumerate(LOCK_ORDER):
        out.append(f"{'  ' * depth}- {lock}")
    out.append("")
    out.append("Taking the mmap lock while holding a VMA read lock is forbidden: a writer "
               "holding the mmap write lock may be waiting in `vma_start_write` for the "
               "reader to leave.")
    out.append("")
    out.append("## Lock states")
    out.append("")
    cols = list(LOCK_STATES[0])
    out.append("| " + " | ".join(cols) + " |")
    out.append("| " + " | ".join("---" for _ in cols) + " |")
    for state in LOCK_STATES:
        out.append("| " + " | ".join(state[c] for c in cols) + " |")
    out.append("")
    return "\n".join(out)


def documented_fields() -> list[str]:
    """The fields in the rule data (for the consistency test)."""
    return list(RULES)

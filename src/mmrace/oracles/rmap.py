"""Reverse-mapping consistency of one mapped page (``invariant``).

Reclaim, migration and ``folio_referenced`` find the PTEs of an anonymous
page from the page: its ``mapping`` (the anon_vma) and ``index`` lead
``rmap_walk`` to each VMA and address that may map it. A page mapped at an
address that walk cannot reach is never unmapped for swap-out or
migration, and a walk that reaches an address where it is not mapped finds
nothing there. :func:`rmap_mismatch` checks one address, reading the model
as a debugger would (no visible operations): for a scenario's final check.
Its name for ``System(oracles_off=...)`` is ``rmap``.
"""

from __future__ import annotations

from typing import Any

from mmrace.engine import ViolationError, current_execution, in_execution
from mmrace.mm.mm_types import PAGE_SHIFT
from mmrace.mm.page_alloc import Folio, pfn_to_obj
from mmrace.mm.pgtable import peek_pte, pte_pfn, pte_present, pte_special


def _vma_at(mm: Any, addr: int) -> Any:
    for start, end, vma in mm.mm_mt.entries():
        if start <= addr < end:
            return vma
    return None


def _vma_address(vma: Any, pgoff: int) -> int | None:
    """``vma_address`` read as a debugger would (raw fields)."""
    start, end = vma.raw("vm_start"), vma.raw("vm_end")
    addr = start + ((pgoff - vma.raw("vm_pgoff")) << PAGE_SHIFT)
    return int(addr) if start <= addr < end else None


def rmap_mismatch(mm: Any, addr: int) -> ViolationError | None:
    """An ``invariant`` violation if the anonymous page *mm* maps at *addr*
    cannot be found there by ``rmap_walk`` (its anon_vma does not link the
    VMA, or its index points elsewhere); None if it can, if nothing
    anonymous is mapped there, or if *mm*'s ``System`` switched the ``rmap``
    oracle off."""
    if "rmap" in mm.oracles_off:
        return None
    pte = peek_pte(mm, addr)
    if not pte_present(pte) or pte_special(pte):
        return None
    folio = pfn_to_obj(pte_pfn(pte))
    if not isinstance(folio, Folio) or not folio.anon:
        return None
    vma = _vma_at(mm, addr)
    anon_vma = folio.mapping
    linked = vma is not None and anon_vma is not None and vma.serial in anon_vma.rb_root
    where = _vma_address(vma, folio.index) if vma is not None else None
    if linked and where == addr:
        return None
    if not linked:
        found = (f"{getattr(anon_vma, 'name', anon_vma)} does not link "
                 f"{getattr(vma, 'name', 'any VMA')}")
    elif where is None:
        found = f"index {folio.index:#x} is outside {vma.name}: the walk skips it"
    else:
        found = f"the walk looks at {where:#x} of {vma.name}"
    return ViolationError(
        "invariant",
        f"rmap: {folio.name} mapped at {addr:#x} is not where its rmap points",
        f"{folio.name} is mapped at {addr:#x}, but its rmap (mapping "
        f"{getattr(anon_vma, 'name', anon_vma)}, index {folio.index:#x}) does not lead "
        f"there: {found}{_history(folio)}\nrmap walks (swap-out, migration, "
        "folio_referenced) cannot find this mapping")


def _history(folio: Folio) -> str:
    """Where the execution last set the folio's rmap (cited, so the trace
    shows the folio's operations)."""
    if not in_execution():
        return ""
    ex = current_execution()
    out = ""
    for i in range(len(ex.events) - 1, -1, -1):
        ev = ex.events[i]
        if ev.obj is folio and ev.label and ("rmap" in ev.label or "index" in ev.label):
            out = f"\nthe rmap was last set at event {i} ({ev.label} by {ex.threads[ev.tid].name})"
            break
    pfn = f"pfn {folio.pfn:#x} "
    ptes = [f"event {i} ({ev.label})" for i, ev in enumerate(ex.events)
            if ev.label in ("set_pte", "ptep_get_and_clear") and pfn in str(ev.detail)]
    if ptes:
        out += "\nPTEs of the page written at " + ", ".join(ptes[-3:])
    return out


__all__ = ["rmap_mismatch"]

"""Memory oracles: lost writes and use-after-free through stale TLB entries.

* **lost-write**: a user store through a TLB entry lands in a page after a
  kernel operation that promises to preserve the contents at that address
  copied the page away (``wp_page_copy``: ``copy_user_highpage`` read the
  old page, then ``ptep_clear_flush`` replaced the mapping). The store is
  missing from the page the address now maps. Detected when the
  replacement is committed (``ptep_clear_flush`` of a page this thread
  copied: any store to the old page at that address after the copy's read)
  and at any later store through a stale entry to the old page.
* **use-after-free**: a user load or store through a TLB entry into a page
  that has been freed.
* Operations that *discard* contents (munmap, ``MADV_DONTNEED``, truncate)
  zap without copying, so a racing store into the still-allocated page is
  the user's own race and is not reported; only its landing in a freed
  page is.
* **wrong-data**: a scenario's final check (:func:`wrong_data`).

Each report names the CPU, the stale entry, when its PTE last changed
(event index and function) and when the page was copied or freed.
"""

from __future__ import annotations

from typing import Any

from mmrace.arch import add_hook
from mmrace.arch.cpu import Cpu
from mmrace.arch.tlb import TlbEntry
from mmrace.engine import (
    READ,
    ViolationError,
    current_execution,
    current_thread,
    execution_local,
)
from mmrace.mm.pgtable import peek_pte, pte_pfn, pte_present, pte_write


class _Store:
    __slots__ = ("ev", "cpu", "entry", "mm", "vpn", "word", "value")

    def __init__(self, ev: int, cpu: int, entry: str, mm: int, vpn: int, word: int,
                 value: int) -> None:
        self.ev = ev
        self.cpu = cpu
        self.entry = entry
        self.mm = mm
        self.vpn = vpn
        self.word = word
        self.value = value


class _Copy:
    __slots__ = ("mm", "vpn", "copy_ev", "replace_ev", "who")

    def __init__(self, mm: int, vpn: int, copy_ev: int, replace_ev: int, who: str) -> None:
        self.mm = mm
        self.vpn = vpn
        self.copy_ev = copy_ev
        self.replace_ev = replace_ev
        self.who = who


class MemoryOracle:
    """Per-execution record of user stores and preserving page replacements."""

    def __init__(self) -> None:
        self.stores: dict[tuple[int, int], list[_Store]] = {}
        self.copies: dict[tuple[int, int], list[_Copy]] = {}
        self.stale_stores = 0  # stores through an entry the page tables no longer back


def memory_oracle() -> MemoryOracle:
    o: MemoryOracle = execution_local("oracles.memory", MemoryOracle)
    return o


def _now() -> int:
    return len(current_execution().events) - 1


def _ev_str(i: int) -> str:
    if i < 0:
        return "in set-up"
    ev = current_execution().events[i]
    th = current_execution().threads[ev.tid].name
    return f"event {i} ({ev.label or 'op'} by {th}{' in ' + ev.where if ev.where else ''})"


def pte_changed_at(entry: TlbEntry) -> str:
    """When the PTE behind *entry* was last written by software (not the
    walker's accessed/dirty updates)."""
    slot = entry.source
    if slot is None:
        return "unknown"
    for i in range(len(current_execution().events) - 1, -1, -1):
        ev = current_execution().events[i]
        if ev.obj is slot and ev.kind != READ and not ev.label.startswith("hw walk"):
            return _ev_str(i) + (f" -> {ev.detail}" if ev.detail is not None else "")
    return "not since set-up"


def _stale(entry: TlbEntry) -> bool:
    pte = peek_pte(entry.mm, entry.addr)
    f = entry.frame
    return (not pte_present(pte) or f is None or pte_pfn(pte) != f.pfn
            or (entry.writable and not pte_write(pte)))


def _violation(kind: str, title: str, lines: list[str]) -> ViolationError:
    return ViolationError(kind, title, "\n".join(lines))


def on_user_access(cpu: Cpu, entry: TlbEntry, write: bool, word: int, value: int) -> None:
    frame: Any = entry.frame
    folio = getattr(frame, "folio", None)
    if folio is None:
        return
    off = entry.mm.oracles_off
    o = memory_oracle()
    now = _now()
    what = "store" if write else "load"
    if folio.freed_at is not None and "use-after-free" not in off:
        raise _violation("use-after-free",
                         f"use-after-free: user {what} on cpu{cpu.id} into freed {folio.name}", [
            f"cpu{cpu.id} {what}s word {word} at {entry.addr:#x} through a stale TLB entry",
            f"entry: {entry.describe()}",
            f"its PTE changed at: {pte_changed_at(entry)}",
            f"entry invalidation: {entry.gone_at or 'never'}",
            f"page freed: {folio.freed_at}",
        ])
    if not write or "lost-write" in off:
        return
    key = (folio.serial, frame.idx)
    mm = entry.mm.serial
    stale = _stale(entry)
    if stale:
        o.stale_stores += 1
    for c in o.copies.get(key, ()):
        if c.mm == mm and c.vpn == entry.vpn and c.copy_ev < now:
            raise _lost(cpu.id, entry, word, value, now, c, frame.describe())
    o.stores.setdefault(key, []).append(
        _Store(now, cpu.id, entry.describe(), mm, entry.vpn, word, value))


def _lost(cpu: int, entry: TlbEntry | str, word: int, value: int, ev: int, c: _Copy,
          page: str) -> ViolationError:
    ent = entry.describe() if isinstance(entry, TlbEntry) else entry
    vaddr = c.vpn << 12
    lines = [
        f"cpu{cpu} stored {value} to word {word} at {vaddr:#x} ({_ev_str(ev)}) through a "
        "stale TLB entry, into a page whose contents had already been copied away",
        f"entry: {ent}",
    ]
    if isinstance(entry, TlbEntry):
        lines.append(f"its PTE changed at: {pte_changed_at(entry)}")
    lines += [
        f"page {page} copied at {_ev_str(c.copy_ev)}",
        f"mapping replaced at {_ev_str(c.replace_ev)} by {c.who}",
        "the store is missing from the page the address maps now",
    ]
    return _violation("lost-write", f"lost write: cpu{cpu} store at {vaddr:#x} after the "
                      f"page was copied", lines)


def on_pte_clear_flush(mm: Any, addr: int, old_pte: int, frame: Any) -> None:
    folio = getattr(frame, "folio", None)
    th = current_thread()
    if folio is None or th is None or folio.is_zero or "lost-write" in mm.oracles_off:
        return
    ex = current_execution()
    copy_ev = -1
    for i in range(len(ex.events) - 1, -1, -1):
        ev = ex.events[i]
        if ev.tid == th.tid and ev.obj is folio.contents and ev.label.startswith(
                "copy_user_highpage"):
            copy_ev = i
            break
    if copy_ev < 0:
        return  # nothing copied: a discarding (or non-preserving) clear
    o = memory_oracle()
    key = (folio.serial, frame.idx)
    vpn = addr >> 12
    who = f"{th.name} in {th.where[-2] if len(th.where) > 1 else 'ptep_clear_flush'}"
    c = _Copy(mm.serial, vpn, copy_ev, _now(), who)
    for s in o.stores.get(key, ()):
        if s.mm == mm.serial and s.vpn == vpn and s.ev > copy_ev:
            raise _lost(s.cpu, s.entry, s.word, s.value, s.ev, c, frame.describe())
    o.copies.setdefault(key, []).append(c)


def wrong_data(message: str) -> ViolationError:
    """The violation a scenario's final check raises when data is wrong."""
    return ViolationError("wrong-data", f"wrong data: {message}", message)


def install() -> None:
    """Subscribe the memory oracles to the machine's hooks (idempotent;
    ``System`` calls it, through ``install_oracles``)."""
    add_hook("user-access", on_user_access)
    add_hook("pte-clear-flush", on_pte_clear_flush)

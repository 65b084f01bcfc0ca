"""Observation points of the machine, for the checkers above it.

The arch and mm layers cannot import :mod:`mmrace.oracles` (it sits above
them), so they *emit* named facts here and the oracles subscribe when a
``mmrace.user.System`` is built (``mmrace.oracles.install_oracles``).
A hook runs inside the event that performs the operation it describes (it
must not call :func:`~mmrace.engine.visible`). Hook names in use:

* ``"user-access"`` ``(cpu, entry, write, word, value)``: a user load or
  store through TLB entry *entry*, about to be performed on its frame;
* ``"pte-clear-flush"`` ``(mm, addr, old_pte, frame)``: ``ptep_clear_flush``
  cleared a present PTE mapping *frame* (before its flush);
* ``"uffd-event-raise"``, ``"uffd-event-read"`` ``(ctx, ewq)``,
  ``"uffd-ioctl-begin"`` ``(ctx, op)``, ``"uffd-ioctl-effect"``
  ``(ctx, op, addr)``: userfaultfd events and ioctls, for a context whose
  monitor expects a consistent view (:mod:`mmrace.mm.fs_userfaultfd`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_hooks: dict[str, list[Callable[..., None]]] = {}


def add_hook(name: str, fn: Callable[..., None]) -> None:
    """Subscribe *fn* to the facts named *name* (once per function)."""
    fns = _hooks.setdefault(name, [])
    if fn not in fns:
        fns.append(fn)


def emit(name: str, *args: Any) -> None:
    """Report a fact to every subscriber (in subscription order)."""
    fns = _hooks.get(name)
    if fns:
        for fn in fns:
            fn(*args)


def has_hooks(name: str) -> bool:
    return bool(_hooks.get(name))

"""Visible operations of the GUP paths (issue 19): what one lookup costs an
exploration.

Each figure is the number of visible operations a single simulated thread
makes for one call, on the current kernel:

* ``get_user_pages`` / ``pin_user_pages`` of one present page (an exclusive
  anonymous page mapped writable), including the mmap read lock;
* a read-only ``pin_user_pages`` of a page shared with a child, which must
  unshare it first, and the unsharing fault alone (``faultin_page`` with
  ``FAULT_FLAG_UNSHARE``: the page is copied);
* the same pin of a previously shared page (the unsharing fault reuses it);
* ``vmsplice`` of one page and the ``read`` that drains it;
* a ``/proc/PID/mem`` write to a present page.

Run: ``.venv/bin/python bench/gup.py [--json]``. The counts are exact and do
not depend on the machine.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import mmrace.mm.gup as gup
from mmrace.engine import current_execution, explore
from mmrace.user import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE, System

ANON = MAP_PRIVATE | MAP_ANONYMOUS
RW = PROT_READ | PROT_WRITE


def _ops(setup: Callable[[Any, int], None], call: Callable[[Any, int], Any],
         inner: str | None = None) -> int:
    """Visible operations of ``call(t, addr)`` in one thread, after
    ``setup(p, addr)`` in set-up code; with *inner*, only those made inside
    that function of ``mmrace.mm.gup``."""
    counted: list[int] = []

    def program() -> None:
        p = System().process()
        a = p.mmap(0, PAGE_SIZE, RW, ANON)
        setup(p, a)

        def body(t: Any) -> None:
            events = current_execution().events
            if inner is None:
                n0 = len(events)
                call(t, a)
                counted.append(len(events) - n0)
                return
            real = getattr(gup, inner)

            def measured(*args: Any) -> Any:
                n0 = len(events)
                out = real(*args)
                counted.append(len(events) - n0)
                return out

            setattr(gup, inner, measured)
            try:
                call(t, a)
            finally:
                setattr(gup, inner, real)

        p.thread(body, cpu=0)

    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation and r.violation.message
    return sum(counted)


def _written(p: Any, a: int) -> None:
    p.poke(a, 1)


def _shared(p: Any, a: int) -> None:
    p.poke(a, 1)
    p._child = p.fork()  # keep the child: the page stays shared


def _previously_shared(p: Any, a: int) -> None:
    p.poke(a, 1)
    p.fork().exit()


def _vmsplice_and_read(t: Any, a: int) -> None:
    r, w = t.pipe()
    t.vmsplice(w, a, PAGE_SIZE)
    t.read(r)


def figures() -> dict[str, int]:
    """Every figure, by name."""
    return {
        "get_user_pages, present page": _ops(_written, lambda t, a: t.get_user_pages(a)),
        "pin_user_pages (R/O), present page": _ops(_written, lambda t, a: t.pin_user_pages(a)),
        "pin_user_pages (write, long-term), present page": _ops(
            _written, lambda t, a: t.pin_user_pages(a, write=True, longterm=True)),
        "pin_user_pages (R/O), shared page (unshare by copy)": _ops(
            _shared, lambda t, a: t.pin_user_pages(a)),
        "unsharing fault alone (copy)": _ops(
            _shared, lambda t, a: t.pin_user_pages(a), inner="faultin_page"),
        "pin_user_pages (R/O), previously shared page (unshare by reuse)": _ops(
            _previously_shared, lambda t, a: t.pin_user_pages(a)),
        "unsharing fault alone (reuse)": _ops(
            _previously_shared, lambda t, a: t.pin_user_pages(a), inner="faultin_page"),
        "unpin_user_page": _ops(
            lambda p, a: (_written(p, a), setattr(p, "_pins", p.pin_user_pages(a))),
            lambda t, a: t.unpin(t.process._pins)),
        "vmsplice one page + read it back": _ops(_written, _vmsplice_and_read),
        "/proc/PID/mem write, present page": _ops(
            _written, lambda t, a: t.proc_mem_write(a, 2)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    figs = figures()
    if args.json:
        print(json.dumps(figs, indent=2))
        return
    for name, n in figs.items():
        print(f"{name:66} {n:4d} visible operations")


if __name__ == "__main__":
    main()

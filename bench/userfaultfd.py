"""Visible operations of userfaultfd's fill and move ioctls (issue 14): what
one ioctl costs an exploration, in each locking era.

Each figure is the number of visible operations one simulated thread makes
for one call of one page, the ioctl handler's checks and wake-up included:

* ``UFFDIO_COPY`` of a value into a missing page of an anonymous VMA that
  already has an anon_vma (the common case), and of a VMA without one (the
  per-VMA-lock path falls back to the mmap lock to prepare it);
* ``UFFDIO_COPY`` from the monitor's memory (``UserBuffer``): a mapped
  source, and an unmapped one (the retry: locks dropped, the source faulted
  in, everything taken and checked again);
* ``UFFDIO_ZEROPAGE``;
* ``UFFDIO_MOVE`` of an exclusive anonymous page between two VMAs;

on the current kernel (6.9 on: per-VMA locks, ``map_changing_lock``) and on
6.8 (``mmap_lock``, the counter under it). With ``--view`` the monitor
expects a consistent view (the uffd-view oracle's marker operations).

Run: ``.venv/bin/python bench/userfaultfd.py [--json] [--view]``. The counts
are exact and do not depend on the machine.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from mmrace.engine import current_execution, explore
from mmrace.user import (
    MADV_DONTNEED,
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    PAGE_SIZE,
    PROT_READ,
    PROT_WRITE,
    UFFDIO_REGISTER_MODE_MISSING,
    System,
    UserBuffer,
)

ANON = MAP_PRIVATE | MAP_ANONYMOUS
RW = PROT_READ | PROT_WRITE
KERNELS = {"current": None, "6.8": "6.8"}


def _ops(release: str | None, view: bool, setup: Callable[[Any, Any, int, int], Any],
         call: Callable[[Any, Any, int, int, Any], Any]) -> int:
    """Visible operations of ``call(t, uffd, dst, src, extra)`` in one
    thread, after ``extra = setup(p, uffd, dst, src)`` in set-up code; *dst*
    is a registered page, *src* another anonymous page."""
    counted: list[int] = []

    def program() -> None:
        s = System(kernel=release)
        p = s.process()
        dst = p.mmap(0, PAGE_SIZE, RW, ANON)
        src = p.mmap(0, PAGE_SIZE, RW, ANON)
        uffd = p.userfaultfd()
        uffd.register(dst, PAGE_SIZE, UFFDIO_REGISTER_MODE_MISSING)
        if view:
            uffd.expect_consistent_view()
        extra = setup(p, uffd, dst, src)

        def body(t: Any) -> None:
            events = current_execution().events
            n0 = len(events)
            call(t, uffd, dst, src, extra)
            counted.append(len(events) - n0)

        p.thread(body, cpu=0)

    r = explore(program, max_executions=1, shrink=False)
    assert r.violation is None, r.violation and r.violation.message
    return sum(counted)


def _anon_vma(p: Any, uffd: Any, dst: int, src: int) -> None:
    """Give the destination VMA an anon_vma (a page copied and dropped)."""
    uffd.copy(dst, 1, PAGE_SIZE)
    p.madvise(dst, PAGE_SIZE, MADV_DONTNEED)


def _nothing(p: Any, uffd: Any, dst: int, src: int) -> None:
    return None


def _buffer(mapped: bool) -> Callable[[Any, Any, int, int], Any]:
    def setup(p: Any, uffd: Any, dst: int, src: int) -> Any:
        _anon_vma(p, uffd, dst, src)
        m = p.system.process()
        buf = m.mmap(0, PAGE_SIZE, RW, ANON)
        if mapped:
            m.poke(buf, 3)
        return UserBuffer(m, buf)

    return setup


def _src_page(p: Any, uffd: Any, dst: int, src: int) -> None:
    _anon_vma(p, uffd, dst, src)
    p.poke(src, 5)


def figures(view: bool = False) -> dict[str, dict[str, int]]:
    """Every figure, by name and kernel."""
    cases: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
        "UFFDIO_COPY, one page (value)": (
            _anon_vma, lambda t, u, d, s, x: u.copy(d, 7, PAGE_SIZE)),
        "UFFDIO_COPY, one page, first fill of the VMA (anon_vma prepared)": (
            _nothing, lambda t, u, d, s, x: u.copy(d, 7, PAGE_SIZE)),
        "UFFDIO_COPY, one page from the monitor's mapped memory": (
            _buffer(True), lambda t, u, d, s, x: u.copy(d, x, PAGE_SIZE)),
        "UFFDIO_COPY, one page from unmapped memory (the retry)": (
            _buffer(False), lambda t, u, d, s, x: u.copy(d, x, PAGE_SIZE)),
        "UFFDIO_ZEROPAGE, one page": (
            _anon_vma, lambda t, u, d, s, x: u.zeropage(d, PAGE_SIZE)),
        "UFFDIO_MOVE, one page": (
            _src_page, lambda t, u, d, s, x: u.move(d, s, PAGE_SIZE)),
    }
    return {name: {k: _ops(rel, view, setup, call) for k, rel in KERNELS.items()}
            for name, (setup, call) in cases.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--view", action="store_true",
                    help="the monitor expects a consistent view (oracle markers)")
    args = ap.parse_args()
    figs = figures(args.view)
    if args.json:
        print(json.dumps(figs, indent=2))
        return
    print(f"{'visible operations':64} " + " ".join(f"{k:>8}" for k in KERNELS))
    for name, by in figs.items():
        print(f"{name:64} " + " ".join(f"{by[k]:8d}" for k in KERNELS))


if __name__ == "__main__":
    main()

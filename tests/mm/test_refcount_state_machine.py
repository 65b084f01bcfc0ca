"""Hypothesis: random mmap/fork/poke/peek/munmap/madvise/exit sequences keep
every folio's refcount and mapcount equal to the mappings (and page-cache
entries) that reference it, keep data isolated between processes, and leak
nothing once every process has exited."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from mmkit import ANON, RW, check_accounting, run1

from mmrace.mm.page_alloc import mem_state
from mmrace.user import MADV_DONTNEED, MAP_FIXED, MAP_SHARED, PAGE_SIZE, System

BASE = 0x20000000
PAGES = 6

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("poke"), st.integers(0, 3), st.integers(0, PAGES - 1),
                  st.integers(1, 1000)),
        st.tuples(st.just("peek"), st.integers(0, 3), st.integers(0, PAGES - 1)),
        st.tuples(st.just("fork"), st.integers(0, 3)),
        st.tuples(st.just("munmap"), st.integers(0, 3), st.integers(0, PAGES - 1),
                  st.integers(1, 3)),
        st.tuples(st.just("mmap"), st.integers(0, 3), st.integers(0, PAGES - 1),
                  st.integers(1, 3), st.booleans()),
        st.tuples(st.just("dontneed"), st.integers(0, 3), st.integers(0, PAGES - 1)),
        st.tuples(st.just("exit"), st.integers(1, 3)),
    ),
    max_size=25,
)


def _run(ops: list[tuple[Any, ...]]) -> None:
    def program() -> None:
        s = System()
        fd = s.open_file("shared", PAGES * PAGE_SIZE)
        first = s.processes[0]
        first.mmap(BASE, PAGES * PAGE_SIZE, RW, ANON | MAP_FIXED)
        procs = [first]
        # reference model: per process, page -> value or None (unmapped)
        ref: list[dict[int, int | None]] = [{i: 0 for i in range(PAGES)}]
        shared_pages: list[set[int]] = [set()]
        file_data: dict[int, int] = {}
        for op in ops:
            i = op[1] % len(procs)
            p, r, sh = procs[i], ref[i], shared_pages[i]
            kind = op[0]
            if kind == "poke":
                pg, v = op[2], op[3]
                if r[pg] is None:
                    continue
                p.poke(BASE + pg * PAGE_SIZE, v)
                if pg in sh:
                    file_data[pg] = v
                    for rr, ss in zip(ref, shared_pages, strict=True):
                        if pg in ss:
                            rr[pg] = v
                r[pg] = v
            elif kind == "peek":
                pg = op[2]
                if r[pg] is None:
                    continue
                got = p.peek(BASE + pg * PAGE_SIZE)
                want = file_data.get(pg, 0) if pg in sh else r[pg]
                assert got == want, f"page {pg}: read {got}, expected {want}"
            elif kind == "fork":
                procs.append(p.fork())
                ref.append(dict(r))
                shared_pages.append(set(sh))
            elif kind == "munmap":
                pg, n = op[2], min(op[3], PAGES - op[2])
                p.munmap(BASE + pg * PAGE_SIZE, n * PAGE_SIZE)
                for k in range(pg, pg + n):
                    r[k] = None
                    sh.discard(k)
            elif kind == "mmap":
                pg, n, shared = op[2], min(op[3], PAGES - op[2]), op[4]
                if shared:
                    p.mmap(BASE + pg * PAGE_SIZE, n * PAGE_SIZE, RW, MAP_SHARED | MAP_FIXED,
                           fd, pg * PAGE_SIZE)
                else:
                    p.mmap(BASE + pg * PAGE_SIZE, n * PAGE_SIZE, RW, ANON | MAP_FIXED)
                for k in range(pg, pg + n):
                    r[k] = file_data.get(k, 0) if shared else 0
                    if shared:
                        sh.add(k)
                    else:
                        sh.discard(k)
            elif kind == "dontneed":
                pg = op[2]
                if r[pg] is None:
                    continue
                p.madvise(BASE + pg * PAGE_SIZE, PAGE_SIZE, MADV_DONTNEED)
                if pg not in sh:
                    r[pg] = 0
            elif kind == "exit" and len(procs) > 1:
                j = op[1] % len(procs)
                if j == 0:
                    continue
                procs.pop(j).exit()
                ref.pop(j)
                shared_pages.pop(j)
            check_accounting(procs)
        for p in procs:
            p.exit()
        check_accounting([])
        mapping = s.files["shared"].f_mapping
        assert all(f.mapping is mapping for f in mem_state().live.values()), "a folio leaked"
        assert len(mem_state().live) == len(mapping.i_pages)

    run1(program)


@settings(max_examples=60, deadline=None)
@given(OPS)
def test_refcounts_match_mappings_and_nothing_leaks(ops: list[tuple[Any, ...]]) -> None:
    _run(ops)

"""DPOR on the benchmarks of Flanagan & Godefroid (POPL 2005): one complete
execution per Mazurkiewicz trace.

Traces are counted three independent ways: canonicalising every naive
interleaving (``naive_traces``), enumerating lexicographic normal forms
(``lnf_traces``, no WAITs) and sleep sets without DPOR
(``sleep_set_traces``). The first is the reference; the other two reach
larger sizes and are themselves checked against it here and in the
property tests.
"""

from __future__ import annotations

import pytest
from enginekit import (
    Hook,
    Program,
    filesystem,
    indexer,
    lnf_traces,
    naive_traces,
    sleep_set_traces,
)

from mmrace.engine import explore


def _dpor(program: Program) -> tuple[int, int]:
    res = explore(program, strategy="dpor")
    assert res.complete and res.violation is None, res.violation
    return res.executions, res.blocked


# (threads, table size, messages per thread) -> traces
INDEXER_SMALL = {
    (2, 4, 2): 3,
    (3, 4, 1): 1,
    (3, 6, 2): 20,
    (4, 8, 2): 8,
    (4, 128, 2): 1,
}


@pytest.mark.parametrize(("threads", "size", "messages"), sorted(INDEXER_SMALL))
def test_indexer_small_tables(threads: int, size: int, messages: int) -> None:
    def factory(hook: Hook = None) -> Program:
        return indexer(threads, hook, size, messages)

    want = INDEXER_SMALL[threads, size, messages]
    executions, _ = _dpor(factory())
    assert executions == want
    assert lnf_traces(factory())[0] == want
    assert sleep_set_traces(factory())[0] == want
    if threads * messages <= 6:
        naive, traces, complete = naive_traces(factory)
        assert complete and traces == want
        assert executions <= naive


@pytest.mark.parametrize(("threads", "want"), [(1, 1), (4, 1), (11, 1), (12, 8), (13, 64)])
def test_indexer_paper_sizes(threads: int, want: int) -> None:
    """Table of 128 entries, 4 messages: no hash collision below 12 threads,
    then 8 and 64 traces for 12 and 13 threads (as DPOR finds in the paper,
    and as source-DPOR reports)."""
    executions, blocked = _dpor(indexer(threads))
    assert executions == want
    assert blocked == 0


@pytest.mark.slow
def test_indexer_three_threads_naive() -> None:
    naive, traces, complete = naive_traces(lambda h: indexer(3, h))
    assert complete and naive == 34650 and traces == 1  # 12! / (4!)^3 interleavings
    assert _dpor(indexer(3)) == (1, 0)


@pytest.mark.slow
def test_indexer_fourteen_threads() -> None:
    assert _dpor(indexer(14))[0] == 512


# (threads, inodes, blocks) -> traces. With the hand-off lock each contended
# critical section gives 4 traces, not 2: the second thread either finds the
# lock held (queues, and is handed it) or finds it free.
FILESYSTEM_SMALL = {
    (2, 1, 26): 4,
    (2, 2, 2): 4,
    (3, 1, 26): 30,
    (3, 2, 2): 16,
    (3, 3, 4): 4,
    (4, 2, 2): 64,
}


@pytest.mark.parametrize(("threads", "inodes", "blocks"), sorted(FILESYSTEM_SMALL))
def test_filesystem_small(threads: int, inodes: int, blocks: int) -> None:
    def factory(hook: Hook = None) -> Program:
        return filesystem(threads, hook, inodes, blocks)

    want = FILESYSTEM_SMALL[threads, inodes, blocks]
    executions, _ = _dpor(factory())
    assert executions == want
    assert sleep_set_traces(factory())[0] == want
    if (threads, inodes) in ((2, 1), (2, 2), (3, 1)):
        naive, traces, complete = naive_traces(factory)
        assert complete and traces == want
        assert executions <= naive


@pytest.mark.slow
def test_filesystem_two_threads_paper_size_naive() -> None:
    naive, traces, complete = naive_traces(lambda h: filesystem(2, h))
    assert complete and naive == 12870 and traces == 1  # 16! / (8!)^2
    assert _dpor(filesystem(2)) == (1, 0)


@pytest.mark.parametrize(("threads", "want"), [(13, 1), (14, 4), (15, 16), (16, 64)])
def test_filesystem_paper_sizes(threads: int, want: int) -> None:
    """32 inodes, 26 blocks: no conflict below 14 threads; each extra thread
    adds one contended block (4 traces each with this lock, see above)."""
    executions, blocked = _dpor(filesystem(threads))
    assert executions == want
    assert blocked == 0


@pytest.mark.slow
def test_filesystem_four_threads_sleep_sets() -> None:
    assert sleep_set_traces(filesystem(4, None, 4, 4))[0] == _dpor(filesystem(4, None, 4, 4))[0]

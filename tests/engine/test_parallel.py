"""One exploration over many workers: the serial search's result, exactly.

The split is exercised deterministically in-process (``InlinePool`` with
several slots and one execution per slice: a split after every execution),
and for real with forked local workers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from enginekit import Spec, abba, filesystem, indexer, lost_update, spec_program
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_properties import KINDS, specs

from mmrace.engine import Result, explore, frontier
from mmrace.engine.explore import make_strategy, prepare_run, result_of, run_unit
from mmrace.engine.frontier import CheckpointError
from mmrace.engine.parallel import drive
from mmrace.engine.pools import InlinePool
from mmrace.engine.units import CallableSource, Settings


def split(program: Any, strategy: str = "dpor", bound: int | None = None, slots: int = 3,
          per_slice: int = 1) -> Result:
    """Explore through the coordinator with *slots* in-process workers and
    *per_slice* executions per slice (so: many splits)."""
    strat = make_strategy(strategy, bound, None, 0)
    sets = Settings(strat.reduce, strat.bound, 20_000,  # type: ignore[attr-defined]
                    quick_pass=True)  # as explore() has it
    src = CallableSource(program)
    run = prepare_run(src, strategy, sets, "")
    drive([run], InlinePool(slots), run_unit, slice_executions=per_slice)
    assert run.outcome is not None
    return result_of(run.outcome, src, strat.name, max_steps=20_000, shrink=True,
                     token_context="", workers=slots)


def figures(r: Result) -> tuple[Any, ...]:
    return (r.outcome, r.executions, r.blocked, r.steps, r.token)


@pytest.mark.parametrize(
    ("name", "program", "strategy", "bound"),
    [
        ("indexer(13)", indexer(13), "dpor", None),
        ("filesystem(16)", filesystem(16), "dpor", None),
        ("lost_update(3)", lost_update(threads=3), "dpor", None),
        ("abba", abba(), "dpor", None),
        ("lost_update(4) counted", lost_update(threads=4, check=False), "dpor", None),
        ("lost_update(4) K=1", lost_update(threads=4, check=False), "bounded", 1),
        ("indexer(3, 6, 2) K=2", indexer(3, None, 6, 2), "bounded", 2),
        ("naive", lost_update(threads=3, check=False), "naive", None),
    ],
)
def test_split_search_is_the_serial_search(name: str, program: Any, strategy: str,
                                           bound: int | None) -> None:
    serial = explore(program, strategy=strategy, preemption_bound=bound)
    for slots in (2, 4):
        par = split(program, strategy, bound, slots)
        assert figures(par) == figures(serial), (name, slots)
        assert par.extra["splits"] > 0 or serial.executions <= 2


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs(max_events=10, max_threads=3, kinds=(*KINDS, "cs")), st.sampled_from([None, 1, 2]))
def test_split_matches_serial_on_random_programs(spec: Spec, bound: int | None) -> None:
    strategy = "dpor" if bound is None else "bounded"
    states_s: list[Any] = []
    states_p: list[Any] = []
    serial = explore(spec_program(spec, states_s), strategy=strategy, preemption_bound=bound)
    par = split(spec_program(spec, states_p), strategy, bound, slots=3)
    assert figures(par) == figures(serial)
    assert sorted(map(repr, states_p)) == sorted(map(repr, states_s))


def test_violation_reported_is_the_first_in_search_order() -> None:
    """Workers explore later branches at the same time; the violation they
    may find there first is not the one reported."""
    serial = explore(lost_update(threads=4), strategy="dpor")
    assert serial.violation is not None
    par = split(lost_update(threads=4), slots=4)
    assert figures(par) == figures(serial)
    assert par.extra["discarded_executions"] >= 0


@pytest.mark.parametrize("workers", [2, 3])
def test_local_workers_give_the_serial_result(workers: int) -> None:
    for program in (filesystem(16), lost_update(threads=4, check=False), abba()):
        serial = explore(program)
        par = explore(program, workers=workers)
        assert figures(par) == figures(serial)
        assert par.extra["workers"] == workers


# --- checkpoints ------------------------------------------------------------------


def _stop_after(polls: int) -> Any:
    count = [0]

    def should_stop() -> bool:
        count[0] += 1
        return count[0] > polls

    return should_stop


@pytest.fixture
def tiny_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Units report after every execution (so a stop comes between two)."""
    import mmrace.engine.parallel as par

    monkeypatch.setattr(par, "LONG_SLICE", 0.0)
    monkeypatch.setattr(par, "SHORT_SLICE", 0.0)


@pytest.mark.usefixtures("tiny_slices")
@pytest.mark.parametrize("strategy", ["dpor", "bounded"])
def test_interrupted_exploration_resumes_to_the_same_result(tmp_path: Any, strategy: str
                                                            ) -> None:
    program = lost_update(threads=4, check=False)
    whole = explore(program, strategy=strategy)
    path = str(tmp_path / "ck.json")
    first = explore(program, strategy=strategy, checkpoint=path, should_stop=_stop_after(2))
    assert first.interrupted and not first.complete and first.outcome == "interrupted"
    assert 0 < first.executions < whole.executions
    data = json.loads((tmp_path / "ck.json").read_text())
    assert data["format"] == "mmrace-checkpoint" and data["version"] == frontier.VERSION
    again = explore(program, strategy=strategy, resume=path, workers=2)
    assert figures(again) == figures(whole)


def test_checkpoint_of_a_finished_exploration_gives_its_result(tmp_path: Any) -> None:
    path = str(tmp_path / "ck.json")
    first = explore(lost_update(threads=3), checkpoint=path)
    assert first.violation is not None
    again = explore(lost_update(threads=3), resume=path)
    assert figures(again) == figures(first)


def test_checkpoint_for_something_else_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "ck.json"
    explore(lost_update(threads=3, check=False), checkpoint=str(path), token_context="a/b")
    with pytest.raises(CheckpointError, match=r"checkpoint of .* not of"):
        explore(lost_update(threads=3, check=False), resume=str(path), token_context="a/c")
    with pytest.raises(CheckpointError, match="explored with dpor"):
        explore(lost_update(threads=3, check=False), strategy="bounded", resume=str(path),
                token_context="a/b")
    data = json.loads(path.read_text())
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="format 99"):
        explore(lost_update(threads=3, check=False), resume=str(path), token_context="a/b")
    data["version"] = frontier.VERSION
    data["mmrace"] = "0.0.1"
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"written by mmrace 0\.0\.1"):
        explore(lost_update(threads=3, check=False), resume=str(path), token_context="a/b")
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not an mmrace checkpoint"):
        explore(lost_update(threads=3, check=False), resume=str(path))
    with pytest.raises(CheckpointError, match="cannot read"):
        explore(lost_update(threads=3, check=False), resume=str(tmp_path / "missing.json"))


def test_workers_apply_to_exhaustive_strategies_only() -> None:
    with pytest.raises(ValueError, match="not to random"):
        explore(lost_update(), strategy="random", workers=2)
    with pytest.raises(ValueError, match="at least 1"):
        explore(lost_update(), workers=0)


# --- Dask ---------------------------------------------------------------------------


def test_dask_cluster_gives_the_serial_result() -> None:
    distributed = pytest.importorskip("distributed")
    from mmrace.engine.pools import DaskPool

    program = filesystem(16)
    serial = explore(program)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        pool = DaskPool(client)
        assert pool.slots == 2
        par = explore(program, pool=pool)
        bad = explore(lost_update(threads=3), pool=pool)
    assert figures(par) == figures(serial)
    assert figures(bad) == figures(explore(lost_update(threads=3)))


def test_unreachable_dask_scheduler_is_one_error() -> None:
    pytest.importorskip("distributed")
    from mmrace.engine.pools import DaskPool
    from mmrace.engine.units import PoolError

    with pytest.raises(PoolError, match="cannot reach the Dask scheduler"):
        DaskPool("tcp://127.0.0.1:9", timeout=1.0)


def test_a_shared_pool_never_runs_the_wrong_program() -> None:
    """Workers forked before a callable was given do not have it: a clear
    error, not another program of the same name."""
    from mmrace.engine.pools import LocalPool
    from mmrace.engine.units import PoolError

    pool = LocalPool(2)
    try:
        first = explore(filesystem(16), pool=pool)
        assert first.complete and pool.started >= 1
        with pytest.raises(PoolError, match="not available in this worker"):
            explore(filesystem(4), pool=pool)
    finally:
        pool.close()


def _choosing(fail: bool) -> Any:
    """Data choices in set-up and in threads, and a lock (WAIT)."""
    from enginekit import Lock

    from mmrace.engine import Var, choose, require, spawn

    def program() -> None:
        c = choose(3, "set-up choice")
        x = Var(0, name="x")
        y = Var(0, name="y")
        lock = Lock("L")

        def t() -> None:
            lock.acquire()
            x.store(c)
            lock.release()
            d = choose(2, "thread choice")
            y.store(d)
            require(not (fail and c == 2 and d == 1 and x.value == 2), "c=2, d=1")

        def u() -> None:
            lock.acquire()
            x.store(9)
            lock.release()
            y.load()

        spawn(t, name="t")
        spawn(u, name="u")

    return program


@pytest.mark.parametrize("fail", [False, True])
@pytest.mark.parametrize("bound", [None, 1])
def test_split_with_data_choices_and_locks(fail: bool, bound: int | None) -> None:
    strategy = "dpor" if bound is None else "bounded"
    serial = explore(_choosing(fail), strategy=strategy, preemption_bound=bound)
    for slots in (2, 3):
        assert figures(split(_choosing(fail), strategy, bound, slots)) == figures(serial)


@pytest.mark.parametrize("kept", [1, 8])
def test_workers_set_up_snapshots_change_nothing(monkeypatch: pytest.MonkeyPatch,
                                                 kept: int) -> None:
    """Two explorations share the workers; each worker saves a set-up
    snapshot per exploration (after two executions here), and with room
    for one only, they evict each other at every slice: the figures are
    the serial ones either way."""
    import mmrace.engine.units as units

    monkeypatch.setattr(units, "SETUPS_KEPT", kept)
    made = [0]

    class Counted(units.SetupCache):
        def __init__(self, *args: Any, **kw: Any) -> None:
            made[0] += 1
            super().__init__(*args, **kw)

    monkeypatch.setattr(units, "SetupCache", Counted)
    programs = [filesystem(16), lost_update(threads=3, check=False)]
    serial = [explore(p, setup_snapshot=None) for p in programs]
    runs = []
    sources = []
    for p in programs:
        src = CallableSource(p)
        sources.append(src)
        runs.append(prepare_run(src, "dpor", Settings(True, None, 20_000, setup_snapshot=2),
                                ""))
    drive(runs, InlinePool(2), run_unit, slice_executions=3)
    for run, src, want in zip(runs, sources, serial, strict=True):
        assert run.outcome is not None
        got = result_of(run.outcome, src, "dpor", max_steps=20_000, shrink=True,
                        token_context="", workers=2)
        assert figures(got) == figures(want)
        if kept == 8:
            assert got.extra["setup_snapshot"] == "used"
        src.release()
    # one per exploration, or rebuilt after every eviction
    assert made[0] == 2 if kept == 8 else made[0] > 2, made

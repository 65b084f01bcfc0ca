"""The mmrace pytest plugin (registered through the ``pytest11`` entry
point, so installing mmrace enables it).

A test module declares scenarios the way the catalog does, under a name
pytest collects (``test_*`` by default)::

    import mmrace

    @mmrace.scenario(name="my-race", summary="...", base=mmrace.Kernel(release="5.10"),
                     fixes=("soft-dirty-tlb-flush",), expect={...})
    def test_my_race(kernel):
        s = kernel.system(cpus=3)
        ...

and pytest runs every variant (``test_my_race[current]``,
``test_my_race[base]``, ...) as one test item that passes when the
exploration's outcome is the expected one. A failing item shows the
verdict, the violation's trace in per-CPU columns and its replay token,
not a Python traceback. A clean expectation is met only by a *complete*
exploration: an item whose search ran out of budget fails.

Options: ``--mmrace-budget N`` (at most N executions per variant) or
``--mmrace-budget 30s`` (seconds), overriding each scenario's own bound;
``--mmrace-jobs N`` explores the collected variants in N worker processes
(forked, so scenarios defined in test modules need no import path).

The ``mmrace`` fixture does the same from a plain test function:
``mmrace.check(scenario, variant=None)`` asserts every (or one) variant's
outcome; ``mmrace.explore(program, **kw)`` runs the engine under the budget
and returns the :class:`~mmrace.engine.Result`.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from mmrace.engine import Result
    from mmrace.scenarios.api import Explore, Scenario, Variant
    from mmrace.scenarios.run import VariantRun

# The model is imported only once a test module has a scenario (or uses the
# fixture): pytest loads this plugin in every run of an environment where
# mmrace is installed, and the model costs about 0.3 s to import.


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mmrace", "mmrace scenario explorations")
    group.addoption("--mmrace-budget", default=None, metavar="N|Ns",
                    help="at most N executions (or N seconds, with an s) per variant")
    group.addoption("--mmrace-jobs", default="1", metavar="N",
                    help="explore the collected variants in N worker processes")


def _budget(config: pytest.Config) -> tuple[int | None, float | None]:
    text = config.getoption("--mmrace-budget")
    if text is None:
        return None, None
    try:
        if text.endswith("s"):
            seconds = float(text[:-1])
            if not 0 < seconds < float("inf"):
                raise ValueError
            return None, seconds
        executions = int(text)
        if executions <= 0:
            raise ValueError
        return executions, None
    except ValueError:
        raise pytest.UsageError(f"--mmrace-budget: expected N executions or Ns seconds "
                                f"(> 0), got {text!r}") from None


def _jobs(config: pytest.Config) -> int:
    text = config.getoption("--mmrace-jobs")
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs <= 0:
        raise pytest.UsageError(f"--mmrace-jobs: expected a number > 0, got {text!r}")
    return jobs


def pytest_configure(config: pytest.Config) -> None:
    _budget(config)
    _jobs(config)


def settings_for(sc: Scenario, config: pytest.Config) -> Explore:
    """The scenario's exploration settings under ``--mmrace-budget``."""
    executions, seconds = _budget(config)
    st = sc.explore
    if executions is not None:
        st = replace(st, max_executions=executions)
    if seconds is not None:
        st = replace(st, max_seconds=seconds)
    return st


def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object
                              ) -> list[pytest.Item] | None:
    """A Scenario under a test name: one item per variant, named like a
    parametrized test (``test_my_race[base+soft-dirty-tlb-flush]``)."""
    api = sys.modules.get("mmrace.scenarios.api")  # no Scenario exists before it is loaded
    if api is not None and isinstance(obj, api.Scenario) \
            and isinstance(collector, pytest.Module | pytest.Class) \
            and collector.funcnamefilter(name):
        return [VariantItem.from_parent(collector, name=f"{name}[{v.name}]", scenario=obj,
                                        variant=v)
                for v in obj.variants()]
    return None


class VariantFailure(Exception):
    """An unexpected outcome; its text is the whole report."""


class VariantItem(pytest.Item):
    """One variant of a scenario, passing when its outcome is the expected one."""

    def __init__(self, *, scenario: Scenario, variant: Variant, **kw: Any) -> None:
        super().__init__(**kw)
        self.scenario = scenario
        self.variant = variant

    def runtest(self) -> None:
        run = _pool(self.config).result_for(self)
        if not run.ok:
            raise VariantFailure(failure_report(self.scenario, self.variant, run))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, VariantFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"mmrace scenario {self.scenario.name} / {self.variant.name}"


def failure_report(sc: Scenario, variant: Variant, run: VariantRun) -> str:
    """What a failing variant prints: the verdict, then the trace and token
    (re-rendered from the token, as ``mmrace replay`` would)."""
    from mmrace.report.explain import render_explained
    from mmrace.scenarios.run import replay_token

    r = run.result
    search = ("found a violation" if r.violation is not None
              else "complete" if r.complete else "ran out of budget without completing")
    lines = [f"{sc.name} / {variant.name} ({variant.kernel.describe()}): expected "
             f"{variant.expected}, got {run.outcome}",
             f"{r.executions:,} executions, {search}, {r.seconds:.1f}s ({run.settings})"]
    if r.violation is not None and r.token:
        _sc, _variant, replayed = replay_token(r.token, lambda name: sc)
        lines += ["", render_explained(replayed)]
    elif not r.complete:
        lines.append("a clean outcome needs a complete exploration: raise --mmrace-budget "
                     "or the scenario's bound")
    return "\n".join(lines)


# --- running variants, here or in worker processes ------------------------------------------

_POOL_KEY = pytest.StashKey["_Pool"]()
# The items to run in workers; forked workers read them from here.
_work: list[tuple[Scenario, Variant, Explore]] = []


class _Pool:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.jobs = _jobs(config)
        self.results: dict[str, VariantRun] = {}
        self.started = False

    def result_for(self, item: VariantItem) -> VariantRun:
        if item.nodeid in self.results:
            return self.results.pop(item.nodeid)
        if self.jobs > 1 and not self.started:
            self.started = True
            self._run_all(item.session)
            if item.nodeid in self.results:
                return self.results.pop(item.nodeid)
        from mmrace.scenarios.run import run_variant

        return run_variant(item.scenario, item.variant,
                           settings=settings_for(item.scenario, self.config))

    def _run_all(self, session: pytest.Session) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        items = [i for i in session.items if isinstance(i, VariantItem)]
        _work[:] = [(i.scenario, i.variant, settings_for(i.scenario, self.config))
                    for i in items]
        ctx = multiprocessing.get_context("fork")
        workers = min(self.jobs, len(items))
        try:
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                for item, run in zip(items, pool.map(_run_in_worker, range(len(items))),
                                     strict=True):
                    self.results[item.nodeid] = run
        finally:
            _work.clear()


def _run_in_worker(index: int) -> VariantRun:
    from mmrace.scenarios.run import run_variant

    sc, variant, settings = _work[index]
    run = run_variant(sc, variant, settings=settings)
    if run.result.violation is not None:
        # Model objects do not cross processes; the token re-renders the trace.
        run.result.violation.trace = []
    return run


def _pool(config: pytest.Config) -> _Pool:
    pool = config.stash.get(_POOL_KEY, None)
    if pool is None:
        pool = config.stash[_POOL_KEY] = _Pool(config)
    return pool


# --- the fixture ------------------------------------------------------------------------------


class MmraceFixture:
    """What the ``mmrace`` fixture gives a test function."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def explore(self, program: Any, **kw: Any) -> Result:
        """``mmrace.engine.explore`` under ``--mmrace-budget``."""
        from mmrace.engine import explore

        executions, seconds = _budget(self.config)
        if executions is not None:
            kw.setdefault("max_executions", executions)
        if seconds is not None:
            kw.setdefault("max_seconds", seconds)
        return explore(program, **kw)

    def check(self, sc: Scenario, variant: str | None = None) -> list[VariantRun]:
        """Explore every variant of *sc* (or the one named *variant*); fail
        the test, with the trace, at the first unexpected outcome."""
        from mmrace.scenarios.run import run_variant

        variants = [sc.variant(variant)] if variant is not None else sc.variants()
        runs = []
        for v in variants:
            run = run_variant(sc, v, settings=settings_for(sc, self.config))
            if not run.ok:
                pytest.fail(failure_report(sc, v, run), pytrace=False)
            runs.append(run)
        return runs


@pytest.fixture
def mmrace(request: pytest.FixtureRequest) -> MmraceFixture:
    """Explore programs and scenarios from a test (see the module docstring)."""
    return MmraceFixture(request.config)

"""mmrace: an executable model of Linux memory-management concurrency and a
systematic explorer that runs it.

``mmrace.scenario``, ``mmrace.Kernel``, ``mmrace.Explore`` and
``mmrace.Scenario`` are the scenario API (:mod:`mmrace.scenarios.api`),
loaded on first use so that ``import mmrace.engine`` stays light.
"""

from typing import Any

__version__ = "0.1.0"

_SCENARIO_API = ("Explore", "Kernel", "Scenario", "scenario")


def __getattr__(name: str) -> Any:
    if name in _SCENARIO_API:
        from mmrace.scenarios import api

        return getattr(api, name)
    raise AttributeError(f"module 'mmrace' has no attribute {name!r}")

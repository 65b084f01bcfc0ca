"""The engine: simulated threads, visible operations, and the explorer.

Nothing in this package knows about memory management.
"""

from mmrace.engine.core import (
    READ,
    RMW,
    WAIT,
    WRITE,
    Event,
    Execution,
    SharedObject,
    SimThread,
    ViolationError,
    add_thread_describer,
    choose,
    current_execution,
    current_thread,
    dependent,
    execution_local,
    exploration_local,
    in_execution,
    kind_name,
    register_kind,
    require,
    spawn,
    visible,
)
from mmrace.engine.explore import (
    STRATEGIES,
    ProgressInfo,
    Result,
    Violation,
    explore,
    replay,
)
from mmrace.engine.token import TokenError
from mmrace.engine.var import Var

__all__ = [
    "READ",
    "RMW",
    "STRATEGIES",
    "WAIT",
    "WRITE",
    "Event",
    "Execution",
    "ProgressInfo",
    "Result",
    "SharedObject",
    "SimThread",
    "TokenError",
    "Var",
    "Violation",
    "ViolationError",
    "add_thread_describer",
    "choose",
    "current_execution",
    "current_thread",
    "dependent",
    "execution_local",
    "exploration_local",
    "explore",
    "in_execution",
    "kind_name",
    "register_kind",
    "replay",
    "require",
    "spawn",
    "visible",
]

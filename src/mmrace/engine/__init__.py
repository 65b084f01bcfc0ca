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
    add_thread_exit_check,
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
    reset_standalone,
    spawn,
    visible,
)
from mmrace.engine.explore import (
    STRATEGIES,
    Result,
    Violation,
    explore,
    replay,
)
from mmrace.engine.progress import ProgressInfo
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
    "add_thread_exit_check",
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
    "reset_standalone",
    "spawn",
    "visible",
]

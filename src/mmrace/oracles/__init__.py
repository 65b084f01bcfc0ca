"""The checks that turn an execution into violations.

Importing this package subscribes the memory oracles
(:mod:`mmrace.oracles.memory`: lost write, use-after-free through a stale
TLB entry) and the userfaultfd monitor-view oracle
(:mod:`mmrace.oracles.userfaultfd`, ``uffd-view``, which a scenario turns on
per descriptor with ``uffd.expect_consistent_view()``) to the machine's
hooks; *wrong data* is a scenario's final check failing (:func:`wrong_data`).
"""

from mmrace.oracles import userfaultfd as _userfaultfd
from mmrace.oracles.memory import MemoryOracle, install, memory_oracle, wrong_data

install()
_userfaultfd.install()

__all__ = ["MemoryOracle", "install", "memory_oracle", "wrong_data"]

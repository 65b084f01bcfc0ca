"""The checks that turn an execution into violations.

A :class:`mmrace.user.System` installs the oracles itself
(:func:`install_oracles`, called by its constructor): no import has to be
remembered, and a program that builds a ``System`` is always checked. A
user switches one off by name, ``System(..., oracles_off=("lost-write",))``;
the names are :data:`ORACLES`. The oracles: the memory ones
(:mod:`mmrace.oracles.memory`: lost write, use-after-free through a stale
TLB entry), the userfaultfd monitor-view oracle
(:mod:`mmrace.oracles.userfaultfd`, ``uffd-view``, which a scenario turns on
per descriptor with ``uffd.expect_consistent_view()``) and the rmap
consistency check (:mod:`mmrace.oracles.rmap`, ``rmap``, a scenario's final
check). *wrong data* is a scenario's final check failing
(:func:`wrong_data`).
"""

from mmrace.oracles import userfaultfd as _userfaultfd
from mmrace.oracles.memory import MemoryOracle, install, memory_oracle, wrong_data
from mmrace.oracles.names import ORACLES, oracle_names


def install_oracles() -> None:
    """Subscribe every oracle to the machine's hooks (idempotent). The
    hooks are process-wide; whether an oracle reports is decided per
    address space, from the ``oracles_off`` its ``System`` was given
    (``MmStruct.oracles_off``)."""
    install()
    _userfaultfd.install()


__all__ = [
    "ORACLES",
    "MemoryOracle",
    "install",
    "install_oracles",
    "memory_oracle",
    "oracle_names",
    "wrong_data",
]

"""What several benchmarks share: counting the visible operations a kernel
path costs. Imported as ``benchkit`` (``python bench/X.py`` puts this
directory on the path)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.engine import explore, spawn


def ops(setup: Callable[[], Any], body: Callable[[Any], None]) -> int:
    """Visible operations of ``body(setup())`` in one simulated thread (set-up
    is free: the same program without the body is subtracted)."""

    def program(run: bool) -> Callable[[], None]:
        def prog() -> None:
            state = setup()

            def thread() -> None:
                if run:
                    body(state)

            spawn(thread, name="t")

        return prog

    with_body = explore(program(True), max_executions=1, shrink=False)
    assert with_body.violation is None, with_body.violation.message
    without = explore(program(False), max_executions=1, shrink=False)
    return with_body.steps - without.steps

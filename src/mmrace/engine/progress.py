"""What a long exploration reports about itself while it runs, serial or
split over workers (``explore(..., progress_info=...)``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressInfo:
    """An exploration's figures so far, about twice a second."""

    executions: int
    seconds: float
    depth: int  # decision points (more than one option) of the latest execution
    steps: int  # visible operations run so far, over all executions

    @property
    def rate(self) -> float:
        """Executions per second."""
        return self.executions / self.seconds if self.seconds > 0 else 0.0


ProgressDetail = Callable[[ProgressInfo], None]

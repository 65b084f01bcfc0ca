"""Ctrl-C and SIGTERM as a request to stop, polled between executions.

An exploration cannot be stopped in the middle of an execution (the
simulated threads are greenlets inside model code), so the signals only set
a flag that the explorer polls between executions and the parallel driver
between slices: the run stops within a second, keeps what it found, and can
save a checkpoint. A second Ctrl-C raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


class StopRequest:
    """While entered (in the main thread), SIGINT and SIGTERM set
    :attr:`requested` instead of killing the process; calling the object
    returns it (a ``should_stop`` callback)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

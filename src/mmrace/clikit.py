"""What the ``mmrace`` command needs around its commands: output any
terminal can take, error lines that stay one line, bounded argument types,
and progress that works without a terminal.

Kept apart from :mod:`mmrace.cli` (which parses and dispatches) so that the
command's behaviour toward bad input can be read in one place.
"""

from __future__ import annotations

import argparse
import codecs
import io
import math
import sys
from collections.abc import Callable
from typing import Any, TextIO

from mmrace.engine import ProgressInfo

# --- output any terminal can take ------------------------------------------------------

# Written as escapes: the point is that these characters may not print.
_ASCII = {"\u2026": "...", "\u2013": "-", "\u2014": "--", "\u2192": "->", "\u2190": "<-",
          "\u00d7": "x", "\u2264": "<=", "\u2265": ">=", "\u00b7": ".", "\u201c": '"',
          "\u201d": '"', "\u2018": "'", "\u2019": "'"}
_HANDLER = "mmrace-ascii"


def _ascii_fallback(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    text = err.object[err.start:err.end]
    return "".join(_ASCII.get(c, "?") for c in text), err.end


codecs.register_error(_HANDLER, _ascii_fallback)


def _can_encode(stream: TextIO, text: str) -> bool:
    try:
        text.encode(stream.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def ascii_fallback_streams() -> Callable[[], None]:
    """Let stdout and stderr print the traces' "…" (and the few other
    non-ASCII characters mmrace uses) on a stream whose encoding cannot:
    they become "...", and anything else unencodable "?". Returns a
    function that restores the streams' error handling."""
    undo: list[tuple[io.TextIOWrapper, str]] = []
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and not _can_encode(stream, "\u2026"):
            undo.append((stream, stream.errors or "strict"))
            stream.reconfigure(errors=_HANDLER)

    def restore() -> None:
        for stream, errors in undo:
            try:
                stream.reconfigure(errors=errors)
            except (ValueError, OSError):
                pass

    return restore


MAX_ERROR = 400


def one_line(message: str) -> str:
    """An error message as one line of bounded length: user input quoted
    into it (a path with a newline, a 5,000-character token) cannot split
    or flood it."""
    text = message.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."


# --- argument types --------------------------------------------------------------------


def _int(text: str) -> int:
    digits = text.strip().lstrip("+-")
    if len(digits) > 100:
        raise argparse.ArgumentTypeError(f"not a sensible integer ({len(digits)} digits)")
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text[:40]!r}") from None


def nonneg_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def int_between(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}: {text}")
        return value

    parse.__name__ = "integer"
    return parse


def positive_seconds(text: str) -> float:
    """A time budget: a finite number > 0 (nan and inf would never end a
    ``random`` exploration)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text[:40]!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds: {text}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


# --- options for running at scale (their meaning: mmrace.scenarios.scale) ------------

DEFAULT_CHECKPOINT_EVERY = 60.0


def add_scale_options(p: argparse.ArgumentParser, command: str) -> None:
    """Add the workers, Dask and checkpoint options of *command* (``explore``
    or ``check``)."""
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="worker processes for one exploration (default: the machine's cores)")
    if command == "check":
        p.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                       help="the same as --workers")
    p.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="run on the Dask cluster whose scheduler is at ADDRESS "
                        "(tcp://host:8786; needs mmrace[dask])")
    if command == "explore":
        p.add_argument("--checkpoint", default=None, metavar="FILE",
                       help="save the frontier to FILE now and then, and when stopped")
        p.add_argument("--resume", default=None, metavar="FILE",
                       help="continue the exploration saved in FILE")
    else:
        p.add_argument("--save", default=None, metavar="FILE",
                       help="record decided variants (and frontiers of interrupted ones) in "
                            "FILE")
        p.add_argument("--resume", default=None, metavar="FILE",
                       help="skip the variants FILE records as decided, continue the "
                            "interrupted ones (and keep recording there)")
    p.add_argument("--checkpoint-every", type=positive_seconds,
                   default=DEFAULT_CHECKPOINT_EVERY, metavar="S",
                   help="seconds between checkpoints (default 60)")


# --- progress without a terminal -------------------------------------------------------

EXPLORE_EVERY = 5.0
"""Seconds between two progress lines of ``explore`` when stderr is not a terminal."""


def explore_progress(quiet: bool, stream: TextIO | None = None) -> Callable[[ProgressInfo],
                                                                             None] | None:
    """The progress reporter of ``explore``: on a terminal, one line kept up
    to date in place; otherwise a new line every :data:`EXPLORE_EVERY`
    seconds (a CI log, ``2> file``). None when *quiet*."""
    if quiet:
        return None
    out = stream or sys.stderr
    tty = out.isatty()
    last = [0.0]

    def show(p: ProgressInfo) -> None:
        text = (f"{p.executions:,} executions, {p.rate:,.0f}/s, depth {p.depth}, "
                f"{p.seconds:.0f}s")
        if tty:
            out.write(f"\r… {text}\033[K")
            out.flush()
        elif p.seconds - last[0] >= EXPLORE_EVERY:
            last[0] = p.seconds
            out.write(f"mmrace: {text}\n")
            out.flush()

    return show


def end_progress_line(stream: TextIO | None = None) -> None:
    """Clear the in-place progress line of a terminal before the result."""
    out = stream or sys.stderr
    if out.isatty():
        out.write("\r\033[K")
        out.flush()


def search_state(violation: bool, complete: bool, interrupted: bool = False) -> str:
    """How the search of one variant ended: ``complete`` (every schedule
    within the bound, none violating), ``found`` (stopped at the first
    violation: nothing further to search), ``interrupted`` (Ctrl-C),
    ``out of budget``."""
    if violation:
        return "found"
    if interrupted:
        return "interrupted"
    return "complete" if complete else "out of budget"


def check_line(done: int, total: int, run: Any) -> str:
    """One line per finished variant of ``check`` (stderr not a terminal)."""
    r = run.result
    if r.interrupted:
        verdict = "(not decided)"
    else:
        verdict = "as expected" if run.ok else f"UNEXPECTED (expected {run.expected})"
    search = search_state(r.violation is not None, r.complete, r.interrupted)
    line = (f"mmrace: [{done}/{total}] {run.scenario} {run.variant}: {run.outcome} {verdict} "
            f"({r.executions:,} executions, {search}, {r.seconds:.1f}s)")
    if r.token and r.violation is not None:
        line += f" token {r.token}"
    return line

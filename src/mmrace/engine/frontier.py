"""Checkpoints: an exploration's frontier in a file, to continue later.

A checkpoint is one JSON object::

    {"format": "mmrace-checkpoint", "version": 2, "mmrace": "0.1.0",
     "program": "...", "context": "...", "search": {...}, "seconds": 12.5,
     "frontier": {...}}

``program`` names what was explored (a scenario and variant, or a file and
function), ``context`` is the replay-token context (scenario/variant or the
ad-hoc kernel), ``search`` the strategy, preemption bound and step limit,
``frontier`` the coordinator's tree (:meth:`Exploration.dump`: which pass
of a bounded search it is in, shared nodes,
every unfinished unit's search state, the backtrack records not merged yet,
the figures so far). The tree of a search depends on the model code, so a
checkpoint is only read by the mmrace version that wrote it, for the same
program, variant and search; anything else is a :class:`CheckpointError`
(one line).

Files are written to a temporary name and renamed: an interrupted write
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mmrace import __version__
from mmrace.engine.parallel import Exploration
from mmrace.engine.units import Settings

FORMAT = "mmrace-checkpoint"
VERSION = 2  # 2: a bounded search's quick pass (the search says if it has one)


class CheckpointError(Exception):
    """A checkpoint that cannot be used here: unreadable, from another
    version, or for another program, variant or search."""


def search_of(strategy: str, settings: Settings) -> dict[str, Any]:
    return {"strategy": strategy, "bound": settings.bound, "max_steps": settings.max_steps,
            "quick_pass": settings.has_quick_pass}


def dump(ex: Exploration, *, program: str, context: str, strategy: str,
         seconds: float) -> dict[str, Any]:
    """A checkpoint of *ex* as data."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "mmrace": __version__,
        "program": program,
        "context": context,
        "search": search_of(strategy, ex.settings),
        "seconds": round(seconds, 3),
        "frontier": ex.dump(),
    }


def write(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    """Write *data* to *path* atomically (temporary file, then rename)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, p)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint file (any mmrace JSON file: checked by :func:`check`)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)  # bytes: a binary file is "not JSON", not a crash
    except ValueError:
        raise CheckpointError(f"{path} is not an mmrace checkpoint (not JSON)") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not an mmrace checkpoint")
    return data


def check(data: dict[str, Any], *, where: str, program: str, context: str, strategy: str,
          settings: Settings) -> None:
    """Raise CheckpointError unless *data* is a checkpoint this mmrace can
    continue for this program, context and search."""
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not an mmrace checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"{where} is in checkpoint format {data.get('version')!r}; this mmrace reads "
            f"format {VERSION}"
        )
    if data.get("mmrace") != __version__:
        raise CheckpointError(
            f"{where} was written by mmrace {data.get('mmrace')}, this is {__version__}: "
            "the explored tree depends on the model, so it cannot be continued here"
        )
    if data.get("program") != program or data.get("context") != context:
        raise CheckpointError(
            f"{where} is a checkpoint of {data.get('program')} ({data.get('context')}), "
            f"not of {program} ({context})"
        )
    want = search_of(strategy, settings)
    if data.get("search") != want:
        got = data.get("search") or {}
        raise CheckpointError(
            f"{where} was explored with {_search_text(got)}, not {_search_text(want)}"
        )
    if not isinstance(data.get("frontier"), dict):
        raise CheckpointError(f"{where} is damaged (no frontier)")


def _search_text(s: dict[str, Any]) -> str:
    text = str(s.get("strategy"))
    if s.get("bound") is not None:
        text += f" K={s.get('bound')}"
        if not s.get("quick_pass"):
            text += " without its quick pass"
    return f"{text}, max {s.get('max_steps')} steps"


def load(data: dict[str, Any], ex_name: str, source: Any, settings: Settings) -> Exploration:
    """The exploration a checked checkpoint holds."""
    try:
        return Exploration(ex_name, source, settings, state=data["frontier"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"the checkpoint is damaged ({type(exc).__name__}: {exc})"
                              ) from None

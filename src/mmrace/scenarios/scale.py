"""What the command-line options for running at scale mean: workers, Dask,
checkpoints, saved check results. ``mmrace.clikit.add_scale_options`` adds
them to ``explore`` and ``check`` (with the command's argument types); this
module turns their values into what the explorer and the variant runner
take.

    explore ... [--workers N | --dask ADDRESS] [--checkpoint FILE]
                [--checkpoint-every S] [--resume FILE]
    check ...   [--workers N | --jobs N | --dask ADDRESS] [--save FILE]
                [--resume FILE] [--checkpoint-every S]

Bad combinations are :class:`ScaleError` (a usage error: one line, exit 2).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmrace.engine.explore import DFS_STRATEGIES
from mmrace.engine.frontier import CheckpointError
from mmrace.engine.pools import Pool, pool_for
from mmrace.engine.units import CallableSource, PoolError, Program
from mmrace.scenarios.api import Kernel
from mmrace.scenarios.run import CheckRecord, FileSource


class ScaleError(Exception):
    """A bad workers, Dask or checkpoint option."""


def workers_of(args: argparse.Namespace) -> int | None:
    jobs = getattr(args, "jobs", None)
    if jobs is not None and args.workers is not None and jobs != args.workers:
        raise ScaleError("--jobs and --workers say different things (they are the same option)")
    return args.workers if args.workers is not None else jobs


def pool_of(args: argparse.Namespace) -> Pool:
    """The workers a command asks for."""
    try:
        return pool_for(workers_of(args), args.dask)
    except PoolError as exc:
        raise ScaleError(str(exc)) from None


def explore_options(args: argparse.Namespace, strategy: str, program: Program, path: str,
                    func: str, kernel: Kernel | None) -> dict[str, Any]:
    """Keyword arguments for :func:`mmrace.engine.explore` running *program*
    (``FILE.py:FUNC``, on *kernel* if a scenario): the pool, the checkpoint
    options and how workers get the program (forked local workers inherit
    it; Dask workers rebuild it from the file's text). The caller closes
    ``pool``. Empty for a sampling strategy."""
    asked = args.workers is not None or args.dask is not None \
        or args.checkpoint is not None or args.resume is not None
    if strategy not in DFS_STRATEGIES:
        if asked:
            raise ScaleError(f"--workers, --dask, --checkpoint and --resume apply to "
                             f"{', '.join(DFS_STRATEGIES)}, not to {strategy}")
        return {}
    out: dict[str, Any] = {"checkpoint_every": args.checkpoint_every}
    pool = pool_of(args)
    out["pool"] = pool
    if args.checkpoint is not None:
        _writable(args.checkpoint)
        out["checkpoint"] = args.checkpoint
    if args.resume is not None:
        out["resume"] = args.resume
    if args.dask is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ScaleError(f"cannot read {path}: {exc.strerror or exc}") from None
        out["source"] = FileSource(path, text, func, kernel)
    else:
        out["source"] = CallableSource(program, name=f"program {path}:{func}")
    return out


def check_record(args: argparse.Namespace) -> CheckRecord | None:
    """The record ``--save`` / ``--resume`` name (read if resuming)."""
    if args.resume is not None:
        try:
            record = CheckRecord.read(args.resume)
        except CheckpointError as exc:
            raise ScaleError(str(exc)) from None
        if args.save is not None:
            _writable(args.save)
            record.path = args.save
        return record
    if args.save is not None:
        _writable(args.save)
        return CheckRecord(args.save)
    return None


def _writable(path: str) -> None:
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise ScaleError(f"{path} is a directory")
    if not parent.is_dir():
        raise ScaleError(f"cannot write {path}: no directory {parent}")

"""The ``mmrace`` command."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import mmrace.oracles  # noqa: F401 - subscribes the memory oracles to the machine's hooks
from mmrace import __version__
from mmrace.engine import STRATEGIES, Result, TokenError, explore, replay
from mmrace.report.text import render_result


class UsageError(Exception):
    """A bad input from the user: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _load_program(spec: str) -> Callable[[], Any]:
    """Load ``FILE.py:FUNC`` as a program (a no-argument function)."""
    path_text, sep, func = spec.rpartition(":")
    if not sep or not path_text or not func:
        raise UsageError(f"expected FILE.py:FUNC, got {spec!r}")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"no such file: {path_text}")
    name = "mmrace_program_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"cannot load {path_text} as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise UsageError(f"cannot load {path_text}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, func, None)
    if fn is None:
        raise UsageError(f"{path_text} has no function {func!r}")
    if not callable(fn):
        raise UsageError(f"{path_text}:{func} is not callable")
    return fn  # type: ignore[no-any-return]


def _nonneg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="mmrace",
        description="Explore interleavings of Linux mm concurrency models.",
    )
    parser.add_argument("--version", action="version", version=f"mmrace {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    ex = sub.add_parser("explore", help="explore a program FILE.py:FUNC")
    ex.add_argument("program", help="FILE.py:FUNC, a function that builds threads")
    ex.add_argument("--strategy", choices=STRATEGIES, default=None)
    ex.add_argument("--executions", type=_nonneg, default=None, help="max executions")
    ex.add_argument("--preemptions", type=_nonneg, default=None, help="preemption bound K")
    ex.add_argument("--depth", type=_nonneg, default=3, help="PCT bug depth d")
    ex.add_argument("--seed", type=_nonneg, default=None)
    ex.add_argument("--token", default=None, help="replay this token")
    ex.add_argument("--seconds", type=_positive_float, default=None, help="time budget")
    ex.add_argument("--max-steps", type=_nonneg, default=None, help="steps per execution")
    ex.add_argument("--json", action="store_true", help="print one JSON object")
    ex.add_argument("--all-ops", action="store_true", help="show every operation")
    ex.add_argument("--no-shrink", action="store_true", help="report the violation as found")
    rules = sub.add_parser("rules", help="print the locking rule table")
    rules.add_argument("field", nargs="?", default=None, help="one field, e.g. vm_start")
    rules.add_argument("--json", action="store_true", help="print a JSON list")

    doc = sub.add_parser("doc", help="render the locking documentation as Markdown")
    doc.add_argument("-o", "--output", default=None, help="write to FILE instead of stdout")
    return parser


def _cmd_rules(args: argparse.Namespace) -> int:
    from mmrace.mm.rules import render_rules, rules_table

    table = rules_table()
    fields = [row["field"] for row in table]
    if args.field is not None and args.field not in fields:
        raise UsageError(f"no rule for field {args.field!r} (known: {', '.join(fields)})")
    if args.json:
        rows = [row for row in table if args.field is None or row["field"] == args.field]
        print(json.dumps(rows, indent=1))
    else:
        print(render_rules(args.field))
    return 0


def _cmd_doc(args: argparse.Namespace) -> int:
    from mmrace.mm.rules_doc import render_markdown

    text = render_markdown()
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text)
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
    return 0


def _progress_printer(enabled: bool) -> Callable[[int, float], None] | None:
    if not enabled:
        return None
    from rich.console import Console

    console = Console(stderr=True)

    def show(executions: int, seconds: float) -> None:
        rate = executions / seconds if seconds else 0.0
        console.print(
            f"[dim]… {executions} executions, {seconds:.0f}s, {rate:.0f}/s[/dim]",
            end="\r",
            highlight=False,
        )

    return show


def _cmd_explore(args: argparse.Namespace) -> int:
    program = _load_program(args.program)
    strategy = args.strategy or ("replay" if args.token else "dpor")
    kwargs: dict[str, Any] = {}
    if args.max_steps is not None:
        kwargs["max_steps"] = args.max_steps
    if strategy == "replay":
        if not args.token:
            raise UsageError("--strategy replay needs --token")
        try:
            result = replay(program, args.token, **kwargs)
        except TokenError as exc:
            raise UsageError(str(exc)) from None
    else:
        if args.token:
            raise UsageError("--token goes with --strategy replay")
        result = explore(
            program,
            strategy=strategy,
            max_executions=args.executions,
            preemption_bound=args.preemptions,
            seed=args.seed,
            max_seconds=args.seconds,
            depth=args.depth,
            shrink=not args.no_shrink,
            progress=_progress_printer(not args.json and sys.stderr.isatty()),
            **kwargs,
        )
    _print_result(result, as_json=args.json, all_ops=args.all_ops)
    return 1 if result.violation is not None else 0


def _print_result(result: Result, *, as_json: bool, all_ops: bool) -> None:
    if as_json:
        print(json.dumps(result.as_dict()))
    else:
        print(render_result(result, all_ops=all_ops))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if args.command == "explore":
            return _cmd_explore(args)
        if args.command == "rules":
            return _cmd_rules(args)
        if args.command == "doc":
            return _cmd_doc(args)
        raise UsageError(f"unknown command {args.command!r}")
    except UsageError as exc:
        print(f"mmrace: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmrace: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

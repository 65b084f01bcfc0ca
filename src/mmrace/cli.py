"""The ``mmrace`` command."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from mmrace import __version__
from mmrace.clikit import (
    add_scale_options,
    ascii_fallback_streams,
    check_line,
    end_progress_line,
    explore_progress,
    int_between,
    nonneg_int,
    one_line,
    positive_int,
    positive_seconds,
    search_state,
)
from mmrace.engine import STRATEGIES, Result, TokenError, explore, replay
from mmrace.engine.frontier import CheckpointError
from mmrace.engine.interrupt import StopRequest
from mmrace.engine.units import PoolError
from mmrace.fixes import FIXES, FixError, all_fixes, all_policies, parse_release
from mmrace.mm.rules import render_rules, rules_table
from mmrace.mm.rules_doc import render
from mmrace.report.explain import render_explained, trace_json
from mmrace.report.html import IndexRow, render_html, render_index
from mmrace.report.perfetto import perfetto_trace
from mmrace.report.text import render_result
from mmrace.scenarios import Explore, Kernel, Scenario, ScenarioError, all_scenarios, get, scale
from mmrace.scenarios.patch import patched
from mmrace.scenarios.run import VariantRun, replay_token, run_all, token_context


class UsageError(Exception):
    """A bad input from the user: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _load_program(spec: str) -> Any:
    """Load ``FILE.py:FUNC``: a program (a no-argument function), a scenario
    function ``FUNC(kernel)``, or a :class:`Scenario`."""
    path_text, sep, func = spec.rpartition(":")
    if not sep or not path_text or not func:
        raise UsageError(f"expected FILE.py:FUNC, got {spec!r}")
    path = Path(path_text)
    try:
        is_file = path.is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise UsageError(f"cannot open {path_text!r}: {exc.strerror}") from None
    if not is_file:
        raise UsageError(f"no such file: {path_text!r}")
    name = "mmrace_program_" + "".join(c if c.isalnum() else "_" for c in path.stem)
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"cannot load {path_text} as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except ScenarioError as exc:
        raise UsageError(f"{path_text}: {exc}") from None
    except (Exception, SystemExit) as exc:  # sys.exit() at import is a broken file too
        raise UsageError(f"cannot load {path_text}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, func, None)
    if fn is None:
        raise UsageError(f"{path_text} has no function {func!r}")
    if not isinstance(fn, Scenario) and not callable(fn):
        raise UsageError(f"{path_text}:{func} is not callable")
    return fn


_nonneg = nonneg_int
_positive_int = positive_int


def _kernel_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", default=None, metavar="RELEASE",
                   help="behave as RELEASE did (e.g. 5.10)")
    p.add_argument("--without", action="append", default=[], metavar="SLUG",
                   help="remove a fix")
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="SLUG",
                   help="apply a fix or a proposal")


MAX_DEPTH = 10_000
"""PCT's bug depth d: d - 1 priority change points; more than the steps of
any execution changes nothing."""

REPLAY_FORMATS = ("text", "json", "perfetto", "html")


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
    ex.add_argument("--executions", type=positive_int, default=None,
                    help="max executions (>= 1)")
    ex.add_argument("--preemptions", type=nonneg_int, default=None, help="preemption bound K")
    ex.add_argument("--depth", type=int_between(1, MAX_DEPTH), default=3,
                    help=f"PCT bug depth d (1..{MAX_DEPTH})")
    ex.add_argument("--seed", type=nonneg_int, default=None)
    ex.add_argument("--token", default=None, help="replay this token")
    ex.add_argument("--seconds", type=positive_seconds, default=None,
                    help="time budget (a finite number > 0)")
    ex.add_argument("--max-steps", type=positive_int, default=None, help="steps per execution")
    ex.add_argument("--json", action="store_true", help="print one JSON object")
    ex.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    ex.add_argument("--all-ops", action="store_true", help="show every operation")
    ex.add_argument("--no-shrink", action="store_true", help="report the violation as found")
    ex.add_argument("--no-quick-pass", action="store_true",
                    help="a bounded search without its first, quick pass (which finds most "
                    "violations sooner and proves nothing)")
    _kernel_args(ex)
    add_scale_options(ex, "explore")
    rules = sub.add_parser("rules", help="print the locking rule table")
    rules.add_argument("field", nargs="?", default=None, help="one field, e.g. vm_start")
    rules.add_argument("--json", action="store_true", help="print a JSON list")
    rules.add_argument("--kernel", default=None, metavar="RELEASE",
                       help="the rules as of RELEASE (e.g. 6.1)")

    ck = sub.add_parser("check", help="run every variant of catalog scenarios")
    ck.add_argument("names", nargs="*", metavar="NAME", help="scenarios (default: all)")
    ck.add_argument("--json", action="store_true", help="print a JSON list")
    add_scale_options(ck, "check")
    ck.add_argument("--kernel", default=None, metavar="RELEASE",
                    help="run each scenario once as RELEASE behaved")
    ck.add_argument("--variant", action="append", default=[], metavar="VARIANT",
                    help="run only these variants")
    ck.add_argument("-q", "--quiet", action="store_true",
                    help="no progress on stderr (by default: a bar on a terminal, "
                    "otherwise one line per finished variant)")
    ck.add_argument("--traces", action="store_true",
                    help="print the trace of every violating variant after the table")
    ck.add_argument("--html", default=None, metavar="DIR",
                    help="write an HTML report per violating variant and an index to DIR")

    ls = sub.add_parser("list", help="list catalog scenarios and their variants")
    ls.add_argument("--json", action="store_true", help="print a JSON list")

    fx = sub.add_parser("fixes", help="list the behaviour switches")
    fx.add_argument("--json", action="store_true", help="print a JSON list")

    rp = sub.add_parser("replay", help="re-run the execution a scenario token records")
    rp.add_argument("token")
    rp.add_argument("--format", choices=REPLAY_FORMATS, default=None,
                    help="text (default), json, perfetto (Chrome trace-event JSON) or "
                    "html (one self-contained page)")
    rp.add_argument("--json", action="store_true", help="the same as --format json")
    rp.add_argument("-o", "--output", default=None, metavar="FILE",
                    help="write to FILE instead of stdout")
    rp.add_argument("--all-ops", action="store_true", help="show every operation")

    doc = sub.add_parser("doc", help="render the locking documentation (Markdown or "
                         "reStructuredText)")
    doc.add_argument("-o", "--output", default=None,
                     help="write to FILE (.md: Markdown, .rst: reStructuredText)")
    doc.add_argument("--format", choices=("md", "rst"), default=None,
                     help="output format (default: from the file name, else md)")
    doc.add_argument("--kernel", default=None, metavar="RELEASE",
                     help="the document as of RELEASE (e.g. 6.1)")
    return parser


def _release_arg(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        parse_release(text)
    except FixError as exc:
        raise UsageError(str(exc)) from None
    return text


def _cmd_rules(args: argparse.Namespace) -> int:
    release = _release_arg(args.kernel)
    table = rules_table(release)
    fields = [row["field"] for row in table]
    if args.field is not None and args.field not in fields:
        raise UsageError(f"no rule for field {args.field!r} (known: {', '.join(fields)})")
    if args.json:
        rows = [row for row in table if args.field is None or row["field"] == args.field]
        print(json.dumps(rows, indent=1))
    else:
        print(render_rules(args.field, release))
    return 0


def _cmd_doc(args: argparse.Namespace) -> int:
    release = _release_arg(args.kernel)
    fmt = args.format
    if fmt is None:
        fmt = "rst" if args.output is not None and args.output.endswith(".rst") else "md"
    text = render(release, fmt)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text)
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
    return 0


def _kernel_from(args: argparse.Namespace, base: Kernel | None = None) -> Kernel:
    k = (base or Kernel()).plus(release=args.kernel, without=args.without, with_=args.with_)
    try:
        k.config()
    except FixError as exc:
        raise UsageError(str(exc)) from None
    return k


def _check_supported(sc: Scenario, k: Kernel) -> None:
    for slug in (*k.without, *k.with_):
        if slug not in sc.switches and slug in FIXES:
            raise UsageError(f"scenario {sc.name!r} does not exercise switch {slug!r} "
                             f"(it exercises: {', '.join(sc.switches) or 'none'})")


def _as_scenario(obj: Any, spec: str) -> Scenario | None:
    """A Scenario for a scenario object or a one-argument function; None for
    a plain no-argument program."""
    import inspect

    if isinstance(obj, Scenario):
        return obj
    try:
        params = [p for p in inspect.signature(obj).parameters.values()
                  if p.default is inspect.Parameter.empty
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    except (TypeError, ValueError):
        return None
    keyword_only = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    if keyword_only:
        raise UsageError(f"{spec}: keyword-only parameter {keyword_only[0]!r}: a program "
                         "takes no argument, a scenario one positional argument (the Kernel)")
    if len(params) == 1:
        name = spec.rpartition(":")[2]
        return Scenario(name=name, summary=name, fn=obj, explore=Explore(strategy="dpor",
                                                                          preemption_bound=None))
    if len(params) > 1:
        raise UsageError(f"{spec}: a program takes no argument, a scenario one (the Kernel)")
    return None


def _cmd_explore(args: argparse.Namespace) -> int:
    obj = _load_program(args.program)
    sc = _as_scenario(obj, args.program)
    if sc is None:
        if args.kernel or args.without or args.with_:
            raise UsageError(f"{args.program} takes no Kernel argument, so --kernel, "
                             "--without and --with do not apply (define FUNC(kernel))")
        program = obj
    else:
        kernel = _kernel_from(args)
        if isinstance(obj, Scenario):
            _check_supported(sc, kernel)
        return _explore_scenario(sc, kernel, args)
    strategy = args.strategy or ("replay" if args.token is not None else "dpor")
    kwargs: dict[str, Any] = {}
    if args.max_steps is not None:
        kwargs["max_steps"] = args.max_steps
    if strategy == "replay":
        if args.token is None:
            raise UsageError("--strategy replay needs --token")
        # (refuses --workers, --checkpoint and the like)
        scale.explore_options(args, strategy, program, "", "", None)
        try:
            result = replay(program, args.token, **kwargs)
        except TokenError as exc:
            raise UsageError(str(exc)) from None
    else:
        if args.token is not None:
            raise UsageError("--token goes with --strategy replay")
        path, _, func = args.program.rpartition(":")
        kwargs.update(scale.explore_options(args, strategy, program, path, func, None))
        with _closing(kwargs.get("pool")):
            result = explore(
                program,
                strategy=strategy,
                max_executions=args.executions,
                preemption_bound=args.preemptions,
                seed=args.seed,
                max_seconds=args.seconds,
                depth=args.depth,
                shrink=not args.no_shrink,
                progress_info=explore_progress(args.quiet),
                should_stop=args.should_stop,
                quick_pass=not args.no_quick_pass,
                **kwargs,
            )
        end_progress_line()
        _require_an_execution(result, args)
    _print_result(result, as_json=args.json, all_ops=args.all_ops)
    if result.interrupted:
        return 130
    return 1 if result.violation is not None else 0


def _require_an_execution(result: Result, args: argparse.Namespace) -> None:
    """A budget that ended before the first execution proves nothing: say
    so instead of reporting a clean run (``--executions 0`` is refused by
    the parser; a tiny ``--seconds`` can still get here). An interrupted
    run reports what it did, even nothing."""
    if result.executions == 0 and result.violation is None and not result.interrupted:
        raise UsageError(f"no execution ran: the time budget (--seconds {args.seconds:g}) "
                         "ended before the first one")


@contextlib.contextmanager
def _closing(pool: Any) -> Any:
    try:
        yield
    finally:
        if pool is not None:
            pool.close()


def _explore_scenario(sc: Scenario, kernel: Kernel, args: argparse.Namespace) -> int:
    variant = sc.with_kernel(kernel)
    st = sc.explore
    strategy = args.strategy or ("replay" if args.token is not None else st.strategy)
    kwargs: dict[str, Any] = {}
    if args.max_steps is not None:
        kwargs["max_steps"] = args.max_steps
    ctx = patched(dict(sc.patches)) if sc.patches else contextlib.nullcontext()
    with ctx:
        if strategy == "replay":
            if args.token is None:
                raise UsageError("--strategy replay needs --token")
            # (refuses --workers, --checkpoint and the like)
            scale.explore_options(args, strategy, sc.program(kernel), "", "", kernel)
            try:
                result = replay(sc.program(kernel), args.token, **kwargs)
            except TokenError as exc:
                raise UsageError(str(exc)) from None
        else:
            if args.token is not None:
                raise UsageError("--token goes with --strategy replay")
            same = strategy == st.strategy
            path, _, func = args.program.rpartition(":")
            program = sc.program(kernel)
            kwargs.update(scale.explore_options(args, strategy, program, path, func, kernel))
            with _closing(kwargs.get("pool")):
                result = explore(
                    program,
                    strategy=strategy,
                    max_executions=args.executions if args.executions is not None
                    else (st.max_executions if same else None),
                    preemption_bound=args.preemptions if args.preemptions is not None
                    else (st.preemption_bound if same else None),
                    seed=args.seed if args.seed is not None else st.seed,
                    max_seconds=args.seconds if args.seconds is not None else st.max_seconds,
                    depth=args.depth,
                    shrink=not args.no_shrink,
                    progress_info=explore_progress(args.quiet),
                    token_context=token_context(sc, variant),
                    should_stop=args.should_stop,
                    quick_pass=not args.no_quick_pass,
                    **kwargs,
                )
            end_progress_line()
            _require_an_execution(result, args)
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        header = f"{sc.name}: {kernel.describe()}"
        if result.violation is not None:
            print(render_explained(result, all_ops=args.all_ops, header=header))
        print(render_result(result).splitlines()[-1])
    if result.interrupted:
        return 130
    return 1 if result.violation is not None else 0


def _select(names: Sequence[str]) -> list[Scenario]:
    try:
        return [get(n) for n in names] if names else all_scenarios()
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None


def _cmd_check(args: argparse.Namespace) -> int:
    scenarios = _select(args.names)
    jobs: list[tuple[Scenario, Any]] = []
    if args.kernel is not None:
        if args.variant:
            raise UsageError("--variant does not go with --kernel")
        kernel = _kernel_from(argparse.Namespace(kernel=args.kernel, without=[], with_=[]))
        jobs = [(sc, sc.with_kernel(kernel)) for sc in scenarios]
    else:
        for sc in scenarios:
            vs = sc.variants()
            if args.variant:
                vs = [v for v in vs if v.name in args.variant]
            jobs.extend((sc, v) for v in vs)
        if args.variant:
            known = {v.name for sc in scenarios for v in sc.variants()}
            for name in args.variant:
                if name not in known:
                    raise UsageError(f"no selected scenario has a variant {name!r}")
    html_dir = _html_dir(args.html) if args.html is not None else None
    record = scale.check_record(args)
    pool = scale.pool_of(args)
    with _closing(pool):
        runs = _run_with_progress(jobs, pool, record, args)
    if args.json:
        rows = []
        for r in runs:
            row = r.as_dict()
            row["search"] = search_state(r.result.violation is not None, r.result.complete,
                                         r.result.interrupted)
            rows.append(row)
        print(json.dumps(rows, indent=1))
    else:
        print(render_check_table(runs))
        if args.kernel is not None:
            bad = [r.scenario for r in runs if r.result.violation is not None]
            print(f"\nvulnerable on {args.kernel}: {', '.join(bad) if bad else 'none'}")
        else:
            failed = sum(1 for r in runs if not r.ok)
            print(f"\n{len(runs) - failed} of {len(runs)} variants as expected")
        violating = [r for r in runs if r.result.violation is not None]
        if violating:
            print(render_violations(violating, traces=args.traces))
    if html_dir is not None:
        _write_check_html(html_dir, runs)
    if args.should_stop():
        return 130
    return 0 if all(r.ok for r in runs) else 1


def render_violations(runs: Sequence[VariantRun], *, traces: bool) -> str:
    """After the table: each violating variant's violation and replay
    token; with *traces*, its short trace too (re-rendered from the token,
    so it is the same whether the variant ran here or in a worker)."""
    lines = ["", "violations (mmrace replay TOKEN shows each one"
             + ("" if traces else "; --traces prints them here") + "):"]
    for r in runs:
        v = r.result.violation
        assert v is not None
        lines.append(f"  {r.scenario} / {r.variant}: {v.kind.upper()}: {v.title}")
        lines.append(f"    replay token: {r.result.token}")
        if traces and r.result.token:
            sc, variant, replayed = _replay_run(r)
            header = f"{sc.name} / {variant.name} ({variant.kernel.describe()})"
            lines.append("")
            lines.append(render_explained(replayed, header=header))
            lines.append("")
    return "\n".join(lines)


def _replay_run(r: VariantRun) -> tuple[Scenario, Any, Result]:
    assert r.result.token is not None
    return replay_token(r.result.token, get)


def _html_dir(text: str) -> Path:
    """The ``--html`` directory, made now: a bad one is refused before a
    long check runs, not after."""
    path = Path(text)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --html directory {text!r}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UsageError(f"cannot write to --html directory {text!r}")
    return path


def _page_name(r: VariantRun) -> str:
    safe = "".join(c if c.isalnum() or c in "-_.=+" else "_" for c in f"{r.scenario}--{r.variant}")
    return f"{safe}.html"


def _write_check_html(directory: Path, runs: Sequence[VariantRun]) -> None:
    """One report page per violating variant, and ``index.html`` with every
    variant (violating ones linked to their page)."""
    rows: list[IndexRow] = []
    for r in runs:
        page = None
        if r.result.violation is not None and r.result.token:
            sc, variant, replayed = _replay_run(r)
            title = f"{sc.name} / {variant.name} ({variant.kernel.describe()})"
            page = _page_name(r)
            _write_text(directory / page, render_html(replayed, title=title))
        rows.append(IndexRow(r.scenario, r.variant, r.expected or "-", r.outcome, r.ok,
                             r.result.executions,
                             search_state(r.result.violation is not None, r.result.complete,
                                          r.result.interrupted),
                             round(r.result.seconds, 1), page))
    _write_text(directory / "index.html", render_index(rows))


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {str(path)!r}: {exc.strerror}") from None


def _run_with_progress(jobs: list[tuple[Scenario, Any]], pool: Any, record: Any,
                       args: argparse.Namespace) -> list[VariantRun]:
    """Run the variants over *pool*; progress on stderr unless ``--quiet``:
    a bar on a terminal, otherwise one line per decided variant."""
    opts: dict[str, Any] = {"pool": pool, "record": record, "should_stop": args.should_stop,
                            "checkpoint_every": args.checkpoint_every}
    if args.quiet:
        return run_all(jobs, **opts)
    if not sys.stderr.isatty():
        finished = [0]

        def line(r: VariantRun) -> None:
            finished[0] += 1
            print(check_line(finished[0], len(jobs), r), file=sys.stderr, flush=True)

        return run_all(jobs, on_done=line, **opts)
    from rich.progress import Progress

    with Progress(transient=True, console=_stderr_console()) as progress:
        task = progress.add_task("mmrace check", total=len(jobs))
        running: dict[tuple[str, str], str] = {}

        def describe() -> None:
            now = "; ".join(running.values()) or "mmrace check"
            progress.update(task, description=now)

        def done(r: VariantRun) -> None:
            running.pop((r.scenario, r.variant), None)
            progress.update(task, advance=1)
            describe()

        def going(name: str, variant: str, executions: int, seconds: float) -> None:
            running[(name, variant)] = (f"{name} {variant}: {executions:,} executions, "
                                        f"{seconds:.0f}s")
            describe()

        return run_all(jobs, on_done=done, on_progress=going, **opts)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


CHECK_COLUMNS = ("scenario", "variant", "expected", "outcome", "executions", "search",
                 "seconds")


def render_check_table(runs: Sequence[VariantRun]) -> str:
    """The verdict table. ``search`` says how each exploration ended:
    ``complete`` (every schedule within the bound, none violating),
    ``found`` (stopped at the first violation), ``out of budget``."""
    rows = [CHECK_COLUMNS]
    for r in runs:
        mark = "" if r.ok else "  <-- unexpected"
        rows.append((r.scenario, r.variant, r.expected or "-", r.outcome + mark,
                     str(r.result.executions),
                     search_state(r.result.violation is not None, r.result.complete,
                                  r.result.interrupted),
                     f"{r.result.seconds:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(CHECK_COLUMNS) - 1)]
    lines = []
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(len(widths))]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
        if row is rows[0]:
            lines.append("  ".join("-" * w for w in [*widths, 7]))
    return "\n".join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    data: list[dict[str, Any]] = []
    for sc in all_scenarios():
        data.append({
            "name": sc.name,
            "summary": sc.summary,
            "references": list(sc.references),
            "switches": list(sc.switches),
            "explore": sc.explore.describe(),
            "variants": [{"name": v.name, "kernel": v.kernel.describe(),
                          "expected": v.expected, "note": v.note or None}
                         for v in sc.variants()],
        })
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    for entry in data:
        print(f"{entry['name']}: {entry['summary']}")
        print(f"  explore: {entry['explore']}")
        for v in entry["variants"]:
            print(f"  {v['name']:40s} {v['expected']:12s} {v['kernel']}")
        print()
    return 0


def _cmd_fixes(args: argparse.Namespace) -> int:
    users: dict[str, list[str]] = {}
    for sc in all_scenarios():
        for slug in sc.switches:
            users.setdefault(slug, []).append(sc.name)
    data: list[dict[str, Any]] = []
    for f in all_fixes():
        data.append({"slug": f.slug, "kind": "fix", "title": f.title, "release": f.release,
                     "status": "merged" if f.merged else "proposed", "commit": f.commit,
                     "summary": f.summary, "scenarios": users.get(f.slug, [])})
    for p in all_policies():
        data.append({"slug": p.slug, "kind": "policy", "title": p.eras[-1].title,
                     "release": p.eras[-1].since, "status": "policy", "commit": None,
                     "summary": p.summary,
                     "values": [{"value": e.value, "since": e.since, "title": e.title}
                                for e in p.eras],
                     "scenarios": users.get(p.slug, [])})
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    for d in data:
        rel = d["release"] or "-"
        print(f"{d['slug']:34s} {d['status']:9s} {rel:5s} {d['title']}")
        if d["kind"] == "policy":
            for e in d["values"]:
                print(f"{'':34s}   {e['value']}: since {e['since']}, {e['title']}")
    return 0


def _replay_format(args: argparse.Namespace) -> str:
    if args.json and args.format not in (None, "json"):
        raise UsageError(f"--json and --format {args.format} ask for two formats; give one")
    return "json" if args.json else (args.format or "text")


def _cmd_replay(args: argparse.Namespace) -> int:
    fmt = _replay_format(args)
    try:
        sc, variant, result = replay_token(args.token, get)
    except (TokenError, ScenarioError) as exc:
        raise UsageError(str(exc)) from None
    header = f"{sc.name} / {variant.name} ({variant.kernel.describe()})"
    if fmt == "json":
        data = result.as_dict()
        data["scenario"] = sc.name
        data["variant"] = variant.name
        data["kernel"] = variant.kernel.describe()
        data["trace"] = (trace_json(result.violation, all_ops=args.all_ops)
                         if result.violation else [])
        text = json.dumps(data, indent=1)
    elif fmt == "perfetto":
        text = json.dumps(perfetto_trace(result, title=header, all_ops=args.all_ops))
    elif fmt == "html":
        text = render_html(result, title=header)
    elif result.violation is None:
        text = f"{header}\nno violation in this execution"
    else:
        text = render_explained(result, all_ops=args.all_ops, header=header)
    if args.output is not None:
        _write_text(Path(args.output), text + "\n")
    else:
        print(text)
    return 1 if result.violation is not None else 0


def _print_result(result: Result, *, as_json: bool, all_ops: bool) -> None:
    if as_json:
        print(json.dumps(result.as_dict()))
    else:
        print(render_result(result, all_ops=all_ops))


def main(argv: Sequence[str] | None = None) -> int:
    """The ``mmrace`` command: 0 clean, 1 a violation (or an unexpected
    outcome), 2 bad input (one line on stderr), 130 interrupted."""
    restore = ascii_fallback_streams()
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except OSError as exc:
        # stdout could not take the output (a full disk, /dev/full).
        _silence_stdout()
        print(f"mmrace: error: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
        return 2
    finally:
        restore()


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of what
    could not be written does not raise again."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _main(argv: Sequence[str] | None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            # Bare `mmrace`: a usage error (one line), not a request for help.
            usage = " ".join(parser.format_usage().split())
            raise UsageError(f"a command is required ({usage}; mmrace -h explains them)")
        if args.command in ("explore", "check"):
            # Ctrl-C and SIGTERM stop the exploration between executions;
            # what was decided is printed (and saved if asked), exit 130
            with StopRequest() as stop:
                args.should_stop = stop
                code = _cmd_explore(args) if args.command == "explore" else _cmd_check(args)
            return 130 if stop.requested else code
        if args.command == "rules":
            return _cmd_rules(args)
        if args.command == "doc":
            return _cmd_doc(args)
        if args.command == "list":
            return _cmd_list(args)
        if args.command == "fixes":
            return _cmd_fixes(args)
        if args.command == "replay":
            return _cmd_replay(args)
        raise UsageError(f"unknown command {args.command!r}")
    except (UsageError, scale.ScaleError, PoolError, CheckpointError) as exc:
        print(f"mmrace: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmrace: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (mmrace list | head): stop quietly, and keep
        # the interpreter's final flush from raising again.
        _silence_stdout()
        return 1


if __name__ == "__main__":
    sys.exit(main())

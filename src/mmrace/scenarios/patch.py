"""Patching the model for one run: try a locking change without editing mmrace.

:func:`patched` replaces a model function (``"mmrace.mm.memory.wp_page_copy"``)
with your own version while the ``with`` block runs, and restores it on the
way out, even on error. Every module of ``mmrace`` that imported the function
by name (``from mmrace.mm.memory import wp_page_copy``) sees the replacement
too. The replacement is wrapped like a model function, so traces show it
under the original kernel function name.

A name a module *imported* (``"mmrace.mm.task_mmu.mmap_write_lock"``:
``mmap_write_lock`` is defined in ``mmrace.mm.mmap_lock``) is replaced in
that module only: every call *from* ``task_mmu`` goes to the replacement,
the rest of the model keeps the original. Since every exploration job runs in
its own process (``mmrace check --jobs N``), or inside the ``with`` block
only, nothing leaks into other runs.

Example — ``clear_refs_write`` with the mmap lock for read instead of for
write (what "mm: fix clear_refs_write locking" removed)::

    from mmrace.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
    from mmrace.scenarios import patched

    with patched({"mmrace.mm.task_mmu.mmap_write_lock": mmap_read_lock,
                  "mmrace.mm.task_mmu.mmap_write_unlock": mmap_read_unlock}):
        result = explore(program, strategy="bounded", preemption_bound=3)

A scenario can carry its patches (``@scenario(..., patches={path: fn})``);
the runner applies them around each of its variants' explorations and
replays. See ``docs/catalog.md`` and :mod:`mmrace.scenarios.examples`.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from mmrace.engine import current_thread
from mmrace.scenarios.api import ScenarioError


def _resolve(path: str) -> tuple[Any, str, Any]:
    module_name, sep, attr = path.rpartition(".")
    if not sep or not module_name.startswith("mmrace."):
        raise ScenarioError(f"cannot patch {path!r}: expected mmrace.PACKAGE.MODULE.FUNCTION")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ScenarioError(f"cannot patch {path!r}: no module {module_name!r}") from None
    if not hasattr(module, attr):
        raise ScenarioError(f"cannot patch {path!r}: {module_name} has no {attr!r}")
    return module, attr, getattr(module, attr)


def _as_model_function(fn: Callable[..., Any], name: str,
                       replaced: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap *fn* so events inside it carry the kernel function *name*."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        th = current_thread()
        if th is None:
            return fn(*args, **kwargs)
        th.where.append(name)
        try:
            return fn(*args, **kwargs)
        finally:
            th.where.pop()

    wrapper.__mmrace_original__ = replaced  # type: ignore[attr-defined]
    return wrapper


@contextmanager
def patched(path: str | Mapping[str, Callable[..., Any]],
            replacement: Callable[..., Any] | None = None) -> Iterator[None]:
    """Replace model functions for the duration of the block.

    ``patched("mmrace.mm.memory.wp_page_copy", my_copy)`` or
    ``patched({"mmrace.mm.memory.wp_page_copy": my_copy, ...})``."""
    if isinstance(path, str):
        if replacement is None:
            raise ScenarioError(f"patched({path!r}) needs a replacement function")
        table: dict[str, Callable[..., Any]] = {path: replacement}
    else:
        table = dict(path)
    saved: list[tuple[Any, str, Any]] = []
    try:
        for target, fn in table.items():
            if not callable(fn):
                raise ScenarioError(f"the replacement for {target!r} is not callable")
            module, attr, original = _resolve(target)
            new = _as_model_function(fn, getattr(original, "__name__", attr), original)
            home = getattr(original, "__module__", module.__name__)
            if home != module.__name__:
                # An imported name: replace it as this module sees it only.
                saved.append((module, attr, original))
                setattr(module, attr, new)
                continue
            for mod in list(sys.modules.values()):
                name = getattr(mod, "__name__", "")
                if not isinstance(name, str) or not name.startswith("mmrace."):
                    continue
                for key, value in list(vars(mod).items()):
                    if value is original:
                        saved.append((mod, key, original))
                        setattr(mod, key, new)
        yield
    finally:
        for mod, key, original in reversed(saved):
            setattr(mod, key, original)


def original(path: str) -> Callable[..., Any]:
    """The model function at *path* as it is without patches: a replacement
    calls this to run the code it wraps."""
    _module, _attr, fn = _resolve(path)
    while hasattr(fn, "__mmrace_original__"):
        fn = fn.__mmrace_original__
    return fn  # type: ignore[no-any-return]


__all__ = ["original", "patched"]

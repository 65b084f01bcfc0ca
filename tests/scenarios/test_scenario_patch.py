"""Patching the model for one run: the replacement is seen by every module
that imported the function, is restored afterwards, and an imported name is
replaced in its importing module only."""

from __future__ import annotations

from typing import Any

import pytest

import mmrace.mm.memory as memory
import mmrace.mm.task_mmu as task_mmu
from mmrace.mm import mmap_lock
from mmrace.scenarios import ScenarioError, patched
from mmrace.scenarios.patch import original


def test_patch_is_seen_and_restored() -> None:
    before = memory.wp_page_copy
    calls: list[Any] = []

    def mine(vmf: Any) -> int:
        calls.append(vmf)
        return 0

    with patched("mmrace.mm.memory.wp_page_copy", mine):
        assert memory.wp_page_copy is not before
        assert original("mmrace.mm.memory.wp_page_copy") is before
        memory.wp_page_copy("vmf")  # type: ignore[arg-type]
    assert calls == ["vmf"]
    assert memory.wp_page_copy is before


def test_imported_name_is_replaced_in_that_module_only() -> None:
    with patched("mmrace.mm.task_mmu.mmap_write_lock", mmap_lock.mmap_read_lock):
        assert task_mmu.mmap_write_lock is not mmap_lock.mmap_write_lock
        assert mmap_lock.mmap_write_lock.__name__ == "mmap_write_lock"
    assert task_mmu.mmap_write_lock is mmap_lock.mmap_write_lock


def test_restored_after_an_error() -> None:
    before = memory.wp_page_copy
    with pytest.raises(RuntimeError), patched("mmrace.mm.memory.wp_page_copy", lambda v: 0):
        raise RuntimeError("boom")
    assert memory.wp_page_copy is before


@pytest.mark.parametrize("path", ["wp_page_copy", "mmrace.mm.nosuch.f", "mmrace.mm.memory.nope",
                                  "os.path.join"])
def test_bad_targets(path: str) -> None:
    with pytest.raises(ScenarioError), patched(path, lambda: 0):
        pass


def test_example_patch_removes_a_lock_and_opens_the_race() -> None:
    from mmrace.scenarios.examples import clear_refs_walk_read_locked as sc
    from mmrace.scenarios.run import replay_token, run_variant

    walk = task_mmu.walk_page_range_clear_refs
    run = run_variant(sc, sc.variant("base"))
    assert run.outcome == "lost-write"
    assert task_mmu.walk_page_range_clear_refs is walk  # restored after the run
    # the trace names the patched function like the one it replaces
    assert run.result.violation is not None
    wheres = {ev.where for ev in run.result.violation.trace}
    assert "walk_page_range_clear_refs" in wheres and "mmap_write_downgrade" in wheres
    _, _, again = replay_token(run.result.token or "", lambda name: sc)
    assert again.violation is not None and again.violation.kind == "lost-write"


@pytest.mark.slow
def test_example_unpatched_is_clean() -> None:
    from mmrace.scenarios.examples import clear_refs_walk_write_locked as sc
    from mmrace.scenarios.run import run_variant

    assert run_variant(sc, sc.variant("base")).outcome == "clean"
